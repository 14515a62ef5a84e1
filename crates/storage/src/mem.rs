//! An in-memory, sparse block device for tests and the simulator.
//!
//! The image is a map from page index to a [`PAGE_BYTES`] page; a missing
//! page reads as zeros, so a 1 TiB device costs only the pages written.
//! Zeroing a whole page removes it, which keeps "write zeros efficiently"
//! observable through [`MemDevice::allocated_bytes`] and [`IoStats`].
//! One `RwLock` guards the map: fine for tests; the file backend is the
//! lock-free one.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{check_range, BlockDevice};

/// Granularity of the sparse image.
pub const PAGE_BYTES: u64 = 4096;

/// Counters of the I/O a [`MemDevice`] has served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    pub read_ops: u64,
    pub write_ops: u64,
    /// Bytes passed to `write_at` (zeroing and discards not included).
    pub bytes_written: u64,
    pub sync_ops: u64,
    /// `write_zeroes` and `discard` calls.
    pub zero_ops: u64,
    /// Bytes covered by `write_zeroes` and `discard` calls.
    pub bytes_zeroed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    read_ops: AtomicU64,
    write_ops: AtomicU64,
    bytes_written: AtomicU64,
    sync_ops: AtomicU64,
    zero_ops: AtomicU64,
    bytes_zeroed: AtomicU64,
}

/// A sparse in-memory disk.
#[derive(Debug)]
pub struct MemDevice {
    size_bytes: u64,
    pages: RwLock<BTreeMap<u64, Box<[u8]>>>,
    counters: Counters,
}

impl MemDevice {
    /// A zero-filled device of `size_bytes`.
    pub fn new(size_bytes: u64) -> Self {
        Self {
            size_bytes,
            pages: RwLock::new(BTreeMap::new()),
            counters: Counters::default(),
        }
    }

