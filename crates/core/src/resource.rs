//! The per-resource state machine: its state, the event dispatch and the
//! queue of operations waiting for the range lock. The handlers live in
//! sibling modules (`write_path`, `peer_apply`, `resync`, `handshake`,
//! `admin`, `meta`), each an `impl Resource` block.
//!
//! Invariants:
//! * Queued operations start in arrival order except that one not
//!   overlapping any earlier queued operation may pass it; two operations
//!   on overlapping blocks never run at once.
//! * `link_epoch` changes whenever the link goes up or down; completions of
//!   operations that belong to another epoch send nothing to the peer.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use hadisk_bitmap::{ActivityLog, DirtyBitmap, BLOCK_BYTES};
use hadisk_peer_proto::frame::SECTOR_BYTES;
use hadisk_peer_proto::{DigestAlg, DiskState, Message, Params, Payload, Role, Uuids};

use crate::csums::CsumWait;
use crate::event::{Action, Attached, CmdId, Event, IoId, ReqId, SuperblockState};
use crate::rangelock::RangeLock;
use crate::rate::{RateController, RateMode};
use crate::split_brain::AfterSbPolicies;
use crate::states::{Connection, Replication};
use crate::verify::{DigestOp, VerifyReport, VerifyRun};
use crate::CoreError;

/// Default resync request size: large enough to stream at disk speed,
/// small enough that an application write rarely waits behind one.
pub const DEFAULT_RESYNC_CHUNK_BYTES: u32 = 1 << 20;
/// Default resync requests in flight.
pub const DEFAULT_RESYNC_REQUESTS: usize = 8;
/// Default number of completed-but-not-flushed operations after which the
/// core flushes both disks on its own, bounding what a crash can cost and
/// the AL extents kept pinned.
pub const DEFAULT_MAX_UNSTABLE: usize = 1024;

/// Per-resource settings (from the resource file and the node identity).
#[derive(Debug, Clone)]
pub struct Config {
    /// The usable size (what NBD exports); must equal the peer's.
    pub size_bytes: u64,
    /// `al-extents`.
    pub al_extents: u32,
    pub policies: AfterSbPolicies,
    /// True on exactly one node of the pair (e.g. the greater node name):
    /// breaks ties in the sync decision.
    pub yields_on_tie: bool,
    /// Size of one resync request (rounded to whole blocks).
    pub resync_chunk_bytes: u32,
    /// Resync requests in flight.
    pub resync_requests: usize,
    /// See [`DEFAULT_MAX_UNSTABLE`].
    pub max_unstable: usize,
    /// The resync rate controller's mode (`resync-rate`, `c-*`).
    pub rate: RateMode,
    /// Seeds the generator of new generation UUIDs (the daemon passes OS
    /// randomness; the simulator its seed).
    pub uuid_seed: u64,
    /// The resource's name, for the commands that messages tell the
    /// operator to run (split-brain recovery).
    pub resource: String,
    /// `csums-alg`: a SyncTarget sends digests and gets only the blocks
    /// that differ (the target's setting decides; the frame names the
    /// algorithm).
    pub csums_alg: Option<DigestAlg>,
    /// `verify-alg`: needed to start an online verify (VerifyS's setting
    /// decides; the frame names the algorithm).
    pub verify_alg: Option<DigestAlg>,
}

impl Config {
    /// Defaults for everything but the size and the tie-breaker.
    pub fn new(size_bytes: u64, yields_on_tie: bool, uuid_seed: u64) -> Config {
        Config {
            size_bytes,
            al_extents: hadisk_bitmap::AL_EXTENTS_DEFAULT,
            policies: AfterSbPolicies::default(),
            yields_on_tie,
            resync_chunk_bytes: DEFAULT_RESYNC_CHUNK_BYTES,
            resync_requests: DEFAULT_RESYNC_REQUESTS,
            max_unstable: DEFAULT_MAX_UNSTABLE,
            rate: RateMode::default(),
            uuid_seed,
            resource: "RES".to_string(),
            csums_alg: None,
            verify_alg: None,
        }
    }
}

/// The phase of the peer link.
#[derive(Debug)]
pub(crate) enum Link {
    Down,
    Handshake(Box<Handshake>),
    Up,
}

