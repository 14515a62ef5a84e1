//! The dirty bitmap: one bit per 4 KiB block of the usable device.
//!
//! Invariants:
//! - bit `b` set means block `b` may differ on the peer and must be resynced;
//! - bits past the last block are always zero (so counts and on-disk images
//!   are exact), and `dirty_blocks` always equals the number of set bits;
//! - setting by bytes rounds outward (any touched block is dirty), clearing
//!   by bytes rounds inward (a block is clean only if the whole of it was
//!   written to both sides);
//! - every word changed since the last [`DirtyBitmap::take_changed_pages`]
//!   marks its on-disk page, so a writer stores only what changed.
//!
//! Byte image (the on-disk bitmap area): block `b` is bit `b % 8` (least
//! significant first) of byte `b / 8`, i.e. the words are little-endian u64s.
//! Page `p` is bytes `p * 4096 .. (p + 1) * 4096` of that image.

use crate::{BitmapError, BITMAP_PAGE_BYTES, BLOCKS_PER_PAGE, BLOCK_BYTES, MAX_DEVICE_BYTES};
use std::ops::Range;

const WORD_BITS: u64 = 64;
const WORDS_PER_PAGE: usize = BITMAP_PAGE_BYTES / 8;

/// The in-memory dirty bitmap of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    size_bytes: u64,
    blocks: u64,
    words: Vec<u64>,
    dirty_blocks: u64,
    changed_pages: Vec<bool>,
}

impl DirtyBitmap {
    /// An all-clean bitmap for a device of `size_bytes`.
    pub fn new(size_bytes: u64) -> Result<Self, BitmapError> {
        if size_bytes > MAX_DEVICE_BYTES {
            return Err(BitmapError::DeviceTooLarge {
                size_bytes,
                max_bytes: MAX_DEVICE_BYTES,
            });
        }
        let blocks = size_bytes.div_ceil(BLOCK_BYTES);
        let pages = blocks.div_ceil(BLOCKS_PER_PAGE) as usize;
        Ok(Self {
            size_bytes,
            blocks,
            words: vec![0; pages * WORDS_PER_PAGE],
            dirty_blocks: 0,
            changed_pages: vec![false; pages],
        })
    }

    /// The device size this bitmap covers.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Number of blocks (bits in use).
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Number of on-disk pages of the byte image.
    pub fn pages(&self) -> u64 {
        self.changed_pages.len() as u64
    }

    /// Number of dirty blocks.
    pub fn dirty_blocks(&self) -> u64 {
        self.dirty_blocks
    }

    /// Bytes of the device covered by dirty blocks (the last block may be
    /// shorter than 4 KiB).
    pub fn dirty_bytes(&self) -> u64 {
        let full = self.dirty_blocks * BLOCK_BYTES;
        let tail = self.size_bytes % BLOCK_BYTES;
        if tail != 0 && self.blocks > 0 && self.test_block(self.blocks - 1) {
            full - (BLOCK_BYTES - tail)
        } else {
            full
        }
    }

    /// Whether nothing is dirty.
    pub fn is_clean(&self) -> bool {
        self.dirty_blocks == 0
    }

    fn check_blocks(&self, range: &Range<u64>) -> Result<(), BitmapError> {
        if range.start > range.end || range.end > self.blocks {
            return Err(BitmapError::BlockRangeOutOfBounds {
                start: range.start,
                end: range.end,
                blocks: self.blocks,
            });
        }
        Ok(())
    }

    fn check_bytes(&self, offset_bytes: u64, len_bytes: u64) -> Result<u64, BitmapError> {
        match offset_bytes.checked_add(len_bytes) {
            Some(end) if end <= self.size_bytes => Ok(end),
            _ => Err(BitmapError::ByteRangeOutOfBounds {
                offset_bytes,
                len_bytes,
                size_bytes: self.size_bytes,
            }),
        }
    }

