//! The in-memory dirty bitmap: one bit per [`BLOCK_BYTES`] block, set when
//! the peer may not have the block.
//!
//! A minimal dense set kept here behind a small interface (set/clear a
//! block range, count, next set bit, raw words for persisting), so that the
//! core does not depend on the on-disk bitmap crate's API; the word layout
//! (u64 words, bit `i` of word `w` = block `64*w + i`) is the same 1-bit-per-
//! 4-KiB layout as the metadata's bitmap area, so words can be persisted
//! as they are.
//!
//! Invariants: bits beyond `blocks` are always zero; `count` equals the
//! number of set bits.

use hadisk_peer_proto::frame::BLOCK_BYTES;

/// The dirty bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    words: Vec<u64>,
    blocks: u64,
    count: u64,
}

/// Number of blocks covering `len_bytes` from `offset_bytes` (partial
/// blocks at either end count whole).
pub fn block_span(offset_bytes: u64, len_bytes: u64) -> (u64, u64) {
    let first = offset_bytes / BLOCK_BYTES;
    if len_bytes == 0 {
        return (first, 0);
    }
    let end = offset_bytes.saturating_add(len_bytes).div_ceil(BLOCK_BYTES);
    (first, end - first)
}

impl DirtyBitmap {
    /// An all-clear bitmap for `blocks` blocks.
    pub fn new(blocks: u64) -> Self {
        DirtyBitmap { words: vec![0; blocks.div_ceil(64) as usize], blocks, count: 0 }
    }

    /// Rebuilds from persisted words (extra bits beyond `blocks` dropped).
    pub fn from_words(blocks: u64, mut words: Vec<u64>) -> Self {
        words.resize(blocks.div_ceil(64) as usize, 0);
        if blocks % 64 != 0 {
            if let Some(last) = words.last_mut() {
                *last &= (1u64 << (blocks % 64)) - 1;
            }
        }
        let count = words.iter().map(|w| u64::from(w.count_ones())).sum();
        DirtyBitmap { words, blocks, count }
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Set bits.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_set(&self, block: u64) -> bool {
        block < self.blocks && self.words[(block / 64) as usize] & (1 << (block % 64)) != 0
    }

    /// Sets `[first, first+n)` (clamped to the size); returns newly set bits.
    pub fn set_range(&mut self, first: u64, n: u64) -> u64 {
        self.apply(first, n, true)
    }

    /// Clears `[first, first+n)`; returns bits that were set.
    pub fn clear_range(&mut self, first: u64, n: u64) -> u64 {
        self.apply(first, n, false)
    }

    pub fn set_all(&mut self) {
        let blocks = self.blocks;
        self.set_range(0, blocks);
    }

    fn apply(&mut self, first: u64, n: u64, set: bool) -> u64 {
        let end = first.saturating_add(n).min(self.blocks);
        let mut changed = 0;
        let mut b = first;
        while b < end {
            let w = (b / 64) as usize;
            let lo = b % 64;
            let hi = (end - (b - lo)).min(64);
            let mask = if hi - lo == 64 { u64::MAX } else { ((1u64 << (hi - lo)) - 1) << lo };
            let before = self.words[w];
            let after = if set { before | mask } else { before & !mask };
            changed += u64::from((before ^ after).count_ones());
            self.words[w] = after;
            b = b - lo + hi;
        }
        if set {
            self.count += changed;
        } else {
            self.count -= changed;
        }
        changed
    }

    /// ORs in another bitmap of the same size (bitmap exchange).
    pub fn merge_words(&mut self, first_block: u64, words: &[u64]) {
        if first_block % 64 != 0 {
            return;
        }
        let start = (first_block / 64) as usize;
        for (i, w) in words.iter().enumerate() {
            if let Some(dst) = self.words.get_mut(start + i) {
                *dst |= *w;
            }
        }
        // Re-establish the invariants (trailing bits, count) after the OR.
        *self = DirtyBitmap::from_words(self.blocks, std::mem::take(&mut self.words));
    }

    /// The first set block at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let mut w = (from / 64) as usize;
        let mut mask = u64::MAX.checked_shl((from % 64) as u32).unwrap_or(0);
        while w < self.words.len() {
            let bits = self.words[w] & mask;
            if bits != 0 {
                let b = w as u64 * 64 + u64::from(bits.trailing_zeros());
                return (b < self.blocks).then_some(b);
            }
            w += 1;
            mask = u64::MAX;
        }
        None
    }

    /// The length of the run of set bits starting at `first`, at most `max`.
    pub fn run_len(&self, first: u64, max: u64) -> u64 {
        let mut n = 0;
        while n < max && self.is_set(first + n) {
            n += 1;
        }
        n
    }

    /// Raw words (for persisting and the bitmap exchange).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Words covering blocks `[first, first+n)`, first rounded down to 64.
    pub fn words_for(&self, first: u64, n: u64) -> (u64, Vec<u64>) {
        let w0 = (first / 64) as usize;
        let w1 = (first.saturating_add(n).min(self.blocks).div_ceil(64) as usize).max(w0);
        (w0 as u64 * 64, self.words[w0.min(self.words.len())..w1.min(self.words.len())].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set(blocks in 1u64..400, ops in prop::collection::vec((any::<bool>(), 0u64..420, 0u64..150), 0..40)) {
            let mut bm = DirtyBitmap::new(blocks);
            let mut model = BTreeSet::new();
            for (set, first, n) in ops {
                let changed = if set { bm.set_range(first, n) } else { bm.clear_range(first, n) };
                let mut want = 0;
                for b in first..(first + n).min(blocks) {
                    want += u64::from(if set { model.insert(b) } else { model.remove(&b) });
                }
                prop_assert_eq!(changed, want);
                prop_assert_eq!(bm.count(), model.len() as u64);
            }
            let mut from = 0;
            for b in &model {
                prop_assert_eq!(bm.next_set(from), Some(*b));
                from = b + 1;
            }
            prop_assert_eq!(bm.next_set(from), None);
            let copy = DirtyBitmap::from_words(blocks, bm.words().to_vec());
            prop_assert_eq!(copy, bm);
        }
    }

    #[test]
    fn span_rounds_partial_blocks_out() {
        assert_eq!(block_span(0, 4096), (0, 1));
        assert_eq!(block_span(4095, 2), (0, 2));
        assert_eq!(block_span(8192, 0), (2, 0));
    }

    #[test]
    fn merge_ors_words_and_recounts() {
        let mut a = DirtyBitmap::new(100);
        a.set_range(0, 3);
        let mut b = DirtyBitmap::new(100);
        b.set_range(2, 5);
        b.set_range(98, 10);
        a.merge_words(0, b.words());
        assert_eq!(a.count(), 9);
        assert_eq!(a.run_len(0, 100), 7);
    }
}
