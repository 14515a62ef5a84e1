//! Where the metadata lives on a disk of a given size.
//!
//! From the end of the disk, after dropping the unaligned tail (the disk
//! size rounded down to 4 KiB):
//!
//! ```text
//! 0 .. usable | bitmap area | AL ring | superblock slot 0 | slot 1 | (tail < 4 KiB)
//! ```
//!
//! - the two superblock slots are always the last 8 KiB of the aligned
//!   disk, so they can be found without knowing any other parameter;
//! - the AL ring has `max(8, ceil(al_extents / 887) + 2)` 4 KiB slots
//!   (see [`crate::al`] for why the ring must outlast one context cycle);
//! - the bitmap area has one 4 KiB page per 128 MiB of the *aligned disk*
//!   (1 bit per 4 KiB block), a slight over-allocation that breaks the
//!   circularity "bitmap size depends on usable size depends on bitmap size";
//! - usable size = start of the bitmap area; it must be at least 1 MiB.
//!
//! All arithmetic is checked: [`Layout::compute`] takes sizes decoded from
//! a damaged disk without panicking.

use hadisk_bitmap::{
    AL_EXTENTS_MAX, AL_EXTENTS_MIN, BITMAP_PAGE_BYTES, BLOCKS_PER_PAGE, BLOCK_BYTES,
    MAX_DEVICE_BYTES,
};

use crate::al::{AL_CONTEXT_PER_TR, AL_RING_MIN_SLOTS};
use crate::{MetadataError, MD_BLOCK_BYTES};

/// The smallest usable (exported) size accepted: smaller disks are almost
/// certainly a mistake (a wrong path, a partition table device).
pub const MIN_USABLE_BYTES: u64 = 1 << 20;

/// Number of superblock slots at the end of the disk.
pub const SUPERBLOCK_SLOTS: u64 = 2;

/// Positions and sizes of every metadata area of one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The disk size as found when the layout was computed.
    pub disk_size_bytes: u64,
    /// `al-extents`.
    pub al_extents: u32,
    /// What the replicated device exports: the bytes before the bitmap.
    pub usable_size_bytes: u64,
    pub bitmap_offset_bytes: u64,
    pub bitmap_area_bytes: u64,
    /// Bitmap pages actually used by the usable size (<= area pages).
    pub bitmap_pages_used: u64,
    pub al_offset_bytes: u64,
    pub al_ring_slots: u32,
    /// Offset of superblock slot 0; slot 1 follows it.
    pub superblock_offset_bytes: u64,
}

impl Layout {
    /// The layout for a disk of `disk_size_bytes` with `al_extents`.
    pub fn compute(disk_size_bytes: u64, al_extents: u32) -> Result<Layout, MetadataError> {
        if !(AL_EXTENTS_MIN..=AL_EXTENTS_MAX).contains(&al_extents) {
            return Err(MetadataError::AlExtentsOutOfRange {
                value: al_extents,
                min: AL_EXTENTS_MIN,
                max: AL_EXTENTS_MAX,
            });
        }
        let aligned = disk_size_bytes - disk_size_bytes % MD_BLOCK_BYTES;
        if aligned > MAX_DEVICE_BYTES {
            return Err(MetadataError::DeviceTooLarge {
                disk_size_bytes,
                max_bytes: MAX_DEVICE_BYTES,
            });
        }
        let al_ring_slots = al_ring_slots(al_extents);
        let bitmap_area_bytes = bitmap_pages_for(aligned) * BITMAP_PAGE_BYTES as u64;
        let metadata_bytes = SUPERBLOCK_SLOTS * MD_BLOCK_BYTES
            + u64::from(al_ring_slots) * MD_BLOCK_BYTES
            + bitmap_area_bytes;
        let too_small = || MetadataError::DeviceTooSmall {
            disk_size_bytes,
            needed_bytes: min_disk_bytes(al_extents),
        };
        let usable_size_bytes = aligned.checked_sub(metadata_bytes).ok_or_else(too_small)?;
        if usable_size_bytes < MIN_USABLE_BYTES {
            return Err(too_small());
        }
        let bitmap_offset_bytes = usable_size_bytes;
        let al_offset_bytes = bitmap_offset_bytes + bitmap_area_bytes;
        let superblock_offset_bytes = al_offset_bytes + u64::from(al_ring_slots) * MD_BLOCK_BYTES;
        Ok(Layout {
            disk_size_bytes,
            al_extents,
            usable_size_bytes,
            bitmap_offset_bytes,
            bitmap_area_bytes,
            bitmap_pages_used: bitmap_pages_for(usable_size_bytes),
            al_offset_bytes,
            al_ring_slots,
            superblock_offset_bytes,
        })
    }

    /// Offset of superblock slot `slot` (0 or 1) on a disk of this size.
    pub fn superblock_slot_offset(&self, slot: u8) -> u64 {
        self.superblock_offset_bytes + u64::from(slot.min(1)) * MD_BLOCK_BYTES
    }

    /// Offset of AL ring slot `index` (taken modulo the ring size).
    pub fn al_slot_offset(&self, index: u32) -> u64 {
        self.al_offset_bytes + u64::from(index % self.al_ring_slots.max(1)) * MD_BLOCK_BYTES
    }