    /// Sets or clears a checked block range; returns how many bits changed.
    fn update(&mut self, range: Range<u64>, set: bool) -> u64 {
        let mut changed = 0u64;
        let mut block = range.start;
        while block < range.end {
            let word = (block / WORD_BITS) as usize;
            let bit = block % WORD_BITS;
            let n = (WORD_BITS - bit).min(range.end - block);
            let mask = if n == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            let old = self.words[word];
            let new = if set { old | mask } else { old & !mask };
            if old != new {
                changed += u64::from((old ^ new).count_ones());
                self.words[word] = new;
                self.changed_pages[word / WORDS_PER_PAGE] = true;
            }
            block += n;
        }
        if set {
            self.dirty_blocks += changed;
        } else {
            self.dirty_blocks -= changed;
        }
        changed
    }

    /// Marks blocks dirty; returns how many were clean before.
    pub fn set_blocks(&mut self, range: Range<u64>) -> Result<u64, BitmapError> {
        self.check_blocks(&range)?;
        Ok(self.update(range, true))
    }

    /// Marks blocks clean; returns how many were dirty before.
    pub fn clear_blocks(&mut self, range: Range<u64>) -> Result<u64, BitmapError> {
        self.check_blocks(&range)?;
        Ok(self.update(range, false))
    }

    /// Marks every block touched by the byte range dirty (rounding outward).
    pub fn set_bytes(&mut self, offset_bytes: u64, len_bytes: u64) -> Result<u64, BitmapError> {
        let end = self.check_bytes(offset_bytes, len_bytes)?;
        if len_bytes == 0 {
            return Ok(0);
        }
        Ok(self.update(offset_bytes / BLOCK_BYTES..end.div_ceil(BLOCK_BYTES), true))
    }

    /// Marks clean every block the byte range covers entirely (rounding
    /// inward; the device's short last block counts as covered when the
    /// range reaches the device end).
    pub fn clear_bytes(&mut self, offset_bytes: u64, len_bytes: u64) -> Result<u64, BitmapError> {
        let end = self.check_bytes(offset_bytes, len_bytes)?;
        let first = offset_bytes.div_ceil(BLOCK_BYTES);
        let last = if end == self.size_bytes {
            self.blocks
        } else {
            end / BLOCK_BYTES
        };
        if first >= last {
            return Ok(0);
        }
        Ok(self.update(first..last, false))
    }

    /// Marks everything dirty (full sync).
    pub fn set_all(&mut self) {
        self.update(0..self.blocks, true);
    }

    /// Marks everything clean.
    pub fn clear_all(&mut self) {
        self.update(0..self.blocks, false);
    }

    /// Whether block `block` is dirty (false past the end).
    pub fn test_block(&self, block: u64) -> bool {
        if block >= self.blocks {
            return false;
        }
        let word = self.words[(block / WORD_BITS) as usize];
        word & (1u64 << (block % WORD_BITS)) != 0
    }

    /// How many blocks of the range are dirty.
    pub fn count_blocks(&self, range: Range<u64>) -> Result<u64, BitmapError> {
        self.check_blocks(&range)?;
        let mut count = 0u64;
        let mut block = range.start;
        while block < range.end {
            let bit = block % WORD_BITS;
            let n = (WORD_BITS - bit).min(range.end - block);
            let word = self.words[(block / WORD_BITS) as usize] >> bit;
            let masked = if n == WORD_BITS {
                word
            } else {
                word & ((1u64 << n) - 1)
            };
            count += u64::from(masked.count_ones());
            block += n;
        }
        Ok(count)
    }

    /// Whether any block touched by the byte range is dirty.
    pub fn any_in_bytes(&self, offset_bytes: u64, len_bytes: u64) -> Result<bool, BitmapError> {
        let end = self.check_bytes(offset_bytes, len_bytes)?;
        if len_bytes == 0 {
            return Ok(false);
        }
        let range = offset_bytes / BLOCK_BYTES..end.div_ceil(BLOCK_BYTES);
        Ok(self.count_blocks(range)? > 0)
    }

    /// The first dirty block at or after `from`.
    pub fn next_dirty(&self, from: u64) -> Option<u64> {
        self.next_with(from, false)
    }

