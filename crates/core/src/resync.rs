//! The resync: the target walks the (merged) bitmap and requests dirty runs;
//! the source reads them under the range lock and sends them; the target
//! writes them, clears its bits and confirms with `InSync`, on which the
//! source clears its bits.
//!
//! Invariants:
//! * The target sends no request before its Inconsistent state is durable,
//!   and declares itself UpToDate (adopting the source's current UUID) only
//!   after a local flush once no bit is left.
//! * The source holds the range lock from the read until `ResyncData` is
//!   queued on the link, so an application write to the same blocks is
//!   sent either wholly before the read or after the resync data: the
//!   target never ends with the older data.
//! * A range the target confirmed stays unstable on the source (re-marked if
//!   the link drops) until a flush of both disks.

use std::collections::VecDeque;

use bytes::Bytes;
use hadisk_bitmap::BLOCK_BYTES;
use hadisk_peer_proto::{DigestAlg, DiskState, Message, Role, Uuids};

use crate::event::{Action, IoId};
use crate::generation::{finish_sync_source, finish_sync_target};
use crate::resource::{MetaWaiter, Queued, Resource, SourceRead, SyncProgress, TargetSync};
use crate::states::Replication;

/// How often a running resync records a sync mark (time, blocks left).
pub const SYNC_MARK_STEP_MS: u64 = 1_000;
/// The current speed is measured over about this long (DRBD's `speed:`
/// figure is over its last few sync marks too; the average since the start
/// is shown beside it).
pub const CURRENT_SPEED_WINDOW_MS: u64 = 4_000;

impl Resource {
    pub(crate) fn start_progress(&mut self) {
        let total_blocks = self.bitmap.dirty_blocks();
        self.progress = Some(SyncProgress {
            total_blocks,
            started_ms: self.now_ms,
            marks: VecDeque::from([(self.now_ms, total_blocks)]),
        });
    }

    /// Records a sync mark (time, blocks left) every [`SYNC_MARK_STEP_MS`],
    /// keeping those of the last [`CURRENT_SPEED_WINDOW_MS`]: the current
    /// speed is measured from the oldest (DRBD's sync marks).
    pub(crate) fn note_progress(&mut self) {
        let now = self.now_ms;
        let left = self.bitmap.dirty_blocks();
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        if p.marks
            .back()
            .is_some_and(|(t, _)| now < t + SYNC_MARK_STEP_MS)
        {
            return;
        }
        p.marks.push_back((now, left));
        while p.marks.len() > 1
            && p.marks
                .get(1)
                .is_some_and(|(t, _)| now >= t + CURRENT_SPEED_WINDOW_MS)
        {
            p.marks.pop_front();
        }
    }

    /// Asks the driver for a tick at `at_ms` unless an earlier one is due.
    pub(crate) fn wake_at_time(&mut self, at_ms: u64) {
        if self.wake_at.is_some_and(|w| w <= at_ms && w > self.now_ms) {
            return;
        }
        self.wake_at = Some(at_ms);
        self.out.push(Action::WakeAt { at_ms });
    }

    pub(crate) fn tick(&mut self) {
        if self.wake_at.is_some_and(|w| w <= self.now_ms) {
            self.wake_at = None;
        }
        self.target_pump();
    }

    /// Either node paused the resync.
    pub(crate) fn sync_paused(&self) -> bool {
        self.sync_paused_here || self.sync_paused_by_peer
    }

    /// The replication state of a running resync, paused or not.
    pub(crate) fn sync_state(&self, target: bool) -> Replication {
        match (target, self.sync_paused()) {
            (true, false) => Replication::SyncTarget,
            (true, true) => Replication::PausedSyncT,
            (false, false) => Replication::SyncSource,
            (false, true) => Replication::PausedSyncS,
        }
    }

    /// Re-derives SyncX/PausedSyncX after a pause flag changed; a resumed
    /// target requests again.
    fn pause_changed(&mut self) {
        let target = match self.repl {
            Replication::SyncTarget | Replication::PausedSyncT => true,
            Replication::SyncSource | Replication::PausedSyncS => false,
            _ => return,
        };
        self.set_repl(self.sync_state(target));
        if target {
            self.target_pump();
        }
    }

