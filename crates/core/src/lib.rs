//! hadisk's replication core: one pure state machine per resource.
//!
//! [`Resource::handle`] takes an [`Event`] (a client request, an I/O
//! completion, a peer message, a link change, an admin command) and the
//! current time, updates the state and returns the [`Action`]s the driver
//! must perform. Nothing here does I/O, reads a clock, draws ambient random
//! numbers or iterates a `HashMap`: the same event sequence always yields the
//! same actions, which is what the simulator (`crates/sim`) relies on.
//!
//! # Driver contract (the tokio daemon, the simulator)
//! * Feed events one at a time, in the order they happen; perform the
//!   returned actions **in any order and in parallel** unless stated below.
//!   Many writes are in flight at once: the core never waits for one
//!   write's completion before issuing the next.
//! * Every action that does I/O carries an [`IoId`]; report its completion
//!   exactly once with [`Event::IoDone`] (or [`Event::ReadDone`] for
//!   [`Action::ReadLocal`]) carrying the same id. Client requests and admin
//!   commands carry the driver's own [`ReqId`] / [`CmdId`], answered by
//!   [`Action::ClientDone`] / [`Action::AdminDone`].
//! * [`Action::Send`] messages go on the peer link **in the order emitted**
//!   (one FIFO stream, as TCP gives): the write ordering on the peer depends
//!   on it. Messages of a link that went down are dropped, never delivered on
//!   the next link.
//! * [`Action::WriteLocal`] with `fua` is durable before it is reported
//!   done; [`Action::FlushLocal`] makes durable every write reported done
//!   before it was issued (fdatasync).
//! * [`Action::WriteMeta`] writes, in this order and each durable before the
//!   next, the bitmap pages, the activity-log slot changes, the superblock;
//!   only then report it done. The core issues one at a time. A write into a
//!   newly active extent is only issued after the AL transaction that made
//!   it active is reported done (persist-before-write, raft-rs's `Ready`).
//! * [`Action::SaveDiverging`] (a split brain resolved against this node):
//!   copy the listed ranges of the local disk to the split-brain directory,
//!   durably (fsync), before reporting it done; the core issues no local
//!   write of the winner's data until then. Report `ok: false` when the
//!   copy cannot be made durable.
//! * [`Action::Dial`]: keep connecting to the peer (with backoff) and run the
//!   authenticated handshake of `hadisk-peer-proto`; report
//!   [`Event::LinkUp`] once it succeeded and [`Event::LinkDown`] when the
//!   link fails (including keepalive timeouts: a peer that stops reading
//!   must end as `LinkDown`, never as a stall). [`Action::CloseLink`] closes
//!   the link; with `redial` keep dialing afterwards.
//! * [`Action::WakeAt`]: feed [`Event::Tick`] once that time has come (the
//!   resync rate controller waits for its budget to refill).
//! * Reads from NBD clients do not pass through the core: a Primary reads
//!   its own disk ([`Resource::can_serve_reads`]).
//!
//! # Invariants
//! * Protocol C: a client write completes only when the local write and the
//!   peer's ack are in (or the peer is gone and the blocks are in the dirty
//!   bitmap). A flush completes only when both disks flushed.
//! * Overlapping writes, and writes overlapping a resync chunk being read
//!   and sent, are serialised by a block range lock in arrival order, on
//!   the Primary and on the Secondary, so both disks apply them in the same
//!   order and resync never overwrites newer data with older.
//! * A write not yet known durable on both disks keeps its activity-log
//!   extent pinned and, if the link drops, its blocks go into the bitmap.
//! * Never two Primaries while connected: promotion while connected is a
//!   two-phase `PromoteRequest`/`PromoteReply`.
//!
//! # Example: a forced Primary, alone, takes a write
//! ```
//! use bytes::Bytes;
//! use hadisk_bitmap::DirtyBitmap;
//! use hadisk_core::*;
//!
//! let size = 64 << 20;
//! let superblock = SuperblockState {
//!     uuids: Uuids::just_created(),
//!     consistent: false,
//!     was_up_to_date: false,
//!     primary: false,
//!     crashed_primary: false,
//!     peer_outdated: false,
//! };
//! let attached = Attached { superblock, bitmap: DirtyBitmap::new(size).unwrap(), al_slots: vec![None; 1237] };
//! let (mut r, _) = Resource::new(Config::new(size, false, 42), attached).unwrap();
//! let promote = Event::Admin { cmd: CmdId(1), op: AdminOp::Promote { force: true } };
//! // The Primary flag and the new generation UUID are persisted first.
//! let io = match r.handle(0, promote).as_slice() {
//!     [Action::WriteMeta { io, update }] if update.superblock.is_some_and(|s| s.primary) => *io,
//!     other => panic!("{other:?}"),
//! };
//! let done = r.handle(1, Event::IoDone { io, ok: true });
//! assert!(done.contains(&Action::AdminDone { cmd: CmdId(1), result: Ok(()) }));
//! // A write into a new extent: the AL transaction first, then the write.
//! let write = Event::ClientWrite { req: ReqId(7), offset_bytes: 0, data: Bytes::from(vec![1; 4096]).into(), fua: false };
//! let Some(Action::WriteMeta { io: al, .. }) = r.handle(2, write).into_iter().next() else { panic!() };
//! let Some(Action::WriteLocal { io, .. }) = r.handle(3, Event::IoDone { io: al, ok: true }).into_iter().next() else { panic!() };
//! // No peer: the block is marked for the resync, the write completes.
//! let out = r.handle(4, Event::IoDone { io, ok: true });
//! assert!(out.contains(&Action::ClientDone { req: ReqId(7), result: Ok(()) }));
//! assert_eq!(r.status(4).out_of_sync_bytes, 4096);
//! ```
#![deny(clippy::disallowed_methods)]

