//! The failover policy: a snapshot of what this node knows in, one decision
//! per resource group out (start it, stop it, or nothing, and why).
//!
//! The rules (DESIGN.md §6), in the order they are applied to a group:
//!
//! 1. A group being started or stopped is left alone; so is one whose stop
//!    failed (its resources may still be active: the peer sees it as held
//!    and never starts it; the operator must clean up), and one whose start
//!    failed here (no automatic retry: the peer, if alive, takes it).
//! 2. **Isolation**: a node holding a group that has lost the peer *and*
//!    every ping node stops the group: it is the isolated one.
//! 3. **Failover**: a node not holding a group takes it when the peer is
//!    dead (silent for `deadtime`, or never heard within `initdead`), only
//!    if its disk is UpToDate (or Consistent with the peer Outdated), the
//!    replication link shows no live Primary, and, with ping nodes, one
//!    answers. The operator's standby does not stop a failover: service
//!    comes first.
//! 4. **Both alive**: one owner is chosen the same way on both nodes
//!    ([`owner`]): a node that cannot hold the group (start failed there, or
//!    its disk known not ready) loses to one that can; else the operator
//!    modes decide (takeover > auto > standby); else the preferred node (the
//!    node named in `haresources`) when `auto_failback` is on or nobody or
//!    both hold the group; else the current holder keeps it. The holder
//!    hands the group over only once the new owner's disk is ready (resync
//!    finished); the new owner starts it once the peer's heartbeat shows it
//!    released, under the same disk checks as a failover.
//!
//! Invariants: [`decide`] is a pure function of its [`Snapshot`] (no clock,
//! no I/O; times are inputs); it never starts a group the peer's heartbeat
//! shows held, nor one whose link shows a live peer Primary; it asks for at
//! most one action per group, and none for a group in transition.

use std::fmt;

use crate::membership::{peer_liveness, ping_view, Liveness, PingView, Timing};
use crate::replication::{DiskState, ReplicaView, Replication};
use crate::wire::Mode;

/// A group's state on this node, as the executor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// Not running here.
    Stopped,
    /// Being started (left to right).
    Starting,
    /// Running here.
    Running,
    /// Being stopped (right to left).
    Stopping,
    /// A start failed and was rolled back cleanly; not retried by itself.
    StartFailed,
    /// A stop failed: resources may still be active here.
    StopFailed,
}

impl GroupState {
    /// Whether the group counts as held here (its heartbeat bit is set).
    pub fn held(self) -> bool {
        matches!(
            self,
            GroupState::Starting
                | GroupState::Running
                | GroupState::Stopping
                | GroupState::StopFailed
        )
    }
}

/// What the agent knows of one of a group's replicated resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskGate {
    /// The daemon did not answer: nothing is started on that basis.
    Unavailable,
    /// The daemon's view of the resource.
    Status(ReplicaView),
}

impl DiskGate {
    /// This node may serve the resource.
    fn disk_ready(&self) -> bool {
        matches!(self, DiskGate::Status(r) if r.disk_ready())
    }

    /// The peer is known not to be able to serve it (the daemon's silence
    /// says nothing about the peer).
    fn peer_known_unready(&self) -> bool {
        matches!(self, DiskGate::Status(r) if r.peer_known_unready())
    }
}

/// One group on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// This node is the group's preferred node.
    pub preferred_is_me: bool,
    /// Its state here.
    pub state: GroupState,
    /// One gate per `hadisk::`/`drbddisk::` resource of the group, in
    /// order; empty when it has none (then no disk rule applies). Every
    /// rule must hold for all of them.
    pub disks: Vec<DiskGate>,
}

/// The content of the peer's last accepted heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHeard {
    /// When it arrived (executor's monotonic ms).
    pub last_seen_ms: u64,
    /// The peer's operator mode.
    pub mode: Mode,
    /// Groups the peer holds (bit i = group i).
    pub held: u16,
    /// Groups whose start failed on the peer.
    pub failed: u16,
}

/// Everything a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// ha.cf's times.
    pub timing: Timing,
    /// ha.cf's auto_failback (legacy counts as on).
    pub auto_failback: bool,
    /// Now (executor's monotonic ms).
    pub now_ms: u64,
    /// When this agent started.
    pub started_at_ms: u64,
    /// The peer's last heartbeat since we started, if any.
    pub peer: Option<PeerHeard>,
    /// Each ping node's last reply (empty: no ping nodes configured).
    pub ping_last_reply_ms: &'a [Option<u64>],
    /// This node's operator mode.
    pub my_mode: Mode,
    /// The groups, in haresources order (at most [`crate::wire::MAX_GROUPS`]
    /// are considered).
    pub groups: &'a [GroupView],
}