    /// `pause-sync` / `resume-sync` here: tell the peer, which shows the
    /// paused state too.
    pub(crate) fn set_sync_paused_here(&mut self, paused: bool) -> Result<(), crate::CoreError> {
        if self.sync_paused_here == paused {
            return Err(if paused {
                crate::CoreError::SyncAlreadyPaused
            } else {
                crate::CoreError::SyncNotPaused
            });
        }
        self.sync_paused_here = paused;
        if self.link_is_up() {
            self.send(Message::SyncPause { paused });
        }
        self.pause_changed();
        Ok(())
    }

    pub(crate) fn peer_sync_pause(&mut self, paused: bool) {
        self.sync_paused_by_peer = paused;
        self.pause_changed();
    }

    /// The SyncSource's side of a resync, paused or not.
    pub(crate) fn is_sync_source(&self) -> bool {
        matches!(
            self.repl,
            Replication::SyncSource | Replication::PausedSyncS
        )
    }

    /// Becomes SyncTarget: persist Inconsistent, then request.
    pub(crate) fn start_target(&mut self) {
        self.set_repl(self.sync_state(true));
        self.set_disk(DiskState::Inconsistent);
        self.sb.consistent = false;
        self.sb.was_up_to_date = false;
        self.target = Some(TargetSync::default());
        self.rate.start(self.now_ms);
        self.start_progress();
        let seq = self.queue_meta(None);
        self.wait_meta(seq, MetaWaiter::StartTarget);
    }

    pub(crate) fn target_persisted(&mut self) {
        if let Some(t) = self.target.as_mut() {
            t.started = true;
        }
        self.target_pump();
    }

    fn chunk_blocks(&self) -> u64 {
        let max = match self.cfg.csums_alg {
            Some(_) => Self::csum_chunk_limit_blocks(),
            None => crate::rangelock::MAX_LOCK_SPAN_BLOCKS - 1,
        };
        (u64::from(self.cfg.resync_chunk_bytes) / BLOCK_BYTES).clamp(1, max)
    }

    /// Sends requests up to the in-flight limit and what the rate
    /// controller allows (asking for a [`Action::WakeAt`] when it holds
    /// them back); finishes when nothing is left. Nothing while paused.
    pub(crate) fn target_pump(&mut self) {
        let chunk = self.chunk_blocks();
        let limit = self.cfg.resync_requests.max(1);
        let paused = self.sync_paused();
        let now = self.now_ms;
        let mut requests = Vec::new();
        let mut wake = None;
        {
            let Some(t) = self.target.as_mut() else {
                return;
            };
            if !t.started || t.finishing.is_some() || paused {
                return;
            }
            let inflight_blocks: u64 = t.inflight.values().map(|(_, n)| n).sum();
            let allowance = self.rate.allowance(now, inflight_blocks * BLOCK_BYTES);
            let mut allowed_blocks = allowance.bytes / BLOCK_BYTES;
            if allowed_blocks == 0 {
                wake = allowance.wake_at_ms;
            }
            let mut wrapped = false;
            while t.inflight.len() + requests.len() < limit && allowed_blocks > 0 {
                match self
                    .bitmap
                    .next_dirty_run(t.cursor, chunk.min(allowed_blocks))
                {
                    Some(run) => {
                        // Skip a run that is already requested, also in
                        // this round: after the cursor wraps, the runs
                        // just collected would be requested a second time
                        // (every run twice when fewer runs than requests
                        // in flight were dirty).
                        let overlaps = |(f, n): &(u64, u64)| run.start < f + n && *f < run.end;
                        if t.inflight.values().any(overlaps) || requests.iter().any(overlaps) {
                            t.cursor = run.end;
                            continue;
                        }
                        requests.push((run.start, run.end - run.start));
                        allowed_blocks -= run.end - run.start;
                        t.cursor = run.end;
                    }
                    None if !wrapped && !self.bitmap.is_clean() => {
                        wrapped = true;
                        t.cursor = 0;
                    }
                    None => break,
                }
            }
        }
        if let Some(at_ms) = wake {
            self.wake_at_time(at_ms);
        }
        for (first, n) in requests {
            self.rate.issued(n * BLOCK_BYTES);
            let seq = self.next_io().0;
            let offset_bytes = first * BLOCK_BYTES;
            let len_bytes = (n * BLOCK_BYTES).min(self.cfg.size_bytes - offset_bytes) as u32;
            if let Some(t) = self.target.as_mut() {
                t.inflight.insert(seq, (first, n));
            }
            if let Some(alg) = self.cfg.csums_alg {
                self.request_by_csum(seq, first, n, alg);
                continue;
            }
            self.send(Message::ResyncRequest {
                seq,
                offset_bytes,
                len_bytes,
            });
        }
        let done =
            self.target.as_ref().is_some_and(|t| t.inflight.is_empty()) && self.bitmap.is_clean();
        if done {
            let io = self.next_io();
            if let Some(t) = self.target.as_mut() {
                t.finishing = Some(io);
            }
            self.out.push(Action::FlushLocal { io });
        }
    }

