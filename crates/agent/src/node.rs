//! One node's agent state, pure: what it has heard (heartbeats, ping
//! replies), its operator mode and its outgoing sequence, tied to the
//! policy. The executor owns one [`Node`], feeds it datagrams, ping replies,
//! group states and the daemon's view, sends what [`Node::heartbeat`]
//! returns every keepalive, and carries out [`Node::decide`]'s actions.
//!
//! Invariants: only a heartbeat accepted by [`Receiver::accept`] (right key,
//! from the peer, fresh) changes what the node believes about the peer; a
//! rejected datagram changes nothing. Times are the executor's monotonic
//! milliseconds; nothing here reads a clock.

use hadisk_config::ha::{AuthKey, HaCf, Haresources};

use crate::membership::Timing;
use crate::policy::{
    decide, masks, Decision, DiskGate, GroupState, GroupView, PeerHeard, Snapshot,
};
use crate::replay::{Fresh, Receiver, Rejected, Sequencer};
use crate::wire::{encode, Heartbeat, Mode, WireError};

/// Why a node cannot be set up from the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// This node's name is not in ha.cf.
    #[error("this node '{me}' is not a `node` in ha.cf (nodes: {nodes}); set --node or the host name to one of them")]
    NotInPair {
        /// The name looked up.
        me: String,
        /// ha.cf's nodes, comma-separated.
        nodes: String,
    },
}

/// One node's agent state.
#[derive(Debug, Clone)]
pub struct Node {
    me: String,
    peer: String,
    timing: Timing,
    auto_failback: bool,
    started_at_ms: u64,
    receiver: Receiver,
    sequencer: Sequencer,
    peer_heard: Option<PeerHeard>,
    ping_last_reply_ms: Vec<Option<u64>>,
    mode: Mode,
    preferred_is_me: Vec<bool>,
}

impl Node {
    /// A node `me` of the pair in `hacf`, running `haresources`' groups,
    /// started at `now_ms` in incarnation `generation` (which must grow at
    /// every start; see [`crate::replay`]).
    pub fn new(
        hacf: &HaCf,
        haresources: &Haresources,
        me: &str,
        generation: u64,
        now_ms: u64,
    ) -> Result<Self, NodeError> {
        let Some(peer) = hacf.peer_of(me) else {
            return Err(NodeError::NotInPair {
                me: me.to_owned(),
                nodes: hacf.nodes.join(", "),
            });
        };
        Ok(Node {
            me: me.to_owned(),
            peer: peer.to_owned(),
            timing: Timing::from_hacf(hacf),
            auto_failback: hacf.auto_failback.returns(),
            started_at_ms: now_ms,
            receiver: Receiver::new(me, peer),
            sequencer: Sequencer::new(generation),
            peer_heard: None,
            ping_last_reply_ms: vec![None; hacf.ping.len()],
            mode: Mode::Auto,
            preferred_is_me: haresources
                .groups
                .iter()
                .take(crate::wire::MAX_GROUPS)
                .map(|g| g.node.eq_ignore_ascii_case(me))
                .collect(),
        })
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The operator mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// `hadisk agent standby` / `takeover` (or back to auto).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// What the peer's last accepted heartbeat said, and when it came.
    pub fn peer_heard(&self) -> Option<PeerHeard> {
        self.peer_heard
    }

    /// A datagram arrived at `now_ms`; `keys` are the authkeys. On success
    /// the peer is alive as of now; on error nothing changed (the executor
    /// logs the reason).
    pub fn receive(
        &mut self,
        now_ms: u64,
        datagram: &[u8],
        keys: &hadisk_config::ha::Authkeys,
    ) -> Result<(Heartbeat, Fresh), Rejected> {
        let (hb, fresh) = self.receiver.accept(datagram, keys)?;
        self.peer_heard = Some(PeerHeard {
            last_seen_ms: now_ms,
            mode: hb.mode,
            held: hb.held,
            failed: hb.failed,
        });
        Ok((hb, fresh))
    }

    /// Ping node `index` (ha.cf order) replied at `now_ms`; an index out of
    /// range is ignored.
    pub fn ping_reply(&mut self, now_ms: u64, index: usize) {
        if let Some(slot) = self.ping_last_reply_ms.get_mut(index) {
            *slot = Some(now_ms);
        }
    }

    /// The next heartbeat to send, signed with `key` (authkeys' active key),
    /// describing `groups` (their states here, haresources order).
    pub fn heartbeat(
        &mut self,
        groups: &[GroupState],
        key: &AuthKey,
    ) -> Result<Vec<u8>, WireError> {
        let views: Vec<GroupView> = groups
            .iter()
            .map(|&state| GroupView {
                preferred_is_me: false,
                state,
                disks: Vec::new(),
            })
            .collect();
        let (held, failed) = masks(&views);
        let (generation, seq) = self.sequencer.stamp();
        let hb = Heartbeat {
            from: self.me.clone(),
            generation,
            seq,
            mode: self.mode,
            held,
            failed,
        };
        encode(&hb, key)
    }

    /// The policy's decision at `now_ms` for `groups`: each group's state
    /// here and one gate per replicated resource (haresources order). Groups
    /// beyond haresources' are not decided.
    pub fn decide(&self, now_ms: u64, groups: &[(GroupState, Vec<DiskGate>)]) -> Decision {
        let views: Vec<GroupView> = groups
            .iter()
            .zip(&self.preferred_is_me)
            .map(|((state, disks), &preferred_is_me)| GroupView {
                preferred_is_me,
                state: *state,
                disks: disks.clone(),
            })
            .collect();
        decide(&Snapshot {
            timing: self.timing,
            auto_failback: self.auto_failback,
            now_ms,
            started_at_ms: self.started_at_ms,
            peer: self.peer_heard,
            ping_last_reply_ms: &self.ping_last_reply_ms,
            my_mode: self.mode,
            groups: &views,
        })
    }
}
