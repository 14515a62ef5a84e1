//! The heartbeat message: a fixed, hand-laid header, the sender's name and a
//! signature over both. One message per UDP datagram.
//!
//! Byte layout (integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `HDHB` |
//! | 4 | 1 | version, [`VERSION`] |
//! | 5 | 1 | method: 1 sha1, 2 md5, 3 crc |
//! | 6 | 1 | key index (authkeys `N`, 0-15) |
//! | 7 | 1 | name length N, 1-[`MAX_NODE_NAME_BYTES`] |
//! | 8 | 8 | generation (incarnation: grows at every agent start) |
//! | 16 | 8 | sequence number within the generation (from 1) |
//! | 24 | 1 | the sender's operator mode ([`Mode`]) |
//! | 25 | 1 | reserved, 0 |
//! | 26 | 2 | groups the sender holds (bit i = group i of haresources) |
//! | 28 | 2 | groups whose start failed on the sender |
//! | 30 | 2 | reserved, 0 |
//! | 32 | N | the sender's node name (ASCII) |
//! | 32+N | 20/16/4 | tag over bytes 0..32+N ([`crate::mac`]) |
//!
//! There is no timestamp: clocks of the two nodes need not agree, and
//! freshness comes from the (generation, sequence) pair ([`crate::replay`]).
//!
//! Invariants of [`decode`]: it never panics and never allocates more than
//! the datagram; every length is checked before it is used; nothing but the
//! lengths and the key index is looked at before the tag is verified, so an
//! unsigned message cannot influence anything; a valid tag with any reserved
//! field non-zero or an unknown mode is still refused (a newer format).

use hadisk_config::ha::{AuthKey, AuthMethod, Authkeys, MAX_NODE_NAME_BYTES};

use crate::mac;

/// The magic at offset 0.
pub const MAGIC: [u8; 4] = *b"HDHB";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Size of the fixed header, before the name.
pub const HEADER_BYTES: usize = 32;
/// The largest message: header, longest name, longest tag. A receive buffer
/// of this size holds any valid heartbeat; anything longer is refused.
pub const MAX_MESSAGE_BYTES: usize = HEADER_BYTES + MAX_NODE_NAME_BYTES + mac::MAX_TAG_BYTES;
/// The most groups a heartbeat describes (bits of the masks); haresources
/// allows no more.
pub const MAX_GROUPS: usize = 16;

/// A node's operator mode, set by `hadisk agent standby` / `takeover` and
/// reset to `Auto` when the agent restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// hb_standby: give the groups to the peer while it is alive.
    Standby,
    /// The default: groups go where the policy says.
    Auto,
    /// hb_takeover: take the groups while this node is alive.
    Takeover,
}

impl Mode {
    fn to_byte(self) -> u8 {
        match self {
            Mode::Auto => 0,
            Mode::Standby => 1,
            Mode::Takeover => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Mode> {
        match b {
            0 => Some(Mode::Auto),
            1 => Some(Mode::Standby),
            2 => Some(Mode::Takeover),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Standby => "standby",
            Mode::Takeover => "takeover",
        })
    }
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sender's node name.
    pub from: String,
    /// The sender's incarnation.
    pub generation: u64,
    /// The sender's sequence number in this incarnation.
    pub seq: u64,
    /// The sender's operator mode.
    pub mode: Mode,
    /// Bit i: the sender holds group i (starting, running, stopping, or a
    /// failed stop).
    pub held: u16,
    /// Bit i: group i failed to start on the sender.
    pub failed: u16,
}

/// Why a datagram is not a heartbeat we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header, or longer than any heartbeat.
    #[error("{len}-byte datagram is not a heartbeat ({HEADER_BYTES}-{MAX_MESSAGE_BYTES} bytes)")]
    Size {
        /// Its length.
        len: usize,
    },
    /// Wrong magic: another protocol on the port.
    #[error("not a hadisk heartbeat (bad magic)")]
    Magic,
    /// A format this code does not read.
    #[error("heartbeat format version {0}, this agent reads {VERSION}; upgrade both nodes")]
    Version(u8),
    /// The method byte names no method.
    #[error("unknown signature method {0}")]
    Method(u8),
    /// The key index is not in our authkeys.
    #[error(
        "signed with key {0}, which authkeys does not define; give both nodes the same authkeys"
    )]
    UnknownKey(u8),
    /// The key index is ours, with another method.
    #[error("signed with key {index} as {theirs}, but authkeys defines key {index} as {ours}; give both nodes the same authkeys")]
    MethodMismatch {
        /// The key index.
        index: u8,
        /// Our method for it.
        ours: AuthMethod,
        /// The message's.
        theirs: AuthMethod,
    },
    /// The name length is out of range or disagrees with the datagram size.
    #[error("{len}-byte datagram does not match its name length {name_len}")]
    Length {
        /// The datagram's length.
        len: usize,
        /// The name length it claims.
        name_len: u8,
    },
    /// The signature does not verify: a wrong key or a forged/corrupted
    /// message.
    #[error(
        "bad signature (key {0}): wrong authkeys on one node, or a forged or corrupted message"
    )]
    BadSignature(u8),
    /// Signed, but with a field this version does not know.
    #[error("signed heartbeat with an invalid field: {0}")]
    Field(&'static str),
    /// Our own name is not sendable (too long or not ASCII printable).
    #[error("node name '{0}' cannot be sent: 1-{MAX_NODE_NAME_BYTES} printable ASCII characters")]
    Name(String),
}

