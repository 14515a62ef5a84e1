#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The failover policy, one table row per rule (and per boundary of a rule),
//! plus sequences that replay whole scenarios on both nodes: failover,
//! failback after resync, standby/takeover, split partitions with a ping
//! node.

use hadisk_agent::membership::{Liveness, PingView, Timing};
use hadisk_agent::policy::{
    decide, masks, owner, Action, Blocker, DiskGate, GroupState, GroupView, Handover, Owner,
    OwnerFacts, PeerHeard, Reason, Snapshot,
};
use hadisk_agent::replication::{Connection, DiskState, ReplicaView, Replication, Role};
use hadisk_agent::wire::Mode;

const T: Timing = Timing {
    keepalive_ms: 200,
    deadtime_ms: 1000,
    warntime_ms: Some(500),
    initdead_ms: 2000,
};
const NOW: u64 = 10_000;

fn view(
    role: Role,
    disk: DiskState,
    conn: Connection,
    peer_role: Role,
    peer_disk: DiskState,
    repl: Replication,
) -> Vec<DiskGate> {
    vec![DiskGate::Status(ReplicaView {
        role,
        disk,
        peer_connection: conn,
        peer_role,
        peer_disk,
        replication: repl,
    })]
}

/// Two replicated resources in one group.
fn both(mut a: Vec<DiskGate>, b: Vec<DiskGate>) -> Vec<DiskGate> {
    a.extend(b);
    a
}

use Connection::*;
use DiskState::*;
use Replication::*;
use Role::{Primary, Secondary};

/// Secondary, connected to a Primary peer, both UpToDate.
fn sec_of_live_primary() -> Vec<DiskGate> {
    view(
        Secondary,
        UpToDate,
        Connected,
        Primary,
        UpToDate,
        Established,
    )
}
/// Secondary UpToDate, link down (peer crashed).
fn sec_alone() -> Vec<DiskGate> {
    view(
        Secondary,
        UpToDate,
        Connecting,
        Role::Unknown,
        DUnknown,
        Off,
    )
}
/// Primary UpToDate, link down.
fn pri_alone() -> Vec<DiskGate> {
    view(Primary, UpToDate, Connecting, Role::Unknown, DUnknown, Off)
}
/// Primary, connected to an UpToDate Secondary (resync finished).
fn pri_synced() -> Vec<DiskGate> {
    view(
        Primary,
        UpToDate,
        Connected,
        Secondary,
        UpToDate,
        Established,
    )
}
/// Primary, the peer still resyncing.
fn pri_syncing() -> Vec<DiskGate> {
    view(
        Primary,
        UpToDate,
        Connected,
        Secondary,
        Inconsistent,
        SyncSource,
    )
}
/// Secondary, connected, both UpToDate, nobody Primary.
fn both_secondary() -> Vec<DiskGate> {
    view(
        Secondary,
        UpToDate,
        Connected,
        Secondary,
        UpToDate,
        Established,
    )
}

fn group(preferred_is_me: bool, state: GroupState, disks: Vec<DiskGate>) -> GroupView {
    GroupView {
        preferred_is_me,
        state,
        disks,
    }
}

fn alive(mode: Mode, held: u16, failed: u16) -> Option<PeerHeard> {
    Some(PeerHeard {
        last_seen_ms: NOW - 100,
        mode,
        held,
        failed,
    })
}

fn late(held: u16) -> Option<PeerHeard> {
    Some(PeerHeard {
        last_seen_ms: NOW - 700,
        mode: Mode::Auto,
        held,
        failed: 0,
    })
}

fn dead() -> Option<PeerHeard> {
    Some(PeerHeard {
        last_seen_ms: NOW - 1500,
        mode: Mode::Auto,
        held: 1,
        failed: 0,
    })
}

struct Row {
    name: &'static str,
    started_at_ms: u64,
    peer: Option<PeerHeard>,
    pings: &'static [Option<u64>],
    my_mode: Mode,
    auto_failback: bool,
    group: GroupView,
    want: (Action, Reason),
}

fn row(
    name: &'static str,
    peer: Option<PeerHeard>,
    group: GroupView,
    want: (Action, Reason),
) -> Row {
    Row {
        name,
        started_at_ms: 0,
        peer,
        pings: &[],
        my_mode: Mode::Auto,
        auto_failback: true,
        group,
        want,
    }
}

