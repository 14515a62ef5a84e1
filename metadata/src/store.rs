//! The metadata on a [`BlockDevice`]: create, open (validate everything,
//! recover the activity log), update the superblock, write AL
//! transactions, load and store the dirty bitmap.
//!
//! Write ordering, so that a crash at any point leaves a state the next
//! open accepts and that is either the old or the new one:
//! - superblock: the update is encoded with sequence + 1 into the
//!   *inactive* slot, synced, and only then becomes the in-memory state;
//!   open takes the valid slot with the higher sequence, so a torn slot
//!   write falls back to the other slot (the old state);
//! - AL: transaction `n` goes to ring slot `n % ring`, synced before the
//!   next one and before the call returns (the caller issues the data
//!   write only after that); a torn head slot is discarded by recovery;
//! - bitmap: the pages that differ from what is on disk are written, then
//!   synced. A page has no checksum (any bit pattern is a bitmap, and 32
//!   KiB per GiB leaves no room), so a torn page mixes old and new bits at
//!   sector granularity; every bit is then its old or its new value. The
//!   daemon writes the bitmap pages of an extent before an AL transaction
//!   evicts that extent, so bits lost in a torn page belong to extents the
//!   recovered AL still names (DRBD's rule);
//! - create: both superblock slots are zeroed and synced first (the
//!   inactive one first, so that no older superblock resurfaces), then the
//!   AL ring and bitmap are zeroed and synced, then both slots written and
//!   synced: a
//!   crash leaves "no metadata" or the new metadata, never old superblocks
//!   over a new ring.

use std::io;
use std::sync::Arc;

use hadisk_bitmap::{DirtyBitmap, SlotChange, AL_EXTENT_BYTES, BITMAP_PAGE_BYTES};
use hadisk_storage::BlockDevice;

use crate::al::{self, AlGeometry, AlRecovery, AlTransaction, RingSlot, AL_SLOT_BYTES};
use crate::fsprobe::{self, FilesystemInfo, PROBE_BYTES};
use crate::layout::{superblock_slot_offset_for, Layout};
use crate::superblock::{Flags, Superblock, SUPERBLOCK_BYTES};
use crate::{Area, MetadataError, MD_BLOCK_BYTES};

/// Largest single write of bitmap pages: bounds the buffer a store
/// allocates (256 pages, 1 MiB).
pub const BITMAP_WRITE_MAX_PAGES: u64 = 256;

/// The metadata of one backing disk, open for reading and writing.
#[derive(Debug)]
pub struct Metadata {
    device: Arc<dyn BlockDevice>,
    superblock: Superblock,
    active_slot: u8,
    superblock_fallback: Option<String>,
    al_recovery: AlRecovery,
    /// The slot table as the disk says it is.
    al_table: Vec<Option<u32>>,
    al_next_number: u64,
    al_context_start: u32,
    /// The bitmap as the disk holds it (what `store_bitmap` diffs against).
    bitmap_on_disk: DirtyBitmap,
}

fn io_err(area: Area, action: &'static str) -> impl FnOnce(io::Error) -> MetadataError {
    move |source| MetadataError::Io {
        area,
        action,
        source,
    }
}

fn slot_area(layout: &Layout, slot: u8) -> Area {
    Area::Superblock {
        slot,
        offset_bytes: layout.superblock_slot_offset(slot),
    }
}

