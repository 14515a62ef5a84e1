//! Online verify (`hadisk verify RES`, DRBD's VerifyS/VerifyT) and the
//! local digest operations it shares with the checksum-based resync.
//!
//! VerifyS walks the whole usable area in chunks: it digests a chunk of its
//! own disk (one digest per 4 KiB block, `verify-alg`) and sends the digests
//! as `VerifyRequest`; VerifyT digests the same chunk of its disk, marks the
//! blocks whose digests differ out of sync in its bitmap and answers
//! `VerifyReply` with one bit per block; VerifyS marks the same blocks. The
//! next resync (disconnect + connect) repairs them; verify itself changes no
//! data.
//!
//! Invariants:
//! * A digest takes the range lock like a resync read, in arrival order
//!   with application and peer writes: it never sees half a write. VerifyS
//!   holds the lock until its `VerifyRequest` is queued on the link, so on a
//!   Primary VerifyS a write to the chunk is mirrored wholly before the
//!   request (and VerifyT digests after applying it) or wholly after both
//!   digests: no false difference from its own writes.
//! * Marking out of sync is always safe (it costs a resync of the block);
//!   a block is never cleared by verify.
//! * Completions of a link that went down send nothing; the verify stops
//!   with the link (replication leaves VerifyS/VerifyT).

use std::collections::BTreeMap;

use bytes::Bytes;
use hadisk_bitmap::BLOCK_BYTES;
use hadisk_peer_proto::digest::{blocks_in, differing_blocks};
use hadisk_peer_proto::frame::MAX_DIGEST_RANGE_BYTES;
use hadisk_peer_proto::{DigestAlg, DiskState, Message};

use crate::event::{Action, Digested, IoId};
use crate::resource::{Queued, Resource};
use crate::states::{Connection, Replication};
use crate::status::ResyncProgress;
use crate::CoreError;

/// Why a local range is being digested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DigestPurpose {
    /// SyncTarget (csums): the digests go out as `CsumRequest { seq }`.
    CsumTarget { seq: u64 },
    /// VerifyS: the digests go out as `VerifyRequest { seq }`.
    VerifySource { seq: u64 },
    /// VerifyT: compared with VerifyS's digests, answered by `VerifyReply`.
    VerifyTarget { seq: u64, peer_digests: Bytes },
}

/// A local digest, queued for the range lock or in flight.
#[derive(Debug)]
pub(crate) struct DigestOp {
    pub purpose: DigestPurpose,
    pub offset_bytes: u64,
    pub len_bytes: u32,
    pub alg: DigestAlg,
    pub epoch: u64,
    pub issued: bool,
}

/// A running online verify, on either side.
#[derive(Debug)]
pub(crate) struct VerifyRun {
    /// VerifyS (this node asked for it) or VerifyT.
    pub source: bool,
    pub alg: DigestAlg,
    /// VerifyS: the next block to request.
    pub cursor: u64,
    pub total_blocks: u64,
    pub done_blocks: u64,
    pub out_of_sync_blocks: u64,
    /// VerifyS: seq -> (first block, blocks) digested or requested.
    pub inflight: BTreeMap<u64, (u64, u64)>,
    pub started_ms: u64,
}

/// The progress or result of an online verify, as `status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Still running (else: the last verify's final figures).
    pub running: bool,
    /// This node was VerifyS.
    pub source: bool,
    pub done_percent: f64,
    /// Blocks found different, in bytes.
    pub out_of_sync_bytes: u64,
    /// Whether it ran to the end (false: stopped by a lost connection).
    pub complete: bool,
}

impl VerifyRun {
    fn report(&self, running: bool) -> VerifyReport {
        let done_percent = if self.total_blocks == 0 {
            100.0
        } else {
            self.done_blocks as f64 * 100.0 / self.total_blocks as f64
        };
        VerifyReport {
            running,
            source: self.source,
            done_percent,
            out_of_sync_bytes: self.out_of_sync_blocks * BLOCK_BYTES,
            complete: self.done_blocks >= self.total_blocks,
        }
    }
}

