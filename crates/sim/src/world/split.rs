//! The split-brain scenario (FAULTS.md, "Split brain"): a partition while
//! the pair is in sync, the Secondary promoted too (as a careless operator
//! or agent would), both Primaries taking writes, then the heal: the
//! `after-sb-*` policies of the seed decide, or the operator recovers by
//! hand (`secondary` + `connect --discard-my-data` on a victim).
//!
//! The reference model forks at the split: `World::model` follows the node
//! that was Primary at the split, `SplitBrain::other_model` the other one.
//! When the victim asks to save its diverging blocks, the winner's lineage
//! becomes the model (the victim's acknowledged writes are discarded by
//! design, and saved). Checkers:
//! * every sector in which the victim differs from the winner (outside the
//!   winner's writes in flight) is in the save's ranges;
//! * no local write is issued on the victim while it saves, and the saved
//!   sectors hold what the victim had when the save was asked for;
//! * a split brain is never missed: the pair never gets back in sync
//!   without a save;
//! * afterwards the usual ones: identical disks, every write acknowledged
//!   on the winner's side present.

use hadisk_core::{AdminOp, Connection, Replication, SaveRequest};
use hadisk_peer_proto::{DiskState, Role};

use super::World;
use crate::disk::SECTOR;
use crate::model::Model;

/// How long the two Primaries write apart (after the second promotion).
const SPLIT_MIN_MS: u64 = 30;
const SPLIT_MAX_MS: u64 = 300;
/// A split brain drawn during the run but not yet made (the pair was never
/// in sync) may still start this long into the quiescence phase, leaving
/// the rest of the liveness limit for its recovery and resync.
const LATEST_START_AFTER_RUN_MS: u64 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Partitioned; the Secondary is being promoted, both write.
    Splitting,
    /// Demoting the nodes the seed chose (0, 1 or 2 Primaries at the heal).
    Healing,
    /// Healed: a policy resolves it, or the operator does by hand.
    Resolving,
    /// The victim saved its blocks and resyncs from the winner.
    Resolved,
}

#[derive(Debug)]
pub(super) struct SplitBrain {
    pub(super) phase: Phase,
    /// The Primary at the split; its lineage is `World::model`.
    first: usize,
    /// The other node's lineage, until the victim is known.
    other_model: Option<Model>,
    /// Nodes demoted before the heal.
    demote: [bool; 2],
    /// Nodes that take no new client writes (being demoted).
    quiet: [bool; 2],
    heal_at: u64,
    /// The node the operator discards by hand if no policy resolves it.
    manual_victim: usize,
    manual_attempts: u32,
    /// (sector, victim's value) of every differing sector when the save
    /// was asked for.
    discarded: Vec<(u64, u64)>,
}

impl World {
    fn role_of(&self, i: usize) -> Option<Role> {
        self.nodes[i].core.as_ref().map(|c| c.role())
    }

    fn conn_of(&self, i: usize) -> Option<Connection> {
        self.nodes[i].core.as_ref().map(|c| c.connection())
    }

    /// The model of the lineage node `i` writes to.
    pub(super) fn model_of(&mut self, i: usize) -> &mut Model {
        if let Some(sb) = self.sb.as_mut() {
            if i != sb.first {
                if let Some(m) = sb.other_model.as_mut() {
                    return m;
                }
            }
        }
        &mut self.model
    }

    /// Whether a client write in flight (either lineage) covers sector `s`.
    pub(super) fn pending_covers(&self, s: u64) -> bool {
        self.model.pending_covers(s)
            || self
                .sb
                .as_ref()
                .and_then(|sb| sb.other_model.as_ref())
                .is_some_and(|m| m.pending_covers(s))
    }