    pub(crate) fn resync_data_expected(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        len_bytes: u64,
    ) -> bool {
        if let Some(ok) = self.csum_data_expected(seq, offset_bytes, len_bytes) {
            return ok;
        }
        let Some(t) = self.target.as_ref() else {
            return false;
        };
        t.inflight
            .get(&seq)
            .is_some_and(|(first, _)| first * BLOCK_BYTES == offset_bytes && len_bytes > 0)
    }

    pub(crate) fn resync_write_done(&mut self, seq: u64, offset_bytes: u64, len_bytes: u64) {
        if self.csum_write_done(seq) {
            return;
        }
        let Some(t) = self.target.as_mut() else {
            return;
        };
        let Some((first, n)) = t.inflight.remove(&seq) else {
            return;
        };
        let _ = self.bitmap.clear_blocks(first..first + n);
        self.send(Message::InSync {
            seq,
            offset_bytes,
            len_bytes: len_bytes as u32,
        });
        self.target_pump();
    }

    /// Every block is written and flushed: tell the source (our UUIDs
    /// unchanged), which rotates its bitmap UUID first; only its answer
    /// makes us adopt its current UUID. A link lost in between leaves the
    /// source with the newer UUIDs (a full sync next time, never a sync in
    /// the wrong direction): with the opposite order, a source that crashed
    /// before hearing of the finish looked like the newer side (rule 34)
    /// although it had lost unflushed writes the target had.
    pub(crate) fn target_flush_done(&mut self, ok: bool) {
        if !ok {
            self.disk_failed();
            return;
        }
        let Some(t) = self.target.as_mut() else {
            return;
        };
        t.awaiting_source = true;
        let msg = Message::StateChange {
            role: self.role,
            disk: DiskState::UpToDate,
            uuids: self.sb.uuids,
        };
        self.send(msg);
    }

    /// The source rotated its bitmap UUID: adopt its current one.
    fn target_adopt(&mut self, source: Uuids) {
        if let Some(t) = self.target.as_mut() {
            t.awaiting_source = false;
        }
        self.sb.uuids = finish_sync_target(&self.sb.uuids, source.current);
        self.sb.consistent = true;
        self.sb.was_up_to_date = true;
        self.sb.crashed_primary = false;
        let seq = self.queue_meta(None);
        self.wait_meta(seq, MetaWaiter::FinishTarget);
    }

    pub(crate) fn target_finished(&mut self) {
        if self.target.take().is_none() {
            // The link dropped after the last block was flushed: the data is
            // complete (and persisted as consistent) but whether it is still
            // the newest is unknown.
            if self.sb.consistent && self.disk == DiskState::Inconsistent {
                self.set_disk(DiskState::Consistent);
            }
            return;
        }
        self.progress = None;
        self.set_disk(DiskState::UpToDate);
        self.set_repl(Replication::Established);
        self.send_state();
    }

    // ---- source side ----

    pub(crate) fn resync_request(&mut self, seq: u64, offset_bytes: u64, len_bytes: u32) {
        let max = (crate::rangelock::MAX_LOCK_SPAN_BLOCKS - 1) * BLOCK_BYTES;
        self.queue_source_read(seq, offset_bytes, len_bytes, max, "resync", None);
    }

