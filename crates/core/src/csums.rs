//! Checksum-based resync (`csums-alg`, DRBD's P_CSUM_RS_REQUEST and
//! P_RS_IS_IN_SYNC): the SyncTarget digests each range it needs (one digest
//! per 4 KiB block) and sends the digests instead of a plain request; the
//! SyncSource digests the same range, sends `ResyncData` only for the
//! blocks whose digests differ, then `CsumReply`. A resync of identical
//! disks sends about `digest_len / 4096` of their size (0.8 % with sha256,
//! 0.1 % with crc32c) instead of all of it.
//!
//! Invariants:
//! * The target digests under the range lock, in arrival order with the
//!   peer's writes, so its digests describe exactly the state after every
//!   write received before; the source digests under the range lock and
//!   queues its answer (data, then `CsumReply`) before releasing it, so a
//!   later application write reaches the target after the resync data (as
//!   for a plain resync read).
//! * A request completes on the target (bits cleared, `InSync` to the
//!   source) only when the `CsumReply` arrived and every `ResyncData` of it
//!   was written; `ResyncData` after the `CsumReply` of its request is a
//!   protocol error.

use bytes::Bytes;
use hadisk_bitmap::BLOCK_BYTES;
use hadisk_peer_proto::digest::{blocks_in, differing_blocks};
use hadisk_peer_proto::frame::MAX_DIGEST_RANGE_BYTES;
use hadisk_peer_proto::{DigestAlg, Message};

use crate::event::{Digested, IoId};
use crate::resource::Resource;
use crate::verify::DigestPurpose;

/// A `CsumRequest` the target sent and waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CsumWait {
    /// `ResyncData` of it received and not yet written.
    pub pending_writes: u32,
    /// The source's `CsumReply` arrived.
    pub replied: bool,
}

/// Runs of consecutive block indices (sorted input): `(first, count)`.
pub(crate) fn runs(blocks: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &b in blocks {
        match out.last_mut() {
            Some((first, n)) if *first + *n == b => *n += 1,
            _ => out.push((b, 1)),
        }
    }
    out
}

impl Resource {
    /// Target: requests `(first block, blocks)` by digest instead of by
    /// plain `ResyncRequest` (the caller registered `seq` as in flight).
    pub(crate) fn request_by_csum(&mut self, seq: u64, first: u64, n: u64, alg: DigestAlg) {
        let offset_bytes = first * BLOCK_BYTES;
        let len_bytes = (n * BLOCK_BYTES).min(self.cfg.size_bytes - offset_bytes) as u32;
        if let Some(t) = self.target.as_mut() {
            t.csums.insert(seq, CsumWait::default());
        }
        self.queue_digest(
            DigestPurpose::CsumTarget { seq },
            offset_bytes,
            len_bytes,
            alg,
        );
    }

    /// Largest request when requesting by digest.
    pub(crate) fn csum_chunk_limit_blocks() -> u64 {
        u64::from(MAX_DIGEST_RANGE_BYTES) / BLOCK_BYTES
    }

    /// Target: `ResyncData` for a csums request lies inside it and comes
    /// before its `CsumReply`; counts it as pending. `None`: not a csums
    /// request.
    pub(crate) fn csum_data_expected(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        len_bytes: u64,
    ) -> Option<bool> {
        let t = self.target.as_mut()?;
        let &(first, n) = t.inflight.get(&seq)?;
        let w = t.csums.get_mut(&seq)?;
        let start = first * BLOCK_BYTES;
        let inside = offset_bytes >= start
            && offset_bytes.saturating_add(len_bytes) <= (first + n) * BLOCK_BYTES;
        let ok = inside && len_bytes > 0 && !w.replied;
        if ok {
            w.pending_writes += 1;
        }
        Some(ok)
    }

    /// Target: one `ResyncData` of a csums request is written. `false`:
    /// not a csums request.
    pub(crate) fn csum_write_done(&mut self, seq: u64) -> bool {
        let Some(w) = self.target.as_mut().and_then(|t| t.csums.get_mut(&seq)) else {
            return false;
        };
        w.pending_writes = w.pending_writes.saturating_sub(1);
        if w.replied && w.pending_writes == 0 {
            self.csum_complete(seq);
        }
        true
    }

    /// Target: the source answered `seq` completely.
    pub(crate) fn csum_reply(&mut self, seq: u64) {
        let w = self.target.as_mut().and_then(|t| t.csums.get_mut(&seq));
        let Some(w) = w.filter(|w| !w.replied) else {
            self.protocol_error(format!("unexpected csum reply (seq {seq})"));
            return;
        };
        w.replied = true;
        if w.pending_writes == 0 {
            self.csum_complete(seq);
        }
    }

    fn csum_complete(&mut self, seq: u64) {
        let Some(t) = self.target.as_mut() else {
            return;
        };
        t.csums.remove(&seq);
        let Some((first, n)) = t.inflight.remove(&seq) else {
            return;
        };
        let _ = self.bitmap.clear_blocks(first..first + n);
        let offset_bytes = first * BLOCK_BYTES;
        let len_bytes = (n * BLOCK_BYTES).min(self.cfg.size_bytes - offset_bytes) as u32;
        self.send(Message::InSync {
            seq,
            offset_bytes,
            len_bytes,
        });
        self.target_pump();
    }

    // ---- source side ----

    /// Source: a `CsumRequest`; read and digest the range under the lock.
    pub(crate) fn csum_request(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        alg: DigestAlg,
        digests: Bytes,
    ) {
        self.queue_source_read(
            seq,
            offset_bytes,
            len_bytes,
            u64::from(MAX_DIGEST_RANGE_BYTES),
            "csum",
            Some((alg, digests)),
        );
    }

    /// Source: our digests are in; send the differing blocks, then the
    /// reply, then release the range.
    pub(crate) fn source_csum_done(&mut self, id: IoId, result: Option<Digested>) {
        let Some(r) = self.source_reads.remove(&id) else {
            return;
        };
        let current = r.epoch == self.link_epoch;
        let Some((alg, theirs)) = r.csum.as_ref() else {
            return;
        };
        let len = u64::from(r.len_bytes);
        let expected = blocks_in(len) * alg.len() as u64;
        match result {
            Some(d) if d.data.len() as u64 == len && d.digests.len() as u64 == expected => {
                if current {
                    let differ = differing_blocks(*alg, &d.digests, theirs);
                    for (first, n) in runs(&differ) {
                        let start = first * BLOCK_BYTES;
                        let end = ((first + n) * BLOCK_BYTES).min(len);
                        self.send(Message::ResyncData {
                            seq: r.seq,
                            offset_bytes: r.offset_bytes + start,
                            data: d.data.slice(start as usize..end as usize),
                        });
                    }
                    self.send(Message::CsumReply {
                        seq: r.seq,
                        offset_bytes: r.offset_bytes,
                        len_bytes: r.len_bytes,
                    });
                }
            }
            _ => self.disk_failed(),
        }
        self.unlock_span(r.offset_bytes, len);
        self.pump();
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_of_block_indices() {
        assert_eq!(runs(&[]), vec![]);
        assert_eq!(runs(&[3]), vec![(3, 1)]);
        assert_eq!(runs(&[0, 1, 2, 5, 7, 8]), vec![(0, 3), (5, 1), (7, 2)]);
    }
}