impl Metadata {
    /// Fresh metadata: both superblock slots (just-created UUIDs, flags
    /// `clean-shutdown`), an empty AL ring, a zeroed bitmap; synced.
    pub fn create(
        device: Arc<dyn BlockDevice>,
        al_extents: u32,
        node_name_hash: u64,
    ) -> Result<Metadata, MetadataError> {
        let layout = Layout::compute(device.size_bytes(), al_extents)?;
        // Old superblocks go first, the inactive (older) one before the
        // active one, each synced: a crash in between must not expose an
        // older superblock, nor leave one over a zeroed ring.
        let inactive_first = match read_superblock(&*device) {
            Ok((_, active, _)) => 1 - active,
            Err(_) => 0,
        };
        for slot in [inactive_first, 1 - inactive_first] {
            let area = slot_area(&layout, slot);
            device
                .write_zeroes(layout.superblock_slot_offset(slot), MD_BLOCK_BYTES, false)
                .map_err(io_err(area, "zeroing"))?;
            device.sync_data().map_err(io_err(area, "sync"))?;
        }
        let slots_area = slot_area(&layout, 0);
        let bitmap_area = Area::Bitmap {
            offset_bytes: layout.bitmap_offset_bytes,
        };
        // The bitmap and the AL ring are adjacent: one zeroing covers both.
        device
            .write_zeroes(
                layout.bitmap_offset_bytes,
                layout.superblock_offset_bytes - layout.bitmap_offset_bytes,
                true,
            )
            .map_err(io_err(bitmap_area, "zeroing"))?;
        // Synced before the superblocks: a disk may persist unsynced writes
        // in any order, and new superblocks over an old ring would be wrong.
        device.sync_data().map_err(io_err(bitmap_area, "sync"))?;
        let mut sb = Superblock::new(layout, node_name_hash);
        sb.flags = Flags::CLEAN_SHUTDOWN;
        for slot in 0..2u8 {
            sb.sequence = u64::from(slot);
            device
                .write_at(&sb.encode(), layout.superblock_slot_offset(slot))
                .map_err(io_err(slot_area(&layout, slot), "write"))?;
        }
        device.sync_data().map_err(io_err(slots_area, "sync"))?;
        Ok(Metadata {
            device,
            superblock: sb,
            active_slot: 1,
            superblock_fallback: None,
            al_recovery: AlRecovery::empty(al_extents),
            al_table: vec![None; al_extents as usize],
            al_next_number: 1,
            al_context_start: 0,
            bitmap_on_disk: DirtyBitmap::new(layout.usable_size_bytes)?,
        })
    }

    /// Reads and validates everything (superblock slots, AL ring, bitmap)
    /// and recovers the AL.
    pub fn open(device: Arc<dyn BlockDevice>) -> Result<Metadata, MetadataError> {
        let (superblock, active_slot, superblock_fallback) = read_superblock(&*device)?;
        let layout = superblock.layout;
        let al_recovery = read_al(&*device, &layout)?;
        let bitmap_on_disk = read_bitmap(&*device, &layout)?;
        Ok(Metadata {
            device,
            superblock,
            active_slot,
            superblock_fallback,
            al_table: al_recovery.slots.clone(),
            al_next_number: al_recovery.last_transaction + 1,
            al_context_start: if al_recovery.last_transaction == 0 {
                0
            } else {
                al::next_context_start(layout.al_extents, al_recovery.last_context_start)
            },
            al_recovery,
            bitmap_on_disk,
        })
    }

    /// Where everything is; `usable_size_bytes` is what NBD exports.
    pub fn layout(&self) -> &Layout {
        &self.superblock.layout
    }

    /// The current superblock: flags, UUIDs, sequence.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// The slot the current superblock was read from or written to.
    pub fn active_slot(&self) -> u8 {
        self.active_slot
    }

    /// Why the other superblock slot was not used at open (damaged or
    /// older and invalid), when it was not valid.
    pub fn superblock_fallback(&self) -> Option<&str> {
        self.superblock_fallback.as_deref()
    }