/// What the handshake has gathered so far.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// Our `Params` as sent; `None` while a role change is being persisted
    /// (they are sent once it is done, so that they describe the state the
    /// peer will see afterwards, never a half-changed one).
    pub sent: Option<Params>,
    pub peer: Option<Params>,
    pub peer_bitmap: DirtyBitmap,
    pub got_last_chunk: bool,
}

/// An operation waiting for the range lock (or the AL, or the handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    AppWrite(IoId),
    PeerWrite(IoId),
    ResyncRead(IoId),
    /// A digest of a local range (verify, csums target).
    Digest(IoId),
}

/// A client write on the Primary.
#[derive(Debug)]
pub(crate) struct AppWrite {
    pub req: ReqId,
    pub offset_bytes: u64,
    pub len_bytes: u64,
    /// Handed over when the write is issued (to the `WriteLocal` action and
    /// the peer's `Data` message), so that the core keeps no reference: the
    /// disk write or the link, whichever takes the payload last, then
    /// holds its only reference and moves a pipe payload without a `tee`.
    pub data: Option<Payload>,
    pub fua: bool,
    pub stage: WriteStage,
    pub local_ok: Option<bool>,
    /// Sent to the peer and not yet acknowledged.
    pub peer_wait: bool,
    pub sent_to_peer: bool,
    /// The peer acknowledged it (it is on the peer's disk).
    pub peer_acked: bool,
    /// Holds AL references (taken when started).
    pub al_held: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteStage {
    Queued,
    /// Waiting for the metadata write with this sequence (AL transaction).
    WaitMeta(u64),
    Issued,
}

/// A write received from the peer (mirrored data or resync data).
#[derive(Debug)]
pub(crate) struct PeerWrite {
    pub seq: u64,
    pub offset_bytes: u64,
    pub len_bytes: u64,
    /// Handed over to the `WriteLocal` action when the write is issued, so
    /// that the disk write holds the payload's only reference (a pipe
    /// payload is then written without a `tee`).
    pub data: Option<Payload>,
    pub fua: bool,
    pub resync: bool,
    /// Receive order, for flush ordering.
    pub rx: u64,
    pub epoch: u64,
    pub issued: bool,
}

/// A resync read on the source.
#[derive(Debug)]
pub(crate) struct SourceRead {
    pub seq: u64,
    pub offset_bytes: u64,
    pub len_bytes: u32,
    pub epoch: u64,
    pub issued: bool,
    /// A `CsumRequest`: the target's algorithm and digests; only the
    /// blocks whose digests differ are sent.
    pub csum: Option<(DigestAlg, Bytes)>,
}

/// A completed operation not yet known durable on both disks.
#[derive(Debug, Clone)]
pub(crate) struct Unstable {
    pub counter: u64,
    pub offset_bytes: u64,
    pub len_bytes: u64,
    /// The peer has it (acked) but maybe not durably: re-mark on link loss.
    pub on_peer: bool,
    /// Holds AL references until flushed.
    pub al_held: bool,
}

/// What to do when a flush of both disks completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlushThen {
    Client(ReqId),
    Internal,
    Demote(CmdId),
}

#[derive(Debug)]
pub(crate) struct FlushOp {
    pub then: FlushThen,
    pub local_ok: Option<bool>,
    pub peer_wait: bool,
    /// Unstable entries with a smaller counter become stable.
    pub upto: u64,
}

/// A `Flush` from the peer waiting for earlier peer writes, then for the
/// local flush.
#[derive(Debug)]
pub(crate) struct PeerFlush {
    pub seq: u64,
    pub upto_rx: u64,
    pub io: Option<IoId>,
    pub epoch: u64,
}

/// Progress of a resync (both roles).
#[derive(Debug, Clone)]
pub(crate) struct SyncProgress {
    pub total_blocks: u64,
    pub started_ms: u64,
    /// Sync marks (time, blocks left), oldest first, at least one.
    pub marks: VecDeque<(u64, u64)>,
}

