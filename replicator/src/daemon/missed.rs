//! What the absent peer has missed: a standalone Primary records, in the
//! on-disk dirty bitmap, every region it changes, *before* it changes it,
//! so that a later connect resyncs exactly those regions (DRBD marks the
//! bitmap for every write while disconnected).
//!
//! Granularity is the activity-log extent (4 MiB): the first write into an
//! extent sets all of the extent's bits and makes them durable (one bitmap
//! page write and `fdatasync`); every later write into a marked extent goes
//! straight to the disk. That bounds the metadata syncs to one per extent
//! over the whole standalone period — not one per write — at the price of
//! resyncing up to 4 MiB around each written region. Nothing clears bits
//! here: only a finished resync (the peer link) does. When the peer never
//! had this data (the bitmap generation is "just created"), the promotion
//! marks every extent at once instead ([`MissedWrites::record_all`]): that
//! peer's first sync is a full one anyway, and one bitmap write before any
//! data is dirty is cheaper than a sync per extent while serving.
//!
//! Invariants:
//! - a write, trim or zeroing is issued only after the bits of every extent
//!   it touches are durable, so a crash at any point never leaves data on
//!   the disk that the bitmap does not cover (no activity log is needed for
//!   that: bits are never cleared while standalone);
//! - `marked[e]` is true only once extent `e`'s bits are durable; it is set
//!   after the sync, under the lock, and read without it (a stale `false`
//!   only costs a lock and a check).
//!
//! Once the replication core (`hadisk-core`) drives the write path, its AL
//! and bitmap actions replace this module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hadisk_bitmap::{DirtyBitmap, AL_EXTENT_BYTES, BLOCK_BYTES};
use hadisk_metadata::{Metadata, MetadataError};

/// The record of regions changed while no peer is connected.
#[derive(Debug)]
pub struct MissedWrites {
    usable_bytes: u64,
    marked: Vec<AtomicBool>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    metadata: Arc<Mutex<Metadata>>,
    bitmap: DirtyBitmap,
}

/// Locks ignoring poisoning: every critical section here either completes
/// a durable write and then updates memory, or returns an error before
/// changing anything that matters (a bitmap with extra bits set in memory
/// is only pessimistic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The extents `[first, last]` a non-empty byte range touches.
fn extents(offset_bytes: u64, len_bytes: u64) -> std::ops::RangeInclusive<u64> {
    let last_byte = offset_bytes.saturating_add(len_bytes.max(1) - 1);
    (offset_bytes / AL_EXTENT_BYTES)..=(last_byte / AL_EXTENT_BYTES)
}

impl MissedWrites {
    /// Starts from the bitmap as stored: an extent whose every block is
    /// already dirty counts as marked.
    pub fn new(metadata: Arc<Mutex<Metadata>>) -> Result<MissedWrites, MetadataError> {
        let (bitmap, usable_bytes) = {
            let md = lock(&metadata);
            (md.load_bitmap()?, md.layout().usable_size_bytes)
        };
        let count = usable_bytes.div_ceil(AL_EXTENT_BYTES);
        let mut marked = Vec::with_capacity(count as usize);
        for e in 0..count {
            let (start, end) = Self::extent_blocks(e, usable_bytes);
            let full = bitmap.count_blocks(start..end)? == end - start;
            marked.push(AtomicBool::new(full));
        }
        Ok(MissedWrites {
            usable_bytes,
            marked,
            state: Mutex::new(State { metadata, bitmap }),
        })
    }

    /// The block range of extent `e`, clipped to the usable size.
    fn extent_blocks(e: u64, usable_bytes: u64) -> (u64, u64) {
        let start = e * AL_EXTENT_BYTES / BLOCK_BYTES;
        let end = ((e + 1) * AL_EXTENT_BYTES)
            .min(usable_bytes)
            .div_ceil(BLOCK_BYTES);
        (start, end)
    }

    fn is_marked(&self, e: u64) -> bool {
        self.marked
            .get(e as usize)
            .is_some_and(|m| m.load(Ordering::Acquire))
    }

    /// True when every extent of the range is already durably marked: the
    /// write may go to the disk at once.
    pub fn covered(&self, offset_bytes: u64, len_bytes: u64) -> bool {
        extents(offset_bytes, len_bytes).all(|e| self.is_marked(e))
    }