    /// The first clean block at or after `from` (`blocks()` if none).
    pub fn next_clean(&self, from: u64) -> u64 {
        self.next_with(from, true).unwrap_or(self.blocks)
    }

    /// First block at or after `from` whose bit is set (or, with `invert`,
    /// clear), scanning whole words.
    fn next_with(&self, from: u64, invert: bool) -> Option<u64> {
        if from >= self.blocks {
            return None;
        }
        let mut word_index = (from / WORD_BITS) as usize;
        let mut word = self.words[word_index] ^ if invert { u64::MAX } else { 0 };
        word &= u64::MAX << (from % WORD_BITS);
        loop {
            if word != 0 {
                let block = word_index as u64 * WORD_BITS + u64::from(word.trailing_zeros());
                return (block < self.blocks).then_some(block);
            }
            word_index += 1;
            let next = *self.words.get(word_index)?;
            word = next ^ if invert { u64::MAX } else { 0 };
        }
    }

    /// The first run of dirty blocks at or after `from`, at most
    /// `max_blocks` long (the resync walker's step).
    pub fn next_dirty_run(&self, from: u64, max_blocks: u64) -> Option<Range<u64>> {
        let start = self.next_dirty(from)?;
        let end = self
            .next_clean(start)
            .min(start.saturating_add(max_blocks.max(1)));
        Some(start..end)
    }

    /// Every maximal run of dirty blocks, in order.
    pub fn dirty_runs(&self) -> DirtyRuns<'_> {
        DirtyRuns {
            bitmap: self,
            next_block: 0,
        }
    }

    /// ORs `other` (of the same device size) into this bitmap; returns how
    /// many blocks became dirty.
    pub fn merge(&mut self, other: &DirtyBitmap) -> Result<u64, BitmapError> {
        if other.blocks != self.blocks {
            return Err(BitmapError::SizeMismatch {
                blocks: self.blocks,
                other_blocks: other.blocks,
            });
        }
        let mut changed = 0u64;
        for (index, (mine, theirs)) in self.words.iter_mut().zip(&other.words).enumerate() {
            let new = *mine | *theirs;
            if new != *mine {
                changed += u64::from((new ^ *mine).count_ones());
                *mine = new;
                self.changed_pages[index / WORDS_PER_PAGE] = true;
            }
        }
        self.dirty_blocks += changed;
        Ok(changed)
    }

    /// The byte image of page `page`.
    pub fn page_bytes(&self, page: u64) -> Result<Vec<u8>, BitmapError> {
        let words = self.page_words(page)?;
        let mut out = Vec::with_capacity(BITMAP_PAGE_BYTES);
        for word in words {
            out.extend_from_slice(&word.to_le_bytes());
        }
        Ok(out)
    }

    fn page_words(&self, page: u64) -> Result<&[u64], BitmapError> {
        let pages = self.pages();
        if page >= pages {
            return Err(BitmapError::PageOutOfBounds { page, pages });
        }
        let start = page as usize * WORDS_PER_PAGE;
        Ok(&self.words[start..start + WORDS_PER_PAGE])
    }

    /// Replaces page `page` with an on-disk image; refuses bits past the
    /// last block. Does not mark the page changed (it came from disk).
    pub fn load_page(&mut self, page: u64, bytes: &[u8]) -> Result<(), BitmapError> {
        if bytes.len() != BITMAP_PAGE_BYTES {
            return Err(BitmapError::ImageLength {
                actual: bytes.len(),
                expected: BITMAP_PAGE_BYTES,
                blocks: self.blocks,
            });
        }
        let old_count: u64 = self
            .page_words(page)?
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        let mut new_words = [0u64; WORDS_PER_PAGE];
        for (word, chunk) in new_words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            *word = u64::from_le_bytes(le);
        }
        let first_block = page * BLOCKS_PER_PAGE;
        let valid_blocks = self.blocks - first_block;
        if valid_blocks < BLOCKS_PER_PAGE && trailing_bits_set(&new_words, valid_blocks) {
            return Err(BitmapError::TrailingBits {
                blocks: self.blocks,
            });
        }
        let new_count: u64 = new_words.iter().map(|w| u64::from(w.count_ones())).sum();
        let start = page as usize * WORDS_PER_PAGE;
        self.words[start..start + WORDS_PER_PAGE].copy_from_slice(&new_words);
        self.dirty_blocks = self.dirty_blocks - old_count + new_count;
        Ok(())
    }

    /// The whole byte image (`pages() * 4096` bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// A bitmap for `size_bytes` from its whole byte image.
    pub fn from_bytes(size_bytes: u64, bytes: &[u8]) -> Result<Self, BitmapError> {
        let mut bitmap = Self::new(size_bytes)?;
        let expected = bitmap.pages() as usize * BITMAP_PAGE_BYTES;
        if bytes.len() != expected {
            return Err(BitmapError::ImageLength {
                actual: bytes.len(),
                expected,
                blocks: bitmap.blocks,
            });
        }
        for (page, chunk) in bytes.chunks_exact(BITMAP_PAGE_BYTES).enumerate() {
            bitmap.load_page(page as u64, chunk)?;
        }
        Ok(bitmap)
    }

    /// Pages changed since the last call, in order; clears the marks.
    pub fn take_changed_pages(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for (page, changed) in self.changed_pages.iter_mut().enumerate() {
            if std::mem::take(changed) {
                out.push(page as u64);
            }
        }
        out
    }

    /// The pages whose contents differ between `self` and `other`, in
    /// order (for writing only what changed against a copy of the disk).
    pub fn differing_pages(&self, other: &DirtyBitmap) -> Result<Vec<u64>, BitmapError> {
        if other.blocks != self.blocks {
            return Err(BitmapError::SizeMismatch {
                blocks: self.blocks,
                other_blocks: other.blocks,
            });
        }
        Ok(self
            .words
            .chunks(WORDS_PER_PAGE)
            .zip(other.words.chunks(WORDS_PER_PAGE))
            .enumerate()
            .filter(|(_, (mine, theirs))| mine != theirs)
            .map(|(page, _)| page as u64)
            .collect())
    }

    /// Marks every page changed (e.g. before writing the whole bitmap).
    pub fn mark_all_pages_changed(&mut self) {
        self.changed_pages.fill(true);
    }
}