/// The target's resync walker.
#[derive(Debug, Default)]
pub(crate) struct TargetSync {
    /// Requests may be sent (the Inconsistent state is persisted).
    pub started: bool,
    pub cursor: u64,
    /// seq -> (first block, blocks).
    pub inflight: BTreeMap<u64, (u64, u64)>,
    /// The final local flush.
    pub finishing: Option<IoId>,
    /// Flushed and reported complete: waiting for the source to rotate its
    /// bitmap UUID before adopting its current one.
    pub awaiting_source: bool,
    /// Requests sent as `CsumRequest` (seq -> what they wait for).
    pub csums: BTreeMap<u64, CsumWait>,
}

/// Something waiting for a metadata write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetaWaiter {
    Promoted(CmdId),
    Demoted(CmdId),
    StartTarget,
    FinishTarget,
    SourceFinished,
}

/// One replicated resource (see the crate header).
#[derive(Debug)]
pub struct Resource {
    pub(crate) cfg: Config,
    pub(crate) role: Role,
    pub(crate) disk: DiskState,
    pub(crate) conn: Connection,
    pub(crate) repl: Replication,
    pub(crate) peer_role: Role,
    pub(crate) peer_disk: Option<DiskState>,
    pub(crate) peer_uuids: Uuids,
    pub(crate) sb: SuperblockState,
    pub(crate) bitmap: DirtyBitmap,
    pub(crate) al: ActivityLog,
    pub(crate) lock: RangeLock,
    pub(crate) link: Link,
    pub(crate) link_epoch: u64,
    pub(crate) next_io: u64,
    pub(crate) rng: u64,
    pub(crate) now_ms: u64,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) writes: BTreeMap<IoId, AppWrite>,
    pub(crate) flushes: BTreeMap<IoId, FlushOp>,
    pub(crate) internal_flush: bool,
    pub(crate) unstable: VecDeque<Unstable>,
    pub(crate) unstable_counter: u64,
    pub(crate) peer_writes: BTreeMap<IoId, PeerWrite>,
    pub(crate) rx_counter: u64,
    pub(crate) peer_flushes: Vec<PeerFlush>,
    pub(crate) source_reads: BTreeMap<IoId, SourceRead>,
    pub(crate) target: Option<TargetSync>,
    pub(crate) progress: Option<SyncProgress>,
    /// extent -> metadata sequence that makes it durably active.
    pub(crate) al_uncommitted: BTreeMap<u32, u64>,
    pub(crate) meta_inflight: Option<(IoId, u64)>,
    /// The superblock the last issued metadata write carried (`None` until
    /// the first): an unchanged superblock is not written again.
    pub(crate) sb_issued: Option<SuperblockState>,
    pub(crate) meta_next: Option<Vec<hadisk_bitmap::SlotChange>>,
    pub(crate) meta_issued: u64,
    pub(crate) meta_done: u64,
    pub(crate) meta_waiters: Vec<(u64, MetaWaiter)>,
    /// The metadata write carrying the latest new generation UUID: no
    /// write completes to a client before it is durable (else a crash
    /// could bring back the old UUID, equal to the peer's, and the writes
    /// made without the peer would be synced away as a crashed Primary's).
    pub(crate) gen_meta_seq: u64,
    /// Our own promotion in progress: (command, PromoteRequest seq).
    pub(crate) promoting: Option<(CmdId, Option<u64>)>,
    pub(crate) demoting: bool,
    /// We granted the peer's promotion and have not seen it settle.
    pub(crate) granted_peer: bool,
    pub(crate) discard_my_data: bool,
    /// A split-brain victim's save of its diverging blocks in flight:
    /// (its I/O, the link epoch it belongs to). No peer write starts
    /// meanwhile.
    pub(crate) saving: Option<(IoId, u64)>,
    pub(crate) last_error: Option<String>,
    /// Decides how fast the target requests (see `rate`).
    pub(crate) rate: RateController,
    /// The earliest `Action::WakeAt` asked for and not yet reached.
    pub(crate) wake_at: Option<u64>,
    /// `pause-sync` on this node (kept across reconnects until
    /// `resume-sync`, as DRBD's user_isp).
    pub(crate) sync_paused_here: bool,
    /// The peer paused the resync (forgotten when the link drops).
    pub(crate) sync_paused_by_peer: bool,
    /// Local digests in flight or queued (verify, csums target).
    pub(crate) digest_ops: BTreeMap<IoId, DigestOp>,
    /// The online verify running over this link, either side.
    pub(crate) verify: Option<VerifyRun>,
    /// The result of the last online verify (kept for `status`).
    pub(crate) last_verify: Option<VerifyReport>,
    /// Our `invalidate` / `invalidate-remote` waiting for the peer's
    /// answer: (command, request seq, we become the target).
    pub(crate) full_sync: Option<(CmdId, u64, bool)>,
    pub(crate) out: Vec<Action>,
}

