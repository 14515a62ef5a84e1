//! hadisk's internal metadata ("meta-disk internal"), kept at the end of the
//! backing disk. `FORMAT.md` in this crate draws every byte; this crate is
//! the format's definition.
//!
//! Layers:
//! - pure codecs: [`layout`] (where everything is), [`superblock`] (two
//!   checksummed slots, flags, generation UUIDs), [`al`] (activity-log
//!   transactions and their recovery), [`fsprobe`] (foreign filesystem
//!   detection) — bytes in, typed values or a specific error out, never a
//!   panic;
//! - [`store`]: the thin I/O layer over `hadisk_storage::BlockDevice`
//!   (create, load, store the superblock, write AL transactions, bitmap
//!   pages), which orders writes and syncs so that a crash at any point
//!   leaves either the old or the new state;
//! - [`dump`]: the `dump-md` view (JSON and human).
//!
//! Invariants: every multi-byte integer is little-endian and laid out by
//! hand; every decoder checks length, magic, version and checksum, then the
//! geometry, before any arithmetic on decoded values.

#![deny(clippy::host_endian_bytes)]

pub mod al;
pub mod dump;
pub mod fsprobe;
pub mod layout;
pub mod store;
pub mod superblock;

mod codec;

use std::fmt;

pub use al::{AlRecovery, AlTransaction};
pub use dump::{node_name_hash, MetadataDump};
pub use fsprobe::{FilesystemInfo, FilesystemKind};
pub use layout::Layout;
pub use store::{detect_filesystem, detect_metadata, Metadata};
pub use superblock::{Flags, Superblock, Uuids, UUID_JUST_CREATED};

/// Size of every metadata block: superblock slots, AL slots, bitmap pages.
pub const MD_BLOCK_BYTES: u64 = 4096;

/// A place in the metadata, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Superblock slot 0 or 1.
    Superblock { slot: u8, offset_bytes: u64 },
    /// One transaction slot of the activity-log ring.
    AlSlot { index: u32, offset_bytes: u64 },
    /// The dirty-bitmap area.
    Bitmap { offset_bytes: u64 },
    /// The start of the disk (filesystem probing).
    DiskStart,
    /// The metadata as a whole (layout computation).
    Layout,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Area::Superblock { slot, offset_bytes } => {
                write!(f, "superblock slot {slot} (byte {offset_bytes})")
            }
            Area::AlSlot {
                index,
                offset_bytes,
            } => write!(f, "activity-log slot {index} (byte {offset_bytes})"),
            Area::Bitmap { offset_bytes } => write!(f, "bitmap area (byte {offset_bytes})"),
            Area::DiskStart => write!(f, "start of the disk"),
            Area::Layout => write!(f, "metadata layout"),
        }
    }
}

/// Everything that can go wrong reading or writing metadata. Each variant
/// names the area and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The device cannot hold the metadata plus the minimum usable size.
    #[error(
        "disk of {disk_size_bytes} bytes is too small: hadisk needs at least {needed_bytes} bytes \
         (metadata plus 1 MiB of data)"
    )]
    DeviceTooSmall {
        disk_size_bytes: u64,
        needed_bytes: u64,
    },
    /// The device exceeds the largest size the bitmap covers.
    #[error(
        "disk of {disk_size_bytes} bytes exceeds the largest supported size of {max_bytes} bytes"
    )]
    DeviceTooLarge {
        disk_size_bytes: u64,
        max_bytes: u64,
    },
    /// `al-extents` outside DRBD's range.
    #[error("al-extents {value} is outside {min}..={max}")]
    AlExtentsOutOfRange { value: u32, min: u32, max: u32 },
    /// A block of the wrong length was handed to a decoder.
    #[error("{area}: expected {expected} bytes, found {found}")]
    BadLength {
        area: Area,
        expected: usize,
        found: usize,
    },
    /// The magic number is not ours.
    #[error("{area}: bad magic: expected {expected}, found {found}")]
    BadMagic {
        area: Area,
        expected: String,
        found: String,
    },
    /// A format version this build does not read.
    #[error("{area}: unsupported format version {found} (this build reads version {expected})")]
    UnsupportedVersion {
        area: Area,
        expected: u32,
        found: u32,
    },
    /// The stored CRC32 does not match the contents.
    #[error("{area}: checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        area: Area,
        stored: u32,
        computed: u32,
    },
    /// A reserved byte is not zero.
    #[error("{area}: reserved byte {offset} is {value:#04x}, expected 0")]
    ReservedNotZero {
        area: Area,
        offset: usize,
        value: u8,
    },
    /// Flag bits this build does not know.
    #[error("{area}: unknown flag bits {bits:#010x}")]
    UnknownFlags { area: Area, bits: u32 },
    /// A stored geometry or count field disagrees with what it must be.
    #[error("{area}: {field} is {found}, expected {expected}")]
    Geometry {
        area: Area,
        field: &'static str,
        expected: u64,
        found: u64,
    },
    /// A stored count exceeds its limit.
    #[error("{area}: {field} is {found}, at most {max} allowed")]
    CountTooLarge {
        area: Area,
        field: &'static str,
        max: u64,
        found: u64,
    },
    /// The metadata was created for a disk of another size.
    #[error(
        "the metadata was created for a disk of {recorded_bytes} bytes but the disk now has \
         {device_bytes} bytes; resizing is not supported: recreate the metadata (create-md --force) \
         and resync"
    )]
    DeviceSizeChanged {
        recorded_bytes: u64,
        device_bytes: u64,
    },
    /// Neither superblock slot holds our magic.
    #[error("no hadisk metadata on this disk of {device_bytes} bytes (run create-md first)")]
    NoMetadata { device_bytes: u64 },
    /// Both superblock slots are damaged.
    #[error("no valid superblock: slot 0: {slot0}; slot 1: {slot1}")]
    NoValidSuperblock {
        slot0: Box<MetadataError>,
        slot1: Box<MetadataError>,
    },
    /// A new generation UUID of 0 (0 means "empty").
    #[error("a new generation UUID must not be 0 (0 means empty)")]
    ZeroUuid,
    /// A slot table handed to the AL writer of the wrong size.
    #[error("activity-log slot table has {found} slots, expected {expected}")]
    AlSlotTable { expected: u32, found: usize },
    /// An update asked to change the metadata geometry in place.
    #[error("the superblock update changes {field} from {current} to {requested}; geometry is fixed at create-md")]
    GeometryChange {
        field: &'static str,
        current: u64,
        requested: u64,
    },
    /// The activity-log ring holds damage that is not one torn write.
    #[error(
        "{area}: the activity log is damaged: {reason}; recreate the metadata (create-md --force) \
         and resync from the peer"
    )]
    AlDamaged { area: Area, reason: String },
    /// An AL update that would make the slot table invalid (a caller bug).
    #[error("activity-log update refused: {reason}")]
    AlInvalidChange { reason: String },
    /// The bitmap area holds an image the bitmap refuses.
    #[error(
        "{area}: {source}; recreate the metadata (create-md --force) and resync from the peer"
    )]
    BitmapArea {
        area: Area,
        source: hadisk_bitmap::BitmapError,
    },
    /// The device failed an I/O.
    #[error("{area}: {action} failed: {source}")]
    Io {
        area: Area,
        action: &'static str,
        source: std::io::Error,
    },
    /// The bitmap rejected an image or a range.
    #[error("bitmap: {0}")]
    Bitmap(#[from] hadisk_bitmap::BitmapError),
}