/// What to do with a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing now.
    Nothing,
    /// Start it, left to right.
    Start,
    /// Stop it, right to left.
    Stop,
}

/// Why a voluntary hand-over happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Operator modes differ (standby here, or takeover on the peer).
    Operator,
    /// The group returns to its preferred node (auto_failback).
    Failback,
    /// This node cannot hold it (its disk is not ready).
    NotEligible,
    /// Both nodes hold it (after a partition); the owner keeps it.
    BothHold,
}

/// What stops a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// The daemon's status is unavailable.
    ReplicatorUnavailable,
    /// This node's disk may not be served.
    Disk {
        /// This node's disk.
        disk: DiskState,
        /// The peer's, as known.
        peer_disk: DiskState,
    },
    /// The replication link shows the peer Primary.
    PeerPrimary,
    /// Ping nodes are configured and none answers.
    NoPingNode,
    /// Ping nodes have not answered yet (initdead).
    PingWaiting,
}

/// Why a decision was taken (for logs and `hadisk agent status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Starting or stopping: wait for the executor.
    Busy(GroupState),
    /// A stop failed; the operator must clean up.
    StopFailed,
    /// The start failed here; not retried by itself.
    StartFailedHere,
    /// Waiting for the peer's first heartbeat (initdead).
    WaitingForPeer {
        /// Until initdead is over.
        remaining_ms: u64,
    },
    /// Running here, nothing to change.
    Holding,
    /// The peer holds it.
    PeerHolds,
    /// The peer is to hold it and has not started it yet.
    PeerIsOwner,
    /// Neither node can hold it.
    NobodyEligible,
    /// Start: the peer is dead.
    PeerDead {
        /// Its silence.
        silent_ms: u64,
    },
    /// Start: both alive and this node is the owner.
    Owner,
    /// Stop: hand it over to the peer.
    Handover(Handover),
    /// Stop: peer and every ping node lost.
    Isolated,
    /// A start is due but blocked.
    Blocked(Blocker),
    /// A hand-over is due but the peer's disk is not ready (resync running,
    /// or the link down).
    HandoverWaits {
        /// The peer's disk as known.
        peer_disk: DiskState,
        /// The replication state.
        replication: Replication,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Busy(s) => write!(f, "{s:?}"),
            Reason::StopFailed => f.write_str("a stop failed: resources may still be active here; clean up, then restart the agent"),
            Reason::StartFailedHere => f.write_str("the start failed here; fix the cause, then `hadisk agent takeover` retries"),
            Reason::WaitingForPeer { remaining_ms } => write!(f, "waiting for the peer's first heartbeat ({remaining_ms} ms of initdead left)"),
            Reason::Holding => f.write_str("running here"),
            Reason::PeerHolds => f.write_str("the peer holds it"),
            Reason::PeerIsOwner => f.write_str("the peer is to hold it"),
            Reason::NobodyEligible => f.write_str("neither node can hold it (start failed or disk not ready on both)"),
            Reason::PeerDead { silent_ms } => write!(f, "taking over: the peer has been silent for {silent_ms} ms"),
            Reason::Owner => f.write_str("starting: this node is to hold it"),
            Reason::Handover(Handover::Operator) => f.write_str("handing over: standby/takeover requested"),
            Reason::Handover(Handover::Failback) => f.write_str("handing over: failing back to the preferred node"),
            Reason::Handover(Handover::NotEligible) => f.write_str("handing over: this node's disk is not ready"),
            Reason::Handover(Handover::BothHold) => f.write_str("stopping: both nodes hold it and the peer is its owner"),
            Reason::Isolated => f.write_str("releasing: the peer and every ping node are lost, this node is isolated"),
            Reason::Blocked(Blocker::ReplicatorUnavailable) => f.write_str("not starting: the hadisk daemon does not answer"),
            Reason::Blocked(Blocker::Disk { disk, peer_disk }) => write!(f, "not starting: disk {disk} (peer {peer_disk}) may not be served; it must be UpToDate, or Consistent with the peer Outdated"),
            Reason::Blocked(Blocker::PeerPrimary) => f.write_str("not starting: the replication link shows the peer Primary"),
            Reason::Blocked(Blocker::NoPingNode) => f.write_str("not starting: no ping node answers; this node may be the isolated one"),
            Reason::Blocked(Blocker::PingWaiting) => f.write_str("not starting: waiting for a ping node to answer"),
            Reason::HandoverWaits { peer_disk, replication } => write!(f, "hand-over waits for the peer's resync (peer disk {peer_disk}, replication {replication})"),
        }
    }
}

/// The decision for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDecision {
    /// What to do.
    pub action: Action,
    /// Why.
    pub reason: Reason,
}