fn attach_error(reason: String) -> CoreError {
    CoreError::Attach { reason }
}

impl Resource {
    /// A resource attached to its disk, Secondary and StandAlone. The
    /// returned actions (a metadata write for a crashed Primary) are to be
    /// performed like any others.
    pub fn new(cfg: Config, attached: Attached) -> Result<(Resource, Vec<Action>), CoreError> {
        if attached.bitmap.size_bytes() != cfg.size_bytes {
            return Err(attach_error(format!(
                "the bitmap covers {} bytes but the device has {}",
                attached.bitmap.size_bytes(),
                cfg.size_bytes
            )));
        }
        let al = ActivityLog::from_slots(cfg.al_extents, &attached.al_slots)
            .map_err(|e| attach_error(e.to_string()))?;
        let sb = attached.superblock;
        let disk = if sb.consistent {
            DiskState::Consistent
        } else {
            DiskState::Inconsistent
        };
        let cfg_rate = cfg.rate;
        let mut r = Resource {
            rng: cfg.uuid_seed ^ 0x9E37_79B9_7F4A_7C15,
            cfg,
            role: Role::Secondary,
            disk,
            conn: Connection::StandAlone,
            repl: Replication::Off,
            peer_role: Role::Unknown,
            peer_disk: None,
            peer_uuids: Uuids::default(),
            sb,
            bitmap: attached.bitmap,
            al,
            lock: RangeLock::default(),
            link: Link::Down,
            link_epoch: 0,
            next_io: 0,
            now_ms: 0,
            queue: VecDeque::new(),
            writes: BTreeMap::new(),
            flushes: BTreeMap::new(),
            internal_flush: false,
            unstable: VecDeque::new(),
            unstable_counter: 0,
            peer_writes: BTreeMap::new(),
            rx_counter: 0,
            peer_flushes: Vec::new(),
            source_reads: BTreeMap::new(),
            target: None,
            progress: None,
            al_uncommitted: BTreeMap::new(),
            meta_inflight: None,
            sb_issued: None,
            meta_next: None,
            meta_issued: 0,
            meta_done: 0,
            meta_waiters: Vec::new(),
            gen_meta_seq: 0,
            promoting: None,
            demoting: false,
            granted_peer: false,
            discard_my_data: false,
            saving: None,
            last_error: None,
            rate: RateController::new(cfg_rate),
            wake_at: None,
            sync_paused_here: false,
            sync_paused_by_peer: false,
            digest_ops: BTreeMap::new(),
            verify: None,
            last_verify: None,
            full_sync: None,
            out: Vec::new(),
        };
        if sb.primary || sb.crashed_primary {
            r.recover_crashed_primary();
        }
        let actions = std::mem::take(&mut r.out);
        Ok((r, actions))
    }

    /// A Primary that did not shut down cleanly: every block of its active
    /// extents may differ from the peer, whichever way the sync goes.
    fn recover_crashed_primary(&mut self) {
        for extent in self.al.active_extents() {
            let start = u64::from(extent) * hadisk_bitmap::AL_EXTENT_BYTES;
            if start >= self.cfg.size_bytes {
                continue;
            }
            let len = hadisk_bitmap::AL_EXTENT_BYTES.min(self.cfg.size_bytes - start);
            let _ = self.bitmap.set_bytes(start, len);
        }
        self.sb.primary = false;
        self.sb.crashed_primary = true;
        self.queue_meta(None);
    }

