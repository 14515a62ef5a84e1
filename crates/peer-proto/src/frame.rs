//! Frames of the replication link: a fixed, hand-laid header followed by a
//! payload that is never copied to be framed.
//!
//! # Header layout (32 bytes, all integers little-endian)
//!
//! | offset | size | field            | meaning                                        |
//! |--------|------|------------------|------------------------------------------------|
//! | 0      | 4    | `magic`          | [`FRAME_MAGIC`]: "HDSK"                        |
//! | 4      | 2    | `kind`           | [`Kind`] code                                  |
//! | 6      | 2    | `flags`          | `FLAG_FUA`, `FLAG_LAST`, `FLAG_GRANTED`; else 0 |
//! | 8      | 8    | `seq`            | sender-assigned sequence number (acks echo it) |
//! | 16     | 8    | `offset_bytes`   | byte offset on the volume (data-path kinds)    |
//! | 24     | 4    | `payload_len`    | bytes following the header                     |
//! | 28     | 4    | `header_crc32`   | CRC-32 (IEEE) of bytes 0..28                   |
//!
//! The header CRC catches a desynchronised or corrupted stream before any
//! length in it is trusted; the payload is protected by TCP's checksum (a
//! `data-integrity-alg` digest would be a feature bit).
//!
//! # Control payloads (hand-laid, little-endian)
//!
//! Control messages are laid out by hand rather than by a serializer: they
//! are few and small, hand layout keeps the wire format defined by this file
//! (as for the on-disk metadata), and it avoids bincode (3.x is a tombstone,
//! 2.x is unmaintained). Each kind has an exact or a maximum payload length,
//! checked from the header before the payload is awaited, so a hostile
//! length never causes an allocation.
//!
//! * `Hello`: `protocol_version u32`, `features u64` (12 bytes).
//! * `AuthChallenge`: the challenge, [`MIN_CHALLENGE_BYTES`]..=[`MAX_CHALLENGE_BYTES`].
//! * `AuthResponse`: HMAC-SHA256 of the peer's challenge (32 bytes).
//! * `Params`: `size_bytes u64`, `current u64`, `bitmap u64`,
//!   `history0 u64`, `history1 u64`, `dirty_blocks u64`, `role u8`,
//!   `disk u8`, `flags u8` ([`PARAMS_CRASHED_PRIMARY`], [`PARAMS_DISCARD_MY_DATA`]) (51 bytes).
//! * `BitmapChunk`: bitmap bytes (bit `i` of byte `j` is block
//!   `offset_bytes + 8*j + i`, where `offset_bytes` holds the first block
//!   number); `FLAG_LAST` marks the final chunk.
//! * `BitmapRle`: the same range, run-length coded ([`crate::rle`]); it
//!   covers the blocks from `offset_bytes` (the first block) to the end of
//!   that bitmap page (32,768 blocks) or of the volume; `FLAG_LAST` as above.
//! * `SyncPause`: `paused u8` (0 or 1): the sender's `pause-sync` /
//!   `resume-sync` (1 byte).
//! * `Data`, `ResyncData`: the data (offset and length multiples of [`SECTOR_BYTES`]).
//! * `PromoteRequest`, `PromoteReply`: empty; the reply's `FLAG_GRANTED`
//!   says whether the peer agreed (two-phase promotion, so that two nodes
//!   never both become Primary while connected).
//! * `ResyncRequest`, `OutOfSync`, `InSync`: `len_bytes u32` (4 bytes).
//! * `CsumRequest`, `VerifyRequest` (digest frames): `len_bytes u32`,
//!   `alg u8` ([`DigestAlg`] code), then one digest per 4 KiB block of the
//!   range (`ceil(len_bytes / 4096) * alg.len()` bytes); the range is at
//!   most [`MAX_DIGEST_RANGE_BYTES`].
//! * `CsumReply`: `len_bytes u32` (4 bytes): every differing block of the
//!   `CsumRequest` with this `seq` was sent as `ResyncData` before it.
//! * `VerifyReply`: `len_bytes u32`, then a bitmap of the blocks whose
//!   digests differed (bit `i` of byte `j`: block `8*j + i` of the range).
//! * `VerifyStart`, `VerifyEnd`: empty.
//! * `FullSyncRequest`: `sender_is_target u8` (0 or 1).
//! * `FullSyncReply`: a UTF-8 reason (empty when granted), at most
//!   [`MAX_REASON_BYTES`]; `FLAG_GRANTED` says whether it was granted.
//! * `StateChange`: `role u8`, `disk u8`, then the four UUIDs (34 bytes).
//! * `Disconnect`: a UTF-8 reason, at most [`MAX_REASON_BYTES`].
//! * `WriteAck`, `NegAck`, `Flush`, `FlushAck`, `Ping`, `PingAck`: empty.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hadisk_payload::Payload;

