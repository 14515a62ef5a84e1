//! hadisk's failover agent, the pure part: the heartbeat codec, freshness
//! checks, membership, the failover policy and the group plan. The executor
//! (UDP sockets, `ip`, ARP, `mount`, scripts, the daemon's status) is built
//! on top and feeds these with what it observes.
//!
//! - [`wire`]: one heartbeat per datagram, hand-laid header, signed with the
//!   `authkeys` key ([`mac`]: HMAC-SHA1, HMAC-MD5, or CRC when allowed).
//! - [`replay`]: (generation, sequence) numbering and the receiver's guard.
//! - [`membership`]: peer and ping-node liveness from last-seen times.
//! - [`replication`]: the daemon's view of a replicated resource.
//! - [`policy`]: snapshot in, start/stop/nothing per group out.
//! - [`plan`]: start left to right, stop right to left, roll back a failed
//!   start.
//! - [`node`]: one node's state tying these together for the executor.
//!
//! Invariants of the crate:
//! - No I/O, no clock reads, no randomness, no threads: time is an input
//!   (milliseconds of one monotonic clock the executor reads), so every
//!   decision replays exactly in a test.
//! - Nothing here panics on any input: datagrams are checked length first,
//!   then signature, then fields; masks and indices are bounded by
//!   [`wire::MAX_GROUPS`].
//! - An unsigned, wrongly signed, stale, own or stranger's heartbeat never
//!   reaches the policy ([`replay::Receiver::accept`]).
//! - The policy never asks to start a group that the peer's heartbeat shows
//!   held or whose replication link shows a live peer Primary, never starts
//!   on a disk that is not UpToDate (or Consistent with the peer Outdated),
//!   never fails over without a ping node answering when ping nodes are
//!   configured, and releases a group held by a node that lost both the
//!   peer and every ping node.
//! - Both nodes, given the same facts, choose the same owner for a group
//!   ([`policy::owner`]), so they never take turns grabbing it.

pub mod mac;
pub mod membership;
pub mod node;
pub mod plan;
pub mod policy;
pub mod replay;
pub mod replication;
pub mod wire;

// A heartbeat's group masks must cover every group haresources may define.
const _: () = assert!(hadisk_config::ha::haresources::MAX_GROUPS <= wire::MAX_GROUPS);
