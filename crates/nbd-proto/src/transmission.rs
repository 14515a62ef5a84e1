//! Transmission phase: request header codec, request validation, simple replies.
//!
//! Byte layout (big-endian):
//! ```text
//! request      : magic 0x25609513 u32 | flags u16 | type u16 | cookie u64 | offset u64 | length u32  (28 bytes)
//!                followed by `length` payload bytes for WRITE only
//! simple reply : magic 0x67446698 u32 | error u32 | cookie u64                                     (16 bytes)
//!                followed by `length` data bytes for a successful READ only
//! ```
//!
//! Invariants:
//! - [`Request::decode`] fails (connection-fatal) only on a bad magic or a
//!   WRITE payload above [`MAX_PAYLOAD_BYTES`], the two cases where the server
//!   cannot find the next request header safely. Everything else, including
//!   unknown commands and flags, decodes and is then refused per request by
//!   [`validate`] with an [`Errno`].
//! - A request that passes [`validate`] lies entirely inside the export:
//!   `offset + length <= size_bytes`, computed without overflow.

use crate::error::{Errno, ProtocolError};
use crate::limits::MAX_PAYLOAD_BYTES;
use crate::wire::*;

/// The command of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`.
    Write,
    /// `NBD_CMD_DISC`.
    Disc,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// Any other type; refused with `EINVAL`.
    Unknown(u16),
}

impl Command {
    /// Decodes the wire type.
    pub const fn from_wire(value: u16) -> Command {
        match value {
            CMD_READ => Command::Read,
            CMD_WRITE => Command::Write,
            CMD_DISC => Command::Disc,
            CMD_FLUSH => Command::Flush,
            CMD_TRIM => Command::Trim,
            CMD_WRITE_ZEROES => Command::WriteZeroes,
            other => Command::Unknown(other),
        }
    }

    /// The wire type.
    pub const fn wire_value(self) -> u16 {
        match self {
            Command::Read => CMD_READ,
            Command::Write => CMD_WRITE,
            Command::Disc => CMD_DISC,
            Command::Flush => CMD_FLUSH,
            Command::Trim => CMD_TRIM,
            Command::WriteZeroes => CMD_WRITE_ZEROES,
            Command::Unknown(other) => other,
        }
    }
}

/// A decoded request header (not yet validated against the export).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags as received.
    pub flags: u16,
    /// The command.
    pub command: Command,
    /// Opaque handle echoed in the reply.
    pub cookie: u64,
    /// Offset into the export.
    pub offset_bytes: u64,
    /// Length of the data concerned.
    pub length_bytes: u32,
}