use crate::digest::{blocks_in, DigestAlg, MAX_DIGEST_LEN};
use crate::state::{DiskState, Role, Uuids};
use crate::ProtoError;

/// "HDSK" in little-endian byte order: identifies a hadisk frame.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"HDSK");
/// Size of the fixed frame header.
pub const HEADER_LEN: usize = 32;
/// The replication unit: the dirty bitmap has one bit per block, and resync
/// ranges are multiples of it.
pub const BLOCK_BYTES: u64 = 4096;
/// Data-path offsets and lengths are multiples of this (the NBD layer's
/// minimum block size); the dirty bitmap marks the covering blocks.
pub const SECTOR_BYTES: u64 = 512;
/// Largest data payload: the NBD server's largest request (32 MiB), so one
/// client write is one frame; bounds the receive buffer per frame.
pub const MAX_DATA_BYTES: u32 = 32 * 1024 * 1024;
/// Largest bitmap chunk: 64 KiB covers 2 GiB of volume per frame while
/// keeping each frame small enough not to stall the data stream.
pub const MAX_BITMAP_CHUNK_BYTES: u32 = 64 * 1024;
/// Shortest accepted challenge: 256 bits of randomness.
pub const MIN_CHALLENGE_BYTES: u32 = 32;
/// Longest accepted challenge: anything longer adds nothing.
pub const MAX_CHALLENGE_BYTES: u32 = 64;
/// Longest disconnect reason: one log line.
pub const MAX_REASON_BYTES: u32 = 1024;
/// Length of an HMAC-SHA256 tag and of a SHA-256 block digest.
pub const DIGEST_BYTES: usize = 32;

/// Longest range of one digest frame (verify or csums request): 2,048
/// blocks, 64 KiB of SHA-256 digests — one frame stays small next to the
/// data stream while a request covers as much as a resync chunk.
pub const MAX_DIGEST_RANGE_BYTES: u32 = 8 * 1024 * 1024;
const MAX_DIGEST_BLOCKS: u32 = MAX_DIGEST_RANGE_BYTES / BLOCK_BYTES as u32;

/// Header flag: the write must be durable before it is acknowledged.
pub const FLAG_FUA: u16 = 1;
/// Header flag: the last chunk of a bitmap transfer.
pub const FLAG_LAST: u16 = 2;
/// Header flag: a `PromoteReply` that grants the promotion.
pub const FLAG_GRANTED: u16 = 4;
const KNOWN_FLAGS: u16 = FLAG_FUA | FLAG_LAST | FLAG_GRANTED;

/// `Params` flag: this node was Primary and did not shut down cleanly.
pub const PARAMS_CRASHED_PRIMARY: u8 = 1;
/// `Params` flag: the operator asked this node to lose a split brain.
pub const PARAMS_DISCARD_MY_DATA: u8 = 2;
const KNOWN_PARAMS_FLAGS: u8 = PARAMS_CRASHED_PRIMARY | PARAMS_DISCARD_MY_DATA;

const PARAMS_LEN: u32 = 51;
const STATE_CHANGE_LEN: u32 = 34;
const HELLO_LEN: u32 = 12;
const LEN_FIELD: u32 = 4;

/// The wire code of each message kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    Hello = 1,
    AuthChallenge = 2,
    AuthResponse = 3,
    Params = 4,
    BitmapChunk = 5,
    Data = 6,
    WriteAck = 7,
    NegAck = 8,
    Flush = 9,
    FlushAck = 10,
    ResyncRequest = 11,
    ResyncData = 12,
    CsumRequest = 13,
    OutOfSync = 14,
    Ping = 15,
    PingAck = 16,
    StateChange = 17,
    Disconnect = 18,
    InSync = 19,
    PromoteRequest = 20,
    PromoteReply = 21,
    CsumReply = 22,
    VerifyStart = 23,
    VerifyRequest = 24,
    VerifyReply = 25,
    VerifyEnd = 26,
    FullSyncRequest = 27,
    FullSyncReply = 28,
    // Codes from 30 on: kinds added by later features, away from the
    // range other features extend.
    SyncPause = 30,
    BitmapRle = 31,
}

/// How long a kind's payload may be.
enum PayloadRule {
    Exact(u32),
    Range(u32, u32),
    Blocks,
}

impl Kind {
    fn from_code(code: u16) -> Option<Kind> {
        use Kind::*;
        const ALL: [Kind; 30] = [
            Hello,
            AuthChallenge,
            AuthResponse,
            Params,
            BitmapChunk,
            Data,
            WriteAck,
            NegAck,
            Flush,
            FlushAck,
            ResyncRequest,
            ResyncData,
            CsumRequest,
            OutOfSync,
            Ping,
            PingAck,
            StateChange,
            Disconnect,
            InSync,
            PromoteRequest,
            PromoteReply,
            CsumReply,
            VerifyStart,
            VerifyRequest,
            VerifyReply,
            VerifyEnd,
            FullSyncRequest,
            FullSyncReply,
            SyncPause,
            BitmapRle,
        ];
        ALL.iter().copied().find(|k| *k as u16 == code)
    }