    /// Source: a resync (or csum) request from the target, checked (its
    /// range within `max_bytes` and the disk, this node able to serve it),
    /// queued as a read under the range lock; a bad one is a protocol error.
    pub(crate) fn queue_source_read(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        len_bytes: u32,
        max_bytes: u64,
        what: &str,
        csum: Option<(DigestAlg, Bytes)>,
    ) {
        if u64::from(len_bytes) > max_bytes
            || self
                .check_range(offset_bytes, u64::from(len_bytes))
                .is_err()
        {
            self.protocol_error(format!(
                "bad {what} request: {len_bytes} bytes at offset {offset_bytes}"
            ));
            return;
        }
        if !self.link_is_up() || self.disk < DiskState::Outdated {
            self.protocol_error(format!(
                "{what} request to a node that is not a sync source"
            ));
            return;
        }
        let id = self.next_io();
        let r = SourceRead {
            seq,
            offset_bytes,
            len_bytes,
            epoch: self.link_epoch,
            issued: false,
            csum,
        };
        self.source_reads.insert(id, r);
        self.queue.push_back(Queued::ResyncRead(id));
        self.pump();
    }

    pub(crate) fn issue_source_read(&mut self, id: IoId) {
        let Some(r) = self.source_reads.get_mut(&id) else {
            return;
        };
        r.issued = true;
        let action = match &r.csum {
            Some((alg, _)) => Action::DigestLocal {
                io: id,
                offset_bytes: r.offset_bytes,
                len_bytes: r.len_bytes,
                alg: *alg,
            },
            None => Action::ReadLocal {
                io: id,
                offset_bytes: r.offset_bytes,
                len_bytes: r.len_bytes,
            },
        };
        self.out.push(action);
    }

    pub(crate) fn read_done(&mut self, id: IoId, data: Option<Bytes>) {
        let Some(r) = self.source_reads.remove(&id) else {
            return;
        };
        let current = r.epoch == self.link_epoch;
        match data {
            Some(data) if data.len() == r.len_bytes as usize => {
                if current {
                    self.send(Message::ResyncData {
                        seq: r.seq,
                        offset_bytes: r.offset_bytes,
                        data,
                    });
                }
            }
            _ => self.disk_failed(),
        }
        self.unlock_span(r.offset_bytes, u64::from(r.len_bytes));
        self.pump();
    }

    /// The target has the range: clear it here (until a flush it stays
    /// unstable, re-marked if the link drops).
    pub(crate) fn peer_in_sync(&mut self, offset_bytes: u64, len_bytes: u32) {
        let len = u64::from(len_bytes);
        if self.check_range(offset_bytes, len).is_err() {
            self.protocol_error(format!(
                "bad in-sync range: {len_bytes} bytes at {offset_bytes}"
            ));
            return;
        }
        let _ = self.bitmap.clear_bytes(offset_bytes, len);
        self.push_unstable(offset_bytes, len, true, false);
    }

    /// A peer state change; a SyncTarget reporting UpToDate ends our resync.
    pub(crate) fn peer_state(&mut self, role: Role, disk: DiskState, uuids: Uuids) {
        if role == Role::Primary && self.role == Role::Primary {
            self.protocol_error("the peer became Primary while this node is Primary".into());
            return;
        }
        if role != Role::Primary || self.granted_peer {
            self.granted_peer = false;
        }
        self.set_peer_role(role);
        self.peer_uuids = uuids;
        self.set_peer_disk(Some(disk));
        if self.is_sync_source() && disk == DiskState::UpToDate {
            self.finish_source();
        }
        let awaiting = self.target.as_ref().is_some_and(|t| t.awaiting_source);
        if awaiting && disk == DiskState::UpToDate && Uuids::id(uuids.bitmap) == 0 {
            self.target_adopt(uuids);
        }
    }

    fn finish_source(&mut self) {
        self.sb.uuids = finish_sync_source(&self.sb.uuids);
        self.sb.peer_outdated = false;
        self.sb.crashed_primary = false;
        // The target flushed before reporting UpToDate: resync ranges it
        // confirmed are durable there.
        self.unstable.retain(|u| u.al_held || !u.on_peer);
        self.progress = None;
        self.set_repl(Replication::Established);
        let seq = self.queue_meta(None);
        self.wait_meta(seq, MetaWaiter::SourceFinished);
    }
}