    /// A device holding `bytes` (its size is their length).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let dev = Self::new(bytes.len() as u64);
        dev.apply_write(bytes, 0);
        dev
    }

    /// The whole image (for small devices in tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.size_bytes as usize];
        self.copy_out(&mut out, 0);
        out
    }

    /// A deep copy of the image with fresh counters.
    pub fn snapshot(&self) -> MemDevice {
        Self {
            size_bytes: self.size_bytes,
            pages: RwLock::new(self.read_pages().clone()),
            counters: Counters::default(),
        }
    }

    /// The I/O served so far.
    pub fn stats(&self) -> IoStats {
        let c = &self.counters;
        IoStats {
            read_ops: c.read_ops.load(Ordering::Relaxed),
            write_ops: c.write_ops.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            sync_ops: c.sync_ops.load(Ordering::Relaxed),
            zero_ops: c.zero_ops.load(Ordering::Relaxed),
            bytes_zeroed: c.bytes_zeroed.load(Ordering::Relaxed),
        }
    }

    /// Memory held by pages that have been written and not zeroed since.
    pub fn allocated_bytes(&self) -> u64 {
        self.read_pages().len() as u64 * PAGE_BYTES
    }

    // A poisoned lock only means another test thread panicked mid-copy of
    // plain bytes; the map itself is still a valid map, so go on with it.
    fn read_pages(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Box<[u8]>>> {
        self.pages.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_pages(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, Box<[u8]>>> {
        self.pages.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the image into `buf`; the caller checked the range.
    fn copy_out(&self, buf: &mut [u8], offset_bytes: u64) {
        let pages = self.read_pages();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset_bytes + done as u64;
            let (index, in_page) = (pos / PAGE_BYTES, (pos % PAGE_BYTES) as usize);
            let n = (buf.len() - done).min(PAGE_BYTES as usize - in_page);
            match pages.get(&index) {
                Some(page) => buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    /// Writes `buf` into the image; the caller checked the range.
    pub(crate) fn apply_write(&self, buf: &[u8], offset_bytes: u64) {
        let mut pages = self.write_pages();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset_bytes + done as u64;
            let (index, in_page) = (pos / PAGE_BYTES, (pos % PAGE_BYTES) as usize);
            let n = (buf.len() - done).min(PAGE_BYTES as usize - in_page);
            let page = pages
                .entry(index)
                .or_insert_with(|| vec![0u8; PAGE_BYTES as usize].into_boxed_slice());
            page[in_page..in_page + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
    }

    /// Zeroes the range, dropping whole pages; the caller checked the range.
    pub(crate) fn apply_zeroes(&self, offset_bytes: u64, len_bytes: u64) {
        let mut pages = self.write_pages();
        let end = offset_bytes + len_bytes;
        let first = offset_bytes / PAGE_BYTES;
        let last_exclusive = end.div_ceil(PAGE_BYTES);
        let touched: Vec<u64> = pages
            .range(first..last_exclusive)
            .map(|(index, _)| *index)
            .collect();
        for index in touched {
            let page_start = index * PAGE_BYTES;
            let from = offset_bytes.max(page_start);
            let to = end.min(page_start + PAGE_BYTES);
            if from == page_start && to == page_start + PAGE_BYTES {
                pages.remove(&index);
            } else if let Some(page) = pages.get_mut(&index) {
                page[(from - page_start) as usize..(to - page_start) as usize].fill(0);
            }
        }
    }

    fn zero(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.size_bytes)?;
        self.counters.zero_ops.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_zeroed
            .fetch_add(len_bytes, Ordering::Relaxed);
        self.apply_zeroes(offset_bytes, len_bytes);
        Ok(())
    }
}

impl Clone for MemDevice {
    fn clone(&self) -> Self {
        self.snapshot()
    }
}

impl BlockDevice for MemDevice {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.size_bytes)?;
        self.counters.read_ops.fetch_add(1, Ordering::Relaxed);
        self.copy_out(buf, offset_bytes);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.size_bytes)?;
        self.counters.write_ops.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.apply_write(buf, offset_bytes);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.counters.sync_ops.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        self.zero(offset_bytes, len_bytes)
    }

    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64, _may_trim: bool) -> io::Result<()> {
        self.zero(offset_bytes, len_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Zero(u64, u64),
    }

    fn op(size: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..size, proptest::collection::vec(any::<u8>(), 0..9000))
                .prop_map(|(o, d)| Op::Write(o, d)),
            (0..size, 0..20000u64).prop_map(|(o, l)| Op::Zero(o, l)),
        ]
    }

    proptest! {
        /// The sparse image behaves exactly like a flat byte vector.
        #[test]
        fn matches_a_flat_model(ops in proptest::collection::vec(op(40_000), 1..40)) {
            let size = 40_000u64;
            let dev = MemDevice::new(size);
            let mut model = vec![0u8; size as usize];
            for op in ops {
                match op {
                    Op::Write(o, d) => {
                        let fits = o + d.len() as u64 <= size;
                        prop_assert_eq!(dev.write_at(&d, o).is_ok(), fits);
                        if fits {
                            model[o as usize..o as usize + d.len()].copy_from_slice(&d);
                        }
                    }
                    Op::Zero(o, l) => {
                        let fits = o + l <= size;
                        prop_assert_eq!(dev.write_zeroes(o, l, true).is_ok(), fits);
                        if fits {
                            model[o as usize..(o + l) as usize].fill(0);
                        }
                    }
                }
            }
            prop_assert_eq!(dev.to_vec(), model);
        }
    }

    #[test]
    fn a_huge_device_is_sparse_and_counts_io() {
        let dev = MemDevice::new(1 << 40);
        dev.write_at(&[1, 2, 3], (1 << 40) - 3).unwrap();
        dev.write_zeroes(0, 1 << 30, true).unwrap();
        dev.sync_data().unwrap();
        assert_eq!(dev.allocated_bytes(), PAGE_BYTES);
        let mut buf = [0u8; 3];
        dev.read_at(&mut buf, (1 << 40) - 3).unwrap();
        assert_eq!(buf, [1, 2, 3]);
        assert_eq!(
            dev.stats(),
            IoStats {
                read_ops: 1,
                write_ops: 1,
                bytes_written: 3,
                sync_ops: 1,
                zero_ops: 1,
                bytes_zeroed: 1 << 30,
            }
        );
        dev.write_zeroes((1 << 40) - 4096, 4096, false).unwrap();
        assert_eq!(dev.allocated_bytes(), 0);
    }

    #[test]
    fn snapshot_is_independent() {
        let dev = MemDevice::from_bytes(&[5u8; 8192]);
        let snap = dev.snapshot();
        dev.write_at(&[0u8; 10], 0).unwrap();
        assert_eq!(snap.to_vec(), vec![5u8; 8192]);
        assert_eq!(&dev.to_vec()[..11], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
    }
}