impl Resource {
    /// `hadisk verify RES`: checks, then starts as VerifyS.
    pub(crate) fn start_verify(&mut self) -> Result<(), CoreError> {
        if !self.link_is_up() || self.conn != Connection::Connected {
            return Err(CoreError::NotConnected {
                command: "verify",
                connection: self.conn,
            });
        }
        if self.repl != Replication::Established || self.full_sync.is_some() {
            return Err(CoreError::NotEstablished {
                command: "verify",
                replication: self.repl,
            });
        }
        let Some(alg) = self.cfg.verify_alg else {
            return Err(CoreError::NoVerifyAlg);
        };
        if self.disk != DiskState::UpToDate || self.peer_disk != Some(DiskState::UpToDate) {
            let peer = self
                .peer_disk
                .map_or("DUnknown".to_string(), |d| d.to_string());
            return Err(CoreError::VerifyNeedsUpToDate {
                local: self.disk,
                peer,
            });
        }
        self.set_repl(Replication::VerifyS);
        self.verify = Some(self.new_run(true, alg));
        self.send(Message::VerifyStart);
        self.verify_pump();
        Ok(())
    }

    fn new_run(&self, source: bool, alg: DigestAlg) -> VerifyRun {
        VerifyRun {
            source,
            alg,
            cursor: 0,
            total_blocks: blocks_in(self.cfg.size_bytes),
            done_blocks: 0,
            out_of_sync_blocks: 0,
            inflight: BTreeMap::new(),
            started_ms: self.now_ms,
        }
    }

    /// Verify progress in the shape of a resync's (status, overview).
    pub(crate) fn verify_progress(&self, v: &VerifyRun, now_ms: u64) -> ResyncProgress {
        let total_bytes = self.cfg.size_bytes;
        let done_bytes = (v.done_blocks * BLOCK_BYTES).min(total_bytes);
        let left = total_bytes - done_bytes;
        let elapsed_ms = now_ms.saturating_sub(v.started_ms).max(1);
        let speed_bytes_per_s = done_bytes.saturating_mul(1000) / elapsed_ms;
        ResyncProgress {
            total_bytes,
            done_bytes,
            done_percent: v.report(true).done_percent,
            speed_bytes_per_s,
            average_speed_bytes_per_s: speed_bytes_per_s,
            eta_s: (speed_bytes_per_s > 0).then(|| left / speed_bytes_per_s),
        }
    }

    /// Blocks of one verify chunk: the resync chunk, within a digest frame.
    fn verify_chunk_blocks(&self) -> u64 {
        (u64::from(self.cfg.resync_chunk_bytes) / BLOCK_BYTES)
            .clamp(1, u64::from(MAX_DIGEST_RANGE_BYTES) / BLOCK_BYTES)
    }

    /// VerifyS: digests the next chunks up to the in-flight limit; ends the
    /// verify when every chunk was answered.
    fn verify_pump(&mut self) {
        let chunk = self.verify_chunk_blocks();
        let limit = self.cfg.resync_requests.max(1);
        let size = self.cfg.size_bytes;
        let mut ops = Vec::new();
        {
            let Some(v) = self.verify.as_mut().filter(|v| v.source) else {
                return;
            };
            while v.inflight.len() + ops.len() < limit && v.cursor < v.total_blocks {
                let n = chunk.min(v.total_blocks - v.cursor);
                ops.push((v.cursor, n, v.alg));
                v.cursor += n;
            }
        }
        for (first, n, alg) in ops {
            let seq = self.next_io().0;
            if let Some(v) = self.verify.as_mut() {
                v.inflight.insert(seq, (first, n));
            }
            let offset_bytes = first * BLOCK_BYTES;
            let len_bytes = (n * BLOCK_BYTES).min(size - offset_bytes) as u32;
            self.queue_digest(
                DigestPurpose::VerifySource { seq },
                offset_bytes,
                len_bytes,
                alg,
            );
        }
        let done = self
            .verify
            .as_ref()
            .is_some_and(|v| v.source && v.inflight.is_empty() && v.cursor >= v.total_blocks);
        if done {
            self.send(Message::VerifyEnd);
            self.finish_verify();
        }
    }