/// Whether any bit at index `>= valid_bits` is set in `words`.
fn trailing_bits_set(words: &[u64], valid_bits: u64) -> bool {
    let full_words = (valid_bits / WORD_BITS) as usize;
    let rem = valid_bits % WORD_BITS;
    let mut rest = words.iter().skip(full_words);
    if rem != 0 {
        if let Some(partial) = rest.next() {
            if partial >> rem != 0 {
                return true;
            }
        }
    }
    rest.any(|&w| w != 0)
}

/// Iterator over maximal dirty runs (block ranges) of a [`DirtyBitmap`].
#[derive(Debug)]
pub struct DirtyRuns<'a> {
    bitmap: &'a DirtyBitmap,
    next_block: u64,
}

impl Iterator for DirtyRuns<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        let start = self.bitmap.next_dirty(self.next_block)?;
        let end = self.bitmap.next_clean(start);
        self.next_block = end;
        Some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        SetBlocks(u64, u64),
        ClearBlocks(u64, u64),
        SetBytes(u64, u64),
        ClearBytes(u64, u64),
    }

    fn op(blocks: u64, size: u64) -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..=blocks, 0..=blocks).prop_map(|(a, b)| Op::SetBlocks(a.min(b), a.max(b))),
            (0..=blocks, 0..=blocks).prop_map(|(a, b)| Op::ClearBlocks(a.min(b), a.max(b))),
            (0..=size, 0..=size).prop_map(|(a, b)| Op::SetBytes(a.min(b), a.max(b) - a.min(b))),
            (0..=size, 0..=size).prop_map(|(a, b)| Op::ClearBytes(a.min(b), a.max(b) - a.min(b))),
        ]
    }

    fn model_runs(model: &[bool]) -> Vec<Range<u64>> {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < model.len() {
            if model[i] {
                let start = i;
                while i < model.len() && model[i] {
                    i += 1;
                }
                runs.push(start as u64..i as u64);
            } else {
                i += 1;
            }
        }
        runs
    }

    fn apply_model(model: &mut [bool], op: &Op, size: u64) {
        let bs = BLOCK_BYTES;
        let blocks = model.len() as u64;
        let (range, value) = match *op {
            Op::SetBlocks(a, b) => (a..b, true),
            Op::ClearBlocks(a, b) => (a..b, false),
            Op::SetBytes(_, 0) => (0..0, true),
            Op::SetBytes(o, l) => (o / bs..(o + l).div_ceil(bs), true),
            Op::ClearBytes(o, l) => {
                let end = if o + l == size { blocks } else { (o + l) / bs };
                (o.div_ceil(bs)..end.max(o.div_ceil(bs)), false)
            }
        };
        for b in range {
            model[b as usize] = value;
        }
    }

    proptest! {
        /// Every operation agrees with a Vec<bool> model: bits, counts,
        /// runs, and the page images round-trip.
        #[test]
        fn matches_a_vec_bool_model(
            size in 1u64..(3 * BLOCKS_PER_PAGE * BLOCK_BYTES),
            ops in proptest::collection::vec(op(300_000, 3 * BLOCKS_PER_PAGE * BLOCK_BYTES), 1..30),
        ) {
            let mut bitmap = DirtyBitmap::new(size).unwrap();
            let blocks = bitmap.blocks();
            let mut model = vec![false; blocks as usize];
            for op in ops {
                // Scale the op into this size so most ops are in range.
                let op = match op {
                    Op::SetBlocks(a, b) => Op::SetBlocks(a % (blocks + 1), b % (blocks + 1)),
                    Op::ClearBlocks(a, b) => Op::ClearBlocks(a % (blocks + 1), b % (blocks + 1)),
                    Op::SetBytes(o, l) => Op::SetBytes(o % (size + 1), l % (size + 1)),
                    Op::ClearBytes(o, l) => Op::ClearBytes(o % (size + 1), l % (size + 1)),
                };
                let result = match op {
                    Op::SetBlocks(a, b) => bitmap.set_blocks(a.min(b)..a.max(b)),
                    Op::ClearBlocks(a, b) => bitmap.clear_blocks(a.min(b)..a.max(b)),
                    Op::SetBytes(o, l) => bitmap.set_bytes(o, l),
                    Op::ClearBytes(o, l) => bitmap.clear_bytes(o, l),
                };
                let op = match op {
                    Op::SetBlocks(a, b) => Op::SetBlocks(a.min(b), a.max(b)),
                    Op::ClearBlocks(a, b) => Op::ClearBlocks(a.min(b), a.max(b)),
                    other => other,
                };
                let in_range = match op {
                    Op::SetBytes(o, l) | Op::ClearBytes(o, l) => o + l <= size,
                    _ => true,
                };
                prop_assert_eq!(result.is_ok(), in_range);
                if in_range {
                    let before = model.iter().filter(|&&b| b).count() as u64;
                    apply_model(&mut model, &op, size);
                    let after = model.iter().filter(|&&b| b).count() as u64;
                    prop_assert_eq!(result.unwrap(), before.abs_diff(after));
                }
            }
            let count = model.iter().filter(|&&b| b).count() as u64;
            prop_assert_eq!(bitmap.dirty_blocks(), count);
            prop_assert_eq!(bitmap.count_blocks(0..blocks).unwrap(), count);
            for (i, &bit) in model.iter().enumerate() {
                prop_assert_eq!(bitmap.test_block(i as u64), bit);
            }
            let runs: Vec<_> = bitmap.dirty_runs().collect();
            prop_assert_eq!(&runs, &model_runs(&model));
            let image = bitmap.to_bytes();
            let back = DirtyBitmap::from_bytes(size, &image).unwrap();
            prop_assert_eq!(back.dirty_blocks(), count);
            prop_assert_eq!(back.dirty_runs().collect::<Vec<_>>(), runs);
            let mut merged = DirtyBitmap::new(size).unwrap();
            merged.set_blocks(0..blocks / 2).unwrap();
            merged.merge(&bitmap).unwrap();
            let expect = model.iter().enumerate().filter(|(i, &b)| b || (*i as u64) < blocks / 2).count();
            prop_assert_eq!(merged.dirty_blocks(), expect as u64);
            // The pages that differ from a clean bitmap are exactly those
            // with a set bit in the model.
            let clean = DirtyBitmap::new(size).unwrap();
            let expect_pages: Vec<u64> = (0..bitmap.pages())
                .filter(|&p| model.iter().skip((p * BLOCKS_PER_PAGE) as usize).take(BLOCKS_PER_PAGE as usize).any(|&b| b))
                .collect();
            prop_assert_eq!(clean.differing_pages(&bitmap).unwrap(), expect_pages.clone());
            prop_assert_eq!(bitmap.differing_pages(&clean).unwrap(), expect_pages);
            prop_assert!(bitmap.differing_pages(&back).unwrap().is_empty());
        }

        /// Arbitrary page bytes never panic: they load or give a specific error.
        #[test]
        fn loading_arbitrary_bytes_never_panics(
            size in 1u64..(2 * BLOCKS_PER_PAGE * BLOCK_BYTES),
            bytes in proptest::collection::vec(any::<u8>(), 0..9000),
            page in 0u64..4,
        ) {
            let mut bitmap = DirtyBitmap::new(size).unwrap();
            match bitmap.load_page(page, &bytes) {
                Ok(()) => prop_assert_eq!(
                    bitmap.dirty_blocks(),
                    bytes.iter().map(|b| u64::from(b.count_ones())).sum::<u64>()
                ),
                Err(BitmapError::ImageLength { .. }
                    | BitmapError::TrailingBits { .. }
                    | BitmapError::PageOutOfBounds { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
            let _ = DirtyBitmap::from_bytes(size, &bytes);
        }

        /// A whole page of arbitrary bytes: loads exactly when no bit lies
        /// past the last block, and then reads back byte for byte.
        #[test]
        fn arbitrary_full_pages_round_trip(
            blocks_in_last_page in 1u64..=BLOCKS_PER_PAGE,
            bytes in proptest::collection::vec(any::<u8>(), BITMAP_PAGE_BYTES),
            tail_zeroed: bool,
        ) {
            let size = (BLOCKS_PER_PAGE + blocks_in_last_page) * BLOCK_BYTES;
            let mut bytes = bytes;
            if tail_zeroed {
                for bit in blocks_in_last_page..BLOCKS_PER_PAGE {
                    bytes[(bit / 8) as usize] &= !(1u8 << (bit % 8));
                }
            }
            let trailing = (blocks_in_last_page..BLOCKS_PER_PAGE)
                .any(|bit| bytes[(bit / 8) as usize] & (1u8 << (bit % 8)) != 0);
            let mut bitmap = DirtyBitmap::new(size).unwrap();
            prop_assert!(bitmap.load_page(0, &bytes).is_ok(), "page 0 is full");
            prop_assert_eq!(bitmap.page_bytes(0).unwrap(), bytes.clone());
            match bitmap.load_page(1, &bytes) {
                Ok(()) => {
                    prop_assert!(!trailing);
                    prop_assert_eq!(bitmap.page_bytes(1).unwrap(), bytes.clone());
                    let ones: u64 = bytes.iter().map(|b| u64::from(b.count_ones())).sum();
                    prop_assert_eq!(bitmap.dirty_blocks(), 2 * ones);
                }
                Err(e) => {
                    prop_assert!(trailing);
                    prop_assert_eq!(e, BitmapError::TrailingBits { blocks: BLOCKS_PER_PAGE + blocks_in_last_page });
                }
            }
        }
    }

    #[test]
    fn byte_ranges_round_outward_to_set_and_inward_to_clear() {
        let mut bitmap = DirtyBitmap::new(10 * BLOCK_BYTES + 100).unwrap();
        assert_eq!(bitmap.blocks(), 11);
        assert_eq!(bitmap.set_bytes(4095, 2).unwrap(), 2);
        assert!(bitmap.test_block(0) && bitmap.test_block(1));
        assert_eq!(bitmap.clear_bytes(1, 8190).unwrap(), 0, "no whole block");
        assert_eq!(bitmap.clear_bytes(0, 8191).unwrap(), 1);
        assert!(bitmap.test_block(1));
        // The short last block clears when the range reaches the end.
        bitmap.set_all();
        assert_eq!(bitmap.dirty_bytes(), 10 * BLOCK_BYTES + 100);
        assert_eq!(bitmap.clear_bytes(10 * BLOCK_BYTES, 100).unwrap(), 1);
        assert_eq!(bitmap.dirty_bytes(), 10 * BLOCK_BYTES);
        assert_eq!(
            bitmap
                .set_bytes(10 * BLOCK_BYTES, 101)
                .unwrap_err()
                .to_string(),
            "byte range of 101 bytes at offset 40960 is outside the device of 41060 bytes"
        );
        assert_eq!(
            bitmap.set_blocks(5..12).unwrap_err().to_string(),
            "block range 5..12 is outside the bitmap of 11 blocks"
        );
    }

    #[test]
    fn changed_pages_track_writes_but_not_loads() {
        let mut bitmap = DirtyBitmap::new(3 * BLOCKS_PER_PAGE * BLOCK_BYTES).unwrap();
        bitmap
            .set_blocks(BLOCKS_PER_PAGE - 1..BLOCKS_PER_PAGE + 1)
            .unwrap();
        bitmap.set_blocks(0..1).unwrap();
        assert_eq!(bitmap.take_changed_pages(), vec![0, 1]);
        assert_eq!(bitmap.take_changed_pages(), Vec::<u64>::new());
        bitmap.load_page(2, &[0xff; BITMAP_PAGE_BYTES]).unwrap();
        assert_eq!(bitmap.take_changed_pages(), Vec::<u64>::new());
        assert_eq!(bitmap.dirty_blocks(), 3 + BLOCKS_PER_PAGE);
        assert_eq!(
            bitmap.next_dirty_run(2, 5),
            Some(BLOCKS_PER_PAGE - 1..BLOCKS_PER_PAGE + 1)
        );
        assert_eq!(
            bitmap.next_dirty_run(2 * BLOCKS_PER_PAGE, 5),
            Some(2 * BLOCKS_PER_PAGE..2 * BLOCKS_PER_PAGE + 5)
        );
    }

    #[test]
    fn trailing_bits_and_sizes_are_refused() {
        let mut bitmap = DirtyBitmap::new(100 * BLOCK_BYTES).unwrap();
        let mut page = vec![0u8; BITMAP_PAGE_BYTES];
        page[12] = 0x10; // block 100: one past the end
        assert_eq!(
            bitmap.load_page(0, &page).unwrap_err(),
            BitmapError::TrailingBits { blocks: 100 }
        );
        page[12] = 0x08; // block 99: the last one
        bitmap.load_page(0, &page).unwrap();
        assert_eq!(bitmap.dirty_runs().collect::<Vec<_>>(), vec![99..100]);
        assert_eq!(
            DirtyBitmap::new(MAX_DEVICE_BYTES + 1).unwrap_err().to_string(),
            "device of 281474976710657 bytes exceeds the largest supported size of 281474976710656 bytes"
        );
        let other = DirtyBitmap::new(BLOCK_BYTES).unwrap();
        assert_eq!(
            bitmap.merge(&other).unwrap_err(),
            BitmapError::SizeMismatch {
                blocks: 100,
                other_blocks: 1
            }
        );
    }
}