mod admin;
mod csums;
mod event;
mod generation;
mod handshake;
mod invalidate;
mod meta;
mod peer_apply;
pub mod rangelock;
pub mod rate;
mod resource;
mod resync;
pub mod split_brain;
mod states;
mod status;
pub mod uuid;
mod verify;
mod write_path;

pub use event::{
    Action, AdminOp, Attached, CmdId, Digested, Event, IoId, MetaUpdate, ReqId, SuperblockState,
};
pub use generation::{finish_sync_source, new_generation};
pub use hadisk_peer_proto::{DiskState, Role, Uuids};
pub use rate::{DynamicRate, RateMode, RateStatus};
pub use resource::{Config, Resource};
pub use split_brain::{AfterSbPolicies, AfterSbPolicy, SaveRequest};
pub use states::{Connection, Replication};
pub use status::{ResyncProgress, Status};
pub use uuid::{decide_sync, Rule, SyncDecision, SyncInputs, SyncOutcome};
pub use verify::VerifyReport;

/// Errors the core reports: to clients (write refused or failed), to admin
/// commands (promotion refused, …), and configuration errors. The text is
/// what the daemon prints: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("unknown after-sb policy \"{value}\" (expected one of disconnect, discard-younger-primary, discard-older-primary, discard-zero-changes, discard-least-changes, discard-local, discard-remote, discard-secondary, consensus, call-pri-lost-after-sb, violently-as0p)")]
    UnknownAfterSbPolicy { value: String },
    /// A write reached a node that is not Primary.
    #[error("the resource is Secondary here: writes are accepted only on the Primary")]
    NotPrimary,
    /// A write or flush could not be done on this node's disk.
    #[error("I/O error on the local disk (disk is {disk}): the write did not complete")]
    LocalIo { disk: DiskState },
    /// A request outside the device or not sector aligned.
    #[error("request of {len_bytes} bytes at offset {offset_bytes} is not 512-byte aligned or exceeds the device of {size_bytes} bytes")]
    BadRange {
        offset_bytes: u64,
        len_bytes: u64,
        size_bytes: u64,
    },
    #[error("the peer is Primary: demote it first (hadisk secondary RES on the peer); two Primaries are not allowed")]
    PeerIsPrimary,
    #[error("the local disk is {disk}, not UpToDate: refusing to promote (use primary --force only if this node's data is the good copy)")]
    NotUpToDate { disk: DiskState },
    #[error("the local disk is {disk}: cannot promote even with --force")]
    NoUsableDisk { disk: DiskState },
    #[error("cannot force promotion while connected to a peer during {replication}: disconnect first or wait for the resync")]
    ForceWhileConnected { replication: Replication },
    #[error("the peer refused the promotion (it is Primary or promoting itself): retry")]
    PromotionDenied,
    #[error("the connection was lost during the promotion handshake: retry")]
    PromotionInterrupted,
    #[error("another role change is in progress: retry when it has finished")]
    Busy,
    #[error("{writes} writes are still in flight: demote when the device is idle")]
    WritesInFlight { writes: usize },
    #[error("the connection handshake is in progress: retry in a moment")]
    Handshaking,
    /// `connect --discard-my-data` on a Primary.
    #[error("this node is Primary: its data cannot be discarded while it is; demote it first (hadisk secondary RES), then connect --discard-my-data")]
    DiscardWhilePrimary,
    /// `connect --discard-my-data` while the link is up or handshaking.
    #[error("the link to the peer is up: --discard-my-data applies to a new connection; disconnect first (hadisk disconnect RES)")]
    DiscardWhileConnected,
    #[error("writing the metadata failed: the disk is now Failed")]
    MetaIo,
    /// A write touching more activity-log extents than the log holds could
    /// never start.
    #[error("a write of {len_bytes} bytes spans {extents} activity-log extents but al-extents is {capacity}: raise al-extents or use smaller requests")]
    WriteTooWideForAl {
        len_bytes: u64,
        extents: u64,
        capacity: u32,
    },
    #[error("the resync is already paused on this node: resume it with hadisk resume-sync")]
    SyncAlreadyPaused,
    #[error("the resync is not paused on this node (a pause made on the peer is resumed there)")]
    SyncNotPaused,
    /// `verify`, `invalidate` or `invalidate-remote` without a link.
    #[error("{command} needs a connected peer (the connection is {connection}): connect first (hadisk connect RES) and wait for Connected")]
    NotConnected {
        command: &'static str,
        connection: Connection,
    },
    /// `verify` / `invalidate` while a resync or verify runs.
    #[error("cannot start {command} during {replication}: wait until replication is Established")]
    NotEstablished {
        command: &'static str,
        replication: Replication,
    },
    #[error("verify-alg is not set for this resource: add e.g. `verify-alg sha256;` to its net section (on both nodes) and restart the resource (down, up)")]
    NoVerifyAlg,
    #[error("online verify needs both disks UpToDate (this node's is {local}, the peer's {peer})")]
    VerifyNeedsUpToDate { local: DiskState, peer: String },
    #[error("this node is Primary: a Primary cannot discard its data; demote it first (hadisk secondary RES)")]
    InvalidateWhilePrimary,
    #[error("the peer's disk is {peer}, not UpToDate: there is no good copy to resync from")]
    PeerNotUpToDate { peer: String },
    #[error("this node's disk is {disk}, not UpToDate: it cannot be the source of a full resync")]
    SourceNotUpToDate { disk: DiskState },
    #[error("the peer is Primary: a Primary cannot discard its data; demote it first (hadisk secondary RES on the peer)")]
    InvalidatePeerPrimary,
    #[error("another invalidate is waiting for the peer's answer: retry when it has finished")]
    FullSyncPending,
    #[error("the peer refused: {reason}")]
    PeerRefused { reason: String },
    #[error("the connection was lost before the peer answered: retry")]
    FullSyncInterrupted,
    /// The attached metadata does not fit the configuration.
    #[error("cannot attach the disk: {reason}")]
    Attach { reason: String },
}
