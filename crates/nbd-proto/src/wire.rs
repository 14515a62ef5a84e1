//! Wire constants of the NBD protocol (NetworkBlockDevice/nbd `doc/proto.md`).
//!
//! Every multi-byte integer on the NBD wire is big-endian ("network byte
//! order"); the codecs in this crate use `to_be_bytes`/`from_be_bytes` only.
//! The values below are the protocol's, not hadisk's choices; hadisk's own
//! limits live in [`crate::limits`].

/// `"NBDMAGIC"`: first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `"IHAVEOPT"`: newstyle greeting and the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Server handshake flag: fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Server handshake flag: may omit the 124 zero bytes after EXPORT_NAME.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Option codes.
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option code: end negotiation without entering transmission.
pub const OPT_ABORT: u32 = 2;
/// Option code: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option code: upgrade to TLS (not supported by hadisk).
pub const OPT_STARTTLS: u32 = 5;
/// Option code: describe one export.
pub const OPT_INFO: u32 = 6;
/// Option code: describe one export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option code: structured replies (declined by hadisk, see `handshake`).
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option reply: success / end of a list.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a LIST.
pub const REP_SERVER: u32 = 2;
/// Option reply: one information item of INFO/GO.
pub const REP_INFO: u32 = 3;
/// Option error: option unknown to this server.
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
/// Option error: forbidden by policy.
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
/// Option error: syntactically or semantically invalid.
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
/// Option error: the export does not exist (or is unavailable).
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
/// Option error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;
/// Option error: the option is too large to process.
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information item: size and transmission flags (mandatory for INFO/GO).
pub const INFO_EXPORT: u16 = 0;
/// Information item: canonical export name.
pub const INFO_NAME: u16 = 1;
/// Information item: human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information item: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flag: the other flags are meaningful.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: FLUSH is supported.
pub const TFLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: the FUA command flag is supported.
pub const TFLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: TRIM is supported.
pub const TFLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: WRITE_ZEROES is supported.
pub const TFLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: a FLUSH on one connection covers writes completed on all.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Request magic.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Simple reply magic.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (payload follows the header).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect (no reply).
pub const CMD_DISC: u16 = 2;
/// Command: flush.
pub const CMD_FLUSH: u16 = 3;
/// Command: trim (discard).
pub const CMD_TRIM: u16 = 4;
/// Command: write zeroes.
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flag: force unit access (durable before the reply).
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (WRITE_ZEROES): do not punch a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Size of a request header on the wire.
pub const REQUEST_HEADER_BYTES: usize = 28;
/// Size of a simple reply header on the wire.
pub const SIMPLE_REPLY_HEADER_BYTES: usize = 16;
/// Size of the server's initial greeting.
pub const GREETING_BYTES: usize = 18;
/// Size of an option request header (IHAVEOPT, option, length).
pub const OPTION_HEADER_BYTES: usize = 16;
/// Size of an option reply header (magic, option, type, length).
pub const OPTION_REPLY_HEADER_BYTES: usize = 20;
/// Zero padding after an EXPORT_NAME reply unless NO_ZEROES was negotiated.
pub const EXPORT_NAME_ZEROES_BYTES: usize = 124;