const PING_OK: &[Option<u64>] = &[None, Some(NOW - 200)];
const PING_LOST: &[Option<u64>] = &[Some(NOW - 5000), Some(NOW - 1000)];
const PING_NEVER: &[Option<u64>] = &[None];

fn run(r: &Row) -> (Action, Reason) {
    let groups = [r.group.clone()];
    let s = Snapshot {
        timing: T,
        auto_failback: r.auto_failback,
        now_ms: NOW,
        started_at_ms: r.started_at_ms,
        peer: r.peer,
        ping_last_reply_ms: r.pings,
        my_mode: r.my_mode,
        groups: &groups,
    };
    let d = decide(&s);
    assert_eq!(d.groups.len(), 1);
    (d.groups[0].action, d.groups[0].reason)
}

fn rows() -> Vec<Row> {
    use Action::{Nothing, Start, Stop};
    use GroupState::*;
    vec![
        // Rule 1: transitions and failures are left alone.
        row(
            "starting is left alone",
            dead(),
            group(true, Starting, pri_alone()),
            (Nothing, Reason::Busy(Starting)),
        ),
        row(
            "stopping is left alone",
            dead(),
            group(true, Stopping, pri_alone()),
            (Nothing, Reason::Busy(Stopping)),
        ),
        row(
            "failed stop waits for the operator",
            dead(),
            group(true, StopFailed, pri_alone()),
            (Nothing, Reason::StopFailed),
        ),
        row(
            "failed start is not retried",
            dead(),
            group(true, StartFailed, sec_alone()),
            (Nothing, Reason::StartFailedHere),
        ),
        // Rule 2: isolation.
        Row {
            pings: PING_LOST,
            ..row(
                "isolated primary releases",
                dead(),
                group(true, Running, pri_alone()),
                (Stop, Reason::Isolated),
            )
        },
        Row {
            pings: PING_LOST,
            ..row(
                "peer alive: not isolated",
                alive(Mode::Auto, 0, 0),
                group(true, Running, pri_synced()),
                (Nothing, Reason::Holding),
            )
        },
        Row {
            pings: PING_OK,
            ..row(
                "ping answers: keep holding",
                dead(),
                group(true, Running, pri_alone()),
                (Nothing, Reason::Holding),
            )
        },
        Row {
            pings: PING_NEVER,
            started_at_ms: NOW - 500,
            ..row(
                "pings not yet answered at start: keep",
                dead(),
                group(true, Running, pri_alone()),
                (Nothing, Reason::Holding),
            )
        },
        row(
            "no ping nodes: a holder never judges itself isolated",
            dead(),
            group(true, Running, pri_alone()),
            (Nothing, Reason::Holding),
        ),
        // Rule 3: failover.
        row(
            "peer dead, disk UpToDate: take over",
            dead(),
            group(false, Stopped, sec_alone()),
            (Start, Reason::PeerDead { silent_ms: 1500 }),
        ),
        row(
            "peer never heard after initdead: take over",
            None,
            group(false, Stopped, sec_alone()),
            (Start, Reason::PeerDead { silent_ms: NOW }),
        ),
        Row {
            started_at_ms: NOW - 500,
            ..row(
                "initdead not over: wait",
                None,
                group(false, Stopped, sec_alone()),
                (Nothing, Reason::WaitingForPeer { remaining_ms: 1500 }),
            )
        },
        row(
            "peer late (warntime) is still alive",
            late(1),
            group(false, Stopped, sec_of_live_primary()),
            (Nothing, Reason::PeerHolds),
        ),
        row(
            "peer dead but the link shows it Primary: no takeover",
            dead(),
            group(false, Stopped, sec_of_live_primary()),
            (Nothing, Reason::Blocked(Blocker::PeerPrimary)),
        ),
        row(
            "peer dead, disk Outdated: no takeover",
            dead(),
            group(
                false,
                Stopped,
                view(
                    Secondary,
                    Outdated,
                    Connecting,
                    Role::Unknown,
                    DUnknown,
                    Off,
                ),
            ),
            (
                Nothing,
                Reason::Blocked(Blocker::Disk {
                    disk: Outdated,
                    peer_disk: DUnknown,
                }),
            ),
        ),
        row(
            "peer dead, disk Inconsistent (mid-resync): no takeover",
            dead(),
            group(
                false,
                Stopped,
                view(
                    Secondary,
                    Inconsistent,
                    Connecting,
                    Role::Unknown,
                    DUnknown,
                    Off,
                ),
            ),
            (
                Nothing,
                Reason::Blocked(Blocker::Disk {
                    disk: Inconsistent,
                    peer_disk: DUnknown,
                }),
            ),
        ),
        row(
            "peer dead, Consistent with peer Outdated: take over",
            dead(),
            group(
                false,
                Stopped,
                view(
                    Secondary,
                    Consistent,
                    Connecting,
                    Role::Unknown,
                    Outdated,
                    Off,
                ),
            ),
            (Start, Reason::PeerDead { silent_ms: 1500 }),
        ),
        row(
            "peer dead, Consistent, peer unknown: no takeover",
            dead(),
            group(
                false,
                Stopped,
                view(
                    Secondary,
                    Consistent,
                    Connecting,
                    Role::Unknown,
                    DUnknown,
                    Off,
                ),
            ),
            (
                Nothing,
                Reason::Blocked(Blocker::Disk {
                    disk: Consistent,
                    peer_disk: DUnknown,
                }),
            ),
        ),
        row(
            "peer dead, daemon down: no takeover",
            dead(),
            group(false, Stopped, vec![DiskGate::Unavailable]),
            (Nothing, Reason::Blocked(Blocker::ReplicatorUnavailable)),
        ),
        row(
            "peer dead, no replicated disk: take over",
            dead(),
            group(false, Stopped, vec![]),
            (Start, Reason::PeerDead { silent_ms: 1500 }),
        ),
        Row {
            pings: PING_OK,
            ..row(
                "peer dead, a ping node answers: take over",
                dead(),
                group(false, Stopped, sec_alone()),
                (Start, Reason::PeerDead { silent_ms: 1500 }),
            )
        },
        Row {
            pings: PING_LOST,
            ..row(
                "peer dead, no ping node answers: no takeover",
                dead(),
                group(false, Stopped, sec_alone()),
                (Nothing, Reason::Blocked(Blocker::NoPingNode)),
            )
        },
        Row {
            pings: PING_NEVER,
            started_at_ms: NOW - 2100,
            ..row(
                "peer dead, ping never answered after initdead: no takeover",
                None,
                group(false, Stopped, sec_alone()),
                (Nothing, Reason::Blocked(Blocker::NoPingNode)),
            )
        },
        Row {
            my_mode: Mode::Standby,
            ..row(
                "standby still fails over: service first",
                dead(),
                group(false, Stopped, sec_alone()),
                (Start, Reason::PeerDead { silent_ms: 1500 }),
            )
        },
        // Rule 4: both alive.
        row(
            "peer holds it",
            alive(Mode::Auto, 1, 0),
            group(true, Stopped, sec_of_live_primary()),
            (Nothing, Reason::PeerHolds),
        ),
        row(
            "fresh pair: the preferred node starts",
            alive(Mode::Auto, 0, 0),
            group(true, Stopped, both_secondary()),
            (Start, Reason::Owner),
        ),
        row(
            "fresh pair: the other waits",
            alive(Mode::Auto, 0, 0),
            group(false, Stopped, both_secondary()),
            (Nothing, Reason::PeerIsOwner),
        ),
        Row {
            auto_failback: false,
            ..row(
                "fresh pair, failback off: still the preferred node",
                alive(Mode::Auto, 0, 0),
                group(true, Stopped, both_secondary()),
                (Start, Reason::Owner),
            )
        },
        row(
            "owner, but the link still shows the peer Primary: wait",
            alive(Mode::Auto, 0, 0),
            group(true, Stopped, sec_of_live_primary()),
            (Nothing, Reason::Blocked(Blocker::PeerPrimary)),
        ),
        row(
            "owner, but this disk is not ready: the peer is owner",
            alive(Mode::Auto, 0, 0),
            group(
                true,
                Stopped,
                view(
                    Secondary,
                    Inconsistent,
                    Connected,
                    Secondary,
                    UpToDate,
                    SyncTarget,
                ),
            ),
            (Nothing, Reason::PeerIsOwner),
        ),
        row(
            "failback: holder hands over once the preferred node resynced",
            alive(Mode::Auto, 0, 0),
            group(false, Running, pri_synced()),
            (Stop, Reason::Handover(Handover::Failback)),
        ),
        row(
            "failback waits for the resync",
            alive(Mode::Auto, 0, 0),
            group(false, Running, pri_syncing()),
            (
                Nothing,
                Reason::HandoverWaits {
                    peer_disk: Inconsistent,
                    replication: SyncSource,
                },
            ),
        ),
        row(
            "failback waits while the link is down",
            alive(Mode::Auto, 0, 0),
            group(false, Running, pri_alone()),
            (
                Nothing,
                Reason::HandoverWaits {
                    peer_disk: DUnknown,
                    replication: Off,
                },
            ),
        ),
        Row {
            auto_failback: false,
            ..row(
                "failback off: the holder keeps it",
                alive(Mode::Auto, 0, 0),
                group(false, Running, pri_synced()),
                (Nothing, Reason::Holding),
            )
        },
        row(
            "preferred holder keeps it",
            alive(Mode::Auto, 0, 0),
            group(true, Running, pri_synced()),
            (Nothing, Reason::Holding),
        ),
        Row {
            my_mode: Mode::Standby,
            ..row(
                "standby: hand over to a ready peer",
                alive(Mode::Auto, 0, 0),
                group(true, Running, pri_synced()),
                (Stop, Reason::Handover(Handover::Operator)),
            )
        },
        Row {
            my_mode: Mode::Standby,
            ..row(
                "standby: wait for the peer's resync",
                alive(Mode::Auto, 0, 0),
                group(true, Running, pri_syncing()),
                (
                    Nothing,
                    Reason::HandoverWaits {
                        peer_disk: Inconsistent,
                        replication: SyncSource,
                    },
                ),
            )
        },
        Row {
            my_mode: Mode::Standby,
            ..row(
                "standby: the peer takes it once released",
                alive(Mode::Auto, 0, 0),
                group(false, Stopped, both_secondary()),
                (Nothing, Reason::PeerIsOwner),
            )
        },
        row(
            "peer in standby released it: take it",
            alive(Mode::Standby, 0, 0),
            group(false, Stopped, both_secondary()),
            (Start, Reason::Owner),
        ),
        row(
            "peer asks takeover: preferred holder hands over",
            alive(Mode::Takeover, 0, 0),
            group(true, Running, pri_synced()),
            (Stop, Reason::Handover(Handover::Operator)),
        ),
        Row {
            my_mode: Mode::Takeover,
            ..row(
                "takeover beats failback",
                alive(Mode::Auto, 0, 0),
                group(false, Running, pri_synced()),
                (Nothing, Reason::Holding),
            )
        },
        Row {
            my_mode: Mode::Takeover,
            ..row(
                "takeover: start once the peer released",
                alive(Mode::Auto, 0, 0),
                group(false, Stopped, both_secondary()),
                (Start, Reason::Owner),
            )
        },
        Row {
            my_mode: Mode::Takeover,
            ..row(
                "both takeover: the preferred node",
                alive(Mode::Takeover, 0, 0),
                group(true, Stopped, both_secondary()),
                (Start, Reason::Owner),
            )
        },
        row(
            "start failed on the peer: take it",
            alive(Mode::Auto, 0, 1),
            group(false, Stopped, both_secondary()),
            (Start, Reason::Owner),
        ),
        row(
            "start failed here, peer alive: its turn",
            alive(Mode::Auto, 0, 0),
            group(true, StartFailed, both_secondary()),
            (Nothing, Reason::StartFailedHere),
        ),
        row(
            "both hold after a partition: the non-owner stops",
            alive(Mode::Auto, 1, 0),
            group(false, Running, pri_alone()),
            (Stop, Reason::Handover(Handover::BothHold)),
        ),
        row(
            "both hold after a partition: the owner keeps it",
            alive(Mode::Auto, 1, 0),
            group(true, Running, pri_alone()),
            (Nothing, Reason::Holding),
        ),
        row(
            "holder whose disk failed hands over to a ready peer",
            alive(Mode::Auto, 0, 0),
            group(
                true,
                Running,
                view(Primary, Failed, Connected, Secondary, UpToDate, Established),
            ),
            (Stop, Reason::Handover(Handover::NotEligible)),
        ),
        row(
            "holder whose daemon is down keeps it (peer readiness unknown)",
            alive(Mode::Auto, 0, 0),
            group(true, Running, vec![DiskGate::Unavailable]),
            (Nothing, Reason::Blocked(Blocker::ReplicatorUnavailable)),
        ),
        row(
            "nobody can hold it",
            alive(Mode::Auto, 0, 1),
            group(
                true,
                Stopped,
                view(
                    Secondary,
                    Outdated,
                    Connected,
                    Secondary,
                    UpToDate,
                    Established,
                ),
            ),
            (Nothing, Reason::NobodyEligible),
        ),
        row(
            "neither eligible",
            alive(Mode::Auto, 0, 1),
            group(true, Stopped, vec![DiskGate::Unavailable]),
            (Nothing, Reason::NobodyEligible),
        ),
        row(
            "groups without a disk fail back at once",
            alive(Mode::Auto, 0, 0),
            group(false, Running, vec![]),
            (Stop, Reason::Handover(Handover::Failback)),
        ),
    ]
}

