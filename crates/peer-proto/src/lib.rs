//! hadisk's replication wire protocol, sans-IO (DESIGN.md §5).
//!
//! * [`handshake`]: version/feature negotiation and the HMAC
//!   challenge-response (both directions) when a `shared-secret` is set.
//! * [`frame`]: the fixed 32-byte little-endian frame header, the
//!   [`Message`]s, their encoder (payloads shared, never copied) and a
//!   streaming decoder that checks every length before waiting for or
//!   allocating a payload.
//! * [`digest`]: per-block digests of `verify-alg` / `csums-alg`.
//! * [`state`]: roles, disk states and generation UUIDs with DRBD's names.
//!
//! After the handshake each side sends `Params` (sizes, UUIDs, role, disk
//! state), then its dirty bitmap as `BitmapChunk`s or, where shorter,
//! run-length coded `BitmapRle`s ([`rle`]) (the last one flagged);
//! what follows is driven by `hadisk-core`.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers: the
//! caller supplies challenges. Any decode error makes the stream unusable;
//! the daemon sends `Disconnect { reason }` with the error's text and closes.
#![deny(clippy::host_endian_bytes)]

pub mod digest;
pub mod frame;
pub mod handshake;
pub mod rle;
pub mod state;

pub use digest::{DigestAlg, UnknownDigest};
pub use frame::{decode, DataHead, Decoder, EncodedFrame, Kind, Message, Params};
pub use hadisk_payload::Payload;
pub use handshake::{Handshake, HandshakeConfig, HmacAlg, Negotiated, Step};
pub use state::{DiskState, Role, Uuids, UUID_JUST_CREATED};

/// Everything that can go wrong on the replication link. The `Display` text
/// is what the daemon logs and sends as the disconnect reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The stream is not a hadisk peer (or lost frame alignment).
    #[error(
        "bad frame magic {found:#010x}: the peer is not a hadisk node or the stream is corrupt"
    )]
    BadMagic { found: u32 },
    #[error("frame header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("unknown message kind {code}")]
    UnknownKind { code: u16 },
    #[error("unknown flags {flags:#06x} on a {kind:?} message")]
    UnknownFlags { kind: Kind, flags: u16 },
    #[error("{kind:?} message with an invalid payload length of {len_bytes} bytes")]
    BadPayloadLength { kind: Kind, len_bytes: u64 },
    #[error("{kind:?} message with an unaligned or overflowing range: offset {offset_bytes}, length {len_bytes}")]
    BadRange {
        kind: Kind,
        offset_bytes: u64,
        len_bytes: u64,
    },
    #[error("unknown digest algorithm code {code}")]
    UnknownDigestAlg { code: u8 },
    #[error("unknown role code {code}")]
    UnknownRole { code: u8 },
    #[error("unknown disk state code {code}")]
    UnknownDiskState { code: u8 },
    #[error("disconnect reason is not valid UTF-8")]
    ReasonNotUtf8,
    #[error("protocol version mismatch: this node speaks {local}, the peer {peer}")]
    VersionMismatch { local: u32, peer: u32 },
    #[error("{}", if *local_has_secret {
        "shared-secret is configured here but not on the peer: configure the same shared-secret on both nodes"
    } else {
        "shared-secret is configured on the peer but not here: configure the same shared-secret on both nodes"
    })]
    AuthConfigMismatch { local_has_secret: bool },
    #[error("authentication of peer {peer} failed: the shared-secret differs between the nodes")]
    AuthFailed { peer: String },
    #[error("the peer sent back our own challenge (reflection attempt); refusing")]
    ReflectedChallenge,
    #[error("challenge of {len_bytes} bytes; it must be 32 to 64 random bytes")]
    BadChallengeLength { len_bytes: u32 },
    #[error("shared-secret is empty")]
    EmptySecret,
    #[error("cram-hmac-alg {name} is not supported: use cram-hmac-alg sha256 on both nodes")]
    UnsupportedHmacAlg { name: String },
    #[error("unexpected {got} during {during}")]
    UnexpectedMessage { during: &'static str, got: String },
    #[error("bad run-length coded bitmap chunk: {reason}")]
    BadBitmapRle { reason: String },
    #[error("the peer disconnected: {reason}")]
    PeerDisconnected { reason: String },
}

/// A message's kind name, for error texts and logs (no payload dumps).
pub fn frame_kind_name(msg: &Message) -> &'static str {
    match msg {
        Message::Hello { .. } => "Hello",
        Message::AuthChallenge { .. } => "AuthChallenge",
        Message::AuthResponse { .. } => "AuthResponse",
        Message::Params(_) => "Params",
        Message::BitmapChunk { .. } => "BitmapChunk",
        Message::BitmapRle { .. } => "BitmapRle",
        Message::SyncPause { .. } => "SyncPause",
        Message::Data { .. } => "Data",
        Message::WriteAck { .. } => "WriteAck",
        Message::NegAck { .. } => "NegAck",
        Message::Flush { .. } => "Flush",
        Message::FlushAck { .. } => "FlushAck",
        Message::ResyncRequest { .. } => "ResyncRequest",
        Message::ResyncData { .. } => "ResyncData",
        Message::CsumRequest { .. } => "CsumRequest",
        Message::InSync { .. } => "InSync",
        Message::OutOfSync { .. } => "OutOfSync",
        Message::Ping { .. } => "Ping",
        Message::PingAck { .. } => "PingAck",
        Message::StateChange { .. } => "StateChange",
        Message::Disconnect { .. } => "Disconnect",
        Message::PromoteRequest { .. } => "PromoteRequest",
        Message::PromoteReply { .. } => "PromoteReply",
        Message::CsumReply { .. } => "CsumReply",
        Message::VerifyStart => "VerifyStart",
        Message::VerifyRequest { .. } => "VerifyRequest",
        Message::VerifyReply { .. } => "VerifyReply",
        Message::VerifyEnd => "VerifyEnd",
        Message::FullSyncRequest { .. } => "FullSyncRequest",
        Message::FullSyncReply { .. } => "FullSyncReply",
    }
}
