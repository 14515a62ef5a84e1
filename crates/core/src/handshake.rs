//! The replication handshake after authentication, and losing the link.
//!
//! Both sides send `Params` (sizes, UUIDs, states) and their whole dirty
//! bitmap (non-empty pages, the last chunk flagged); each then evaluates
//! [`decide_sync`] on the same two snapshots, with complementary
//! tie-breakers, so both reach complementary decisions without another
//! round trip. Both merge the peer's bitmap: the target walks the merged
//! bitmap, the source clears it as the target confirms.
//!
//! Invariants: application writes wait while the handshake runs (the bitmap
//! we sent must stay complete); a refusal leaves both sides StandAlone with
//! the reason in `status`; the `Params` we send describe a settled state:
//! while a promotion or demotion is being persisted they are held back
//! until it is durable (a new UUID with the old disk state was refused).

use bytes::Bytes;
use hadisk_bitmap::{DirtyBitmap, BITMAP_PAGE_BYTES, BLOCKS_PER_PAGE};
use hadisk_peer_proto::{rle, DiskState, Message, Params, Role};

use crate::event::Action;
use crate::generation::new_generation;
use crate::resource::{Handshake, Link, Resource};
use crate::states::{Connection, Replication};
use crate::uuid::{decide_sync, SideInfo, SyncInputs, SyncOutcome};

impl Resource {
    pub(crate) fn my_params(&self) -> Params {
        Params {
            size_bytes: self.cfg.size_bytes,
            uuids: self.sb.uuids,
            dirty_blocks: self.bitmap.dirty_blocks(),
            role: self.role,
            disk: self.disk,
            crashed_primary: self.sb.crashed_primary,
            discard_my_data: self.discard_my_data,
        }
    }

    pub(crate) fn link_up(&mut self) {
        if self.conn == Connection::StandAlone || !matches!(self.link, Link::Down) {
            let reason = "not expecting a connection (StandAlone or already connected)".to_string();
            self.out.push(Action::CloseLink {
                reason,
                redial: self.conn != Connection::StandAlone,
            });
            return;
        }
        let Ok(peer_bitmap) = DirtyBitmap::new(self.cfg.size_bytes) else {
            return;
        };
        self.link_epoch += 1;
        self.link = Link::Handshake(Box::new(Handshake {
            sent: None,
            peer: None,
            peer_bitmap,
            got_last_chunk: false,
        }));
        self.send_deferred_params();
    }

    /// A role change whose superblock write is in flight: `promote` has
    /// already set the new generation UUID but the disk becomes UpToDate
    /// (and the role Primary) only once it is durable. Params sent now would
    /// pair the new UUID with the old disk state, a combination both sides
    /// refuse (e.g. "SyncSource but its disk is not consistent").
    fn role_change_persisting(&self) -> bool {
        let usable = self.disk >= DiskState::Inconsistent;
        usable && (matches!(self.promoting, Some((_, None))) || self.demoting)
    }

    /// Sends our `Params` and bitmap for a handshake that has not sent
    /// them yet, unless a role change is still being persisted (then this
    /// runs again after a later event). Called after every event.
    pub(crate) fn send_deferred_params(&mut self) {
        if self.role_change_persisting() {
            return;
        }
        let sent = self.my_params();
        match &mut self.link {
            Link::Handshake(h) if h.sent.is_none() => h.sent = Some(sent),
            _ => return,
        }
        self.send(Message::Params(sent));
        let pages = self.bitmap.pages();
        for page in 0..pages {
            let last = page + 1 == pages;
            let Ok(bytes) = self.bitmap.page_bytes(page) else {
                continue;
            };
            if !last && bytes.iter().all(|b| *b == 0) {
                continue;
            }
            let first_block = page * BLOCKS_PER_PAGE;
            let blocks = self.page_blocks(first_block);
            // Run-length coded where that is shorter (DRBD's compressed
            // bitmap); the plain page otherwise (e.g. a random half-dirty one).
            let runs = rle::encode(&bytes, blocks);
            let msg = if runs.len() < bytes.len() {
                Message::BitmapRle {
                    first_block,
                    runs: Bytes::from(runs),
                    last,
                }
            } else {
                Message::BitmapChunk {
                    first_block,
                    bits: Bytes::from(bytes),
                    last,
                }
            };
            self.send(msg);
        }
        if pages == 0 {
            self.send(Message::BitmapChunk {
                first_block: 0,
                bits: Bytes::new(),
                last: true,
            });
        }
        // The peer's half may have arrived while ours was held back.
        self.maybe_decide();
    }