#[test]
fn every_rule() {
    let mut failures = Vec::new();
    for r in rows() {
        let got = run(&r);
        if got != r.want {
            failures.push(format!(
                "{}:\n  got  {:?}\n  want {:?}",
                r.name, got, r.want
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows().len(),
        failures.join("\n")
    );
}

#[test]
fn membership_is_reported() {
    let groups = [group(false, GroupState::Stopped, sec_alone())];
    let s = Snapshot {
        timing: T,
        auto_failback: true,
        now_ms: NOW,
        started_at_ms: 0,
        peer: late(0),
        ping_last_reply_ms: PING_OK,
        my_mode: Mode::Auto,
        groups: &groups,
    };
    let d = decide(&s);
    assert_eq!(d.peer, Liveness::Late { silent_ms: 700 });
    assert_eq!(d.ping, PingView::Reachable);
}

/// The owner is symmetric: both nodes, each from its own side of the same
/// facts, name the same node (or neither).
#[test]
fn owner_is_the_same_seen_from_both_nodes() {
    let modes = [Mode::Standby, Mode::Auto, Mode::Takeover];
    let bools = [false, true];
    let mut checked = 0;
    for &me_eligible in &bools {
        for &peer_eligible in &bools {
            for &my_mode in &modes {
                for &peer_mode in &modes {
                    for &preferred_is_me in &bools {
                        for &auto_failback in &bools {
                            for &me_holds in &bools {
                                for &peer_holds in &bools {
                                    let f = OwnerFacts {
                                        me_eligible,
                                        peer_eligible,
                                        my_mode,
                                        peer_mode,
                                        preferred_is_me,
                                        auto_failback,
                                        me_holds,
                                        peer_holds,
                                    };
                                    let mirror = OwnerFacts {
                                        me_eligible: peer_eligible,
                                        peer_eligible: me_eligible,
                                        my_mode: peer_mode,
                                        peer_mode: my_mode,
                                        preferred_is_me: !preferred_is_me,
                                        auto_failback,
                                        me_holds: peer_holds,
                                        peer_holds: me_holds,
                                    };
                                    let flip = |o: Option<Owner>| {
                                        o.map(|o| {
                                            if o == Owner::Me {
                                                Owner::Peer
                                            } else {
                                                Owner::Me
                                            }
                                        })
                                    };
                                    assert_eq!(owner(&f), flip(owner(&mirror)), "{f:?}");
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 3 * 3 * 2 * 2 * 2 * 2);
}

#[test]
fn heartbeat_masks() {
    use GroupState::*;
    let g = |state| group(true, state, vec![]);
    let groups = [
        g(Stopped),
        g(Starting),
        g(Running),
        g(Stopping),
        g(StartFailed),
        g(StopFailed),
    ];
    assert_eq!(masks(&groups), (0b101110, 0b010000));
}

/// A two-node world driven through the policy: each node's executor is
/// modelled as doing what the policy asks at once, and the replicator as
/// following the group (Primary while running).
struct Pair {
    now_ms: u64,
    nodes: [Node; 2],
    /// Heartbeats flow (both directions).
    heartbeat_link: bool,
    /// The replication link is up.
    replication_link: bool,
    /// Ping node reachable from each node.
    ping: [bool; 2],
    auto_failback: bool,
}

#[derive(Clone, Copy)]
struct Node {
    up: bool,
    started_at_ms: u64,
    state: GroupState,
    mode: Mode,
    disk: DiskState,
    last_heard_ms: Option<u64>,
    heard: Option<PeerHeard>,
    last_ping_ms: Option<u64>,
}

impl Pair {
    fn new() -> Self {
        let n = Node {
            up: true,
            started_at_ms: 0,
            state: GroupState::Stopped,
            mode: Mode::Auto,
            disk: UpToDate,
            last_heard_ms: None,
            heard: None,
            last_ping_ms: None,
        };
        Pair {
            now_ms: 0,
            nodes: [n, n],
            heartbeat_link: true,
            replication_link: true,
            ping: [true, true],
            auto_failback: true,
        }
    }

    fn replica(&self, i: usize) -> Vec<DiskGate> {
        let (me, peer) = (&self.nodes[i], &self.nodes[1 - i]);
        let role = |n: &Node| if n.state.held() { Primary } else { Secondary };
        let connected = self.replication_link && me.up && peer.up;
        view(
            role(me),
            me.disk,
            if connected { Connected } else { Connecting },
            if connected { role(peer) } else { Role::Unknown },
            if connected { peer.disk } else { DUnknown },
            if connected { Established } else { Off },
        )
    }

    /// One keepalive: heartbeats and pings, then each node decides and acts.
    fn tick(&mut self) {
        self.now_ms += T.keepalive_ms;
        for i in 0..2 {
            let (a, b) = (self.nodes[i], self.nodes[1 - i]);
            if a.up && b.up && self.heartbeat_link {
                let (held, failed) = masks(&[group(false, a.state, vec![])]);
                self.nodes[1 - i].last_heard_ms = Some(self.now_ms);
                self.nodes[1 - i].heard = Some(PeerHeard {
                    last_seen_ms: self.now_ms,
                    mode: a.mode,
                    held,
                    failed,
                });
            }
            if a.up && self.ping[i] {
                self.nodes[i].last_ping_ms = Some(self.now_ms);
            }
        }
        for i in 0..2 {
            let n = self.nodes[i];
            if !n.up {
                continue;
            }
            let groups = [group(i == 0, n.state, self.replica(i))];
            let pings = [n.last_ping_ms];
            let d = decide(&Snapshot {
                timing: T,
                auto_failback: self.auto_failback,
                now_ms: self.now_ms,
                started_at_ms: n.started_at_ms,
                peer: n.heard,
                ping_last_reply_ms: &pings,
                my_mode: n.mode,
                groups: &groups,
            });
            self.nodes[i].state = match d.groups[0].action {
                Action::Start => GroupState::Running,
                Action::Stop => GroupState::Stopped,
                Action::Nothing => n.state,
            };
        }
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / T.keepalive_ms {
            self.tick();
            let both = self.nodes.iter().filter(|n| n.up && n.state.held()).count();
            assert!(
                both < 2 || !self.replication_link,
                "both nodes hold the group while the replication link is up at {} ms",
                self.now_ms
            );
        }
    }

    fn holders(&self) -> [bool; 2] {
        [
            self.nodes[0].up && self.nodes[0].state.held(),
            self.nodes[1].up && self.nodes[1].state.held(),
        ]
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.nodes[i].state = GroupState::Stopped;
    }

    fn restart(&mut self, i: usize, disk: DiskState) {
        let now = self.now_ms;
        let n = &mut self.nodes[i];
        *n = Node {
            up: true,
            started_at_ms: now,
            state: GroupState::Stopped,
            mode: Mode::Auto,
            disk,
            last_heard_ms: None,
            heard: None,
            last_ping_ms: None,
        };
    }
}

#[test]
fn scenario_failover_and_failback_after_resync() {
    let mut p = Pair::new();
    p.run_ms(1000);
    assert_eq!(
        p.holders(),
        [true, false],
        "the preferred node starts the fresh pair"
    );
    p.crash(0);
    p.run_ms(800);
    assert_eq!(p.holders(), [false, false], "not before deadtime");
    p.run_ms(400);
    assert_eq!(
        p.holders(),
        [false, true],
        "the standby takes over after deadtime"
    );
    // Node 0 comes back behind: it resyncs first.
    p.restart(0, Inconsistent);
    p.run_ms(3000);
    assert_eq!(p.holders(), [false, true], "no failback during the resync");
    p.nodes[0].disk = UpToDate;
    p.run_ms(1000);
    assert_eq!(p.holders(), [true, false], "failback once resynced");
}

#[test]
fn scenario_failback_off_stays() {
    let mut p = Pair::new();
    p.auto_failback = false;
    p.run_ms(1000);
    p.crash(0);
    p.run_ms(2000);
    p.restart(0, UpToDate);
    p.run_ms(5000);
    assert_eq!(p.holders(), [false, true]);
}

#[test]
fn scenario_heartbeat_cut_with_replication_up_no_takeover() {
    let mut p = Pair::new();
    p.run_ms(1000);
    p.heartbeat_link = false;
    p.run_ms(5000);
    assert_eq!(p.holders(), [true, false]);
}

#[test]
fn scenario_both_links_cut_only_the_node_reaching_the_ping_node_holds() {
    let mut p = Pair::new();
    p.run_ms(1000);
    p.heartbeat_link = false;
    p.replication_link = false;
    p.ping = [false, true];
    p.run_ms(5000);
    assert_eq!(p.holders(), [false, true]);
    // And the other way round.
    let mut p = Pair::new();
    p.run_ms(1000);
    p.heartbeat_link = false;
    p.replication_link = false;
    p.ping = [true, false];
    p.run_ms(5000);
    assert_eq!(p.holders(), [true, false]);
}

#[test]
fn scenario_standby_then_takeover() {
    let mut p = Pair::new();
    p.run_ms(1000);
    p.nodes[0].mode = Mode::Standby;
    p.run_ms(1000);
    assert_eq!(p.holders(), [false, true], "standby hands the group over");
    p.run_ms(5000);
    assert_eq!(
        p.holders(),
        [false, true],
        "and it stays there despite auto_failback"
    );
    p.nodes[0].mode = Mode::Takeover;
    p.run_ms(1000);
    assert_eq!(p.holders(), [true, false], "takeover brings it back");
}

#[test]
fn every_disk_of_a_group_must_pass() {
    use GroupState::*;
    let two = |a: Vec<DiskGate>, b: Vec<DiskGate>, state, peer| {
        let r = Row {
            name: "two disks",
            started_at_ms: 0,
            peer,
            pings: &[],
            my_mode: Mode::Auto,
            auto_failback: true,
            group: group(false, state, both(a, b)),
            want: (Action::Nothing, Reason::Holding),
        };
        run(&r)
    };
    let outdated = view(
        Secondary,
        Outdated,
        Connecting,
        Role::Unknown,
        DUnknown,
        Off,
    );
    assert_eq!(
        two(sec_alone(), outdated, Stopped, dead()),
        (
            Action::Nothing,
            Reason::Blocked(Blocker::Disk {
                disk: Outdated,
                peer_disk: DUnknown
            })
        )
    );
    assert_eq!(
        two(sec_alone(), vec![DiskGate::Unavailable], Stopped, dead()),
        (
            Action::Nothing,
            Reason::Blocked(Blocker::ReplicatorUnavailable)
        )
    );
    assert_eq!(
        two(sec_alone(), sec_of_live_primary(), Stopped, dead()),
        (Action::Nothing, Reason::Blocked(Blocker::PeerPrimary))
    );
    assert_eq!(
        two(sec_alone(), sec_alone(), Stopped, dead()),
        (Action::Start, Reason::PeerDead { silent_ms: 1500 })
    );
    // Failback waits for the slower of two resyncs.
    assert_eq!(
        two(
            pri_synced(),
            pri_syncing(),
            Running,
            alive(Mode::Auto, 0, 0)
        ),
        (
            Action::Nothing,
            Reason::HandoverWaits {
                peer_disk: Inconsistent,
                replication: SyncSource
            }
        )
    );
    assert_eq!(
        two(pri_synced(), pri_synced(), Running, alive(Mode::Auto, 0, 0)),
        (Action::Stop, Reason::Handover(Handover::Failback))
    );
}

mod invariants {
    use super::*;
    use proptest::prelude::*;

    fn disk_state() -> impl Strategy<Value = DiskState> {
        // Weighted towards the states the rules care about.
        prop_oneof![
            1 => Just(Diskless),
            1 => Just(Attaching),
            2 => Just(Inconsistent),
            2 => Just(Outdated),
            2 => Just(Consistent),
            8 => Just(UpToDate),
            1 => Just(DiskState::Failed),
            2 => Just(DUnknown)
        ]
    }
    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Primary), Just(Secondary), Just(Role::Unknown)]
    }
    fn gate() -> impl Strategy<Value = DiskGate> {
        prop_oneof![
            1 => Just(DiskGate::Unavailable),
            6 => (
                role(),
                disk_state(),
                prop_oneof![1 => Just(StandAlone), 1 => Just(Connecting), 3 => Just(Connected)],
                role(),
                disk_state(),
                prop_oneof![Just(Off), Just(Established), Just(SyncSource), Just(SyncTarget)],
            )
                .prop_map(|(role, disk, peer_connection, peer_role, peer_disk, replication)| {
                    DiskGate::Status(ReplicaView { role, disk, peer_connection, peer_role, peer_disk, replication })
                }),
        ]
    }
    fn mode() -> impl Strategy<Value = Mode> {
        prop_oneof![Just(Mode::Standby), Just(Mode::Auto), Just(Mode::Takeover)]
    }
    fn state() -> impl Strategy<Value = GroupState> {
        use GroupState::*;
        prop_oneof![
            4 => Just(Stopped),
            1 => Just(Starting),
            4 => Just(Running),
            1 => Just(Stopping),
            1 => Just(StartFailed),
            1 => Just(StopFailed)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Whatever the facts, the safety rules of DESIGN.md §6 hold.
        #[test]
        fn safety_rules_hold(
            started_at in 0..=NOW,
            peer in proptest::option::of((0..=NOW, mode(), 0u16..4, 0u16..4)),
            pings in proptest::collection::vec(proptest::option::of(0..=NOW), 0..3),
            my_mode in mode(),
            auto_failback in any::<bool>(),
            preferred_is_me in any::<bool>(),
            st in state(),
            disks in proptest::collection::vec(gate(), 0..3),
        ) {
            let peer = peer.map(|(last_seen_ms, mode, held, failed)| PeerHeard { last_seen_ms, mode, held, failed });
            let groups = [GroupView { preferred_is_me, state: st, disks: disks.clone() }];
            let d = decide(&Snapshot { timing: T, auto_failback, now_ms: NOW, started_at_ms: started_at, peer, ping_last_reply_ms: &pings, my_mode, groups: &groups });
            let g = d.groups[0];
            let dead = matches!(d.peer, Liveness::Dead { .. });
            match g.action {
                Action::Start => {
                    prop_assert_eq!(st, GroupState::Stopped);
                    let waiting = matches!(d.peer, Liveness::Waiting { .. });
                    prop_assert!(!waiting, "started while waiting for the peer");
                    if d.peer.is_alive() {
                        prop_assert_eq!(peer.unwrap().held & 1, 0, "started a group the peer holds");
                    }
                    for gate in &disks {
                        let DiskGate::Status(r) = gate else { panic!("started without the daemon's view") };
                        prop_assert!(r.disk_ready(), "started on {:?}", r);
                        prop_assert!(!r.peer_is_live_primary(), "started beside a live Primary");
                    }
                    if dead && !pings.is_empty() {
                        prop_assert_eq!(d.ping, PingView::Reachable, "failed over without a ping node");
                    }
                }
                Action::Stop => prop_assert_eq!(st, GroupState::Running),
                Action::Nothing => {}
            }
            if st == GroupState::Running && dead && d.ping == PingView::Unreachable {
                prop_assert_eq!(g.action, Action::Stop);
                prop_assert_eq!(g.reason, Reason::Isolated);
            }
        }
    }
}