    /// Ends the verify on this side: log, persist the marked bits, back to
    /// Established.
    fn finish_verify(&mut self) {
        let Some(v) = self.verify.take() else {
            return;
        };
        let report = v.report(false);
        let kib = report.out_of_sync_bytes / 1024;
        self.out.push(Action::Notice {
            message: format!("online verify done: {kib} KiB out of sync"),
        });
        if kib > 0 {
            self.out.push(Action::Notice {
                message: "the blocks found out of sync are resynced at the next connect (hadisk disconnect RES; hadisk connect RES)".into(),
            });
        }
        self.last_verify = Some(report);
        self.set_repl(Replication::Established);
        self.queue_meta(None);
    }

    /// The link went down: the verify stops (its marks stay).
    pub(crate) fn verify_link_down(&mut self) {
        if let Some(v) = self.verify.take() {
            let report = v.report(false);
            self.out.push(Action::Notice {
                message: format!(
                    "online verify stopped at {:.1}% (the connection was lost): {} KiB out of sync so far",
                    report.done_percent,
                    report.out_of_sync_bytes / 1024
                ),
            });
            self.last_verify = Some(report);
            self.queue_meta(None);
        }
        let queued: Vec<IoId> = self
            .digest_ops
            .iter()
            .filter(|(_, d)| !d.issued)
            .map(|(id, _)| *id)
            .collect();
        for id in queued {
            self.digest_ops.remove(&id);
        }
        self.queue.retain(|q| !matches!(q, Queued::Digest(_)));
    }

    pub(crate) fn queue_digest(
        &mut self,
        purpose: DigestPurpose,
        offset_bytes: u64,
        len_bytes: u32,
        alg: DigestAlg,
    ) {
        let id = self.next_io();
        let op = DigestOp {
            purpose,
            offset_bytes,
            len_bytes,
            alg,
            epoch: self.link_epoch,
            issued: false,
        };
        self.digest_ops.insert(id, op);
        self.queue.push_back(Queued::Digest(id));
        self.pump();
    }

    pub(crate) fn issue_digest(&mut self, id: IoId) {
        let Some(op) = self.digest_ops.get_mut(&id) else {
            return;
        };
        op.issued = true;
        let action = Action::DigestLocal {
            io: id,
            offset_bytes: op.offset_bytes,
            len_bytes: op.len_bytes,
            alg: op.alg,
        };
        self.out.push(action);
    }

    /// A `DigestLocal` finished: a csums source read or a digest op.
    pub(crate) fn digest_done(&mut self, id: IoId, result: Option<Digested>) {
        if self.source_reads.contains_key(&id) {
            self.source_csum_done(id, result);
            return;
        }
        let Some(op) = self.digest_ops.remove(&id) else {
            return;
        };
        self.unlock_after_digest(&op, result);
        self.pump();
    }

    fn unlock_after_digest(&mut self, op: &DigestOp, result: Option<Digested>) {
        let current = op.epoch == self.link_epoch && self.link_is_up();
        let digests = match result {
            Some(d)
                if d.digests.len() as u64
                    == blocks_in(u64::from(op.len_bytes)) * op.alg.len() as u64 =>
            {
                d.digests
            }
            _ => {
                self.unlock_span(op.offset_bytes, u64::from(op.len_bytes));
                self.disk_failed();
                return;
            }
        };
        if current {
            let (offset_bytes, len_bytes, alg) = (op.offset_bytes, op.len_bytes, op.alg);
            match &op.purpose {
                DigestPurpose::CsumTarget { seq } => self.send(Message::CsumRequest {
                    seq: *seq,
                    offset_bytes,
                    len_bytes,
                    alg,
                    digests,
                }),
                DigestPurpose::VerifySource { seq } => self.send(Message::VerifyRequest {
                    seq: *seq,
                    offset_bytes,
                    len_bytes,
                    alg,
                    digests,
                }),
                DigestPurpose::VerifyTarget { seq, peer_digests } => {
                    let differ = differing_blocks(alg, &digests, peer_digests);
                    self.verify_target_compared(*seq, offset_bytes, len_bytes, &differ);
                }
            }
        }
        // Released only now: the request is queued on the link behind
        // every write that the digest saw.
        self.unlock_span(op.offset_bytes, u64::from(op.len_bytes));
    }