    /// Durably marks every extent of the range (blocking I/O: call it on
    /// the blocking pool). Returns how many extents were newly marked.
    pub fn record(&self, offset_bytes: u64, len_bytes: u64) -> Result<u64, MetadataError> {
        let mut state = lock(&self.state);
        let todo: Vec<u64> = extents(offset_bytes, len_bytes)
            .filter(|&e| !self.is_marked(e) && e < self.marked.len() as u64)
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let mut next = state.bitmap.clone();
        for &e in &todo {
            let (start, end) = Self::extent_blocks(e, self.usable_bytes);
            next.set_blocks(start..end)?;
        }
        lock(&state.metadata).store_bitmap(&next)?;
        state.bitmap = next;
        for &e in &todo {
            if let Some(m) = self.marked.get(e as usize) {
                m.store(true, Ordering::Release);
            }
        }
        Ok(todo.len() as u64)
    }

    /// Durably marks every extent (blocking I/O). For a peer that never
    /// had this data: its sync is a full one anyway.
    pub fn record_all(&self) -> Result<(), MetadataError> {
        self.record(0, self.usable_bytes)?;
        Ok(())
    }

    /// Bytes the peer is out of sync by, as the bitmap says.
    pub fn dirty_bytes(&self) -> u64 {
        lock(&self.state).bitmap.dirty_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadisk_storage::{BlockDevice, MemDevice};

    const MIB: u64 = 1 << 20;

    fn setup() -> (Arc<dyn BlockDevice>, Arc<Mutex<Metadata>>) {
        let disk: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 * MIB));
        let md = Metadata::create(disk.clone(), 61, 0).unwrap();
        (disk, Arc::new(Mutex::new(md)))
    }

    #[test]
    fn extents_of_a_range() {
        assert_eq!(extents(0, 1), 0..=0);
        assert_eq!(extents(0, 4 * MIB), 0..=0);
        assert_eq!(extents(4 * MIB - 1, 2), 0..=1);
        assert_eq!(extents(10 * MIB, 0), 2..=2);
        assert_eq!(
            extents(u64::MAX - 1, 10),
            (u64::MAX - 1) / AL_EXTENT_BYTES..=u64::MAX / AL_EXTENT_BYTES
        );
    }

    #[test]
    fn first_write_into_an_extent_marks_it_durably_once() {
        let (disk, md) = setup();
        let missed = MissedWrites::new(md.clone()).unwrap();
        assert!(!missed.covered(0, 4096));
        assert_eq!(missed.record(0, 4096).unwrap(), 1);
        assert!(missed.covered(0, 4096) && missed.covered(4 * MIB - 1, 1));
        assert_eq!(
            missed.record(100, 4096).unwrap(),
            0,
            "already marked: no metadata write"
        );
        // Spanning extents 4 and 5.
        assert_eq!(missed.record(20 * MIB - 512, 1024).unwrap(), 2);
        assert_eq!(missed.dirty_bytes(), 12 * MIB);
        // Durable: a fresh open of the metadata sees the same bits, and
        // a new record starts from them.
        let reopened = Metadata::open(disk).unwrap();
        assert_eq!(reopened.load_bitmap().unwrap().dirty_bytes(), 12 * MIB);
        let again = MissedWrites::new(Arc::new(Mutex::new(reopened))).unwrap();
        assert!(again.covered(16 * MIB, 8 * MIB));
        assert!(!again.covered(8 * MIB, 1));
    }

    #[test]
    fn record_all_marks_every_extent() {
        let (_disk, md) = setup();
        let usable = lock(&md).layout().usable_size_bytes;
        let missed = MissedWrites::new(md).unwrap();
        missed.record(8 * MIB, 1).unwrap();
        missed.record_all().unwrap();
        assert_eq!(missed.dirty_bytes(), usable);
        assert!(missed.covered(0, usable));
        assert_eq!(missed.record(0, usable).unwrap(), 0);
    }

    #[test]
    fn the_last_partial_extent_is_clipped_to_the_usable_size() {
        let (_disk, md) = setup();
        let usable = lock(&md).layout().usable_size_bytes;
        assert_ne!(
            usable % AL_EXTENT_BYTES,
            0,
            "this test wants a partial last extent"
        );
        let missed = MissedWrites::new(md).unwrap();
        assert_eq!(missed.record(usable - 1, 1).unwrap(), 1);
        assert_eq!(missed.dirty_bytes(), usable % AL_EXTENT_BYTES);
        // Past the end: nothing to mark (the NBD layer refuses such requests).
        assert_eq!(missed.record(usable + AL_EXTENT_BYTES, 1).unwrap(), 0);
    }
}