/// The decision for every group, with the membership it was based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The peer.
    pub peer: Liveness,
    /// The ping nodes.
    pub ping: PingView,
    /// One per group, in order.
    pub groups: Vec<GroupDecision>,
}

/// Which node is to hold a group when both are alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// This node.
    Me,
    /// The peer.
    Peer,
}

/// The facts [`owner`] weighs; each node computes the same owner from its
/// own view of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerFacts {
    /// This node can hold the group.
    pub me_eligible: bool,
    /// The peer can hold it.
    pub peer_eligible: bool,
    /// This node's mode.
    pub my_mode: Mode,
    /// The peer's mode.
    pub peer_mode: Mode,
    /// This node is the preferred node.
    pub preferred_is_me: bool,
    /// auto_failback.
    pub auto_failback: bool,
    /// This node holds it.
    pub me_holds: bool,
    /// The peer holds it.
    pub peer_holds: bool,
}

/// The owner of a group when both nodes are alive (rule 4 of the module
/// header); `None` when neither can hold it.
pub fn owner(f: &OwnerFacts) -> Option<Owner> {
    let preferred = if f.preferred_is_me {
        Owner::Me
    } else {
        Owner::Peer
    };
    match (f.me_eligible, f.peer_eligible) {
        (false, false) => None,
        (true, false) => Some(Owner::Me),
        (false, true) => Some(Owner::Peer),
        (true, true) if f.my_mode != f.peer_mode => Some(if f.my_mode > f.peer_mode {
            Owner::Me
        } else {
            Owner::Peer
        }),
        (true, true) => Some(match (f.me_holds, f.peer_holds) {
            _ if f.auto_failback => preferred,
            (true, false) => Owner::Me,
            (false, true) => Owner::Peer,
            _ => preferred,
        }),
    }
}

/// Decides what to do with every group.
pub fn decide(s: &Snapshot<'_>) -> Decision {
    let peer = peer_liveness(
        &s.timing,
        s.now_ms,
        s.started_at_ms,
        s.peer.map(|p| p.last_seen_ms),
    );
    let ping = ping_view(&s.timing, s.now_ms, s.started_at_ms, s.ping_last_reply_ms);
    let groups = s
        .groups
        .iter()
        .take(crate::wire::MAX_GROUPS)
        .enumerate()
        .map(|(i, g)| decide_group(s, peer, ping, i, g))
        .collect();
    Decision { peer, ping, groups }
}

fn decision(action: Action, reason: Reason) -> GroupDecision {
    GroupDecision { action, reason }
}

fn decide_group(
    s: &Snapshot<'_>,
    peer: Liveness,
    ping: PingView,
    i: usize,
    g: &GroupView,
) -> GroupDecision {
    match g.state {
        GroupState::Starting | GroupState::Stopping => {
            decision(Action::Nothing, Reason::Busy(g.state))
        }
        GroupState::StopFailed => decision(Action::Nothing, Reason::StopFailed),
        GroupState::StartFailed => decision(Action::Nothing, Reason::StartFailedHere),
        GroupState::Running => decide_running(s, peer, ping, i, g),
        GroupState::Stopped => decide_stopped(s, peer, ping, i, g),
    }
}

fn bit(mask: u16, i: usize) -> bool {
    i < 16 && mask & (1 << i) != 0
}

/// The owner facts for group `i`, when the peer is alive.
fn facts(s: &Snapshot<'_>, heard: &PeerHeard, i: usize, g: &GroupView) -> OwnerFacts {
    // Without the daemon this node cannot serve; the peer is not judged.
    let me_disk_ok = g.disks.iter().all(DiskGate::disk_ready);
    let peer_disk_ok = !g.disks.iter().any(DiskGate::peer_known_unready);
    OwnerFacts {
        me_eligible: g.state != GroupState::StartFailed && me_disk_ok,
        peer_eligible: !bit(heard.failed, i) && peer_disk_ok,
        my_mode: s.my_mode,
        peer_mode: heard.mode,
        preferred_is_me: g.preferred_is_me,
        auto_failback: s.auto_failback,
        me_holds: g.state.held(),
        peer_holds: bit(heard.held, i),
    }
}