impl Request {
    /// Decodes a request header from the front of `input` (check then parse).
    ///
    /// `Ok(None)` when fewer than 28 bytes are available. The WRITE payload
    /// that follows is not part of the header: see [`Self::payload_bytes`].
    pub fn decode(input: &[u8]) -> Result<Option<Request>, ProtocolError> {
        let Some(h) = input.get(0..REQUEST_HEADER_BYTES) else {
            return Ok(None);
        };
        let magic = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if magic != REQUEST_MAGIC {
            return Err(ProtocolError::BadRequestMagic { magic });
        }
        let mut cookie = [0u8; 8];
        cookie.copy_from_slice(&h[8..16]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&h[16..24]);
        let request = Request {
            flags: u16::from_be_bytes([h[4], h[5]]),
            command: Command::from_wire(u16::from_be_bytes([h[6], h[7]])),
            cookie: u64::from_be_bytes(cookie),
            offset_bytes: u64::from_be_bytes(offset),
            length_bytes: u32::from_be_bytes([h[24], h[25], h[26], h[27]]),
        };
        if request.command == Command::Write && request.length_bytes > MAX_PAYLOAD_BYTES {
            return Err(ProtocolError::PayloadTooLong {
                length_bytes: request.length_bytes,
                limit_bytes: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(Some(request))
    }

    /// Encodes the header (the client side; used by tests and tools).
    pub fn encode(&self) -> [u8; REQUEST_HEADER_BYTES] {
        let mut out = [0u8; REQUEST_HEADER_BYTES];
        out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out[4..6].copy_from_slice(&self.flags.to_be_bytes());
        out[6..8].copy_from_slice(&self.command.wire_value().to_be_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        out[16..24].copy_from_slice(&self.offset_bytes.to_be_bytes());
        out[24..28].copy_from_slice(&self.length_bytes.to_be_bytes());
        out
    }

    /// Bytes of payload that follow this header on the wire (WRITE only).
    pub const fn payload_bytes(&self) -> u32 {
        match self.command {
            Command::Write => self.length_bytes,
            _ => 0,
        }
    }
}

/// A request that is safe to execute on an export of the validated size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatedRequest {
    /// Read `length_bytes` at `offset_bytes`.
    Read {
        /// Start.
        offset_bytes: u64,
        /// Length.
        length_bytes: u32,
    },
    /// Write the payload at `offset_bytes`.
    Write {
        /// Start.
        offset_bytes: u64,
        /// Length of the payload.
        length_bytes: u32,
        /// Durable before the reply.
        fua: bool,
    },
    /// Make every completed write durable.
    Flush,
    /// Discard a range (advisory).
    Trim {
        /// Start.
        offset_bytes: u64,
        /// Length.
        length_bytes: u32,
        /// Durable before the reply.
        fua: bool,
    },
    /// Write zeroes to a range.
    WriteZeroes {
        /// Start.
        offset_bytes: u64,
        /// Length.
        length_bytes: u32,
        /// The range must stay allocated (no hole punched).
        no_hole: bool,
        /// Durable before the reply.
        fua: bool,
    },
    /// Close after the requests in flight (no reply).
    Disconnect,
}

/// Checks a request against the export, purely.
///
/// The errno choices follow the spec's "Error values": out-of-range reads and
/// trims are `EINVAL`, out-of-range writes `ENOSPC`, a read over the maximum
/// payload `EINVAL`, writes on a read-only export `EPERM`, unknown commands or
/// flags `EINVAL`.
pub fn validate(
    request: &Request,
    size_bytes: u64,
    read_only: bool,
) -> Result<ValidatedRequest, Errno> {
    let fua = request.flags & CMD_FLAG_FUA != 0;
    let allowed_flags = match request.command {
        Command::WriteZeroes => CMD_FLAG_FUA | CMD_FLAG_NO_HOLE,
        _ => CMD_FLAG_FUA,
    };
    if request.flags & !allowed_flags != 0 {
        return Err(Errno::Inval);
    }
    let offset_bytes = request.offset_bytes;
    let length_bytes = request.length_bytes;
    let inside = offset_bytes
        .checked_add(u64::from(length_bytes))
        .is_some_and(|end| end <= size_bytes);
    let writable = if read_only { Err(Errno::Perm) } else { Ok(()) };
    match request.command {
        Command::Read if length_bytes > MAX_PAYLOAD_BYTES => Err(Errno::Inval),
        Command::Read if !inside => Err(Errno::Inval),
        Command::Read => Ok(ValidatedRequest::Read {
            offset_bytes,
            length_bytes,
        }),
        Command::Write => {
            writable?;
            if !inside {
                return Err(Errno::NoSpc);
            }
            Ok(ValidatedRequest::Write {
                offset_bytes,
                length_bytes,
                fua,
            })
        }
        Command::Flush => Ok(ValidatedRequest::Flush),
        Command::Trim => {
            writable?;
            if !inside {
                return Err(Errno::Inval);
            }
            Ok(ValidatedRequest::Trim {
                offset_bytes,
                length_bytes,
                fua,
            })
        }
        Command::WriteZeroes => {
            writable?;
            if !inside {
                return Err(Errno::NoSpc);
            }
            let no_hole = request.flags & CMD_FLAG_NO_HOLE != 0;
            Ok(ValidatedRequest::WriteZeroes {
                offset_bytes,
                length_bytes,
                no_hole,
                fua,
            })
        }
        Command::Disc => Ok(ValidatedRequest::Disconnect),
        Command::Unknown(_) => Err(Errno::Inval),
    }
}

/// A simple reply header; a successful READ's data follows it on the wire.
pub fn encode_simple_reply(cookie: u64, error: Option<Errno>) -> [u8; SIMPLE_REPLY_HEADER_BYTES] {
    let mut out = [0u8; SIMPLE_REPLY_HEADER_BYTES];
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.map_or(0, Errno::wire_value).to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out
}

/// Decodes a simple reply header (the client side; tests and tools):
/// `(cookie, error)` where error 0 is success.
pub fn decode_simple_reply(input: &[u8]) -> Option<(u64, u32)> {
    let h = input.get(0..SIMPLE_REPLY_HEADER_BYTES)?;
    if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) != SIMPLE_REPLY_MAGIC {
        return None;
    }
    let mut cookie = [0u8; 8];
    cookie.copy_from_slice(&h[8..16]);
    Some((
        u64::from_be_bytes(cookie),
        u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
    ))
}

/// The transmission flags of an export.
///
/// `can_multi_conn` must be true only when a FLUSH on one connection makes
/// durable the writes completed on every connection (true for one shared
/// backing file or device).
pub fn transmission_flags(read_only: bool, can_multi_conn: bool) -> u16 {
    let mut flags = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH;
    if read_only {
        flags |= TFLAG_READ_ONLY;
    } else {
        flags |= TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
    }
    if can_multi_conn {
        flags |= TFLAG_CAN_MULTI_CONN;
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(command: Command, flags: u16, offset_bytes: u64, length_bytes: u32) -> Request {
        Request {
            flags,
            command,
            cookie: 42,
            offset_bytes,
            length_bytes,
        }
    }

    #[test]
    fn decode_known_header() {
        let bytes = [
            0x25, 0x60, 0x95, 0x13, 0, 1, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0x10, 0,
            0, 0, 0x02, 0,
        ];
        let r = Request::decode(&bytes).unwrap().unwrap();
        assert_eq!(
            r,
            Request {
                flags: CMD_FLAG_FUA,
                command: Command::Write,
                cookie: 0x0102_0304_0506_0708,
                offset_bytes: 4096,
                length_bytes: 512
            }
        );
        assert_eq!(r.payload_bytes(), 512);
        assert!(Request::decode(&bytes[..27]).unwrap().is_none());
    }

    #[test]
    fn bad_magic_and_oversized_write_are_fatal() {
        let mut bytes = req(Command::Read, 0, 0, 1).encode();
        bytes[0] = 0;
        assert_eq!(
            Request::decode(&bytes).unwrap_err().to_string(),
            "bad request magic 0x00609513 (expected 0x25609513)"
        );
        let big = req(Command::Write, 0, 0, MAX_PAYLOAD_BYTES + 1).encode();
        assert_eq!(
            Request::decode(&big).unwrap_err().to_string(),
            "write of 33554433 bytes exceeds the maximum payload of 33554432 bytes"
        );
        // A big READ is not fatal: it is refused per request.
        let big_read = req(Command::Read, 0, 0, MAX_PAYLOAD_BYTES + 1);
        assert_eq!(
            Request::decode(&big_read.encode()).unwrap().unwrap(),
            big_read
        );
        assert_eq!(validate(&big_read, u64::MAX, false), Err(Errno::Inval));
    }

    #[test]
    fn validation_table() {
        let size = 1 << 20;
        let cases: Vec<(Request, bool, Result<ValidatedRequest, Errno>)> = vec![
            (
                req(Command::Read, 0, 0, 4096),
                false,
                Ok(ValidatedRequest::Read {
                    offset_bytes: 0,
                    length_bytes: 4096,
                }),
            ),
            (
                req(Command::Read, 0, size - 1, 1),
                false,
                Ok(ValidatedRequest::Read {
                    offset_bytes: size - 1,
                    length_bytes: 1,
                }),
            ),
            (req(Command::Read, 0, size, 1), false, Err(Errno::Inval)),
            (req(Command::Read, 0, u64::MAX, 2), false, Err(Errno::Inval)),
            (
                req(Command::Read, CMD_FLAG_NO_HOLE, 0, 1),
                false,
                Err(Errno::Inval),
            ),
            (
                req(Command::Write, 0, size - 512, 1024),
                false,
                Err(Errno::NoSpc),
            ),
            (
                req(Command::Write, CMD_FLAG_FUA, 0, 512),
                false,
                Ok(ValidatedRequest::Write {
                    offset_bytes: 0,
                    length_bytes: 512,
                    fua: true,
                }),
            ),
            (req(Command::Write, 0, 0, 512), true, Err(Errno::Perm)),
            (req(Command::Trim, 0, 0, 512), true, Err(Errno::Perm)),
            (req(Command::Trim, 0, size, 1), false, Err(Errno::Inval)),
            (
                req(
                    Command::WriteZeroes,
                    CMD_FLAG_NO_HOLE | CMD_FLAG_FUA,
                    0,
                    8192,
                ),
                false,
                Ok(ValidatedRequest::WriteZeroes {
                    offset_bytes: 0,
                    length_bytes: 8192,
                    no_hole: true,
                    fua: true,
                }),
            ),
            (
                req(Command::WriteZeroes, 0, size, 1),
                false,
                Err(Errno::NoSpc),
            ),
            (
                req(Command::WriteZeroes, 1 << 4, 0, 1),
                false,
                Err(Errno::Inval),
            ),
            (
                req(Command::Flush, 0, 0, 0),
                true,
                Ok(ValidatedRequest::Flush),
            ),
            (
                req(Command::Disc, 0, 0, 0),
                false,
                Ok(ValidatedRequest::Disconnect),
            ),
            (req(Command::Unknown(77), 0, 0, 0), false, Err(Errno::Inval)),
        ];
        for (r, read_only, expected) in cases {
            assert_eq!(
                validate(&r, size, read_only),
                expected,
                "{r:?} read_only={read_only}"
            );
        }
    }

    #[test]
    fn reply_layout_and_flags() {
        let r = encode_simple_reply(0xabcd, Some(Errno::NoSpc));
        assert_eq!(
            r,
            [0x67, 0x44, 0x66, 0x98, 0, 0, 0, 28, 0, 0, 0, 0, 0, 0, 0xab, 0xcd]
        );
        assert_eq!(decode_simple_reply(&r), Some((0xabcd, 28)));
        assert_eq!(transmission_flags(false, true), 0b1_0110_1101);
        assert_eq!(transmission_flags(true, false), 0b0111);
        for v in [1, 5, 12, 22, 28, 75, 95, 108] {
            assert_eq!(Errno::from_wire(v).map(Errno::wire_value), Some(v));
        }
    }

    fn any_command() -> impl Strategy<Value = Command> {
        any::<u16>().prop_map(Command::from_wire)
    }

    proptest! {
        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(Some(r)) = Request::decode(&bytes) {
                prop_assert_eq!(&r.encode()[..], &bytes[..REQUEST_HEADER_BYTES]);
                let _ = validate(&r, 1 << 30, false);
            }
        }

        #[test]
        fn round_trip(flags in any::<u16>(), command in any_command(), cookie in any::<u64>(),
                      offset_bytes in any::<u64>(), length_bytes in 0..=MAX_PAYLOAD_BYTES) {
            let r = Request { flags, command, cookie, offset_bytes, length_bytes };
            prop_assert_eq!(Request::decode(&r.encode()), Ok(Some(r)));
        }

        #[test]
        fn validated_requests_stay_inside(r in (any::<u16>(), any_command(), any::<u64>(), any::<u32>())
                .prop_map(|(flags, command, offset_bytes, length_bytes)| Request { flags, command, cookie: 1, offset_bytes, length_bytes }),
                size in any::<u64>()) {
            match validate(&r, size, false) {
                Ok(ValidatedRequest::Read { offset_bytes, length_bytes })
                | Ok(ValidatedRequest::Write { offset_bytes, length_bytes, .. })
                | Ok(ValidatedRequest::Trim { offset_bytes, length_bytes, .. })
                | Ok(ValidatedRequest::WriteZeroes { offset_bytes, length_bytes, .. }) => {
                    prop_assert!(u128::from(offset_bytes) + u128::from(length_bytes) <= u128::from(size));
                }
                _ => {}
            }
        }
    }
}