    fn payload_rule(self) -> PayloadRule {
        use Kind::*;
        use PayloadRule::*;
        match self {
            Hello => Exact(HELLO_LEN),
            AuthChallenge => Range(MIN_CHALLENGE_BYTES, MAX_CHALLENGE_BYTES),
            AuthResponse => Exact(DIGEST_BYTES as u32),
            Params => Exact(PARAMS_LEN),
            BitmapChunk | BitmapRle => Range(0, MAX_BITMAP_CHUNK_BYTES),
            SyncPause => Exact(1),
            Data | ResyncData => Blocks,
            ResyncRequest | OutOfSync | InSync | CsumReply => Exact(LEN_FIELD),
            CsumRequest | VerifyRequest => Range(
                LEN_FIELD + 1,
                LEN_FIELD + 1 + MAX_DIGEST_BLOCKS * MAX_DIGEST_LEN as u32,
            ),
            VerifyReply => Range(LEN_FIELD, LEN_FIELD + MAX_DIGEST_BLOCKS / 8),
            FullSyncRequest => Exact(1),
            FullSyncReply => Range(0, MAX_REASON_BYTES),
            StateChange => Exact(STATE_CHANGE_LEN),
            Disconnect => Range(0, MAX_REASON_BYTES),
            WriteAck | NegAck | Flush | FlushAck | Ping | PingAck | PromoteRequest
            | PromoteReply | VerifyStart | VerifyEnd => Exact(0),
        }
    }
}

/// What a node reports about itself after authentication (DRBD's
/// P_SIZES + P_UUIDS + P_STATE in one message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Usable size of this node's disk.
    pub size_bytes: u64,
    /// This node's generation UUIDs.
    pub uuids: Uuids,
    /// Blocks set in this node's dirty bitmap (the change count that
    /// `discard-least-changes` compares).
    pub dirty_blocks: u64,
    pub role: Role,
    pub disk: DiskState,
    /// This node was Primary and crashed (its AL extents are suspect).
    pub crashed_primary: bool,
    /// `connect --discard-my-data`: this node volunteers to lose a split brain.
    pub discard_my_data: bool,
}

/// One message of the replication protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message in each direction.
    Hello {
        protocol_version: u32,
        features: u64,
    },
    /// A random challenge the peer must answer with an HMAC.
    AuthChallenge {
        challenge: Bytes,
    },
    /// HMAC-SHA256(secret, peer's challenge).
    AuthResponse {
        mac: [u8; DIGEST_BYTES],
    },
    /// Sizes, UUIDs and states, sent once authenticated.
    Params(Params),
    /// Part of the dirty bitmap; `first_block` is the block of bit 0.
    BitmapChunk {
        first_block: u64,
        bits: Bytes,
        last: bool,
    },
    /// Part of the dirty bitmap, run-length coded ([`crate::rle`]): the
    /// blocks from `first_block` to the end of its bitmap page.
    BitmapRle {
        first_block: u64,
        runs: Bytes,
        last: bool,
    },
    /// The sender's resync pause flag (`pause-sync` / `resume-sync`).
    SyncPause {
        paused: bool,
    },
    /// An application write, mirrored (protocol C).
    Data {
        seq: u64,
        offset_bytes: u64,
        data: Payload,
        fua: bool,
    },
    /// The mirrored write `seq` (a `Data`) is on the peer's disk.
    WriteAck {
        seq: u64,
    },
    /// The mirrored write `seq` failed on the peer's disk (the sender marks
    /// its blocks out of sync).
    NegAck {
        seq: u64,
    },
    /// Make every write received before this durable, then `FlushAck`.
    Flush {
        seq: u64,
    },
    FlushAck {
        seq: u64,
    },
    /// Ask the peer to send the given range as `ResyncData`.
    ResyncRequest {
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
    },
    /// Resync payload for a range, answering `ResyncRequest { seq }`; the
    /// target confirms it with `InSync` once written (seqs of the two
    /// directions never mix: `WriteAck` only answers `Data`).
    ResyncData {
        seq: u64,
        offset_bytes: u64,
        data: Bytes,
    },
    /// Checksum-based resync (`csums-alg`, DRBD's P_CSUM_RS_REQUEST): the
    /// SyncTarget's digests of a range it needs, one per 4 KiB block. The
    /// source sends `ResyncData` for the blocks whose digests differ from
    /// its own, then `CsumReply` (DRBD's P_RS_IS_IN_SYNC for the rest).
    CsumRequest {
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        alg: DigestAlg,
        digests: Bytes,
    },
    /// The end of the answer to `CsumRequest { seq }`: the differing
    /// blocks were sent as `ResyncData` before this; the others are equal.
    CsumReply {
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
    },
    /// Online verify starts: the sender is VerifyS, the receiver VerifyT.
    VerifyStart,
    /// Online verify (DRBD's P_OV_REQUEST, with the digests): VerifyS's
    /// digests of a range; VerifyT digests its own and answers `VerifyReply`.
    VerifyRequest {
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        alg: DigestAlg,
        digests: Bytes,
    },
    /// VerifyT's answer (DRBD's P_OV_RESULT): `differ` has one bit per block
    /// of the range, set where the digests differed (both sides mark those
    /// blocks out of sync).
    VerifyReply {
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        differ: Bytes,
    },
    /// Online verify is over (finished or stopped by VerifyS).
    VerifyEnd,
    /// `invalidate` (`sender_is_target`) / `invalidate-remote`: asks the
    /// peer to take part in a full resync; answered by `FullSyncReply`.
    FullSyncRequest {
        seq: u64,
        sender_is_target: bool,
    },
    /// The answer to `FullSyncRequest { seq }`; when granted, the replier
    /// has already set every bit and changed its replication state.
    FullSyncReply {
        seq: u64,
        granted: bool,
        reason: String,
    },
    /// The range is identical on both sides: the answer to a `CsumRequest`
    /// that matched, and the target's confirmation of written `ResyncData`.
    InSync {
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
    },
    /// The range differs: mark it out of sync.
    OutOfSync {
        offset_bytes: u64,
        len_bytes: u32,
    },
    Ping {
        seq: u64,
    },
    PingAck {
        seq: u64,
    },
    /// A role/disk/UUID change (including "resync finished": the target
    /// takes the source's current UUID).
    StateChange {
        role: Role,
        disk: DiskState,
        uuids: Uuids,
    },
    /// The sender is closing the link, and why.
    Disconnect {
        reason: String,
    },
    /// The sender wants to become Primary; the peer must not be or become
    /// Primary meanwhile.
    PromoteRequest {
        seq: u64,
    },
    /// The answer to `PromoteRequest { seq }`.
    PromoteReply {
        seq: u64,
        granted: bool,
    },
}

