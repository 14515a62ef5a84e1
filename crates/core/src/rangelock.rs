//! A block-range lock between application writes and resync chunks (STYLE.md
//! example 15): while a resync chunk is being read and sent, no application
//! write to those blocks may start, and vice versa, so old data never
//! overwrites new on the peer.
//!
//! Invariants: held ranges never overlap; a range is at most
//! `MAX_LOCK_SPAN_BLOCKS` long, which bounds the lookup.

use std::collections::BTreeMap;

/// The longest range one holder may lock, in blocks (a 32 MiB request).
pub const MAX_LOCK_SPAN_BLOCKS: u64 = 32 * 1024 * 1024 / 4096 + 1;

/// Held ranges: first block -> (blocks, holder).
#[derive(Debug, Clone, Default)]
pub struct RangeLock {
    held: BTreeMap<u64, (u64, u64)>,
}

impl RangeLock {
    pub fn overlaps(&self, first: u64, n: u64) -> bool {
        let end = first.saturating_add(n.max(1));
        self.held
            .range(first.saturating_sub(MAX_LOCK_SPAN_BLOCKS)..end)
            .any(|(f, (len, _))| f + len.max(&1) > first)
    }

    /// Takes the range for `holder` if it is free.
    pub fn try_lock(&mut self, first: u64, n: u64, holder: u64) -> bool {
        if n > MAX_LOCK_SPAN_BLOCKS || self.overlaps(first, n) {
            return false;
        }
        self.held.insert(first, (n, holder));
        true
    }

    pub fn unlock(&mut self, first: u64) {
        self.held.remove(&first);
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_ranges_exclude_each_other() {
        let mut l = RangeLock::default();
        assert!(l.try_lock(10, 5, 1));
        assert!(!l.try_lock(14, 1, 2));
        assert!(!l.try_lock(0, 11, 2));
        assert!(l.try_lock(15, 3, 2));
        assert!(l.try_lock(0, 10, 3));
        l.unlock(10);
        assert!(l.try_lock(12, 1, 4));
    }
}
