//! Run-length coding of a dirty-bitmap range (DRBD's compressed bitmap,
//! `P_COMPRESSED_BITMAP`): a 1 % random bitmap of 4 GiB is ~10,000 runs, a
//! few tens of KiB instead of the plain 128 KiB.
//!
//! # Layout
//! A sequence of run lengths in blocks, each an unsigned LEB128 varint
//! (7 bits a byte, low group first, at most [`MAX_VARINT_BYTES`]),
//! alternating clean and dirty and starting with a clean run (which may be
//! 0: the range starts dirty). The range's trailing clean run is not
//! written. Every other run is at least 1 and the runs cover at most the
//! range's length, so each range has exactly one encoding.
//!
//! Bits come in and go out as the bitmap's own bytes: bit `i` of byte `j`
//! is block `8*j + i` of the range.
//!
//! The decoder allocates nothing: it yields the dirty runs one at a time and
//! checks every length (varint width, zero runs, the range's end) before
//! anything is built from it.

use std::ops::Range;

use crate::ProtoError;

/// Longest varint: 64 bits in 7-bit groups.
pub const MAX_VARINT_BYTES: usize = 10;

/// Appends `v` as an unsigned LEB128 varint.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one varint from the front of `buf`: `(value, bytes used)`.
fn get_varint(buf: &[u8]) -> Result<(u64, usize), ProtoError> {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().take(MAX_VARINT_BYTES).enumerate() {
        let group = u64::from(b & 0x7f);
        // The tenth byte holds bit 63 only.
        if i == MAX_VARINT_BYTES - 1 && group > 1 {
            return Err(rle_error("a run length overflows 64 bits"));
        }
        v |= group << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(rle_error(if buf.len() < MAX_VARINT_BYTES {
        "a run length is cut off at the end of the chunk"
    } else {
        "a run length is longer than 10 bytes"
    }))
}

fn rle_error(what: &str) -> ProtoError {
    ProtoError::BadBitmapRle {
        reason: what.to_string(),
    }
}

fn bit(bits: &[u8], i: u64) -> bool {
    bits.get((i / 8) as usize)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Encodes blocks `0..blocks` of `bits` (blocks past the end of `bits` are
/// clean).
pub fn encode(bits: &[u8], blocks: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut dirty = false;
    let mut pending_clean = None;
    while at < blocks {
        let start = at;
        // Skip whole bytes of the same value quickly.
        while at < blocks {
            if at % 8 == 0 && at + 8 <= blocks {
                let byte = bits.get((at / 8) as usize).copied().unwrap_or(0);
                if byte == if dirty { 0xff } else { 0 } {
                    at += 8;
                    continue;
                }
            }
            if bit(bits, at) != dirty {
                break;
            }
            at += 1;
        }
        let run = at - start;
        if dirty {
            if let Some(clean) = pending_clean.take() {
                put_varint(&mut out, clean);
            }
            put_varint(&mut out, run);
        } else {
            pending_clean = Some(run);
        }
        dirty = !dirty;
    }
    out
}

/// The dirty runs of an encoded range of `blocks` blocks, in order; an
/// error ends the iteration (the chunk is bad as a whole).
pub fn decode(payload: &[u8], blocks: u64) -> DirtyRuns<'_> {
    DirtyRuns {
        payload,
        blocks,
        at: 0,
        first: true,
        failed: false,
    }
}

/// Iterator of [`decode`].
#[derive(Debug)]
pub struct DirtyRuns<'a> {
    payload: &'a [u8],
    blocks: u64,
    at: u64,
    first: bool,
    failed: bool,
}

impl DirtyRuns<'_> {
    fn next_len(&mut self, may_be_zero: bool) -> Result<u64, ProtoError> {
        let (v, used) = get_varint(self.payload)?;
        self.payload = &self.payload[used..];
        if v == 0 && !may_be_zero {
            return Err(rle_error("a run of length 0"));
        }
        match self.at.checked_add(v) {
            Some(end) if end <= self.blocks => Ok(v),
            _ => Err(rle_error("the runs go past the end of the range")),
        }
    }

    fn next_run(&mut self) -> Result<Option<Range<u64>>, ProtoError> {
        if self.payload.is_empty() {
            return Ok(None);
        }
        let clean = self.next_len(self.first)?;
        self.first = false;
        self.at += clean;
        if self.payload.is_empty() {
            return Err(rle_error("the chunk ends with a clean run"));
        }
        let dirty = self.next_len(false)?;
        let run = self.at..self.at + dirty;
        self.at += dirty;
        Ok(Some(run))
    }
}