/// An encoded frame: the header and the payload, to be written with a
/// vectored write (or, for a pipe payload, `splice`). `payload` shares the
/// caller's buffer or pipe (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    pub header: [u8; HEADER_LEN],
    pub payload: Payload,
}

impl EncodedFrame {
    /// Total bytes on the wire.
    pub fn len_bytes(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends header and payload to `dst` (copies, also out of a pipe; for
    /// small frames and tests).
    pub fn write_to(&self, dst: &mut BytesMut) -> std::io::Result<()> {
        let payload = self.payload.to_bytes()?;
        dst.extend_from_slice(&self.header);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

struct Head {
    kind: Kind,
    flags: u16,
    seq: u64,
    offset_bytes: u64,
}

impl Message {
    /// Encodes the message. Panics never; lengths the header cannot carry
    /// are rejected.
    pub fn encode(&self) -> Result<EncodedFrame, ProtoError> {
        let (head, bytes) = self.split();
        let payload = match self {
            Message::Data { data, .. } => data.clone(),
            _ => Payload::Bytes(bytes),
        };
        let rule_ok = match head.kind.payload_rule() {
            PayloadRule::Exact(n) => payload.len() == n as usize,
            PayloadRule::Range(lo, hi) => (lo as usize..=hi as usize).contains(&payload.len()),
            PayloadRule::Blocks => {
                payload.len() <= MAX_DATA_BYTES as usize
                    && (payload.len() as u64).is_multiple_of(SECTOR_BYTES)
            }
        };
        if !rule_ok {
            return Err(ProtoError::BadPayloadLength {
                kind: head.kind,
                len_bytes: payload.len() as u64,
            });
        }
        match self {
            Message::CsumRequest {
                len_bytes,
                alg,
                digests,
                ..
            }
            | Message::VerifyRequest {
                len_bytes,
                alg,
                digests,
                ..
            } => check_digests(head.kind, *len_bytes, alg.len(), digests.len())?,
            Message::VerifyReply {
                len_bytes, differ, ..
            } => check_differ(*len_bytes, differ.len())?,
            _ => {}
        }
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        header[4..6].copy_from_slice(&(head.kind as u16).to_le_bytes());
        header[6..8].copy_from_slice(&head.flags.to_le_bytes());
        header[8..16].copy_from_slice(&head.seq.to_le_bytes());
        header[16..24].copy_from_slice(&head.offset_bytes.to_le_bytes());
        header[24..28].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&header[0..28]);
        header[28..32].copy_from_slice(&crc.to_le_bytes());
        Ok(EncodedFrame { header, payload })
    }

    fn split(&self) -> (Head, Bytes) {
        let head = |kind, flags, seq, offset_bytes| Head {
            kind,
            flags,
            seq,
            offset_bytes,
        };
        match self {
            Message::Hello {
                protocol_version,
                features,
            } => {
                let mut b = BytesMut::with_capacity(HELLO_LEN as usize);
                b.put_u32_le(*protocol_version);
                b.put_u64_le(*features);
                (head(Kind::Hello, 0, 0, 0), b.freeze())
            }
            Message::AuthChallenge { challenge } => {
                (head(Kind::AuthChallenge, 0, 0, 0), challenge.clone())
            }
            Message::AuthResponse { mac } => (
                head(Kind::AuthResponse, 0, 0, 0),
                Bytes::copy_from_slice(mac),
            ),
            Message::Params(p) => (head(Kind::Params, 0, 0, 0), encode_params(p)),
            Message::BitmapChunk {
                first_block,
                bits,
                last,
            } => {
                let flags = if *last { FLAG_LAST } else { 0 };
                (
                    head(Kind::BitmapChunk, flags, 0, *first_block),
                    bits.clone(),
                )
            }
            Message::BitmapRle {
                first_block,
                runs,
                last,
            } => {
                let flags = if *last { FLAG_LAST } else { 0 };
                (head(Kind::BitmapRle, flags, 0, *first_block), runs.clone())
            }
            Message::SyncPause { paused } => (
                head(Kind::SyncPause, 0, 0, 0),
                Bytes::copy_from_slice(&[u8::from(*paused)]),
            ),
            Message::Data {
                seq,
                offset_bytes,
                data,
                fua,
            } => {
                let flags = if *fua { FLAG_FUA } else { 0 };
                // The payload may be a pipe: `encode` takes it from the message.
                let _ = data;
                (head(Kind::Data, flags, *seq, *offset_bytes), Bytes::new())
            }
            Message::WriteAck { seq } => (head(Kind::WriteAck, 0, *seq, 0), Bytes::new()),
            Message::NegAck { seq } => (head(Kind::NegAck, 0, *seq, 0), Bytes::new()),
            Message::Flush { seq } => (head(Kind::Flush, 0, *seq, 0), Bytes::new()),
            Message::FlushAck { seq } => (head(Kind::FlushAck, 0, *seq, 0), Bytes::new()),
            Message::Ping { seq } => (head(Kind::Ping, 0, *seq, 0), Bytes::new()),
            Message::PromoteRequest { seq } => {
                (head(Kind::PromoteRequest, 0, *seq, 0), Bytes::new())
            }
            Message::PromoteReply { seq, granted } => {
                let flags = if *granted { FLAG_GRANTED } else { 0 };
                (head(Kind::PromoteReply, flags, *seq, 0), Bytes::new())
            }
            Message::PingAck { seq } => (head(Kind::PingAck, 0, *seq, 0), Bytes::new()),
            Message::ResyncRequest {
                seq,
                offset_bytes,
                len_bytes,
            } => (
                head(Kind::ResyncRequest, 0, *seq, *offset_bytes),
                len_payload(*len_bytes),
            ),
            Message::InSync {
                seq,
                offset_bytes,
                len_bytes,
            } => (
                head(Kind::InSync, 0, *seq, *offset_bytes),
                len_payload(*len_bytes),
            ),
            Message::OutOfSync {
                offset_bytes,
                len_bytes,
            } => (
                head(Kind::OutOfSync, 0, 0, *offset_bytes),
                len_payload(*len_bytes),
            ),
            Message::ResyncData {
                seq,
                offset_bytes,
                data,
            } => (head(Kind::ResyncData, 0, *seq, *offset_bytes), data.clone()),
            Message::CsumRequest {
                seq,
                offset_bytes,
                len_bytes,
                alg,
                digests,
            } => (
                head(Kind::CsumRequest, 0, *seq, *offset_bytes),
                digest_payload(*len_bytes, *alg, digests),
            ),
            Message::VerifyRequest {
                seq,
                offset_bytes,
                len_bytes,
                alg,
                digests,
            } => (
                head(Kind::VerifyRequest, 0, *seq, *offset_bytes),
                digest_payload(*len_bytes, *alg, digests),
            ),
            Message::CsumReply {
                seq,
                offset_bytes,
                len_bytes,
            } => (
                head(Kind::CsumReply, 0, *seq, *offset_bytes),
                len_payload(*len_bytes),
            ),
            Message::VerifyReply {
                seq,
                offset_bytes,
                len_bytes,
                differ,
            } => {
                let mut b = BytesMut::with_capacity(LEN_FIELD as usize + differ.len());
                b.put_u32_le(*len_bytes);
                b.put_slice(differ);
                (head(Kind::VerifyReply, 0, *seq, *offset_bytes), b.freeze())
            }
            Message::VerifyStart => (head(Kind::VerifyStart, 0, 0, 0), Bytes::new()),
            Message::VerifyEnd => (head(Kind::VerifyEnd, 0, 0, 0), Bytes::new()),
            Message::FullSyncRequest {
                seq,
                sender_is_target,
            } => (
                head(Kind::FullSyncRequest, 0, *seq, 0),
                Bytes::copy_from_slice(&[u8::from(*sender_is_target)]),
            ),
            Message::FullSyncReply {
                seq,
                granted,
                reason,
            } => {
                let flags = if *granted { FLAG_GRANTED } else { 0 };
                (
                    head(Kind::FullSyncReply, flags, *seq, 0),
                    reason_payload(reason),
                )
            }
            Message::StateChange { role, disk, uuids } => {
                let mut b = BytesMut::with_capacity(STATE_CHANGE_LEN as usize);
                b.put_u8(role.to_wire());
                b.put_u8(disk.to_wire());
                put_uuids(&mut b, uuids);
                (head(Kind::StateChange, 0, 0, 0), b.freeze())
            }
            Message::Disconnect { reason } => {
                (head(Kind::Disconnect, 0, 0, 0), reason_payload(reason))
            }
        }
    }
}

/// A reason truncated on a char boundary, so the receiver's limit holds.
fn reason_payload(reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_REASON_BYTES as usize);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Bytes::copy_from_slice(&reason.as_bytes()[..end])
}

fn digest_payload(len_bytes: u32, alg: DigestAlg, digests: &Bytes) -> Bytes {
    let mut b = BytesMut::with_capacity(LEN_FIELD as usize + 1 + digests.len());
    b.put_u32_le(len_bytes);
    b.put_u8(alg.to_wire());
    b.put_slice(digests);
    b.freeze()
}

/// The range of a digest frame holds `ceil(len / 4096)` digests, at most
/// [`MAX_DIGEST_BLOCKS`] of them.
fn check_digests(
    kind: Kind,
    len_bytes: u32,
    digest_len: usize,
    got: usize,
) -> Result<(), ProtoError> {
    let blocks = blocks_in(u64::from(len_bytes));
    if len_bytes == 0
        || len_bytes > MAX_DIGEST_RANGE_BYTES
        || got as u64 != blocks * digest_len as u64
    {
        return Err(ProtoError::BadPayloadLength {
            kind,
            len_bytes: got as u64,
        });
    }
    Ok(())
}

/// A verify reply's bitmap has one bit per block of the range.
fn check_differ(len_bytes: u32, got: usize) -> Result<(), ProtoError> {
    let blocks = blocks_in(u64::from(len_bytes));
    if len_bytes == 0 || len_bytes > MAX_DIGEST_RANGE_BYTES || got as u64 != blocks.div_ceil(8) {
        return Err(ProtoError::BadPayloadLength {
            kind: Kind::VerifyReply,
            len_bytes: got as u64,
        });
    }
    Ok(())
}

fn len_payload(len_bytes: u32) -> Bytes {
    Bytes::copy_from_slice(&len_bytes.to_le_bytes())
}

fn put_uuids(b: &mut BytesMut, u: &Uuids) {
    b.put_u64_le(u.current);
    b.put_u64_le(u.bitmap);
    b.put_u64_le(u.history[0]);
    b.put_u64_le(u.history[1]);
}

fn get_uuids(b: &mut Bytes) -> Uuids {
    Uuids {
        current: b.get_u64_le(),
        bitmap: b.get_u64_le(),
        history: [b.get_u64_le(), b.get_u64_le()],
    }
}

fn encode_params(p: &Params) -> Bytes {
    let mut b = BytesMut::with_capacity(PARAMS_LEN as usize);
    b.put_u64_le(p.size_bytes);
    put_uuids(&mut b, &p.uuids);
    b.put_u64_le(p.dirty_blocks);
    b.put_u8(p.role.to_wire());
    b.put_u8(p.disk.to_wire());
    let mut flags = 0;
    if p.crashed_primary {
        flags |= PARAMS_CRASHED_PRIMARY;
    }
    if p.discard_my_data {
        flags |= PARAMS_DISCARD_MY_DATA;
    }
    b.put_u8(flags);
    b.freeze()
}

fn role(code: u8) -> Result<Role, ProtoError> {
    Role::from_wire(code).ok_or(ProtoError::UnknownRole { code })
}

fn disk(code: u8) -> Result<DiskState, ProtoError> {
    DiskState::from_wire(code).ok_or(ProtoError::UnknownDiskState { code })
}

/// Parses and validates a header. Every length is checked here, before the
/// payload is awaited.
fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(Head, u32), ProtoError> {
    let le32 = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let le16 = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
    let le64 = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let magic = le32(0);
    if magic != FRAME_MAGIC {
        return Err(ProtoError::BadMagic { found: magic });
    }
    let crc = crc32fast::hash(&h[0..28]);
    if le32(28) != crc {
        return Err(ProtoError::HeaderChecksum {
            stored: le32(28),
            computed: crc,
        });
    }
    let code = le16(4);
    let kind = Kind::from_code(code).ok_or(ProtoError::UnknownKind { code })?;
    let flags = le16(6);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(ProtoError::UnknownFlags { kind, flags });
    }
    let len = le32(24);
    let ok = match kind.payload_rule() {
        PayloadRule::Exact(n) => len == n,
        PayloadRule::Range(lo, hi) => (lo..=hi).contains(&len),
        PayloadRule::Blocks => len <= MAX_DATA_BYTES && u64::from(len).is_multiple_of(SECTOR_BYTES),
    };
    if !ok {
        return Err(ProtoError::BadPayloadLength {
            kind,
            len_bytes: u64::from(len),
        });
    }
    let offset_bytes = le64(16);
    let head = Head {
        kind,
        flags,
        seq: le64(8),
        offset_bytes,
    };
    Ok((head, len))
}

fn check_range(kind: Kind, offset_bytes: u64, len_bytes: u64) -> Result<(), ProtoError> {
    let aligned =
        offset_bytes.is_multiple_of(SECTOR_BYTES) && len_bytes.is_multiple_of(SECTOR_BYTES);
    if !aligned || offset_bytes.checked_add(len_bytes).is_none() {
        return Err(ProtoError::BadRange {
            kind,
            offset_bytes,
            len_bytes,
        });
    }
    Ok(())
}

fn parse_body(head: Head, mut p: Bytes) -> Result<Message, ProtoError> {
    let Head {
        kind,
        flags,
        seq,
        offset_bytes,
    } = head;
    Ok(match kind {
        Kind::Hello => Message::Hello {
            protocol_version: p.get_u32_le(),
            features: p.get_u64_le(),
        },
        Kind::AuthChallenge => Message::AuthChallenge { challenge: p },
        Kind::AuthResponse => {
            let mut mac = [0u8; DIGEST_BYTES];
            mac.copy_from_slice(&p);
            Message::AuthResponse { mac }
        }
        Kind::Params => {
            let size_bytes = p.get_u64_le();
            let uuids = get_uuids(&mut p);
            let dirty_blocks = p.get_u64_le();
            let role = role(p.get_u8())?;
            let disk = disk(p.get_u8())?;
            let f = p.get_u8();
            if f & !KNOWN_PARAMS_FLAGS != 0 {
                return Err(ProtoError::UnknownFlags {
                    kind,
                    flags: u16::from(f),
                });
            }
            Message::Params(Params {
                size_bytes,
                uuids,
                dirty_blocks,
                role,
                disk,
                crashed_primary: f & PARAMS_CRASHED_PRIMARY != 0,
                discard_my_data: f & PARAMS_DISCARD_MY_DATA != 0,
            })
        }
        Kind::BitmapChunk => Message::BitmapChunk {
            first_block: offset_bytes,
            bits: p,
            last: flags & FLAG_LAST != 0,
        },
        Kind::BitmapRle => Message::BitmapRle {
            first_block: offset_bytes,
            runs: p,
            last: flags & FLAG_LAST != 0,
        },
        Kind::SyncPause => match p.get_u8() {
            0 => Message::SyncPause { paused: false },
            1 => Message::SyncPause { paused: true },
            code => {
                return Err(ProtoError::UnknownFlags {
                    kind,
                    flags: u16::from(code),
                })
            }
        },
        Kind::Data => {
            check_range(kind, offset_bytes, p.len() as u64)?;
            Message::Data {
                seq,
                offset_bytes,
                data: Payload::Bytes(p),
                fua: flags & FLAG_FUA != 0,
            }
        }
        Kind::ResyncData => {
            check_range(kind, offset_bytes, p.len() as u64)?;
            Message::ResyncData {
                seq,
                offset_bytes,
                data: p,
            }
        }
        Kind::WriteAck => Message::WriteAck { seq },
        Kind::NegAck => Message::NegAck { seq },
        Kind::Flush => Message::Flush { seq },
        Kind::FlushAck => Message::FlushAck { seq },
        Kind::Ping => Message::Ping { seq },
        Kind::PromoteRequest => Message::PromoteRequest { seq },
        Kind::PromoteReply => Message::PromoteReply {
            seq,
            granted: flags & FLAG_GRANTED != 0,
        },
        Kind::PingAck => Message::PingAck { seq },
        Kind::CsumRequest | Kind::VerifyRequest => {
            let len_bytes = p.get_u32_le();
            check_range(kind, offset_bytes, u64::from(len_bytes))?;
            let code = p.get_u8();
            let alg = DigestAlg::from_wire(code).ok_or(ProtoError::UnknownDigestAlg { code })?;
            check_digests(kind, len_bytes, alg.len(), p.len())?;
            if kind == Kind::CsumRequest {
                Message::CsumRequest {
                    seq,
                    offset_bytes,
                    len_bytes,
                    alg,
                    digests: p,
                }
            } else {
                Message::VerifyRequest {
                    seq,
                    offset_bytes,
                    len_bytes,
                    alg,
                    digests: p,
                }
            }
        }
        Kind::VerifyReply => {
            let len_bytes = p.get_u32_le();
            check_range(kind, offset_bytes, u64::from(len_bytes))?;
            check_differ(len_bytes, p.len())?;
            Message::VerifyReply {
                seq,
                offset_bytes,
                len_bytes,
                differ: p,
            }
        }
        Kind::VerifyStart => Message::VerifyStart,
        Kind::VerifyEnd => Message::VerifyEnd,
        Kind::FullSyncRequest => match p.get_u8() {
            0 => Message::FullSyncRequest {
                seq,
                sender_is_target: false,
            },
            1 => Message::FullSyncRequest {
                seq,
                sender_is_target: true,
            },
            _ => return Err(ProtoError::BadPayloadLength { kind, len_bytes: 1 }),
        },
        Kind::FullSyncReply => Message::FullSyncReply {
            seq,
            granted: flags & FLAG_GRANTED != 0,
            reason: String::from_utf8(p.to_vec()).map_err(|_| ProtoError::ReasonNotUtf8)?,
        },
        Kind::ResyncRequest | Kind::InSync | Kind::OutOfSync | Kind::CsumReply => {
            let len_bytes = p.get_u32_le();
            check_range(kind, offset_bytes, u64::from(len_bytes))?;
            match kind {
                Kind::ResyncRequest => Message::ResyncRequest {
                    seq,
                    offset_bytes,
                    len_bytes,
                },
                Kind::InSync => Message::InSync {
                    seq,
                    offset_bytes,
                    len_bytes,
                },
                Kind::OutOfSync => Message::OutOfSync {
                    offset_bytes,
                    len_bytes,
                },
                _ => Message::CsumReply {
                    seq,
                    offset_bytes,
                    len_bytes,
                },
            }
        }
        Kind::StateChange => {
            let role = role(p.get_u8())?;
            let disk = disk(p.get_u8())?;
            Message::StateChange {
                role,
                disk,
                uuids: get_uuids(&mut p),
            }
        }
        Kind::Disconnect => {
            let reason = String::from_utf8(p.to_vec()).map_err(|_| ProtoError::ReasonNotUtf8)?;
            Message::Disconnect { reason }
        }
    })
}

/// Decodes one frame from the front of `buf` ("check, then parse").
///
/// Returns `Ok(None)` while the frame is incomplete (not an error: read more
/// bytes and call again); `buf` is untouched then except that capacity for
/// the rest of a validated frame may be reserved. On success the frame's
/// bytes are split off `buf` without copying the payload. Any error means
/// the stream is unusable: disconnect, logging the error.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&buf[..HEADER_LEN]);
    let (head, len) = parse_header(&h)?;
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(HEADER_LEN);
    parse_body(head, frame).map(Some)
}