fn decide_running(
    s: &Snapshot<'_>,
    peer: Liveness,
    ping: PingView,
    i: usize,
    g: &GroupView,
) -> GroupDecision {
    if ping == PingView::Unreachable && matches!(peer, Liveness::Dead { .. }) {
        return decision(Action::Stop, Reason::Isolated);
    }
    let Some(heard) = s.peer.filter(|_| peer.is_alive()) else {
        return decision(Action::Nothing, Reason::Holding);
    };
    let f = facts(s, &heard, i, g);
    if owner(&f) != Some(Owner::Peer) {
        // Say so when only the peer's disk (a resync running) keeps the
        // group here.
        let once_ready = OwnerFacts {
            peer_eligible: !bit(heard.failed, i),
            ..f
        };
        return match first_unready_peer(g) {
            Some(r) if owner(&once_ready) == Some(Owner::Peer) => decision(
                Action::Nothing,
                Reason::HandoverWaits {
                    peer_disk: r.peer_disk,
                    replication: r.replication,
                },
            ),
            _ => decision(Action::Nothing, Reason::Holding),
        };
    }
    if f.peer_holds {
        return decision(Action::Stop, Reason::Handover(Handover::BothHold));
    }
    let why = if !f.me_eligible {
        Handover::NotEligible
    } else if f.my_mode != f.peer_mode {
        Handover::Operator
    } else {
        Handover::Failback
    };
    // Without the daemon's view the peer's readiness is unknown: keep it.
    if g.disks.contains(&DiskGate::Unavailable) {
        return decision(
            Action::Nothing,
            Reason::Blocked(Blocker::ReplicatorUnavailable),
        );
    }
    match first_unready_peer(g) {
        Some(r) => decision(
            Action::Nothing,
            Reason::HandoverWaits {
                peer_disk: r.peer_disk,
                replication: r.replication,
            },
        ),
        None => decision(Action::Stop, Reason::Handover(why)),
    }
}

fn decide_stopped(
    s: &Snapshot<'_>,
    peer: Liveness,
    ping: PingView,
    i: usize,
    g: &GroupView,
) -> GroupDecision {
    match peer {
        Liveness::Waiting { remaining_ms } => {
            decision(Action::Nothing, Reason::WaitingForPeer { remaining_ms })
        }
        Liveness::Dead { silent_ms } => match start_blocker(g, Some(ping)) {
            Some(b) => decision(Action::Nothing, Reason::Blocked(b)),
            None => decision(Action::Start, Reason::PeerDead { silent_ms }),
        },
        Liveness::Alive | Liveness::Late { .. } => {
            let Some(heard) = s.peer else {
                return decision(Action::Nothing, Reason::WaitingForPeer { remaining_ms: 0 });
            };
            let f = facts(s, &heard, i, g);
            if f.peer_holds {
                return decision(Action::Nothing, Reason::PeerHolds);
            }
            match owner(&f) {
                None => decision(Action::Nothing, Reason::NobodyEligible),
                Some(Owner::Peer) => decision(Action::Nothing, Reason::PeerIsOwner),
                // The peer answers heartbeats, so this node is not isolated:
                // ping nodes do not matter here.
                Some(Owner::Me) => match start_blocker(g, None) {
                    Some(b) => decision(Action::Nothing, Reason::Blocked(b)),
                    None => decision(Action::Start, Reason::Owner),
                },
            }
        }
    }
}

/// The first replicated resource whose peer may not take the group yet.
fn first_unready_peer(g: &GroupView) -> Option<&ReplicaView> {
    g.disks.iter().find_map(|d| match d {
        DiskGate::Status(r) if !r.peer_ready() => Some(r),
        _ => None,
    })
}

/// What forbids starting the group here, if anything: the disk rules, then
/// (for a failover) the ping rule.
fn start_blocker(g: &GroupView, ping: Option<PingView>) -> Option<Blocker> {
    let views = || {
        g.disks.iter().filter_map(|d| match d {
            DiskGate::Status(r) => Some(r),
            DiskGate::Unavailable => None,
        })
    };
    if g.disks.contains(&DiskGate::Unavailable) {
        return Some(Blocker::ReplicatorUnavailable);
    }
    if let Some(r) = views().find(|r| !r.disk_ready()) {
        return Some(Blocker::Disk {
            disk: r.disk,
            peer_disk: r.peer_disk,
        });
    }
    if views().any(ReplicaView::peer_is_live_primary) {
        return Some(Blocker::PeerPrimary);
    }
    match ping {
        Some(PingView::Unreachable) => Some(Blocker::NoPingNode),
        Some(PingView::Waiting) => Some(Blocker::PingWaiting),
        _ => None,
    }
}

/// The heartbeat masks for this node's groups: (held, failed).
pub fn masks(groups: &[GroupView]) -> (u16, u16) {
    groups
        .iter()
        .take(crate::wire::MAX_GROUPS)
        .enumerate()
        .fold((0, 0), |(h, f), (i, g)| {
            let b = 1u16 << i;
            (
                if g.state.held() { h | b } else { h },
                if g.state == GroupState::StartFailed {
                    f | b
                } else {
                    f
                },
            )
        })
}
