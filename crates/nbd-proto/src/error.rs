//! The two error types: connection-fatal protocol errors and per-request errno values.

use thiserror::Error;

/// The peer broke the protocol; the only safe reaction is closing the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// The client sent flag bits this server does not know.
    #[error("client sent unknown handshake flags {flags:#x}")]
    UnknownClientFlags {
        /// The flags as received.
        flags: u32,
    },
    /// An option did not start with `IHAVEOPT`.
    #[error("bad option magic {magic:#018x} (expected IHAVEOPT)")]
    BadOptionMagic {
        /// The 8 bytes as received.
        magic: u64,
    },
    /// An option declared more data than the server buffers.
    #[error("option {option} declares {length_bytes} bytes of data, more than the limit of {limit_bytes}")]
    OptionTooLong {
        /// The option code.
        option: u32,
        /// The declared length.
        length_bytes: u32,
        /// [`crate::limits::MAX_OPTION_DATA_BYTES`].
        limit_bytes: u32,
    },
    /// A request did not start with the request magic.
    #[error("bad request magic {magic:#010x} (expected 0x25609513)")]
    BadRequestMagic {
        /// The 4 bytes as received.
        magic: u32,
    },
    /// A WRITE declared a payload larger than the server buffers.
    #[error("write of {length_bytes} bytes exceeds the maximum payload of {limit_bytes} bytes")]
    PayloadTooLong {
        /// The declared length.
        length_bytes: u32,
        /// [`crate::limits::MAX_PAYLOAD_BYTES`].
        limit_bytes: u32,
    },
    /// The negotiation state machine was fed after it finished.
    #[error("negotiation already finished")]
    NegotiationFinished,
}

/// A per-request error, sent in the reply's error field; the connection goes on.
///
/// Only the values the spec defines exist here, so that no host errno leaks onto the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum Errno {
    /// Operation not permitted (write or trim on a read-only export).
    #[error("operation not permitted (EPERM)")]
    Perm,
    /// Input/output error.
    #[error("input/output error (EIO)")]
    Io,
    /// Cannot allocate memory.
    #[error("cannot allocate memory (ENOMEM)")]
    NoMem,
    /// Invalid argument (out of range read/trim, unknown command or flag, read over the maximum).
    #[error("invalid argument (EINVAL)")]
    Inval,
    /// No space left on device (write beyond the end).
    #[error("no space left on device (ENOSPC)")]
    NoSpc,
    /// Value too large (a payload-less command over the maximum payload).
    #[error("value too large (EOVERFLOW)")]
    Overflow,
    /// Operation not supported.
    #[error("operation not supported (ENOTSUP)")]
    NotSup,
    /// Server is shutting down.
    #[error("server is shutting down (ESHUTDOWN)")]
    Shutdown,
}

impl Errno {
    /// The value of the reply's error field.
    pub const fn wire_value(self) -> u32 {
        match self {
            Errno::Perm => 1,
            Errno::Io => 5,
            Errno::NoMem => 12,
            Errno::Inval => 22,
            Errno::NoSpc => 28,
            Errno::Overflow => 75,
            Errno::NotSup => 95,
            Errno::Shutdown => 108,
        }
    }

    /// Parses a reply's error field (0 is success and is not an `Errno`).
    pub const fn from_wire(value: u32) -> Option<Errno> {
        Some(match value {
            1 => Errno::Perm,
            5 => Errno::Io,
            12 => Errno::NoMem,
            22 => Errno::Inval,
            28 => Errno::NoSpc,
            75 => Errno::Overflow,
            95 => Errno::NotSup,
            108 => Errno::Shutdown,
            _ => return None,
        })
    }
}
