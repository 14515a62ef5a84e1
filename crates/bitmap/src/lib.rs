//! hadisk's in-memory dirty bitmap and activity-log extent set. Pure: no
//! I/O, no clock, no randomness.
//!
//! - [`DirtyBitmap`]: one bit per [`BLOCK_BYTES`] block of the usable
//!   device, set when the peer may hold different data for that block. Its
//!   byte image (see [`DirtyBitmap::page_bytes`]) is what the metadata crate
//!   stores on disk.
//! - [`ActivityLog`]: the set of "hot" [`AL_EXTENT_BYTES`] extents that
//!   may have writes in flight, with LRU eviction; a crashed Primary resyncs
//!   exactly those extents.

// The byte image is on-disk format: explicit little-endian only.
#![deny(clippy::host_endian_bytes)]

mod al;
mod dirty;

pub use al::{ActivityLog, AlUpdate, SlotChange};
pub use dirty::{DirtyBitmap, DirtyRuns};

/// Granularity of the dirty bitmap: one bit per 4 KiB block (DRBD's).
pub const BLOCK_BYTES: u64 = 4096;

/// Bytes of bitmap per on-disk page; one page covers 32768 blocks (128 MiB).
pub const BITMAP_PAGE_BYTES: usize = 4096;

/// Blocks covered by one bitmap page.
pub const BLOCKS_PER_PAGE: u64 = BITMAP_PAGE_BYTES as u64 * 8;

/// Largest device the bitmap covers: 256 TiB, i.e. an 8 GiB in-memory
/// bitmap. A limit so that a size read from a damaged disk or a peer cannot
/// make us allocate without bound.
pub const MAX_DEVICE_BYTES: u64 = 256 << 40;

/// Size of one activity-log extent (DRBD's AL_EXTENT_SIZE): 4 MiB.
pub const AL_EXTENT_BYTES: u64 = 4 << 20;

/// Fewest activity-log extents accepted (DRBD's minimum).
pub const AL_EXTENTS_MIN: u32 = 7;

/// Most activity-log extents accepted (DRBD's maximum).
pub const AL_EXTENTS_MAX: u32 = 65534;

/// `al-extents` when the resource file does not set it (DRBD's default).
pub const AL_EXTENTS_DEFAULT: u32 = 1237;

/// Errors of the bitmap and the activity log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitmapError {
    /// A device larger than [`MAX_DEVICE_BYTES`].
    #[error(
        "device of {size_bytes} bytes exceeds the largest supported size of {max_bytes} bytes"
    )]
    DeviceTooLarge { size_bytes: u64, max_bytes: u64 },
    /// A block range outside the bitmap (or reversed).
    #[error("block range {start}..{end} is outside the bitmap of {blocks} blocks")]
    BlockRangeOutOfBounds { start: u64, end: u64, blocks: u64 },
    /// A byte range outside the device.
    #[error("byte range of {len_bytes} bytes at offset {offset_bytes} is outside the device of {size_bytes} bytes")]
    ByteRangeOutOfBounds {
        offset_bytes: u64,
        len_bytes: u64,
        size_bytes: u64,
    },
    /// Merging bitmaps of different devices.
    #[error("cannot merge a bitmap of {other_blocks} blocks into one of {blocks} blocks")]
    SizeMismatch { blocks: u64, other_blocks: u64 },
    /// On-disk bitmap bytes of the wrong length.
    #[error("bitmap image has {actual} bytes, expected {expected} for {blocks} blocks")]
    ImageLength {
        actual: usize,
        expected: usize,
        blocks: u64,
    },
    /// On-disk bitmap bytes with bits set past the last block.
    #[error("bitmap image has bits set past its last block ({blocks} blocks)")]
    TrailingBits { blocks: u64 },
    /// A bitmap page index past the end.
    #[error("bitmap page {page} does not exist (the bitmap has {pages} pages)")]
    PageOutOfBounds { page: u64, pages: u64 },
    /// An `al-extents` value outside DRBD's range.
    #[error("al-extents {value} is outside {min}..={max}")]
    AlExtentsOutOfRange { value: u32, min: u32, max: u32 },
    /// An extent number that does not fit the on-disk u32 field.
    #[error("activity-log extent {extent} is too large (the on-disk field is 32 bits)")]
    ExtentTooLarge { extent: u64 },
    /// Every slot holds an extent with I/O in flight: the caller must wait
    /// for some to finish.
    #[error("activity log is full: {needed} new extents needed, {evictable} slots free or idle")]
    AlBusy { needed: u32, evictable: u32 },
    /// A recovered slot table of the wrong size.
    #[error("recovered activity log has {slots} slots, expected {capacity}")]
    AlSlotCount { slots: usize, capacity: u32 },
    /// A recovered slot table naming one extent twice.
    #[error(
        "recovered activity log names extent {extent} in slots {first_slot} and {second_slot}"
    )]
    AlDuplicateExtent {
        extent: u32,
        first_slot: u32,
        second_slot: u32,
    },
    /// `end_io` on an extent with no I/O in flight (a caller bug).
    #[error("end of I/O on extent {extent}, which has no I/O in flight")]
    AlNotInUse { extent: u32 },
}
