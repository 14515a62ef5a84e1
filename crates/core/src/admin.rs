//! Admin commands: promotion rules, demotion, connect/disconnect, and the
//! peer's side of two-phase promotion.
//!
//! Promotion rules (DRBD's, single-Primary):
//! * refused while the peer is Primary (or we granted it promotion): while
//!   connected the peer itself answers, as our view of its role may be a
//!   state message behind;
//! * refused for a disk that is not UpToDate unless `--force`, and `--force`
//!   is refused while connected (the peer may hold better data);
//! * while connected, promotion asks the peer first (`PromoteRequest`); the
//!   peer refuses when it is Primary or promoting itself, so two connected
//!   nodes never both become Primary;
//! * while disconnected, promotion starts a new data generation;
//! * the role changes only once the superblock's Primary flag is durable,
//!   so a crash after the first write is always seen as a crashed Primary.
//!
//! Demotion flushes both disks, then clears the Primary flag.

use hadisk_peer_proto::{DiskState, Message, Role};

use crate::event::{Action, AdminOp, CmdId};
use crate::generation::new_generation;
use crate::resource::{FlushThen, Link, MetaWaiter, Resource};
use crate::states::Connection;
use crate::CoreError;

impl Resource {
    pub(crate) fn admin(&mut self, cmd: CmdId, op: AdminOp) {
        let result = match op {
            AdminOp::Promote { force } => self.promote(cmd, force),
            AdminOp::Demote => self.demote(cmd),
            AdminOp::Connect { discard_my_data } => self.connect(discard_my_data),
            AdminOp::Disconnect => {
                if !matches!(self.link, Link::Down) {
                    let reason = "disconnected by the administrator".to_string();
                    self.send(Message::Disconnect {
                        reason: reason.clone(),
                    });
                    self.set_conn(Connection::StandAlone);
                    self.out.push(Action::CloseLink {
                        reason: reason.clone(),
                        redial: false,
                    });
                    self.link_down(&reason, true);
                } else if self.conn != Connection::StandAlone {
                    self.set_conn(Connection::StandAlone);
                    let reason = "disconnected by the administrator".to_string();
                    self.out.push(Action::CloseLink {
                        reason,
                        redial: false,
                    });
                }
                Ok(Some(()))
            }
            AdminOp::PauseSync => self.set_sync_paused_here(true).map(Some),
            AdminOp::ResumeSync => self.set_sync_paused_here(false).map(Some),
            AdminOp::Verify => self.start_verify().map(Some),
            AdminOp::Invalidate => self.invalidate(cmd, false),
            AdminOp::InvalidateRemote => self.invalidate(cmd, true),
        };
        match result {
            Ok(Some(())) => self.out.push(Action::AdminDone {
                cmd,
                result: Ok(()),
            }),
            Ok(None) => {}
            Err(e) => self.out.push(Action::AdminDone {
                cmd,
                result: Err(e),
            }),
        }
    }

    /// `connect [--discard-my-data]`. Discarding is for a Secondary whose
    /// next handshake is still to come: a Primary could never become the
    /// SyncTarget, and a link already up would ignore the flag.
    fn connect(&mut self, discard_my_data: bool) -> Result<Option<()>, CoreError> {
        if discard_my_data {
            if self.role == Role::Primary || self.promoting.is_some() {
                return Err(CoreError::DiscardWhilePrimary);
            }
            if !matches!(self.link, Link::Down) {
                return Err(CoreError::DiscardWhileConnected);
            }
            // Also while Connecting: it applies to the next handshake.
            self.discard_my_data = true;
        }
        if self.conn == Connection::StandAlone {
            self.discard_my_data = discard_my_data;
            self.last_error = None;
            self.set_conn(Connection::Connecting);
            self.out.push(Action::Dial);
        }
        Ok(Some(()))
    }

