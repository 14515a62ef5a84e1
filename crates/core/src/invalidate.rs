//! `invalidate` (this node becomes SyncTarget of a full resync) and
//! `invalidate-remote` (the peer does), DRBD's commands of the same names.
//!
//! Two-phase, like promotion: the node where the command runs checks its
//! own side and sends `FullSyncRequest`; the peer checks its side and,
//! when it grants, sets every bit and changes its replication state
//! *before* answering, so the target's first `ResyncRequest` (sent after
//! the answer on the same FIFO link) always finds a SyncSource.
//!
//! Invariants:
//! * Only a connected, Established pair starts one; the target is never
//!   Primary and the source's disk is UpToDate (so an invalidate never
//!   leaves the pair without a good copy).
//! * Two requests crossing on the wire are both refused (each side is
//!   waiting for its own answer): the operators retry.
//! * The target's Inconsistent state and the all-set bitmap are persisted
//!   before its first request (`start_target`), so a crash mid-sync resumes
//!   as a sync in the same direction.

use hadisk_peer_proto::{DiskState, Message, Role};

use crate::event::{Action, CmdId};
use crate::resource::Resource;
use crate::states::{Connection, Replication};
use crate::CoreError;

impl Resource {
    /// `Ok(None)`: answered when the peer replies.
    pub(crate) fn invalidate(&mut self, cmd: CmdId, remote: bool) -> Result<Option<()>, CoreError> {
        let command = if remote {
            "invalidate-remote"
        } else {
            "invalidate"
        };
        if !remote && self.role == Role::Primary {
            return Err(CoreError::InvalidateWhilePrimary);
        }
        if !self.link_is_up() || self.conn != Connection::Connected {
            return Err(CoreError::NotConnected {
                command,
                connection: self.conn,
            });
        }
        if self.full_sync.is_some() {
            return Err(CoreError::FullSyncPending);
        }
        if self.repl != Replication::Established {
            return Err(CoreError::NotEstablished {
                command,
                replication: self.repl,
            });
        }
        let peer = self
            .peer_disk
            .map_or("DUnknown".to_string(), |d| d.to_string());
        if !remote && self.peer_disk != Some(DiskState::UpToDate) {
            return Err(CoreError::PeerNotUpToDate { peer });
        }
        if remote && self.disk != DiskState::UpToDate {
            return Err(CoreError::SourceNotUpToDate { disk: self.disk });
        }
        if remote && self.peer_role == Role::Primary {
            return Err(CoreError::InvalidatePeerPrimary);
        }
        let seq = self.next_io().0;
        self.full_sync = Some((cmd, seq, !remote));
        self.send(Message::FullSyncRequest {
            seq,
            sender_is_target: !remote,
        });
        Ok(None)
    }

    /// Why this node cannot take its part of the peer's full sync.
    fn full_sync_refusal(&self, we_are_target: bool) -> Option<String> {
        if self.repl != Replication::Established {
            Some(format!("its replication is {}, not Established", self.repl))
        } else if self.full_sync.is_some() {
            Some("it is waiting for the answer to its own invalidate".into())
        } else if we_are_target && self.role == Role::Primary {
            Some("it is Primary: a Primary cannot discard its data".into())
        } else if !we_are_target && self.disk != DiskState::UpToDate {
            Some(format!("its disk is {}, not UpToDate", self.disk))
        } else {
            None
        }
    }

    pub(crate) fn peer_full_sync_request(&mut self, seq: u64, sender_is_target: bool) {
        if let Some(reason) = self.full_sync_refusal(!sender_is_target) {
            self.send(Message::FullSyncReply {
                seq,
                granted: false,
                reason,
            });
            return;
        }
        self.send(Message::FullSyncReply {
            seq,
            granted: true,
            reason: String::new(),
        });
        if sender_is_target {
            self.become_full_source();
        } else {
            self.become_full_target();
        }
    }

    pub(crate) fn peer_full_sync_reply(&mut self, seq: u64, granted: bool, reason: String) {
        let Some((cmd, _, target)) = self.full_sync.filter(|f| f.1 == seq) else {
            self.protocol_error(format!("unexpected full-sync reply (seq {seq})"));
            return;
        };
        self.full_sync = None;
        let result = if !granted {
            Err(CoreError::PeerRefused { reason })
        } else if self.repl != Replication::Established {
            // Cannot happen: the request made us refuse everything else.
            Err(CoreError::NotEstablished {
                command: "invalidate",
                replication: self.repl,
            })
        } else {
            if target {
                self.become_full_target();
            } else {
                self.become_full_source();
            }
            Ok(())
        };
        self.out.push(Action::AdminDone { cmd, result });
    }

    fn become_full_target(&mut self) {
        self.out.push(Action::Notice {
            message: "invalidated: this node's data is discarded and fully resynced from the peer"
                .into(),
        });
        self.bitmap.set_all();
        self.start_target();
    }

    fn become_full_source(&mut self) {
        self.out.push(Action::Notice {
            message: "the peer's data is invalidated: full resync from this node".into(),
        });
        self.bitmap.set_all();
        self.set_peer_disk(Some(DiskState::Inconsistent));
        self.set_repl(Replication::SyncSource);
        self.start_progress();
        self.queue_meta(None);
    }

    /// The link went down with our request unanswered.
    pub(crate) fn full_sync_link_down(&mut self) {
        if let Some((cmd, _, _)) = self.full_sync.take() {
            self.out.push(Action::AdminDone {
                cmd,
                result: Err(CoreError::FullSyncInterrupted),
            });
        }
    }
}
