//! The Primary's write path (protocol C) and flushes.
//!
//! A client write: queued → range lock → AL extents active (an AL
//! transaction first when an extent is new) → local write and `Data` to the
//! peer issued together → completes when the local write is done and the
//! peer acked (or the peer is gone and the blocks are in the bitmap).
//!
//! Invariants:
//! * While the peer does not take writes, every write's blocks are set in
//!   the bitmap before the write is issued.
//! * A completed write stays "unstable" (AL extents pinned, blocks re-marked
//!   if the link drops) until a flush of both disks issued after its
//!   completion has finished, or immediately if it was FUA.
//! * The core flushes on its own when `max_unstable` operations are
//!   unstable or the AL has no free slot, so pinned extents are released.

use hadisk_peer_proto::{DiskState, Message, Payload, Role};

use crate::event::{Action, IoId, ReqId};
use crate::resource::{AppWrite, FlushOp, FlushThen, Link, Queued, Resource, Unstable, WriteStage};
use crate::CoreError;

impl Resource {
    pub(crate) fn client_write(&mut self, req: ReqId, offset_bytes: u64, data: Payload, fua: bool) {
        let len = data.len() as u64;
        // A Primary that is SyncTarget leaves room for its own writes.
        self.rate.app_io(self.now_ms, len);
        let refuse = if self.role != Role::Primary || self.demoting {
            Some(CoreError::NotPrimary)
        } else if self.disk < DiskState::Inconsistent {
            Some(CoreError::LocalIo { disk: self.disk })
        } else if len > u64::from(hadisk_peer_proto::frame::MAX_DATA_BYTES) {
            Some(CoreError::BadRange {
                offset_bytes,
                len_bytes: len,
                size_bytes: self.cfg.size_bytes,
            })
        } else if let Some(err) = self.al_span_error(offset_bytes, len) {
            Some(err)
        } else {
            self.check_range(offset_bytes, len).err()
        };
        if let Some(err) = refuse {
            self.out.push(Action::ClientDone {
                req,
                result: Err(err),
            });
            return;
        }
        let id = self.next_io();
        let w = AppWrite {
            req,
            offset_bytes,
            len_bytes: len,
            data: Some(data),
            fua,
            stage: WriteStage::Queued,
            local_ok: None,
            peer_wait: false,
            sent_to_peer: false,
            peer_acked: false,
            al_held: false,
        };
        self.writes.insert(id, w);
        self.queue.push_back(Queued::AppWrite(id));
        self.pump();
    }

    fn al_span_error(&self, offset_bytes: u64, len_bytes: u64) -> Option<CoreError> {
        let extents = hadisk_bitmap::ActivityLog::extent_range(offset_bytes, len_bytes)
            .ok()?
            .len() as u64;
        let capacity = self.al.capacity();
        (extents > u64::from(capacity)).then_some(CoreError::WriteTooWideForAl {
            len_bytes,
            extents,
            capacity,
        })
    }

    /// Called by `pump` when the range is free: lock, AL, issue.
    pub(crate) fn start_app_write(&mut self, id: IoId, first: u64, n: u64) -> bool {
        // Writes wait while the handshake decides what the peer needs: the
        // bitmap we sent must stay a complete record.
        if matches!(self.link, Link::Handshake(_)) {
            return false;
        }
        let Some((offset_bytes, len)) = self.writes.get(&id).map(|w| (w.offset_bytes, w.len_bytes))
        else {
            return true;
        };
        let update = match self.al.begin_io(offset_bytes, len) {
            Ok(u) => u,
            Err(_) => {
                // AL full of pinned extents: flushing releases the unstable ones.
                self.start_internal_flush();
                return false;
            }
        };
        if !self.lock.try_lock(first, n, id.0) {
            let _ = self.al.end_io(offset_bytes, len);
            return false;
        }
        let mut wait_seq = 0;
        if update.needs_transaction() {
            for c in &update.changes {
                self.al_uncommitted.remove(&c.new_extent);
            }
            let seq = self.queue_meta(Some(update.changes.clone()));
            for c in &update.changes {
                self.al_uncommitted.insert(c.new_extent, seq);
            }
            wait_seq = seq;
        }
        if let Ok(extents) = hadisk_bitmap::ActivityLog::extent_range(offset_bytes, len) {
            for e in extents {
                if let Some(s) = self.al_uncommitted.get(&e) {
                    wait_seq = wait_seq.max(*s);
                }
            }
        }
        if let Some(w) = self.writes.get_mut(&id) {
            w.al_held = true;
            w.stage = WriteStage::WaitMeta(wait_seq);
        }
        if wait_seq <= self.meta_done {
            self.issue_app_write(id);
        }
        true
    }