    /// VerifyT: marks the differing blocks and answers.
    fn verify_target_compared(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        differ: &[u64],
    ) {
        let first = offset_bytes / BLOCK_BYTES;
        let blocks = blocks_in(u64::from(len_bytes));
        let mut bits = vec![0u8; blocks.div_ceil(8) as usize];
        let mut marked = 0;
        for &i in differ.iter().filter(|i| **i < blocks) {
            if let Some(b) = bits.get_mut((i / 8) as usize) {
                *b |= 1 << (i % 8);
            }
            let _ = self.bitmap.set_blocks(first + i..first + i + 1);
            marked += 1;
        }
        if let Some(v) = self.verify.as_mut() {
            v.done_blocks += blocks;
            v.out_of_sync_blocks += marked;
        }
        self.send(Message::VerifyReply {
            seq,
            offset_bytes,
            len_bytes,
            differ: Bytes::from(bits),
        });
    }

    // ---- messages from the peer ----

    pub(crate) fn peer_verify_start(&mut self) {
        if self.repl != Replication::Established || !self.link_is_up() {
            self.protocol_error(format!(
                "the peer started an online verify during {}",
                self.repl
            ));
            return;
        }
        // VerifyS's algorithm decides (each request names it).
        let alg = self.cfg.verify_alg.unwrap_or(DigestAlg::Sha256);
        self.set_repl(Replication::VerifyT);
        self.verify = Some(self.new_run(false, alg));
    }

    pub(crate) fn peer_verify_request(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        alg: DigestAlg,
        digests: Bytes,
    ) {
        let in_range = self.check_range(offset_bytes, u64::from(len_bytes)).is_ok()
            && len_bytes <= MAX_DIGEST_RANGE_BYTES;
        if self.repl != Replication::VerifyT || !in_range {
            self.protocol_error(format!(
                "unexpected verify request ({len_bytes} bytes at {offset_bytes}) during {}",
                self.repl
            ));
            return;
        }
        let purpose = DigestPurpose::VerifyTarget {
            seq,
            peer_digests: digests,
        };
        self.queue_digest(purpose, offset_bytes, len_bytes, alg);
    }

    pub(crate) fn peer_verify_reply(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        differ: &[u8],
    ) {
        let expected = self
            .verify
            .as_ref()
            .filter(|v| v.source)
            .and_then(|v| v.inflight.get(&seq).copied());
        let Some((first, n)) = expected.filter(|(f, _)| f * BLOCK_BYTES == offset_bytes) else {
            self.protocol_error(format!(
                "unexpected verify reply (seq {seq}, offset {offset_bytes})"
            ));
            return;
        };
        let blocks = blocks_in(u64::from(len_bytes)).min(n);
        let mut marked = 0;
        for i in 0..blocks {
            let set = differ
                .get((i / 8) as usize)
                .is_some_and(|b| b & (1 << (i % 8)) != 0);
            if set {
                let _ = self.bitmap.set_blocks(first + i..first + i + 1);
                marked += 1;
            }
        }
        if let Some(v) = self.verify.as_mut() {
            v.inflight.remove(&seq);
            v.done_blocks += n;
            v.out_of_sync_blocks += marked;
        }
        self.verify_pump();
    }

    pub(crate) fn peer_verify_end(&mut self) {
        if self.verify.as_ref().is_some_and(|v| !v.source) {
            self.finish_verify();
        } else {
            self.protocol_error(format!("unexpected verify end during {}", self.repl));
        }
    }

    /// The running verify's figures, else the last one's.
    pub fn verify_report(&self) -> Option<VerifyReport> {
        match &self.verify {
            Some(v) => Some(v.report(true)),
            None => self.last_verify.clone(),
        }
    }
}