    /// The device the metadata lives on.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.device
    }

    /// Durable two-slot update: `f` edits a copy; it is written to the
    /// inactive slot with sequence + 1 and synced; only then does it become
    /// the current superblock. The geometry cannot change; the sequence is
    /// set here whatever `f` did to it.
    pub fn update(&mut self, f: impl FnOnce(&mut Superblock)) -> Result<(), MetadataError> {
        let mut next = self.superblock;
        f(&mut next);
        let current = &self.superblock;
        if next.layout != current.layout {
            return Err(geometry_change(&current.layout, &next.layout));
        }
        next.sequence = current.sequence.wrapping_add(1);
        let slot = 1 - self.active_slot.min(1);
        let area = slot_area(&current.layout, slot);
        self.device
            .write_at_durable(&next.encode(), current.layout.superblock_slot_offset(slot))
            .map_err(io_err(area, "write"))?;
        self.superblock = next;
        self.active_slot = slot;
        self.superblock_fallback = None;
        Ok(())
    }

    /// At attach (DRBD semantics): `primary` without `clean-shutdown` means
    /// this node crashed as Primary, recorded as `crashed-primary` (cleared
    /// by the daemon once the AL extents are resynced); `clean-shutdown` is
    /// cleared. Returns whether this is a crashed Primary.
    pub fn attach(&mut self) -> Result<bool, MetadataError> {
        let flags = self.superblock.flags;
        let crashed = flags.contains(Flags::CRASHED_PRIMARY)
            || (flags.contains(Flags::PRIMARY) && !flags.contains(Flags::CLEAN_SHUTDOWN));
        self.update(|sb| {
            sb.flags.remove(Flags::CLEAN_SHUTDOWN);
            sb.flags.set(Flags::CRASHED_PRIMARY, crashed);
        })?;
        Ok(crashed)
    }

    /// At an orderly detach: sets `clean-shutdown`.
    pub fn detach_clean(&mut self) -> Result<(), MetadataError> {
        self.update(|sb| sb.flags.insert(Flags::CLEAN_SHUTDOWN))
    }

    /// The bitmap as stored on disk.
    pub fn load_bitmap(&self) -> Result<DirtyBitmap, MetadataError> {
        Ok(self.bitmap_on_disk.clone())
    }

    /// Writes the pages of `bitmap` that differ from the disk, durably.
    pub fn store_bitmap(&mut self, bitmap: &DirtyBitmap) -> Result<(), MetadataError> {
        let pages = self.bitmap_on_disk.differing_pages(bitmap)?;
        let layout = self.superblock.layout;
        let mut i = 0;
        while let Some(&first) = pages.get(i) {
            let mut last = first;
            while let Some(&next) = pages.get(i + 1) {
                if next != last + 1 || next - first >= BITMAP_WRITE_MAX_PAGES {
                    break;
                }
                last = next;
                i += 1;
            }
            i += 1;
            let mut buf = Vec::with_capacity(((last - first + 1) as usize) * BITMAP_PAGE_BYTES);
            for page in first..=last {
                buf.extend_from_slice(&bitmap.page_bytes(page)?);
            }
            let offset_bytes = layout.bitmap_offset_bytes + first * BITMAP_PAGE_BYTES as u64;
            // Each run durable on its own: the runs need no order among
            // themselves, only all before the caller goes on.
            self.device
                .write_at_durable(&buf, offset_bytes)
                .map_err(io_err(Area::Bitmap { offset_bytes }, "write"))?;
        }
        for page in pages {
            self.bitmap_on_disk
                .load_page(page, &bitmap.page_bytes(page)?)?;
        }
        Ok(())
    }

    /// Extents that were active at open: a crashed Primary resyncs them.
    pub fn al_recovery(&self) -> &AlRecovery {
        &self.al_recovery
    }

    /// The AL slot table as the disk now holds it.
    pub fn al_slots(&self) -> &[Option<u32>] {
        &self.al_table
    }

    /// Makes `changes` (from `ActivityLog::begin_io`) durable: one
    /// transaction per 64 changes (one with none: the context still moves
    /// on), each written and synced in order. Changes that would make the
    /// table invalid (a slot or extent out of range, an extent in two
    /// slots) are refused before anything is written.
    pub fn write_al_transaction(&mut self, changes: &[SlotChange]) -> Result<(), MetadataError> {
        let layout = self.superblock.layout;
        let mut table = self.al_table.clone();
        self.check_changes(&table, changes)?;
        let planned = al::plan_transactions(
            layout.al_extents,
            &mut table,
            changes,
            self.al_next_number,
            self.al_context_start,
        );
        for tr in &planned {
            let index = (tr.number % u64::from(layout.al_ring_slots.max(1))) as u32;
            let offset_bytes = layout.al_slot_offset(index);
            let area = Area::AlSlot {
                index,
                offset_bytes,
            };
            self.device
                .write_at_durable(&tr.encode(), offset_bytes)
                .map_err(io_err(area, "write"))?;
            // Advanced per durable transaction: after a failure part-way,
            // the next contexts restate what the disk really holds.
            tr.apply(&mut self.al_table);
            self.al_next_number = tr.number + 1;
            self.al_context_start = al::next_context_start(layout.al_extents, tr.context_start);
        }
        Ok(())
    }

    fn check_changes(
        &self,
        table: &[Option<u32>],
        changes: &[SlotChange],
    ) -> Result<(), MetadataError> {
        let layout = &self.superblock.layout;
        let device_extents = layout.usable_size_bytes.div_ceil(AL_EXTENT_BYTES);
        let mut after = table.to_vec();
        for c in changes {
            if c.slot >= layout.al_extents {
                return Err(MetadataError::AlInvalidChange {
                    reason: format!("slot {} is outside 0..{}", c.slot, layout.al_extents),
                });
            }
            if u64::from(c.new_extent) >= device_extents {
                return Err(MetadataError::AlInvalidChange {
                    reason: format!(
                        "extent {} is past the last extent ({}) of the usable size",
                        c.new_extent,
                        device_extents.saturating_sub(1)
                    ),
                });
            }
            if let Some(entry) = after.get_mut(c.slot as usize) {
                *entry = Some(c.new_extent);
            }
        }
        let mut extents: Vec<u32> = after.iter().flatten().copied().collect();
        extents.sort_unstable();
        if let Some(pair) = extents.windows(2).find(|w| w[0] == w[1]) {
            return Err(MetadataError::AlInvalidChange {
                reason: format!("extent {} would be in two slots", pair[0]),
            });
        }
        Ok(())
    }
}