    /// Feeds one event; returns the actions to perform.
    pub fn handle(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        self.now_ms = now_ms;
        match event {
            Event::ClientWrite {
                req,
                offset_bytes,
                data,
                fua,
            } => self.client_write(req, offset_bytes, data, fua),
            Event::ClientFlush { req } => self.client_flush(req),
            Event::IoDone { io, ok } => self.io_done(io, ok),
            Event::ReadDone { io, data } => self.read_done(io, data),
            Event::DigestDone { io, result } => self.digest_done(io, result),
            Event::LinkUp => self.link_up(),
            Event::LinkDown { reason } => self.link_down(&reason, false),
            Event::Peer(msg) => self.peer_message(msg),
            Event::Admin { cmd, op } => self.admin(cmd, op),
            Event::Tick => self.tick(),
        }
        self.send_deferred_params();
        self.note_progress();
        std::mem::take(&mut self.out)
    }

    fn io_done(&mut self, io: IoId, ok: bool) {
        if self.writes.contains_key(&io) {
            self.app_write_done(io, ok);
        } else if self.flushes.contains_key(&io) {
            self.local_flush_done(io, ok);
        } else if self.peer_writes.contains_key(&io) {
            self.peer_write_done(io, ok);
        } else if self.meta_inflight.is_some_and(|(m, _)| m == io) {
            self.meta_done_event(ok);
        } else if self.saving.is_some_and(|(s, _)| s == io) {
            self.save_done(ok);
        } else if self.peer_flushes.iter().any(|f| f.io == Some(io)) {
            self.peer_flush_done(io, ok);
        } else if self
            .target
            .as_ref()
            .is_some_and(|t| t.finishing == Some(io))
        {
            self.target_flush_done(ok);
        }
    }

    fn peer_message(&mut self, msg: Message) {
        if matches!(self.link, Link::Down) {
            // A message of a link we already dropped.
            return;
        }
        match msg {
            Message::Params(p) => self.peer_params(p),
            Message::BitmapChunk {
                first_block,
                bits,
                last,
            } => self.peer_bitmap_chunk(first_block, &bits, last),
            Message::BitmapRle {
                first_block,
                runs,
                last,
            } => self.peer_bitmap_rle(first_block, &runs, last),
            Message::Data {
                seq,
                offset_bytes,
                data,
                fua,
            } => self.peer_data(seq, offset_bytes, data, fua, false),
            Message::ResyncData {
                seq,
                offset_bytes,
                data,
            } => self.peer_data(seq, offset_bytes, data.into(), false, true),
            Message::WriteAck { seq } => self.peer_ack(seq, true),
            Message::NegAck { seq } => self.peer_ack(seq, false),
            Message::Flush { seq } => self.peer_flush(seq),
            Message::FlushAck { seq } => self.peer_flush_ack(seq),
            Message::ResyncRequest {
                seq,
                offset_bytes,
                len_bytes,
            } => self.resync_request(seq, offset_bytes, len_bytes),
            Message::InSync {
                offset_bytes,
                len_bytes,
                ..
            } => self.peer_in_sync(offset_bytes, len_bytes),
            Message::OutOfSync {
                offset_bytes,
                len_bytes,
            } => {
                let _ = self.bitmap.set_bytes(offset_bytes, u64::from(len_bytes));
            }
            Message::Ping { seq } => self.send(Message::PingAck { seq }),
            Message::PingAck { .. } => {}
            Message::StateChange { role, disk, uuids } => self.peer_state(role, disk, uuids),
            Message::Disconnect { reason } => {
                self.last_error = Some(format!("the peer disconnected: {reason}"));
                self.link_down(&reason, false);
            }
            Message::PromoteRequest { seq } => self.peer_promote_request(seq),
            Message::PromoteReply { seq, granted } => self.peer_promote_reply(seq, granted),
            Message::SyncPause { paused } => self.peer_sync_pause(paused),
            Message::CsumRequest {
                seq,
                offset_bytes,
                len_bytes,
                alg,
                digests,
            } => self.csum_request(seq, offset_bytes, len_bytes, alg, digests),
            Message::CsumReply { seq, .. } => self.csum_reply(seq),
            Message::VerifyStart => self.peer_verify_start(),
            Message::VerifyRequest {
                seq,
                offset_bytes,
                len_bytes,
                alg,
                digests,
            } => self.peer_verify_request(seq, offset_bytes, len_bytes, alg, digests),
            Message::VerifyReply {
                seq,
                offset_bytes,
                len_bytes,
                differ,
            } => self.peer_verify_reply(seq, offset_bytes, len_bytes, &differ),
            Message::VerifyEnd => self.peer_verify_end(),
            Message::FullSyncRequest {
                seq,
                sender_is_target,
            } => self.peer_full_sync_request(seq, sender_is_target),
            Message::FullSyncReply {
                seq,
                granted,
                reason,
            } => self.peer_full_sync_reply(seq, granted, reason),
            other @ (Message::Hello { .. }
            | Message::AuthChallenge { .. }
            | Message::AuthResponse { .. }) => {
                let name = hadisk_peer_proto::frame_kind_name(&other);
                self.protocol_error(format!("unexpected {name} message after the handshake"));
            }
        }
    }

