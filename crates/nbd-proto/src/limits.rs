//! hadisk's limits on what a client may make the server buffer or do.

/// Largest option payload accepted during negotiation. The largest legitimate
/// option is INFO/GO: a name of at most 4096 bytes (the spec's string limit),
/// 6 bytes of lengths and a few 2-byte info requests. Anything above is refused
/// before a byte of it is buffered, so a client declaring 100 MB costs nothing.
pub const MAX_OPTION_DATA_BYTES: u32 = 4096 + 6 + 2 * 64;

/// Longest export name or description, the spec's limit for strings.
pub const MAX_STRING_BYTES: usize = 4096;

/// Largest READ or WRITE payload (32 MiB): the spec's "SHOULD NOT be considered
/// a denial of service" size, and the maximum advertised in NBD_INFO_BLOCK_SIZE.
/// A WRITE declaring more is a protocol error (its payload is not buffered).
pub const MAX_PAYLOAD_BYTES: u32 = 32 * 1024 * 1024;

/// Minimum block size advertised: byte-granular access works on a file or a
/// block device through the page cache.
pub const MIN_BLOCK_BYTES: u32 = 1;

/// Preferred block size advertised: the page size, below which writes cost a
/// read-modify-write in the kernel.
pub const PREFERRED_BLOCK_BYTES: u32 = 4096;