fn geometry_change(current: &Layout, requested: &Layout) -> MetadataError {
    let fields = [
        (
            "disk size",
            current.disk_size_bytes,
            requested.disk_size_bytes,
        ),
        (
            "al-extents",
            u64::from(current.al_extents),
            u64::from(requested.al_extents),
        ),
        (
            "usable size",
            current.usable_size_bytes,
            requested.usable_size_bytes,
        ),
    ];
    let (field, current, requested) = fields
        .into_iter()
        .find(|(_, a, b)| a != b)
        .unwrap_or(("layout", 0, 0));
    MetadataError::GeometryChange {
        field,
        current,
        requested,
    }
}

/// Reads both slots; returns the valid one with the higher sequence, its
/// slot, and why the other was not valid (if it was not).
fn read_superblock(
    device: &dyn BlockDevice,
) -> Result<(Superblock, u8, Option<String>), MetadataError> {
    let size = device.size_bytes();
    let mut results = Vec::with_capacity(2);
    for slot in 0..2u8 {
        let Some(offset_bytes) = superblock_slot_offset_for(size, slot) else {
            return Err(MetadataError::NoMetadata { device_bytes: size });
        };
        let area = Area::Superblock { slot, offset_bytes };
        let mut block = vec![0u8; SUPERBLOCK_BYTES];
        device
            .read_at(&mut block, offset_bytes)
            .map_err(io_err(area, "read"))?;
        results.push(Superblock::decode(area, &block));
    }
    let mut results = results.into_iter();
    let (Some(r0), Some(r1)) = (results.next(), results.next()) else {
        return Err(MetadataError::NoMetadata { device_bytes: size });
    };
    match (r0, r1) {
        (Ok(a), Ok(b)) if b.sequence > a.sequence => Ok((b, 1, None)),
        (Ok(a), Ok(_)) => Ok((a, 0, None)),
        (Ok(a), Err(e)) => Ok((a, 0, Some(e.to_string()))),
        (Err(e), Ok(b)) => Ok((b, 1, Some(e.to_string()))),
        (Err(e0), Err(e1)) => {
            let no_magic = |e: &MetadataError| matches!(e, MetadataError::BadMagic { .. });
            if no_magic(&e0) && no_magic(&e1) {
                Err(MetadataError::NoMetadata { device_bytes: size })
            } else {
                Err(MetadataError::NoValidSuperblock {
                    slot0: Box::new(e0),
                    slot1: Box::new(e1),
                })
            }
        }
    }
}

