//! Applying the peer's writes (mirrored `Data` and `ResyncData`) and
//! answering its flushes.
//!
//! Invariants:
//! * Peer writes to overlapping blocks are applied in arrival order (range
//!   lock), so this disk ends as the sender's does.
//! * A `Flush` is answered only after every peer write received before it
//!   completed and the local flush that followed succeeded.
//! * Nothing is acknowledged on a link other than the one the request came
//!   on.

use hadisk_peer_proto::{DiskState, Message, Payload, Role};

use crate::event::{Action, IoId};
use crate::resource::{Link, PeerFlush, PeerWrite, Queued, Resource};

impl Resource {
    pub(crate) fn peer_data(
        &mut self,
        seq: u64,
        offset_bytes: u64,
        data: Payload,
        fua: bool,
        resync: bool,
    ) {
        if !self.link_is_up() {
            self.protocol_error("data received before the handshake finished".into());
            return;
        }
        let len = data.len() as u64;
        if let Err(e) = self.check_range(offset_bytes, len) {
            self.protocol_error(format!("peer write rejected: {e}"));
            return;
        }
        if !resync {
            // The Primary's application writes: the SyncTarget's controller
            // leaves room for them.
            self.rate.app_io(self.now_ms, len);
        }
        if !resync && self.role == Role::Primary {
            self.protocol_error("the peer sent application data but this node is Primary".into());
            return;
        }
        if resync && !self.resync_data_expected(seq, offset_bytes, len) {
            self.protocol_error(format!(
                "unrequested resync data (seq {seq}, offset {offset_bytes})"
            ));
            return;
        }
        if self.disk < DiskState::Inconsistent {
            if !resync {
                self.send(Message::NegAck { seq });
            }
            return;
        }
        self.rx_counter += 1;
        let id = self.next_io();
        let w = PeerWrite {
            seq,
            offset_bytes,
            len_bytes: len,
            data: Some(data),
            fua,
            resync,
            rx: self.rx_counter,
            epoch: self.link_epoch,
            issued: false,
        };
        self.peer_writes.insert(id, w);
        self.queue.push_back(Queued::PeerWrite(id));
        self.pump();
    }

    pub(crate) fn issue_peer_write(&mut self, id: IoId) {
        let Some(w) = self.peer_writes.get_mut(&id) else {
            return;
        };
        // Issued once: the payload moves to the action.
        let Some(data) = w.data.take() else {
            return;
        };
        w.issued = true;
        let action = Action::WriteLocal {
            io: id,
            offset_bytes: w.offset_bytes,
            data,
            fua: w.fua,
        };
        self.out.push(action);
    }

    pub(crate) fn peer_write_done(&mut self, id: IoId, ok: bool) {
        let Some(w) = self.peer_writes.remove(&id) else {
            return;
        };
        let len = w.len_bytes;
        self.unlock_span(w.offset_bytes, len);
        let current = w.epoch == self.link_epoch;
        if !ok {
            if current && !w.resync {
                self.send(Message::NegAck { seq: w.seq });
            }
            self.disk_failed();
        } else if current {
            if w.resync {
                self.resync_write_done(w.seq, w.offset_bytes, len);
            } else {
                self.send(Message::WriteAck { seq: w.seq });
            }
        }
        self.check_peer_flushes();
        self.pump();
    }

    pub(crate) fn peer_flush(&mut self, seq: u64) {
        let f = PeerFlush {
            seq,
            upto_rx: self.rx_counter,
            io: None,
            epoch: self.link_epoch,
        };
        self.peer_flushes.push(f);
        self.check_peer_flushes();
    }

    /// Issues the local flush of every peer flush whose earlier writes are
    /// all done.
    pub(crate) fn check_peer_flushes(&mut self) {
        let oldest_pending = self
            .peer_writes
            .values()
            .map(|w| w.rx)
            .min()
            .unwrap_or(u64::MAX);
        let ready: Vec<usize> = self
            .peer_flushes
            .iter()
            .enumerate()
            .filter(|(_, f)| f.io.is_none() && f.upto_rx < oldest_pending)
            .map(|(i, _)| i)
            .collect();
        for i in ready {
            let io = self.next_io();
            if let Some(f) = self.peer_flushes.get_mut(i) {
                f.io = Some(io);
            }
            self.out.push(Action::FlushLocal { io });
        }
    }

    pub(crate) fn peer_flush_done(&mut self, io: IoId, ok: bool) {
        let Some(pos) = self.peer_flushes.iter().position(|f| f.io == Some(io)) else {
            return;
        };
        let f = self.peer_flushes.remove(pos);
        if !ok {
            self.disk_failed();
            return;
        }
        if f.epoch == self.link_epoch && !matches!(self.link, Link::Down) {
            self.send(Message::FlushAck { seq: f.seq });
        }
    }

    /// The link is gone: queued peer writes and flushes are dropped (the
    /// sender marks what it did not get acknowledged); in-flight ones finish
    /// without an answer.
    pub(crate) fn secondary_lost_peer(&mut self) {
        let queued: Vec<IoId> = self
            .peer_writes
            .iter()
            .filter(|(_, w)| !w.issued)
            .map(|(id, _)| *id)
            .collect();
        for id in queued {
            self.peer_writes.remove(&id);
        }
        self.queue.retain(|q| !matches!(q, Queued::PeerWrite(_)));
        self.peer_flushes.retain(|f| f.io.is_some());
        let reads: Vec<IoId> = self
            .source_reads
            .iter()
            .filter(|(_, r)| !r.issued)
            .map(|(id, _)| *id)
            .collect();
        for id in reads {
            self.source_reads.remove(&id);
        }
        self.queue.retain(|q| !matches!(q, Queued::ResyncRead(_)));
    }
}