    /// `Ok(None)`: answered later.
    fn promote(&mut self, cmd: CmdId, force: bool) -> Result<Option<()>, CoreError> {
        if self.role == Role::Primary && !self.demoting {
            return Ok(Some(()));
        }
        if self.promoting.is_some() || self.demoting {
            return Err(CoreError::Busy);
        }
        if matches!(self.link, Link::Handshake(_)) {
            return Err(CoreError::Handshaking);
        }
        if self.disk < DiskState::Inconsistent {
            return Err(CoreError::NoUsableDisk { disk: self.disk });
        }
        if self.link_is_up() {
            if self.granted_peer {
                return Err(CoreError::PeerIsPrimary);
            }
            // A peer we last saw as Primary is asked all the same: it may
            // have demoted a moment ago (`secondary` there, then `primary`
            // here at once, as a manual switchover does) and its state
            // message be still on the way; its answer is authoritative.
            if self.disk != DiskState::UpToDate {
                // Refused whatever the peer says: name the first reason.
                return Err(if self.peer_role == Role::Primary {
                    CoreError::PeerIsPrimary
                } else if force {
                    CoreError::ForceWhileConnected {
                        replication: self.repl,
                    }
                } else {
                    CoreError::NotUpToDate { disk: self.disk }
                });
            }
            let seq = self.next_io().0;
            self.promoting = Some((cmd, Some(seq)));
            self.send(Message::PromoteRequest { seq });
            return Ok(None);
        }
        if self.disk != DiskState::UpToDate && !force {
            return Err(CoreError::NotUpToDate { disk: self.disk });
        }
        self.promoting = Some((cmd, None));
        let fresh = self.next_random();
        // Bit 0 of the bitmap UUID records the role at the split: this
        // node was Secondary (it is the younger Primary).
        self.sb.uuids = new_generation(&self.sb.uuids, fresh, false);
        self.persist_primary();
        Ok(None)
    }

    fn persist_primary(&mut self) {
        self.sb.primary = true;
        self.sb.consistent = true;
        self.sb.was_up_to_date = true;
        self.sb.peer_outdated = !self.link_is_up();
        let seq = self.queue_meta(None);
        if let Some((cmd, _)) = self.promoting {
            self.wait_meta(seq, MetaWaiter::Promoted(cmd));
        }
    }

    pub(crate) fn promoted(&mut self, cmd: CmdId) {
        if self.promoting.map(|(c, _)| c) != Some(cmd) {
            return;
        }
        self.promoting = None;
        self.set_disk(DiskState::UpToDate);
        self.set_role(Role::Primary);
        if !self.link_is_up() {
            // Granted by the peer, then the link dropped while our Primary
            // flag was being persisted: we are a disconnected Primary, so
            // start a new generation as a disconnected promotion does.
            let before = self.sb.uuids;
            let fresh = self.next_random();
            // It was not Primary when the link dropped: the younger Primary.
            self.sb.uuids = new_generation(&self.sb.uuids, fresh, false);
            self.sb.peer_outdated = true;
            if self.sb.uuids != before {
                let seq = self.queue_meta(None);
                if seq != u64::MAX {
                    self.gen_meta_seq = seq;
                }
            }
            self.set_peer_disk(Some(DiskState::Outdated));
        }
        self.send_state();
        self.out.push(Action::AdminDone {
            cmd,
            result: Ok(()),
        });
    }

    pub(crate) fn peer_promote_request(&mut self, seq: u64) {
        let granted = self.role != Role::Primary && self.promoting.is_none() && self.link_is_up();
        if granted {
            self.granted_peer = true;
        }
        self.send(Message::PromoteReply { seq, granted });
    }

    pub(crate) fn peer_promote_reply(&mut self, seq: u64, granted: bool) {
        let Some((cmd, Some(want))) = self.promoting else {
            return;
        };
        if want != seq {
            return;
        }
        if granted {
            // From here the promotion completes even if the link drops.
            self.promoting = Some((cmd, None));
            self.persist_primary();
        } else {
            self.promoting = None;
            // The peer's state messages precede its reply on the link, so
            // its role as we know it now is the reason it refused.
            let refusal = if self.peer_role == Role::Primary {
                CoreError::PeerIsPrimary
            } else {
                CoreError::PromotionDenied
            };
            self.out.push(Action::AdminDone {
                cmd,
                result: Err(refusal),
            });
        }
    }

    fn demote(&mut self, cmd: CmdId) -> Result<Option<()>, CoreError> {
        if self.role != Role::Primary {
            return Ok(Some(()));
        }
        if self.promoting.is_some() || self.demoting {
            return Err(CoreError::Busy);
        }
        if !self.writes.is_empty() {
            return Err(CoreError::WritesInFlight {
                writes: self.writes.len(),
            });
        }
        self.demoting = true;
        self.issue_flush(FlushThen::Demote(cmd));
        Ok(None)
    }

    pub(crate) fn demote_flushed(&mut self, cmd: CmdId, ok: bool) {
        if !ok {
            self.demoting = false;
            self.out.push(Action::AdminDone {
                cmd,
                result: Err(CoreError::LocalIo { disk: self.disk }),
            });
            return;
        }
        self.sb.primary = false;
        let seq = self.queue_meta(None);
        self.wait_meta(seq, MetaWaiter::Demoted(cmd));
    }

    pub(crate) fn demoted(&mut self, cmd: CmdId) {
        self.demoting = false;
        self.set_role(Role::Secondary);
        self.send_state();
        self.out.push(Action::AdminDone {
            cmd,
            result: Ok(()),
        });
    }
}