    /// The Primary the next client request goes to (either one during a
    /// split brain, not one being demoted).
    pub(super) fn client_target(&mut self) -> Option<usize> {
        let quiet = self.sb.as_ref().map_or([false; 2], |sb| sb.quiet);
        let c: Vec<usize> = (0..2)
            .filter(|i| self.role_of(*i) == Some(Role::Primary) && !quiet[*i])
            .collect();
        match c.as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => Some(c[self.rng.range(0, 1) as usize]),
        }
    }

    /// Makes the split brain now if the pair is connected and in sync;
    /// otherwise it stays wanted and the operator tries again each tick.
    pub(super) fn start_split_brain(&mut self) {
        if self.sb_done || self.sb.is_some() || (self.quiescing && !self.sb_wanted) {
            return;
        }
        if self.quiescing && self.now > self.opts.run_ms + LATEST_START_AFTER_RUN_MS {
            // Too close to the liveness limit: called off.
            self.sb_wanted = false;
            self.sb_done = true;
            return;
        }
        self.sb_wanted = true;
        if self.link.partitioned {
            return;
        }
        let Some(p) = self.primary() else { return };
        let link_up = self.link.up && self.nodes.iter().all(|n| n.link == Some(self.link.epoch));
        let in_sync = self.nodes.iter().all(|n| {
            n.admin.is_none()
                && !n.fail_next_write
                && n.core.as_ref().is_some_and(|c| {
                    c.replication() == Replication::Established && c.disk() == DiskState::UpToDate
                })
        });
        if !link_up || !in_sync || self.switchover.is_some() {
            return;
        }
        self.sb_wanted = false;
        let o = 1 - p;
        self.log(format!(
            "fault: split brain: partition, then {} is promoted as well",
            self.nodes[o].name
        ));
        self.link.partitioned = true;
        let notice = [self.rng.range(0, 60), self.rng.range(0, 60)];
        self.teardown(notice, "partition (keepalive timeout)");
        let demote = [self.rng.chance(50), self.rng.chance(50)];
        let manual_victim = self.rng.range(0, 1) as usize;
        self.sb = Some(SplitBrain {
            phase: Phase::Splitting,
            first: p,
            other_model: Some(self.model.fork()),
            demote,
            quiet: [false; 2],
            heal_at: u64::MAX,
            manual_victim,
            manual_attempts: 0,
            discarded: Vec::new(),
        });
    }

    /// A split brain drawn and not over: the run goes on (with client
    /// writes) until it is, even after the other faults stopped.
    pub(super) fn split_brain_pending(&self) -> bool {
        self.sb.is_some() || self.sb_wanted
    }

    /// Whether the split brain's partition must stay (a stale heal of an
    /// earlier partition, or the end of the faults, does not end it).
    pub(super) fn split_brain_holds_partition(&self) -> bool {
        self.sb
            .as_ref()
            .is_some_and(|sb| matches!(sb.phase, Phase::Splitting | Phase::Healing))
    }

    /// The faults stop: a split brain in progress runs its course.
    pub(super) fn split_brain_quiesce(&mut self) {
        if self.split_brain_holds_partition() {
            self.link.partitioned = true;
        }
    }

    pub(super) fn split_brain_operator(&mut self) -> Result<(), String> {
        let Some(sb) = self.sb.as_ref() else {
            return Ok(());
        };
        match sb.phase {
            Phase::Splitting => self.split_promote(),
            Phase::Healing => self.split_heal(),
            Phase::Resolving => self.split_manual(),
            Phase::Resolved => {
                let synced = self.nodes.iter().all(|n| {
                    n.core.as_ref().is_some_and(|c| {
                        c.connection() == Connection::Connected
                            && c.replication() == Replication::Established
                            && c.disk() == DiskState::UpToDate
                    })
                });
                if synced {
                    self.log("split brain over: in sync again".into());
                    self.sb = None;
                    self.sb_done = true;
                }
                Ok(())
            }
        }
    }

    fn split_promote(&mut self) -> Result<(), String> {
        let Some(sb) = self.sb.as_mut() else {
            return Ok(());
        };
        let o = 1 - sb.first;
        if self.nodes[o].core.as_ref().map(|c| c.role()) == Some(Role::Primary) {
            if sb.heal_at == u64::MAX {
                sb.heal_at = self.now + self.rng.range(SPLIT_MIN_MS, SPLIT_MAX_MS);
            }
            if self.now >= sb.heal_at {
                sb.phase = Phase::Healing;
                sb.quiet = sb.demote;
            }
            return Ok(());
        }
        let both_down = self.nodes.iter().all(|n| n.link.is_none());
        if both_down && self.nodes[o].admin.is_none() {
            self.admin(o, AdminOp::Promote { force: true })?;
        }
        Ok(())
    }

    /// Demotes the chosen nodes, then heals the partition.
    fn split_heal(&mut self) -> Result<(), String> {
        let Some(sb) = self.sb.as_ref() else {
            return Ok(());
        };
        let quiet = sb.quiet;
        let mut waiting = false;
        for (i, q) in quiet.into_iter().enumerate() {
            if q && self.role_of(i) == Some(Role::Primary) {
                waiting = true;
                if self.nodes[i].admin.is_none() && self.nodes[i].clients.is_empty() {
                    self.admin(i, AdminOp::Demote)?;
                }
            }
        }
        if !waiting {
            self.log(format!(
                "split brain heals with {} Primaries",
                (0..2)
                    .filter(|i| self.role_of(*i) == Some(Role::Primary))
                    .count()
            ));
            self.link.partitioned = false;
            if let Some(sb) = self.sb.as_mut() {
                sb.phase = Phase::Resolving;
            }
            self.maybe_connect();
        }
        Ok(())
    }

    /// No policy resolved it (both StandAlone, or the loser was Primary):
    /// DRBD's manual recovery. A second attempt demotes both nodes first.
    fn split_manual(&mut self) -> Result<(), String> {
        let standalone = |w: &World, i: usize| w.conn_of(i) == Some(Connection::StandAlone);
        if !standalone(self, 0) && !standalone(self, 1) {
            let connected = (0..2).all(|i| self.conn_of(i) == Some(Connection::Connected));
            if connected {
                return Err(
                    "a split brain was made but the pair connected without a save: the split brain was missed"
                        .into(),
                );
            }
            return Ok(());
        }
        if self.nodes.iter().any(|n| n.admin.is_some()) {
            return Ok(());
        }
        let Some(sb) = self.sb.as_mut() else {
            return Ok(());
        };
        let v = sb.manual_victim;
        let w = 1 - v;
        sb.quiet[v] = true;
        if sb.manual_attempts > 0 {
            sb.quiet[w] = true;
        }
        let quiet = sb.quiet;
        for (i, q) in quiet.into_iter().enumerate() {
            if q && self.role_of(i) == Some(Role::Primary) {
                if self.nodes[i].clients.is_empty() {
                    self.admin(i, AdminOp::Demote)?;
                }
                return Ok(());
            }
        }
        if !standalone(self, v) {
            return self.admin(v, AdminOp::Disconnect);
        }
        if let Some(sb) = self.sb.as_mut() {
            sb.manual_attempts += 1;
        }
        self.log(format!(
            "operator: split brain recovery by hand, {} discards its data",
            self.nodes[v].name
        ));
        self.admin(
            v,
            AdminOp::Connect {
                discard_my_data: true,
            },
        )?;
        if standalone(self, w) {
            self.admin(
                w,
                AdminOp::Connect {
                    discard_my_data: false,
                },
            )?;
        }
        Ok(())
    }

    /// Node `i` lost the split brain and asks to save its blocks: the
    /// winner's lineage becomes the model; every sector that differs must
    /// be in the ranges.
    pub(super) fn save_issued(&mut self, i: usize, save: &SaveRequest) -> Result<(), String> {
        let name = self.nodes[i].name;
        let Some(sb) = self.sb.as_mut() else {
            return Err(format!(
                "{name} saves diverging blocks ({}) but no split brain was made",
                save.resolved_by
            ));
        };
        if sb.phase == Phase::Resolved {
            return Err(format!("{name} saves diverging blocks a second time"));
        }
        let other = sb.other_model.take();
        if i == sb.first {
            if let Some(m) = other {
                self.model = m;
            }
        }
        sb.phase = Phase::Resolved;
        self.stats.split_brains += 1;
        if save.resolved_by != "discard-my-data" {
            self.stats.split_brains_by_policy += 1;
        }
        self.stats.saved_bytes += save.total_bytes();
        self.log(format!(
            "{name} loses the split brain ({}), saves {} bytes in {} ranges",
            save.resolved_by,
            save.total_bytes(),
            save.ranges.len()
        ));
        let (victim, winner) = (&self.nodes[i].disk.live, &self.nodes[1 - i].disk.live);
        let mut discarded = Vec::new();
        for (s, (v, w)) in victim.iter().zip(winner).enumerate() {
            let s = s as u64;
            if v == w || self.model.pending_covers(s) {
                continue;
            }
            let byte = s * SECTOR;
            let saved = save
                .ranges
                .iter()
                .any(|(off, len)| (*off..off + len).contains(&byte));
            if !saved {
                return Err(format!(
                    "split brain: {name} holds write {v} at sector {s}, the winner write {w}, but the sector is not in the save: it would be discarded unsaved"
                ));
            }
            discarded.push((s, *v));
        }
        if let Some(sb) = self.sb.as_mut() {
            sb.discarded = discarded;
        }
        self.nodes[i].saving = true;
        Ok(())
    }

    /// The save is done: what it copied is what the victim had.
    pub(super) fn save_done(&mut self, i: usize, save: &SaveRequest) -> Result<(), String> {
        self.nodes[i].saving = false;
        let discarded = self
            .sb
            .as_mut()
            .map(|sb| std::mem::take(&mut sb.discarded))
            .unwrap_or_default();
        let live = &self.nodes[i].disk.live;
        for (s, v) in discarded {
            if live.get(s as usize) != Some(&v) {
                return Err(format!(
                    "split brain: sector {s} of {} changed before its save completed",
                    self.nodes[i].name
                ));
            }
        }
        let name = self.nodes[i].name;
        self.log(format!("{name} saved {} bytes", save.total_bytes()));
        Ok(())
    }
}