    // ---- small helpers shared by the handler modules ----

    pub(crate) fn next_io(&mut self) -> IoId {
        self.next_io += 1;
        IoId(self.next_io)
    }

    /// splitmix64: the generator of new generation UUIDs.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn send(&mut self, msg: Message) {
        if matches!(self.link, Link::Down) {
            return;
        }
        self.out.push(Action::Send(msg));
    }

    pub(crate) fn link_is_up(&self) -> bool {
        matches!(self.link, Link::Up)
    }

    /// Whether application writes are mirrored to the peer now.
    pub(crate) fn peer_takes_writes(&self) -> bool {
        self.link_is_up() && self.peer_disk.is_some_and(|d| d >= DiskState::Inconsistent)
    }

    pub(crate) fn set_role(&mut self, role: Role) {
        if self.role != role {
            self.transition("role", self.role.to_string(), role.to_string());
            self.role = role;
        }
    }

    pub(crate) fn set_disk(&mut self, disk: DiskState) {
        if self.disk != disk {
            self.transition("disk", self.disk.to_string(), disk.to_string());
            self.disk = disk;
        }
    }

    pub(crate) fn set_conn(&mut self, conn: Connection) {
        if self.conn != conn {
            self.transition("connection", self.conn.to_string(), conn.to_string());
            self.conn = conn;
        }
    }

    pub(crate) fn set_repl(&mut self, repl: Replication) {
        if self.repl != repl {
            self.transition("replication", self.repl.to_string(), repl.to_string());
            self.repl = repl;
        }
    }

    pub(crate) fn set_peer_disk(&mut self, disk: Option<DiskState>) {
        if self.peer_disk != disk {
            let name = |d: Option<DiskState>| d.map_or("DUnknown".to_string(), |d| d.to_string());
            self.transition("peer-disk", name(self.peer_disk), name(disk));
            self.peer_disk = disk;
        }
    }

    pub(crate) fn set_peer_role(&mut self, role: Role) {
        if self.peer_role != role {
            self.transition("peer-role", self.peer_role.to_string(), role.to_string());
            self.peer_role = role;
        }
    }

    fn transition(&mut self, what: &'static str, from: String, to: String) {
        self.out.push(Action::Transition { what, from, to });
    }

    /// A log line in the shape of a transition (e.g. how a split brain
    /// was resolved).
    pub(crate) fn transition_note(&mut self, what: &'static str, from: &str, to: String) {
        self.transition(what, from.to_string(), to);
    }

    /// Tells the peer our role, disk and UUIDs.
    pub(crate) fn send_state(&mut self) {
        if self.link_is_up() {
            let msg = Message::StateChange {
                role: self.role,
                disk: self.disk,
                uuids: self.sb.uuids,
            };
            self.send(msg);
        }
    }

    /// A request range check: sector aligned, inside the device, not empty.
    pub(crate) fn check_range(&self, offset_bytes: u64, len_bytes: u64) -> Result<(), CoreError> {
        let aligned =
            offset_bytes.is_multiple_of(SECTOR_BYTES) && len_bytes.is_multiple_of(SECTOR_BYTES);
        let inside = offset_bytes
            .checked_add(len_bytes)
            .is_some_and(|e| e <= self.cfg.size_bytes);
        if !aligned || !inside || len_bytes == 0 {
            return Err(CoreError::BadRange {
                offset_bytes,
                len_bytes,
                size_bytes: self.cfg.size_bytes,
            });
        }
        Ok(())
    }

    /// A peer that broke the protocol: tell it why, drop the link, redial.
    pub(crate) fn protocol_error(&mut self, reason: String) {
        self.send(Message::Disconnect {
            reason: reason.clone(),
        });
        self.out.push(Action::CloseLink {
            reason: reason.clone(),
            redial: true,
        });
        self.last_error = Some(reason.clone());
        self.link_down(&reason, true);
    }

    /// The local disk failed an I/O: it is Failed until re-attached. A
    /// Secondary leaves the pair (its Primary marks what it misses).
    pub(crate) fn disk_failed(&mut self) {
        if self.disk == DiskState::Failed {
            return;
        }
        self.set_disk(DiskState::Failed);
        self.last_error = Some(
            "I/O error on the local disk: detach, replace or repair it, and attach again".into(),
        );
        if self.role == Role::Secondary && !matches!(self.link, Link::Down) {
            let reason = "the Secondary's disk failed".to_string();
            self.send(Message::Disconnect {
                reason: reason.clone(),
            });
            self.out.push(Action::CloseLink {
                reason: reason.clone(),
                redial: false,
            });
            self.link_down(&reason, true);
            self.set_conn(Connection::StandAlone);
        } else {
            self.send_state();
        }
        self.fail_queued_writes();
    }

    /// Block span of a byte range: (first block, blocks).
    pub(crate) fn blocks_of(offset_bytes: u64, len_bytes: u64) -> (u64, u64) {
        let first = offset_bytes / BLOCK_BYTES;
        let end = offset_bytes.saturating_add(len_bytes).div_ceil(BLOCK_BYTES);
        (first, end.saturating_sub(first).max(1))
    }

    fn queued_span(&self, q: Queued) -> Option<(u64, u64)> {
        match q {
            Queued::AppWrite(id) => self
                .writes
                .get(&id)
                .map(|w| Self::blocks_of(w.offset_bytes, w.len_bytes)),
            Queued::PeerWrite(id) => self
                .peer_writes
                .get(&id)
                .map(|w| Self::blocks_of(w.offset_bytes, w.len_bytes)),
            Queued::ResyncRead(id) => self
                .source_reads
                .get(&id)
                .map(|r| Self::blocks_of(r.offset_bytes, u64::from(r.len_bytes))),
            Queued::Digest(id) => self
                .digest_ops
                .get(&id)
                .map(|d| Self::blocks_of(d.offset_bytes, u64::from(d.len_bytes))),
        }
    }

    /// Starts every queued operation that may start now.
    pub(crate) fn pump(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let mut blocked: Vec<(u64, u64)> = Vec::new();
        let mut keep = VecDeque::new();
        let mut queue = std::mem::take(&mut self.queue);
        for q in queue.drain(..) {
            let Some((first, n)) = self.queued_span(q) else {
                continue;
            };
            let overlaps_earlier = blocked.iter().any(|(f, m)| first < f + m && *f < first + n);
            if overlaps_earlier || self.lock.overlaps(first, n) || !self.try_start(q, first, n) {
                blocked.push((first, n));
                keep.push_back(q);
            }
        }
        // Operations queued while starting others go after the survivors.
        // The drained queue keeps its allocation (one write per call is
        // the common case: no allocation per write).
        queue.extend(keep);
        queue.extend(std::mem::take(&mut self.queue));
        self.queue = queue;
    }

    fn try_start(&mut self, q: Queued, first: u64, n: u64) -> bool {
        match q {
            Queued::AppWrite(id) => self.start_app_write(id, first, n),
            Queued::PeerWrite(id) => {
                // A split-brain victim writes none of the winner's data
                // before its own diverging blocks are saved.
                if self.saving.is_some() || !self.lock.try_lock(first, n, id.0) {
                    return false;
                }
                self.issue_peer_write(id);
                true
            }
            Queued::ResyncRead(id) => {
                if !self.lock.try_lock(first, n, id.0) {
                    return false;
                }
                self.issue_source_read(id);
                true
            }
            Queued::Digest(id) => {
                if !self.lock.try_lock(first, n, id.0) {
                    return false;
                }
                self.issue_digest(id);
                true
            }
        }
    }

    pub(crate) fn unlock_span(&mut self, offset_bytes: u64, len_bytes: u64) {
        let (first, _) = Self::blocks_of(offset_bytes, len_bytes);
        self.lock.unlock(first);
    }
}