    fn handshake_mut(&mut self) -> Option<&mut Handshake> {
        match &mut self.link {
            Link::Handshake(h) => Some(h),
            _ => None,
        }
    }

    pub(crate) fn peer_params(&mut self, p: Params) {
        if p.size_bytes != self.cfg.size_bytes {
            let reason = format!(
                "the peer's disk has {} usable bytes, this node's {}: use disks of the same size",
                p.size_bytes, self.cfg.size_bytes
            );
            self.refuse(reason);
            return;
        }
        let Some(h) = self.handshake_mut() else {
            self.protocol_error("Params outside the handshake".into());
            return;
        };
        h.peer = Some(p);
        self.maybe_decide();
    }

    pub(crate) fn peer_bitmap_chunk(&mut self, first_block: u64, bits: &[u8], last: bool) {
        let Some(h) = self.handshake_mut() else {
            self.protocol_error("bitmap outside the handshake".into());
            return;
        };
        let mut err = None;
        if !bits.is_empty() {
            if !first_block.is_multiple_of(BLOCKS_PER_PAGE) || bits.len() != BITMAP_PAGE_BYTES {
                err = Some(format!(
                    "bitmap chunk at block {first_block} of {} bytes is not one page",
                    bits.len()
                ));
            } else if let Err(e) = h.peer_bitmap.load_page(first_block / BLOCKS_PER_PAGE, bits) {
                err = Some(format!("bad bitmap chunk from the peer: {e}"));
            }
        }
        if let Some(e) = err {
            self.protocol_error(e);
            return;
        }
        h.got_last_chunk |= last;
        self.maybe_decide();
    }

    /// Blocks of the bitmap page that starts at `first_block`.
    fn page_blocks(&self, first_block: u64) -> u64 {
        self.bitmap
            .blocks()
            .saturating_sub(first_block)
            .min(BLOCKS_PER_PAGE)
    }

    /// A run-length coded page of the peer's bitmap (see `rle`); a bad one
    /// drops the link, and the half-loaded bitmap with the handshake.
    pub(crate) fn peer_bitmap_rle(&mut self, first_block: u64, runs: &[u8], last: bool) {
        let blocks = self.page_blocks(first_block);
        let Some(h) = self.handshake_mut() else {
            self.protocol_error("bitmap outside the handshake".into());
            return;
        };
        let err = if !first_block.is_multiple_of(BLOCKS_PER_PAGE)
            || (blocks == 0 && !runs.is_empty())
        {
            Some(format!(
                "run-length coded bitmap chunk at block {first_block} does not start a page of the volume"
            ))
        } else {
            rle::decode(runs, blocks).find_map(|run| match run {
                Ok(r) => h
                    .peer_bitmap
                    .set_blocks(first_block + r.start..first_block + r.end)
                    .err()
                    .map(|e| format!("bad bitmap chunk from the peer: {e}")),
                Err(e) => Some(format!("bad bitmap chunk from the peer: {e}")),
            })
        };
        if let Some(e) = err {
            self.protocol_error(e);
            return;
        }
        h.got_last_chunk |= last;
        self.maybe_decide();
    }

