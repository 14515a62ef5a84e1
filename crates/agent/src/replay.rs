//! Freshness of heartbeats: a sender numbers its messages (generation,
//! sequence); a receiver accepts only pairs it has not seen, in order.
//!
//! The generation is the sender's incarnation: the executor makes it grow at
//! every agent start (a counter kept on disk, as Heartbeat's `hb_generation`
//! file, or the start time in milliseconds when that is known to grow). The
//! sequence starts at 1 in each generation and grows by one per message.
//!
//! Invariants of [`ReplayGuard`]: once (g, s) is accepted, no (g', s') with
//! g' < g, or g' = g and s' ≤ s, is accepted again, so a recorded heartbeat
//! replayed later is refused; a restarted peer (a larger generation) is
//! accepted at once with any sequence. Known limit, as in Heartbeat: a
//! receiver that restarts forgets what it saw, so one old message could be
//! accepted once after its restart, until the peer's next real one.

use hadisk_config::ha::Authkeys;

use crate::wire::{decode, Heartbeat, WireError};

/// Numbers outgoing heartbeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequencer {
    generation: u64,
    last_seq: u64,
}

impl Sequencer {
    /// A sender in incarnation `generation` (see the module header).
    pub fn new(generation: u64) -> Self {
        Sequencer {
            generation,
            last_seq: 0,
        }
    }

    /// The (generation, sequence) of the next message. After `u64::MAX`
    /// messages (never, at any keepalive) the sequence stays at the maximum,
    /// which receivers refuse rather than accept out of order.
    pub fn stamp(&mut self) -> (u64, u64) {
        self.last_seq = self.last_seq.saturating_add(1);
        (self.generation, self.last_seq)
    }
}

/// How an accepted heartbeat relates to the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fresh {
    /// The first heartbeat from this peer since we started.
    First,
    /// The next one; `lost` messages were skipped (lost or reordered away).
    Next {
        /// How many sequence numbers were skipped.
        lost: u64,
    },
    /// The peer restarted (a larger generation).
    Restarted {
        /// The generation before.
        previous: u64,
    },
}

/// Why a signed heartbeat is refused as stale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Seen already, or older than the last one accepted.
    #[error("replayed or reordered heartbeat: generation {generation} sequence {seq}, last accepted {last_seq}")]
    Replayed {
        /// Its generation (the current one).
        generation: u64,
        /// Its sequence number.
        seq: u64,
        /// The last sequence number accepted.
        last_seq: u64,
    },
    /// From an incarnation older than the current one.
    #[error("heartbeat from an old incarnation: generation {generation}, current {current}")]
    OldGeneration {
        /// Its generation.
        generation: u64,
        /// The current generation.
        current: u64,
    },
}

/// Remembers the last (generation, sequence) accepted from one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayGuard {
    last: Option<(u64, u64)>,
}

impl ReplayGuard {
    /// Accepts (generation, seq) if it is newer than everything accepted so
    /// far, and remembers it.
    pub fn check(&mut self, generation: u64, seq: u64) -> Result<Fresh, ReplayError> {
        let fresh = match self.last {
            None => Fresh::First,
            Some((g, _)) if generation > g => Fresh::Restarted { previous: g },
            Some((g, _)) if generation < g => {
                return Err(ReplayError::OldGeneration {
                    generation,
                    current: g,
                })
            }
            Some((_, s)) if seq <= s => {
                return Err(ReplayError::Replayed {
                    generation,
                    seq,
                    last_seq: s,
                })
            }
            Some((_, s)) => Fresh::Next { lost: seq - s - 1 },
        };
        self.last = Some((generation, seq));
        Ok(fresh)
    }
}

/// Why a datagram was dropped (the executor logs it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Not a valid, correctly signed heartbeat.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// Our own heartbeat (broadcast loops back).
    #[error("our own heartbeat")]
    Own,
    /// Signed with our key by a node that is not our peer.
    #[error("heartbeat from '{0}', which is not this pair's peer")]
    Stranger(String),
    /// Stale.
    #[error("{0}")]
    Replay(#[from] ReplayError),
}

/// Receives heartbeats from the one peer of the pair.
#[derive(Debug, Clone)]
pub struct Receiver {
    me: String,
    peer: String,
    guard: ReplayGuard,
}

impl Receiver {
    /// A receiver for node `me` whose peer is `peer`.
    pub fn new(me: &str, peer: &str) -> Self {
        Receiver {
            me: me.to_owned(),
            peer: peer.to_owned(),
            guard: ReplayGuard::default(),
        }
    }

    /// Decodes, verifies and checks the freshness of a datagram. The replay
    /// state changes only for an accepted heartbeat.
    pub fn accept(&mut self, buf: &[u8], keys: &Authkeys) -> Result<(Heartbeat, Fresh), Rejected> {
        let hb = decode(buf, keys)?;
        if hb.from.eq_ignore_ascii_case(&self.me) {
            return Err(Rejected::Own);
        }
        if !hb.from.eq_ignore_ascii_case(&self.peer) {
            return Err(Rejected::Stranger(hb.from));
        }
        let fresh = self.guard.check(hb.generation, hb.seq)?;
        Ok((hb, fresh))
    }
}
