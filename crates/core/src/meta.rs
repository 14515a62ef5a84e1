//! The metadata write queue: AL transactions, bitmap pages and superblock
//! updates, one [`Action::WriteMeta`] in flight at a time.
//!
//! Invariants:
//! * Requests made while one write is in flight are batched into the next;
//!   a request's sequence number is that of the write that will carry it,
//!   and `meta_done >= seq` means it is durable.
//! * Every metadata write carries the bitmap pages changed since the last
//!   one, so an extent leaving the AL never loses its bits.
//! * A Failed disk issues no more metadata writes; waiters stay waiting.

use hadisk_bitmap::SlotChange;
use hadisk_peer_proto::DiskState;

use crate::event::{Action, MetaUpdate};
use crate::resource::{MetaWaiter, Resource};

impl Resource {
    /// Queues a metadata write (with `al` slot changes, if any); every
    /// write carries the changed bitmap pages and, if it changed since the
    /// last write, the superblock as it is when issued. Returns the sequence of the write that will carry it.
    pub(crate) fn queue_meta(&mut self, al: Option<Vec<SlotChange>>) -> u64 {
        if matches!(self.disk, DiskState::Failed | DiskState::Diskless) {
            // Never durable: whatever waits for it waits until re-attach.
            return u64::MAX;
        }
        let pending = self.meta_next.get_or_insert_with(Vec::new);
        if let Some(changes) = al {
            pending.extend(changes);
        }
        if self.meta_inflight.is_none() {
            self.issue_meta();
            self.meta_issued
        } else {
            self.meta_issued + 1
        }
    }

    pub(crate) fn wait_meta(&mut self, seq: u64, waiter: MetaWaiter) {
        self.meta_waiters.push((seq, waiter));
    }

    fn issue_meta(&mut self) {
        let Some(al) = self.meta_next.take() else {
            return;
        };
        if self.disk == DiskState::Failed || self.disk == DiskState::Diskless {
            return;
        }
        let pages = self.bitmap.take_changed_pages();
        let bitmap_pages = pages
            .into_iter()
            .filter_map(|p| self.bitmap.page_bytes(p).ok().map(|b| (p, b)))
            .collect();
        // A superblock write costs a durable write of its own; AL
        // transactions (one per new extent) mostly leave it unchanged. A
        // failed write fails the disk, so what was issued is what is on
        // disk for as long as metadata is written at all.
        let superblock = (self.sb_issued != Some(self.sb)).then_some(self.sb);
        self.sb_issued = Some(self.sb);
        let update = MetaUpdate {
            bitmap_pages,
            al,
            superblock,
        };
        self.meta_issued += 1;
        let io = self.next_io();
        self.meta_inflight = Some((io, self.meta_issued));
        self.out.push(Action::WriteMeta { io, update });
    }

    pub(crate) fn meta_done_event(&mut self, ok: bool) {
        let Some((_, seq)) = self.meta_inflight.take() else {
            return;
        };
        if !ok {
            self.disk_failed();
            return;
        }
        self.meta_done = seq;
        self.al_uncommitted.retain(|_, s| *s > seq);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.meta_waiters)
            .into_iter()
            .partition(|(s, _)| *s <= seq);
        self.meta_waiters = waiting;
        for (_, w) in ready {
            match w {
                MetaWaiter::Promoted(cmd) => self.promoted(cmd),
                MetaWaiter::Demoted(cmd) => self.demoted(cmd),
                MetaWaiter::StartTarget => self.target_persisted(),
                MetaWaiter::FinishTarget => self.target_finished(),
                MetaWaiter::SourceFinished => self.send_state(),
            }
        }
        self.release_meta_waiting_writes();
        self.complete_deferred_writes();
        if self.meta_next.is_some() {
            self.issue_meta();
        }
    }
}