    fn maybe_decide(&mut self) {
        let Link::Handshake(h) = &self.link else {
            return;
        };
        let (Some(sent), Some(peer), true) = (h.sent, h.peer, h.got_last_chunk) else {
            return;
        };
        let side = |p: &Params| SideInfo {
            uuids: p.uuids,
            role: p.role,
            disk: p.disk,
            crashed_primary: p.crashed_primary,
            dirty_blocks: p.dirty_blocks,
            discard_my_data: p.discard_my_data,
        };
        let inputs = SyncInputs {
            local: side(&sent),
            peer: side(&peer),
            policies: self.cfg.policies,
            local_yields_on_tie: self.cfg.yields_on_tie,
        };
        let decision = decide_sync(&inputs);
        let Link::Handshake(h) = std::mem::replace(&mut self.link, Link::Up) else {
            return;
        };
        if let SyncOutcome::Refuse { reason } = &decision.outcome {
            self.link = Link::Handshake(h);
            let reason = if decision.split_brain && reason.starts_with("split brain") {
                crate::split_brain::unresolved_message(
                    &self.cfg.resource,
                    &self.cfg.policies,
                    u8::from(sent.role == Role::Primary) + u8::from(peer.role == Role::Primary),
                    decision.rule,
                )
            } else {
                format!("{reason} [{}]", decision.rule)
            };
            self.refuse(reason);
            return;
        }
        let _ = self.bitmap.merge(&h.peer_bitmap);
        if decision.split_brain {
            let by = decision.resolved_by.unwrap_or("discard-my-data");
            let verdict = match decision.outcome {
                SyncOutcome::Target { .. } => "this node's changes are discarded (SyncTarget)",
                _ => "this node's data wins (SyncSource)",
            };
            self.transition_note(
                "split-brain",
                "detected",
                format!("resolved by {by}: {verdict}"),
            );
        }
        self.connected(
            &peer,
            decision.outcome,
            decision
                .split_brain
                .then_some(decision.resolved_by.unwrap_or("discard-my-data")),
        );
        // A demotion that completed during the handshake: the peer decided
        // on the role we sent; tell it the current one.
        if (sent.role, sent.disk, sent.uuids) != (self.role, self.disk, self.sb.uuids) {
            self.send_state();
        }
    }

    /// `split_brain`: how a split brain was resolved (then a Target
    /// outcome saves this node's diverging blocks before the resync).
    fn connected(
        &mut self,
        peer: &Params,
        outcome: SyncOutcome,
        split_brain: Option<&'static str>,
    ) {
        self.last_error = None;
        self.discard_my_data = false;
        self.peer_uuids = peer.uuids;
        if self.sync_paused_here {
            // Our pause-sync outlives the link: the peer learns it first.
            self.send(Message::SyncPause { paused: true });
        }
        self.set_conn(Connection::Connected);
        self.set_peer_role(peer.role);
        self.set_peer_disk(Some(peer.disk));
        let outcome = match outcome {
            SyncOutcome::NoSync if !self.bitmap.is_clean() => {
                // Equal generations but bits set (e.g. a NegAck): the
                // Primary's copy, else the tie-breaker's, is the source.
                let source = self.role == Role::Primary
                    || (peer.role != Role::Primary && !self.cfg.yields_on_tie);
                if source {
                    SyncOutcome::Source { full: false }
                } else {
                    SyncOutcome::Target { full: false }
                }
            }
            o => o,
        };
        let good = |d: DiskState| {
            if d >= DiskState::Outdated {
                DiskState::UpToDate
            } else {
                d
            }
        };
        match outcome {
            SyncOutcome::Source { full } => {
                if full {
                    self.bitmap.set_all();
                }
                self.set_disk(good(self.disk));
                self.set_peer_disk(Some(DiskState::Inconsistent));
                self.set_repl(self.sync_state(false));
                self.start_progress();
            }
            SyncOutcome::Target { full } => {
                if full {
                    self.bitmap.set_all();
                }
                self.set_peer_disk(Some(good(peer.disk)));
                match split_brain {
                    Some(by) => self.save_before_discard(peer.uuids, by),
                    None => self.start_target(),
                }
            }
            SyncOutcome::NoSync | SyncOutcome::Refuse { .. } => {
                self.set_disk(good(self.disk));
                self.set_peer_disk(Some(good(peer.disk)));
                self.set_repl(Replication::Established);
            }
        }
        // A crashed Primary's AL bits are in the bitmap now (persisted with
        // this metadata write); a peer that needs nothing is not outdated.
        let clear_outdated = self.sb.peer_outdated && self.repl == Replication::Established;
        if self.sb.crashed_primary || clear_outdated {
            self.sb.crashed_primary = false;
            self.sb.peer_outdated &= !clear_outdated;
            self.queue_meta(None);
        }
        self.release_meta_waiting_writes();
        self.pump();
    }