fn method_byte(m: AuthMethod) -> u8 {
    match m {
        AuthMethod::Sha1 => 1,
        AuthMethod::Md5 => 2,
        AuthMethod::Crc => 3,
    }
}

fn method_of(b: u8) -> Option<AuthMethod> {
    match b {
        1 => Some(AuthMethod::Sha1),
        2 => Some(AuthMethod::Md5),
        3 => Some(AuthMethod::Crc),
        _ => None,
    }
}

fn name_ok(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME_BYTES
        && name.iter().all(|b| b.is_ascii_graphic())
}

/// Encodes and signs a heartbeat with `key`.
pub fn encode(hb: &Heartbeat, key: &AuthKey) -> Result<Vec<u8>, WireError> {
    let name = hb.from.as_bytes();
    if !name_ok(name) {
        return Err(WireError::Name(hb.from.clone()));
    }
    let mut out = Vec::with_capacity(MAX_MESSAGE_BYTES);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(method_byte(key.method));
    out.push(key.index);
    out.push(name.len() as u8);
    out.extend_from_slice(&hb.generation.to_le_bytes());
    out.extend_from_slice(&hb.seq.to_le_bytes());
    out.push(hb.mode.to_byte());
    out.push(0);
    out.extend_from_slice(&hb.held.to_le_bytes());
    out.extend_from_slice(&hb.failed.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(name);
    let tag = mac::sign(key.method, &key.key, &out);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Reads a little-endian integer at `at`; the caller has checked the length.
fn le<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = buf.get(at..at + N) {
        a.copy_from_slice(s);
    }
    a
}

/// Decodes and verifies a datagram against any key of `keys`.
pub fn decode(buf: &[u8], keys: &Authkeys) -> Result<Heartbeat, WireError> {
    let len = buf.len();
    if !(HEADER_BYTES..=MAX_MESSAGE_BYTES).contains(&len) {
        return Err(WireError::Size { len });
    }
    if buf[0..4] != MAGIC {
        return Err(WireError::Magic);
    }
    if buf[4] != VERSION {
        return Err(WireError::Version(buf[4]));
    }
    let theirs = method_of(buf[5]).ok_or(WireError::Method(buf[5]))?;
    let index = buf[6];
    let key = keys.key(index).ok_or(WireError::UnknownKey(index))?;
    if key.method != theirs {
        return Err(WireError::MethodMismatch {
            index,
            ours: key.method,
            theirs,
        });
    }
    let name_len = buf[7];
    let body_len = HEADER_BYTES + usize::from(name_len);
    if name_len == 0
        || usize::from(name_len) > MAX_NODE_NAME_BYTES
        || len != body_len + mac::tag_len(theirs)
    {
        return Err(WireError::Length { len, name_len });
    }
    let (body, tag) = buf.split_at(body_len);
    if !mac::verify(key.method, &key.key, body, tag) {
        return Err(WireError::BadSignature(index));
    }
    let mode = Mode::from_byte(body[24]).ok_or(WireError::Field("mode"))?;
    if body[25] != 0 || body[30..32] != [0, 0] {
        return Err(WireError::Field("reserved"));
    }
    let name = &body[HEADER_BYTES..];
    if !name_ok(name) {
        return Err(WireError::Field("node name"));
    }
    Ok(Heartbeat {
        from: String::from_utf8_lossy(name).into_owned(),
        generation: u64::from_le_bytes(le(body, 8)),
        seq: u64::from_le_bytes(le(body, 16)),
        mode,
        held: u16::from_le_bytes(le(body, 26)),
        failed: u16::from_le_bytes(le(body, 28)),
    })
}