/// A streaming decoder: feed bytes as they arrive, take frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The receive buffer, for reading into directly (`read_buf`) to avoid
    /// the copy `feed` makes.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtoError> {
        decode(&mut self.buf)
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// When the buffer starts with the header of a `Data` frame of at least
    /// `min_payload_bytes` whose payload has not all arrived, takes the
    /// header and the part of the payload already buffered: the caller
    /// receives the rest itself (e.g. `splice`d into a pipe, never copied
    /// through memory) and completes the message with
    /// [`DataHead::into_message`]. The header is validated as [`decode`]
    /// validates it.
    pub fn take_data_head(
        &mut self,
        min_payload_bytes: usize,
    ) -> Result<Option<DataHead>, ProtoError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&self.buf[..HEADER_LEN]);
        let (head, len) = parse_header(&h)?;
        let len_bytes = len as usize;
        if head.kind != Kind::Data
            || len_bytes < min_payload_bytes
            || self.buf.len() >= HEADER_LEN + len_bytes
        {
            return Ok(None);
        }
        check_range(head.kind, head.offset_bytes, u64::from(len))?;
        self.buf.advance(HEADER_LEN);
        let prefix = self.buf.split().freeze();
        Ok(Some(DataHead {
            seq: head.seq,
            offset_bytes: head.offset_bytes,
            fua: head.flags & FLAG_FUA != 0,
            len_bytes,
            prefix,
        }))
    }
}

/// A `Data` frame whose payload the receiver takes in itself (see
/// [`Decoder::take_data_head`]).
#[derive(Debug)]
pub struct DataHead {
    pub seq: u64,
    pub offset_bytes: u64,
    pub fua: bool,
    /// The payload's length.
    pub len_bytes: usize,
    /// The start of the payload, received with the header.
    pub prefix: Bytes,
}

impl DataHead {
    /// The message, with its whole payload (`prefix` included).
    pub fn into_message(self, data: Payload) -> Result<Message, ProtoError> {
        if data.len() != self.len_bytes {
            return Err(ProtoError::BadPayloadLength {
                kind: Kind::Data,
                len_bytes: data.len() as u64,
            });
        }
        Ok(Message::Data {
            seq: self.seq,
            offset_bytes: self.offset_bytes,
            data,
            fua: self.fua,
        })
    }
}