    /// Issues writes whose AL transaction is now durable.
    pub(crate) fn release_meta_waiting_writes(&mut self) {
        if matches!(self.link, Link::Handshake(_)) {
            // Issued now they would be marked in a bitmap the peer already
            // has a copy of; `connected` releases them once decided.
            return;
        }
        let done = self.meta_done;
        let ready: Vec<IoId> = self
            .writes
            .iter()
            .filter(|(_, w)| matches!(w.stage, WriteStage::WaitMeta(s) if s <= done))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.issue_app_write(id);
        }
    }

    fn issue_app_write(&mut self, id: IoId) {
        let mirror = self.peer_takes_writes();
        let Some(w) = self.writes.get_mut(&id) else {
            return;
        };
        // Issued once: a write whose payload was handed over is never
        // issued again.
        let Some(data) = w.data.take() else {
            return;
        };
        w.stage = WriteStage::Issued;
        let (offset_bytes, len_bytes, fua) = (w.offset_bytes, w.len_bytes, w.fua);
        if mirror {
            w.peer_wait = true;
            w.sent_to_peer = true;
        } else {
            let _ = self.bitmap.set_bytes(offset_bytes, len_bytes);
        }
        // The peer's copy is a second reference to the payload, not a copy.
        let to_peer = mirror.then(|| data.clone());
        self.out.push(Action::WriteLocal {
            io: id,
            offset_bytes,
            data,
            fua,
        });
        if let Some(data) = to_peer {
            self.send(Message::Data {
                seq: id.0,
                offset_bytes,
                data,
                fua,
            });
        }
    }

    pub(crate) fn app_write_done(&mut self, id: IoId, ok: bool) {
        let Some(w) = self.writes.get_mut(&id) else {
            return;
        };
        w.local_ok = Some(ok);
        let (offset_bytes, len) = (w.offset_bytes, w.len_bytes);
        if !ok {
            // The block may now differ from the peer's.
            let _ = self.bitmap.set_bytes(offset_bytes, len);
            self.disk_failed();
        }
        self.try_complete_write(id);
    }

    /// `WriteAck` / `NegAck` for a mirrored write.
    pub(crate) fn peer_ack(&mut self, seq: u64, ok: bool) {
        let id = IoId(seq);
        let Some(w) = self.writes.get_mut(&id) else {
            return;
        };
        if !w.peer_wait {
            return;
        }
        w.peer_wait = false;
        w.peer_acked = ok;
        if !ok {
            w.sent_to_peer = false;
            let (o, l) = (w.offset_bytes, w.len_bytes);
            let _ = self.bitmap.set_bytes(o, l);
        }
        self.try_complete_write(id);
    }

    pub(crate) fn try_complete_write(&mut self, id: IoId) {
        let Some(w) = self.writes.get(&id) else {
            return;
        };
        let Some(local_ok) = w.local_ok else { return };
        if w.peer_wait || self.gen_meta_seq > self.meta_done {
            return;
        }
        let Some(w) = self.writes.remove(&id) else {
            return;
        };
        let len = w.len_bytes;
        self.unlock_span(w.offset_bytes, len);
        // With the local disk failed, a write the peer does not have cannot
        // be vouched for: the bitmap bit and the new generation that would
        // record it can no longer be persisted.
        let vouched = w.peer_acked || self.disk != DiskState::Failed;
        let result = if local_ok && vouched {
            Ok(())
        } else {
            Err(CoreError::LocalIo { disk: self.disk })
        };
        self.out.push(Action::ClientDone { req: w.req, result });
        if w.fua && local_ok {
            self.release_al(w.offset_bytes, len, w.al_held);
        } else {
            self.push_unstable(w.offset_bytes, len, w.sent_to_peer, w.al_held);
        }
        self.pump();
    }

    /// Completes writes that only waited for a new generation to be durable.
    pub(crate) fn complete_deferred_writes(&mut self) {
        let ready: Vec<IoId> = self
            .writes
            .iter()
            .filter(|(_, w)| w.local_ok.is_some() && !w.peer_wait)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            self.try_complete_write(id);
        }
    }

    pub(crate) fn release_al(&mut self, offset_bytes: u64, len_bytes: u64, held: bool) {
        if held {
            let _ = self.al.end_io(offset_bytes, len_bytes);
        }
    }

    pub(crate) fn push_unstable(
        &mut self,
        offset_bytes: u64,
        len_bytes: u64,
        on_peer: bool,
        al_held: bool,
    ) {
        self.unstable_counter += 1;
        self.unstable.push_back(Unstable {
            counter: self.unstable_counter,
            offset_bytes,
            len_bytes,
            on_peer,
            al_held,
        });
        if self.unstable.len() >= self.cfg.max_unstable {
            self.start_internal_flush();
        }
    }

    pub(crate) fn client_flush(&mut self, req: ReqId) {
        if self.role != Role::Primary {
            self.out.push(Action::ClientDone {
                req,
                result: Err(CoreError::NotPrimary),
            });
            return;
        }
        if self.disk < DiskState::Inconsistent {
            self.out.push(Action::ClientDone {
                req,
                result: Err(CoreError::LocalIo { disk: self.disk }),
            });
            return;
        }
        self.issue_flush(FlushThen::Client(req));
    }

    pub(crate) fn start_internal_flush(&mut self) {
        if self.internal_flush || self.unstable.is_empty() || self.disk < DiskState::Inconsistent {
            return;
        }
        self.internal_flush = true;
        self.issue_flush(FlushThen::Internal);
    }

    /// Flushes the local disk and, when it has our writes, the peer's.
    pub(crate) fn issue_flush(&mut self, then: FlushThen) {
        let id = self.next_io();
        let peer_wait =
            self.link_is_up() && self.peer_disk.is_some_and(|d| d >= DiskState::Inconsistent);
        self.flushes.insert(
            id,
            FlushOp {
                then,
                local_ok: None,
                peer_wait,
                upto: self.unstable_counter + 1,
            },
        );
        self.out.push(Action::FlushLocal { io: id });
        if peer_wait {
            self.send(Message::Flush { seq: id.0 });
        }
    }

    pub(crate) fn local_flush_done(&mut self, id: IoId, ok: bool) {
        if let Some(f) = self.flushes.get_mut(&id) {
            f.local_ok = Some(ok);
        }
        if !ok {
            self.disk_failed();
        }
        self.try_complete_flush(id);
    }

    pub(crate) fn peer_flush_ack(&mut self, seq: u64) {
        let id = IoId(seq);
        if let Some(f) = self.flushes.get_mut(&id) {
            f.peer_wait = false;
        }
        self.try_complete_flush(id);
    }

    pub(crate) fn try_complete_flush(&mut self, id: IoId) {
        let Some(f) = self.flushes.get(&id) else {
            return;
        };
        let Some(ok) = f.local_ok else { return };
        if f.peer_wait {
            return;
        }
        let Some(f) = self.flushes.remove(&id) else {
            return;
        };
        if ok {
            while self.unstable.front().is_some_and(|u| u.counter < f.upto) {
                if let Some(u) = self.unstable.pop_front() {
                    self.release_al(u.offset_bytes, u.len_bytes, u.al_held);
                }
            }
        }
        match f.then {
            FlushThen::Client(req) => {
                let result = if ok {
                    Ok(())
                } else {
                    Err(CoreError::LocalIo { disk: self.disk })
                };
                self.out.push(Action::ClientDone { req, result });
            }
            FlushThen::Internal => self.internal_flush = false,
            FlushThen::Demote(cmd) => self.demote_flushed(cmd, ok),
        }
        self.pump();
    }

    /// The peer is gone: whatever it has not acknowledged, or may lose in a
    /// crash, goes into the bitmap; waiting writes and flushes complete.
    pub(crate) fn primary_lost_peer(&mut self) {
        // Writes the peer has (acked or not) but has maybe not made durable:
        // including acked ones whose local write is still in flight, which
        // become unstable only after this re-marking.
        let sent: Vec<IoId> = self
            .writes
            .iter()
            .filter(|(_, w)| w.sent_to_peer)
            .map(|(id, _)| *id)
            .collect();
        let waiting: Vec<IoId> = self
            .writes
            .iter()
            .filter(|(_, w)| w.peer_wait)
            .map(|(id, _)| *id)
            .collect();
        for id in &sent {
            if let Some(w) = self.writes.get_mut(id) {
                w.peer_wait = false;
                w.sent_to_peer = false;
                let (o, l) = (w.offset_bytes, w.len_bytes);
                let _ = self.bitmap.set_bytes(o, l);
            }
        }
        for u in self.unstable.iter_mut().filter(|u| u.on_peer) {
            u.on_peer = false;
            let _ = self.bitmap.set_bytes(u.offset_bytes, u.len_bytes);
        }
        for id in waiting {
            self.try_complete_write(id);
        }
        let flushes: Vec<IoId> = self
            .flushes
            .iter()
            .filter(|(_, f)| f.peer_wait)
            .map(|(id, _)| *id)
            .collect();
        for id in flushes {
            if let Some(f) = self.flushes.get_mut(&id) {
                f.peer_wait = false;
            }
            self.try_complete_flush(id);
        }
    }

    /// Queued writes fail when the disk is gone.
    pub(crate) fn fail_queued_writes(&mut self) {
        let queued: Vec<IoId> = self
            .writes
            .iter()
            .filter(|(_, w)| w.stage != WriteStage::Issued)
            .map(|(id, _)| *id)
            .collect();
        for id in queued {
            if let Some(w) = self.writes.remove(&id) {
                let len = w.len_bytes;
                if w.stage != WriteStage::Queued {
                    self.unlock_span(w.offset_bytes, len);
                    self.release_al(w.offset_bytes, len, w.al_held);
                }
                let err = CoreError::LocalIo { disk: self.disk };
                self.out.push(Action::ClientDone {
                    req: w.req,
                    result: Err(err),
                });
            }
        }
        self.queue
            .retain(|q| !matches!(q, Queued::AppWrite(id) if !self.writes.contains_key(id)));
    }
}