fn read_al(device: &dyn BlockDevice, layout: &Layout) -> Result<AlRecovery, MetadataError> {
    let ring = layout.al_ring_slots;
    let mut buf = vec![0u8; ring as usize * AL_SLOT_BYTES];
    device
        .read_at(&mut buf, layout.al_offset_bytes)
        .map_err(io_err(
            Area::AlSlot {
                index: 0,
                offset_bytes: layout.al_offset_bytes,
            },
            "read",
        ))?;
    let geometry = AlGeometry {
        al_extents: layout.al_extents,
        ring_slots: ring,
        device_extents: layout.usable_size_bytes.div_ceil(AL_EXTENT_BYTES),
    };
    let mut slots = Vec::with_capacity(ring as usize);
    let mut offsets = Vec::with_capacity(ring as usize);
    for (index, block) in buf.chunks_exact(AL_SLOT_BYTES).enumerate() {
        let index = index as u32;
        let offset_bytes = layout.al_slot_offset(index);
        offsets.push(offset_bytes);
        if block.iter().all(|&b| b == 0) {
            slots.push(RingSlot::Empty);
            continue;
        }
        let area = Area::AlSlot {
            index,
            offset_bytes,
        };
        slots.push(match AlTransaction::decode(area, index, geometry, block) {
            Ok(tr) => RingSlot::Valid(tr),
            Err(e) => RingSlot::Damaged(e.to_string()),
        });
    }
    al::recover(geometry, &slots, &offsets)
}

fn read_bitmap(device: &dyn BlockDevice, layout: &Layout) -> Result<DirtyBitmap, MetadataError> {
    let len = layout.bitmap_pages_used as usize * BITMAP_PAGE_BYTES;
    let mut buf = vec![0u8; len];
    let area = Area::Bitmap {
        offset_bytes: layout.bitmap_offset_bytes,
    };
    device
        .read_at(&mut buf, layout.bitmap_offset_bytes)
        .map_err(io_err(area, "read"))?;
    DirtyBitmap::from_bytes(layout.usable_size_bytes, &buf)
        .map_err(|source| MetadataError::BitmapArea { area, source })
}

/// The hadisk superblock on `device`, if there is one: `Ok(None)` when
/// neither slot holds our magic, an error when one does but neither is
/// valid (damaged metadata).
pub fn detect_metadata(device: &dyn BlockDevice) -> Result<Option<Superblock>, MetadataError> {
    match read_superblock(device) {
        Ok((sb, _, _)) => Ok(Some(sb)),
        Err(MetadataError::NoMetadata { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A filesystem (ext2/3/4, xfs) at the start of `device`, if recognised.
pub fn detect_filesystem(
    device: &dyn BlockDevice,
) -> Result<Option<FilesystemInfo>, MetadataError> {
    let len = (device.size_bytes().min(PROBE_BYTES as u64)) as usize;
    let mut buf = vec![0u8; len];
    device
        .read_at(&mut buf, 0)
        .map_err(io_err(Area::DiskStart, "read"))?;
    Ok(fsprobe::probe(&buf))
}
