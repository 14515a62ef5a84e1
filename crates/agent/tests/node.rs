#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Two [`Node`]s built from the seed's files (with fast times), exchanging
//! real signed datagrams through a simulated network: failover on silence,
//! wrong authkeys ignored, replayed heartbeats refused.

use std::path::Path;

use hadisk_agent::node::{Node, NodeError};
use hadisk_agent::policy::{Action, DiskGate, GroupState, Reason};
use hadisk_agent::replay::{Rejected, ReplayError};
use hadisk_agent::wire::WireError;
use hadisk_config::ha::{
    parse_authkeys, parse_hacf, parse_haresources, Authkeys, HaCf, Haresources,
};

const HA_CF: &str = "keepalive 200ms\ndeadtime 1\ninitdead 2\nudpport 694\nbcast eth0\nauto_failback on\nnode NAS1\nnode NAS2\n";
const HARESOURCES: &str = "NAS1 drbddisk::data Filesystem::/dev/drbd0::/data::ext4 Delay::1::0 IPaddr::192.168.0.225/27/eth0:0 nfslock nfs\n";

fn config() -> (HaCf, Haresources) {
    (
        parse_hacf(HA_CF, Path::new("ha.cf")).unwrap(),
        parse_haresources(HARESOURCES, Path::new("haresources")).unwrap(),
    )
}

fn keys(text: &str) -> Authkeys {
    parse_authkeys(text, Path::new("authkeys"), false).unwrap()
}

/// A pair whose group has no replicated-disk gate (the disk rules are
/// tested in policy.rs); the group state follows the actions at once.
struct World {
    now_ms: u64,
    nodes: [Node; 2],
    keys: [Authkeys; 2],
    states: [GroupState; 2],
    up: [bool; 2],
    rejected: Vec<(usize, Rejected)>,
    /// Every datagram sent by node 0, for the replay attacker.
    recorded: Vec<Vec<u8>>,
}

impl World {
    fn new(keys1: &str, keys2: &str) -> Self {
        let (c, r) = config();
        World {
            now_ms: 0,
            nodes: [
                Node::new(&c, &r, "NAS1", 7, 0).unwrap(),
                Node::new(&c, &r, "nas2", 3, 0).unwrap(),
            ],
            keys: [keys(keys1), keys(keys2)],
            states: [GroupState::Stopped; 2],
            up: [true, true],
            rejected: Vec::new(),
            recorded: Vec::new(),
        }
    }

    fn tick(&mut self) {
        self.now_ms += 200;
        for i in 0..2 {
            if !self.up[i] {
                continue;
            }
            let key = self.keys[i].active_key().unwrap().clone();
            let d = self.nodes[i].heartbeat(&[self.states[i]], &key).unwrap();
            if i == 0 {
                self.recorded.push(d.clone());
            }
            let j = 1 - i;
            if self.up[j] {
                if let Err(e) = self.nodes[j].receive(self.now_ms, &d, &self.keys[j]) {
                    self.rejected.push((j, e));
                }
            }
        }
        for i in 0..2 {
            if !self.up[i] {
                continue;
            }
            let d = self.nodes[i].decide(self.now_ms, &[(self.states[i], Vec::<DiskGate>::new())]);
            self.states[i] = match d.groups[0].action {
                Action::Start => GroupState::Running,
                Action::Stop => GroupState::Stopped,
                Action::Nothing => self.states[i],
            };
        }
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / 200 {
            self.tick();
        }
    }
}

const SEED_KEYS: &str = "auth 1\n1 md5 hatest\n";

#[test]
fn the_preferred_node_starts_and_the_standby_takes_over_after_deadtime() {
    let mut w = World::new(SEED_KEYS, SEED_KEYS);
    w.run_ms(1000);
    assert_eq!(w.states, [GroupState::Running, GroupState::Stopped]);
    assert!(w.rejected.is_empty(), "{:?}", w.rejected);
    assert_eq!(w.nodes[1].peer(), "NAS1");
    w.up[0] = false;
    w.run_ms(800);
    assert_eq!(w.states[1], GroupState::Stopped, "not before deadtime");
    w.run_ms(400);
    assert_eq!(w.states[1], GroupState::Running, "after deadtime");
    let d = w.nodes[1].decide(w.now_ms, &[(GroupState::Stopped, vec![])]);
    assert!(
        matches!(d.groups[0].reason, Reason::PeerDead { .. }),
        "{:?}",
        d.groups[0].reason
    );
}

#[test]
fn wrong_authkeys_are_ignored_and_reported() {
    let mut w = World::new(SEED_KEYS, "auth 1\n1 md5 typo\n");
    w.run_ms(400);
    assert!(w.nodes[0].peer_heard().is_none());
    assert!(w.nodes[1].peer_heard().is_none());
    assert!(!w.rejected.is_empty());
    for (_, e) in &w.rejected {
        assert_eq!(e, &Rejected::Wire(WireError::BadSignature(1)));
        assert_eq!(
            e.to_string(),
            "bad signature (key 1): wrong authkeys on one node, or a forged or corrupted message"
        );
    }
}

#[test]
fn a_replayed_heartbeat_does_not_keep_a_dead_peer_alive() {
    let mut w = World::new(SEED_KEYS, SEED_KEYS);
    w.run_ms(1000);
    w.up[0] = false;
    // An attacker replays node 0's recorded heartbeats to node 1 every tick.
    let recorded = w.recorded.clone();
    for d in recorded.iter().cycle().take(8) {
        w.now_ms += 200;
        let e = w.nodes[1].receive(w.now_ms, d, &w.keys[1]).unwrap_err();
        assert!(
            matches!(
                e,
                Rejected::Replay(ReplayError::Replayed { generation: 7, .. })
            ),
            "{e:?}"
        );
        let st = w.states[1];
        let d = w.nodes[1].decide(w.now_ms, &[(st, vec![])]);
        if d.groups[0].action == Action::Start {
            w.states[1] = GroupState::Running;
        }
    }
    assert_eq!(
        w.states[1],
        GroupState::Running,
        "the replays did not delay the failover"
    );
}

#[test]
fn standby_moves_the_group_through_the_heartbeats() {
    let mut w = World::new(SEED_KEYS, SEED_KEYS);
    w.run_ms(1000);
    w.nodes[0].set_mode(hadisk_agent::wire::Mode::Standby);
    w.run_ms(1000);
    assert_eq!(w.states, [GroupState::Stopped, GroupState::Running]);
}

#[test]
fn a_node_outside_the_pair_is_refused() {
    let (c, r) = config();
    assert_eq!(
        Node::new(&c, &r, "NAS3", 1, 0).unwrap_err(),
        NodeError::NotInPair {
            me: "NAS3".into(),
            nodes: "NAS1, NAS2".into()
        }
    );
    assert_eq!(
        Node::new(&c, &r, "NAS3", 1, 0).unwrap_err().to_string(),
        "this node 'NAS3' is not a `node` in ha.cf (nodes: NAS1, NAS2); set --node or the host name to one of them"
    );
}