impl Iterator for DirtyRuns<'_> {
    type Item = Result<Range<u64>, ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_run() {
            Ok(run) => run.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(payload: &[u8], blocks: u64) -> Result<Vec<Range<u64>>, ProtoError> {
        decode(payload, blocks).collect()
    }

    /// Bits from a list of dirty runs.
    fn bits_of(runs: &[Range<u64>], blocks: u64) -> Vec<u8> {
        let mut bits = vec![0u8; blocks.div_ceil(8) as usize];
        for r in runs {
            for b in r.clone() {
                bits[(b / 8) as usize] |= 1 << (b % 8);
            }
        }
        bits
    }

    /// (dirty runs, blocks, encoding)
    type LayoutCase = (&'static [Range<u64>], u64, &'static [u8]);

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn layout_table() {
        let table: &[LayoutCase] = &[
            (&[], 0, &[]),
            (&[], 100, &[]),
            (&[0..1], 1, &[0, 1]),
            (&[3..5], 16, &[3, 2]),
            (&[0..16], 16, &[0, 16]),
            (&[1..2, 7..9], 64, &[1, 1, 5, 2]),
            (&[200..201], 300, &[0xc8, 0x01, 1]),
        ];
        for (dirty, blocks, want) in table {
            let bits = bits_of(dirty, *blocks);
            assert_eq!(encode(&bits, *blocks), *want, "{dirty:?}");
            assert_eq!(runs(want, *blocks).unwrap(), dirty.to_vec());
        }
    }

    #[test]
    fn hostile_encodings_are_refused_with_a_reason() {
        let table: &[(&[u8], u64, &str)] = &[
            (&[1, 0], 8, "a run of length 0"),
            (&[0, 1, 0, 1], 8, "a run of length 0"),
            (&[2], 8, "the chunk ends with a clean run"),
            (&[4, 5], 8, "the runs go past the end of the range"),
            (
                &[0x80],
                8,
                "a run length is cut off at the end of the chunk",
            ),
            (&[0xff; 11], 8, "a run length overflows 64 bits"),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81],
                8,
                "a run length is longer than 10 bytes",
            ),
            (
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                u64::MAX,
                "a run length overflows 64 bits",
            ),
            (
                &[
                    0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 1,
                ],
                u64::MAX,
                "the runs go past the end of the range",
            ),
        ];
        for (payload, blocks, reason) in table {
            let err = runs(payload, *blocks).unwrap_err();
            assert_eq!(
                err,
                ProtoError::BadBitmapRle {
                    reason: reason.to_string()
                },
                "{payload:?}"
            );
        }
    }

    #[test]
    fn every_bitmap_of_twelve_blocks_round_trips() {
        for blocks in 0..=12u64 {
            for v in 0u32..(1 << blocks) {
                let bits = v.to_le_bytes().to_vec();
                let enc = encode(&bits, blocks);
                let back = bits_of(&runs(&enc, blocks).unwrap(), blocks);
                let mask = if blocks == 0 {
                    0
                } else {
                    u32::MAX >> (32 - blocks)
                };
                let mut want = (v & mask).to_le_bytes().to_vec();
                want.truncate(blocks.div_ceil(8) as usize);
                assert_eq!(back, want, "{blocks} blocks, {v:#x}");
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn round_trip(bits in proptest::collection::vec(any::<u8>(), 0..600), cut in 0u64..8) {
                let blocks = (bits.len() as u64 * 8).saturating_sub(cut);
                let enc = encode(&bits, blocks);
                let dirty = runs(&enc, blocks).unwrap();
                let back = bits_of(&dirty, blocks);
                for b in 0..blocks {
                    prop_assert_eq!(bit(&back, b), bit(&bits, b));
                }
                // Runs are sorted, disjoint, non-adjacent and inside.
                for w in dirty.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                prop_assert!(dirty.last().is_none_or(|r| r.end <= blocks));
            }

            #[test]
            fn sparse_bitmaps_shrink(positions in proptest::collection::btree_set(0u64..32768, 0..300)) {
                let blocks = 32768;
                let mut bits = vec![0u8; 4096];
                for p in &positions {
                    bits[(p / 8) as usize] |= 1 << (p % 8);
                }
                // At most two 3-byte varints per dirty block.
                prop_assert!(encode(&bits, blocks).len() <= positions.len() * 6);
            }

            #[test]
            fn arbitrary_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..64), blocks in any::<u64>()) {
                let mut covered = 0u64;
                for r in decode(&payload, blocks) {
                    let Ok(r) = r else { break };
                    prop_assert!(r.start < r.end && r.end <= blocks);
                    covered += r.end - r.start;
                }
                prop_assert!(covered <= blocks);
            }
        }
    }
}