    /// Bytes the metadata takes, including the unaligned tail.
    pub fn metadata_bytes(&self) -> u64 {
        self.disk_size_bytes - self.usable_size_bytes
    }
}

/// Offset of superblock slot `slot` on a disk of `disk_size_bytes`, without
/// knowing the rest of the layout (for probing). None if the disk is
/// smaller than the two slots.
pub fn superblock_slot_offset_for(disk_size_bytes: u64, slot: u8) -> Option<u64> {
    let aligned = disk_size_bytes - disk_size_bytes % MD_BLOCK_BYTES;
    let from_end = (SUPERBLOCK_SLOTS - u64::from(slot.min(1))) * MD_BLOCK_BYTES;
    aligned.checked_sub(from_end)
}

/// AL ring slots for `al_extents`: one full context cycle, plus one slot a
/// torn write may destroy, plus one spare; never fewer than 8 (32 KiB,
/// DRBD's AL size).
pub fn al_ring_slots(al_extents: u32) -> u32 {
    let cycle = al_extents.div_ceil(AL_CONTEXT_PER_TR as u32);
    (cycle + 2).max(AL_RING_MIN_SLOTS)
}

/// Bitmap pages covering `size_bytes` at 1 bit per 4 KiB block.
pub fn bitmap_pages_for(size_bytes: u64) -> u64 {
    size_bytes.div_ceil(BLOCK_BYTES).div_ceil(BLOCKS_PER_PAGE)
}

/// The smallest disk accepted with `al_extents`: 1 MiB usable plus the
/// metadata (its bitmap then fits one page).
pub fn min_disk_bytes(al_extents: u32) -> u64 {
    MIN_USABLE_BYTES
        + SUPERBLOCK_SLOTS * MD_BLOCK_BYTES
        + u64::from(al_ring_slots(al_extents)) * MD_BLOCK_BYTES
        + BITMAP_PAGE_BYTES as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn one_gib_with_default_al() {
        let layout = Layout::compute(GIB, 1237).unwrap();
        // 1 GiB = 262144 blocks = 8 bitmap pages (32 KiB); AL ring 8 slots.
        assert_eq!(layout.bitmap_area_bytes, 32 * 1024);
        assert_eq!(layout.al_ring_slots, 8);
        assert_eq!(layout.usable_size_bytes, GIB - 32 * 1024 - 32 * 1024 - 8192);
        assert_eq!(layout.superblock_offset_bytes, GIB - 8192);
        assert_eq!(layout.al_offset_bytes, GIB - 8192 - 32 * 1024);
        assert_eq!(layout.bitmap_pages_used, 8);
        assert_eq!(layout.metadata_bytes(), 73728);
    }

    #[test]
    fn one_tib_bitmap_is_32_mib_and_large_al_grows_the_ring() {
        let layout = Layout::compute(1 << 40, 65534).unwrap();
        assert_eq!(layout.bitmap_area_bytes, 32 << 20);
        assert_eq!(layout.al_ring_slots, 76);
        assert_eq!(al_ring_slots(7), 8);
        assert_eq!(al_ring_slots(887 * 7), 9);
    }

    #[test]
    fn refusals_are_specific() {
        let needed = min_disk_bytes(1237);
        assert_eq!(needed, (1 << 20) + 8192 + 32768 + 4096);
        assert!(Layout::compute(needed, 1237).is_ok());
        let err = Layout::compute(needed - 1, 1237).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "disk of {} bytes is too small: hadisk needs at least {needed} bytes (metadata plus 1 MiB of data)",
                needed - 1
            )
        );
        assert!(matches!(
            Layout::compute(0, 1237),
            Err(MetadataError::DeviceTooSmall { .. })
        ));
        assert_eq!(
            Layout::compute(GIB, 6).unwrap_err().to_string(),
            "al-extents 6 is outside 7..=65534"
        );
        assert!(matches!(
            Layout::compute(u64::MAX, 1237),
            Err(MetadataError::DeviceTooLarge { .. })
        ));
    }

    proptest! {
        /// Areas tile the aligned disk exactly, in order, 4 KiB aligned, and
        /// the bitmap area holds the bitmap of the usable size.
        #[test]
        fn areas_tile_the_disk(disk in 0u64..(1 << 44), al in 0u32..70000) {
            let Ok(layout) = Layout::compute(disk, al) else { return Ok(()); };
            let aligned = disk - disk % 4096;
            prop_assert!(layout.usable_size_bytes >= MIN_USABLE_BYTES);
            prop_assert_eq!(layout.usable_size_bytes % 4096, 0);
            prop_assert_eq!(layout.bitmap_offset_bytes, layout.usable_size_bytes);
            prop_assert_eq!(layout.al_offset_bytes, layout.bitmap_offset_bytes + layout.bitmap_area_bytes);
            prop_assert_eq!(
                layout.superblock_offset_bytes,
                layout.al_offset_bytes + u64::from(layout.al_ring_slots) * 4096
            );
            prop_assert_eq!(layout.superblock_offset_bytes + 8192, aligned);
            prop_assert!(layout.bitmap_pages_used * 4096 <= layout.bitmap_area_bytes);
            prop_assert_eq!(Some(layout.superblock_slot_offset(1)), superblock_slot_offset_for(disk, 1));
        }
    }
}
