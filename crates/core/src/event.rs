//! The core's inputs ([`Event`]) and outputs ([`Action`]). See the crate
//! header for the driver contract.

use bytes::Bytes;
use hadisk_bitmap::{DirtyBitmap, SlotChange};
use hadisk_peer_proto::{DigestAlg, Message, Payload, Uuids};

use crate::CoreError;

/// Identifies one I/O action the core asked for; its completion echoes it.
/// Also used as the sequence number of the peer messages the I/O belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoId(pub u64);

/// The driver's identifier of a client request (e.g. the NBD handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u64);

/// The driver's identifier of an admin command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CmdId(pub u64);

/// Admin commands (`hadisk primary|secondary|connect|disconnect|verify|
/// invalidate|invalidate-remote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminOp {
    Promote {
        force: bool,
    },
    Demote,
    Connect {
        discard_my_data: bool,
    },
    Disconnect,
    /// `pause-sync`: no resync requests until `resume-sync` (on this node
    /// or the peer, whichever paused).
    PauseSync,
    ResumeSync,
    /// Online verify with this node as VerifyS.
    Verify,
    /// This node becomes SyncTarget of a full resync.
    Invalidate,
    /// The peer becomes SyncTarget of a full resync from this node.
    InvalidateRemote,
}

/// What a [`Action::DigestLocal`] read: the data and its per-block digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub data: Bytes,
    /// One digest per 4 KiB block (`hadisk_peer_proto::DigestAlg::digest_blocks`).
    pub digests: Bytes,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A client write (NBD WRITE; `fua` for NBD_CMD_FLAG_FUA).
    ClientWrite {
        req: ReqId,
        offset_bytes: u64,
        data: Payload,
        fua: bool,
    },
    /// A client flush (NBD FLUSH).
    ClientFlush { req: ReqId },
    /// A write, flush or metadata write finished.
    IoDone { io: IoId, ok: bool },
    /// A [`Action::ReadLocal`] finished (`None`: I/O error).
    ReadDone { io: IoId, data: Option<Bytes> },
    /// A [`Action::DigestLocal`] finished (`None`: I/O error).
    DigestDone { io: IoId, result: Option<Digested> },
    /// The link is up and authenticated (peer-proto handshake done).
    LinkUp,
    /// The link failed or was closed.
    LinkDown { reason: String },
    /// A message from the peer, in arrival order.
    Peer(Message),
    /// An admin command.
    Admin { cmd: CmdId, op: AdminOp },
    /// The time asked for by [`Action::WakeAt`] has come (a late or
    /// spurious tick is harmless).
    Tick,
}

/// The superblock fields the core owns (the driver maps them to the
/// on-disk flags of `hadisk-metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperblockState {
    pub uuids: Uuids,
    /// The data is consistent (not in the middle of being synced to).
    pub consistent: bool,
    /// The data was UpToDate when last known.
    pub was_up_to_date: bool,
    /// This node is Primary (a restart that finds it set crashed).
    pub primary: bool,
    /// A crashed Primary whose AL extents are not yet resynced.
    pub crashed_primary: bool,
    /// The peer is known to miss writes (it was lost while we were Primary).
    pub peer_outdated: bool,
}

/// One metadata write: the driver persists, in order, `bitmap_pages`
/// (page number, 4096-byte image), `al` (slot changes of one AL
/// transaction) and `superblock`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaUpdate {
    pub bitmap_pages: Vec<(u64, Vec<u8>)>,
    pub al: Vec<SlotChange>,
    pub superblock: Option<SuperblockState>,
}

impl MetaUpdate {
    pub fn is_empty(&self) -> bool {
        self.bitmap_pages.is_empty() && self.al.is_empty() && self.superblock.is_none()
    }
}

/// What the driver read from the disk's metadata at attach.
#[derive(Debug, Clone)]
pub struct Attached {
    pub superblock: SuperblockState,
    /// The persisted dirty bitmap (sized for the usable size).
    pub bitmap: DirtyBitmap,
    /// The recovered activity-log slot table (`al-extents` entries).
    pub al_slots: Vec<Option<u32>>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `data` at `offset_bytes` on the local disk.
    WriteLocal {
        io: IoId,
        offset_bytes: u64,
        data: Payload,
        fua: bool,
    },
    /// Flush the local disk.
    FlushLocal { io: IoId },
    /// Read from the local disk (resync source).
    ReadLocal {
        io: IoId,
        offset_bytes: u64,
        len_bytes: u32,
    },
    /// Read a range of the local disk and digest every 4 KiB block of it
    /// with `alg` (verify, csums resync); report [`Event::DigestDone`] with
    /// the data and the digests. The hashing is CPU work the driver does
    /// off its event loop.
    DigestLocal {
        io: IoId,
        offset_bytes: u64,
        len_bytes: u32,
        alg: DigestAlg,
    },
    /// Persist metadata (see [`MetaUpdate`]).
    WriteMeta { io: IoId, update: MetaUpdate },
    /// Split-brain victim: copy the listed blocks of the local disk into
    /// the split-brain directory and make the copy durable, then report
    /// [`Event::IoDone`] (`ok: false` if it could not be saved: the core
    /// then refuses the connection and discards nothing).
    SaveDiverging {
        io: IoId,
        save: Box<crate::split_brain::SaveRequest>,
    },
    /// Send a message to the peer (FIFO, in emission order).
    Send(Message),
    /// Start connecting to the peer (and keep trying).
    Dial,
    /// Close the current link; `redial`: keep trying to connect.
    CloseLink { reason: String, redial: bool },
    /// Answer a client request.
    ClientDone {
        req: ReqId,
        result: Result<(), CoreError>,
    },
    /// Answer an admin command.
    AdminDone {
        cmd: CmdId,
        result: Result<(), CoreError>,
    },
    /// Feed [`Event::Tick`] at (or after) this time, as
    /// [`crate::Resource::handle`]'s clock counts it. Only the earliest
    /// outstanding one matters; the core asks again when it needs to.
    WakeAt { at_ms: u64 },
    /// Something the operator should read in the log (`info!`), e.g.
    /// "online verify done: 8 KiB out of sync".
    Notice { message: String },
    /// A state changed (for the log: `info!` with from/to).
    Transition {
        what: &'static str,
        from: String,
        to: String,
    },
}