    /// Refuses the connection: both sides end StandAlone.
    pub(crate) fn refuse(&mut self, reason: String) {
        self.send(Message::Disconnect {
            reason: reason.clone(),
        });
        self.out.push(Action::CloseLink {
            reason: reason.clone(),
            redial: false,
        });
        self.last_error = Some(reason.clone());
        self.link_down(&reason, true);
        self.set_conn(Connection::StandAlone);
    }

    /// The link is gone (`by_us`: we closed it and already told the driver).
    pub(crate) fn link_down(&mut self, reason: &str, by_us: bool) {
        let was = std::mem::replace(&mut self.link, Link::Down);
        if matches!(was, Link::Down) {
            return;
        }
        let had_our_data =
            matches!(was, Link::Up) && self.peer_disk.is_some_and(|d| d >= DiskState::Inconsistent);
        self.link_epoch += 1;
        self.set_repl(Replication::Off);
        self.sync_paused_by_peer = false;
        self.set_peer_role(Role::Unknown);
        self.granted_peer = false;
        if self.conn != Connection::StandAlone {
            self.set_conn(Connection::Connecting);
            if !by_us {
                self.out.push(Action::Dial);
            }
        }
        if let Some((cmd, Some(_))) = self.promoting {
            self.promoting = None;
            self.out.push(Action::AdminDone {
                cmd,
                result: Err(crate::CoreError::PromotionInterrupted),
            });
        }
        self.target = None;
        self.progress = None;
        self.verify_link_down();
        self.full_sync_link_down();
        if self.role == Role::Primary && had_our_data {
            // The peer misses whatever we write from now on: a new data
            // generation, so that a reconnect syncs in the right direction
            // and a promoted peer is detected as split brain. Decided before
            // the writes waiting for the peer complete, so that they wait for
            // it to be durable.
            let before = self.sb.uuids;
            let fresh = self.next_random();
            self.sb.uuids = new_generation(&self.sb.uuids, fresh, true);
            self.sb.peer_outdated = true;
            let seq = self.queue_meta(None);
            // (A Failed disk persists nothing: its writes fail anyway.)
            if self.sb.uuids != before && seq != u64::MAX {
                self.gen_meta_seq = seq;
            }
        }
        if self.role == Role::Primary {
            self.set_peer_disk(Some(DiskState::Outdated));
        } else {
            self.set_peer_disk(None);
            if self.disk >= DiskState::Inconsistent {
                // We may now hold the only copy of writes the Primary
                // acknowledged (it may have crashed): make them durable
                // rather than trust the disk cache until someone flushes.
                let io = self.next_io();
                self.out.push(Action::FlushLocal { io });
            }
        }
        self.secondary_lost_peer();
        self.primary_lost_peer();
        // Writes whose AL transaction became durable during a handshake
        // wait for its decision (`connected` releases them); a handshake
        // that ends in a refusal (split brain) must release them too, or
        // they never complete (found by the simulator's split brains).
        self.release_meta_waiting_writes();
        let _ = reason;
        self.pump();
    }
}
