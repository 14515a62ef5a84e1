//! The driver of one resource: a tokio task that owns the pure replication
//! core ([`hadisk_core::Resource`]), feeds it events and performs its
//! actions (see the core's crate header for the contract).
//!
//! Invariants:
//! - the core is touched only by this task, one event at a time, in arrival
//!   order; every I/O action runs on tokio's blocking pool and reports back
//!   through the same input channel, so many writes are in flight at once
//!   (the core never waits for one before issuing the next);
//! - `Send` actions go, in emission order, into the current link's
//!   unbounded FIFO (the writer task); messages of a link that is not the
//!   current generation are dropped in both directions;
//! - `WriteMeta` is performed in the core's order (it issues one at a
//!   time): bitmap pages, then the AL transaction, then the superblock,
//!   each durable before the next;
//! - every client request and admin command gets exactly one answer: from
//!   the core, or an error if the driver stops first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hadisk_bitmap::DirtyBitmap;
use hadisk_core::{
    Action, AdminOp, CmdId, CoreError, Event, IoId, MetaUpdate, ReqId, Status, SuperblockState,
};
use hadisk_metadata::{Flags, Metadata};
use hadisk_nbd_server::IoMode;
use hadisk_peer_proto::Message;
use hadisk_storage::BlockDevice;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::link::{LinkCmd, PeerTx};

/// The answer to a client request or admin command.
pub type Reply = oneshot::Sender<Result<(), CoreError>>;

/// Everything the driver task reacts to.
#[derive(Debug)]
pub enum Input {
    Write {
        offset_bytes: u64,
        data: Bytes,
        fua: bool,
        reply: Reply,
    },
    Flush {
        reply: Reply,
    },
    Admin {
        op: AdminOp,
        reply: Reply,
    },
    /// An I/O completion (`IoDone` / `ReadDone`).
    Io(Event),
    LinkUp {
        gen: u64,
        tx: PeerTx,
    },
    LinkDown {
        gen: u64,
        reason: String,
    },
    Peer {
        gen: u64,
        msg: Message,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// A time the core asked for with `WakeAt` has come.
    Tick,
    /// Disconnect, finish what is in flight, and end the task.
    Stop {
        reply: oneshot::Sender<()>,
    },
}

/// The on-disk metadata and the bitmap image as last written.
#[derive(Debug)]
pub struct MetaStore {
    pub md: Metadata,
    pub image: DirtyBitmap,
}

/// What the driver performs I/O on.
#[derive(Debug, Clone)]
pub struct Io {
    /// The usable area of the backing disk.
    pub disk: Arc<dyn BlockDevice>,
    pub meta: Arc<Mutex<MetaStore>>,
    /// Where plain (non-FUA) writes and reads run: in the driver task
    /// (page-cache speed, no thread hop), on the blocking pool, or
    /// adaptively (inline until one is slow). Syncs always run on the pool.
    pub mode: IoMode,
    /// Where a split-brain victim saves its diverging blocks.
    pub sb_save: Arc<super::sb_save::SaveConfig>,
}

/// An inline write slower than this (plus [`SLOW_WRITE_PER_MIB`]) waited
/// for something other than a page-cache copy (dirty-page throttling, the
/// disk): writes go to the blocking pool for a while. The nbd-server's
/// adaptive mode uses the same figures.
const SLOW_WRITE: Duration = Duration::from_millis(2);
/// Allowance per MiB written (a copy at 1 GB/s).
const SLOW_WRITE_PER_MIB: Duration = Duration::from_millis(1);
/// Larger writes always go to the blocking pool: a 1 MiB copy takes
/// ~0.3 ms or more, long enough that running several in parallel (and not
/// stalling the driver) beats saving the thread hop.
const INLINE_MAX_BYTES: usize = 128 * 1024;
/// How long writes stay on the blocking pool after a slow one.
const SLOW_PERIOD: Duration = Duration::from_secs(1);

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Metadata updates replace in-memory state only after a durable write:
    // a panic mid-update leaves the old state, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Driver {
    name: String,
    core: hadisk_core::Resource,
    started: Instant,
    io: Io,
    inputs: mpsc::UnboundedSender<Input>,
    link: mpsc::UnboundedSender<LinkCmd>,
    peer: Option<(u64, PeerTx)>,
    next_id: u64,
    clients: BTreeMap<ReqId, Reply>,
    admins: BTreeMap<CmdId, Reply>,
    stopping: Option<oneshot::Sender<()>>,
    /// Completions of inline I/O, fed after the current actions.
    pending: VecDeque<Event>,
    /// Inline I/O is off until then (adaptive mode).
    slow_until: Option<Instant>,
}

/// Starts the driver task; `initial` are the actions `Resource::new` returned.
pub fn spawn(
    name: String,
    core: hadisk_core::Resource,
    initial: Vec<Action>,
    io: Io,
    inputs: (mpsc::UnboundedSender<Input>, mpsc::UnboundedReceiver<Input>),
    link: mpsc::UnboundedSender<LinkCmd>,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = inputs;
    let mut d = Driver {
        name,
        core,
        started: Instant::now(),
        io,
        inputs: tx,
        link,
        peer: None,
        next_id: 1,
        clients: BTreeMap::new(),
        admins: BTreeMap::new(),
        stopping: None,
        pending: VecDeque::new(),
        slow_until: None,
    };
    tokio::spawn(async move {
        d.perform(initial);
        while let Some(input) = rx.recv().await {
            d.input(input);
            if d.stopping.is_some() && d.core.is_idle() {
                let _ = d.link.send(LinkCmd::Stop);
                if let Some(reply) = d.stopping.take() {
                    let _ = reply.send(());
                }
                break;
            }
        }
    })
}

impl Driver {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn feed(&mut self, event: Event) {
        let mut next = Some(event);
        while let Some(event) = next {
            let now = self.now_ms();
            let actions = self.core.handle(now, event);
            self.perform(actions);
            next = self.pending.pop_front();
        }
    }

    fn inline_io(&self) -> bool {
        match self.io.mode {
            IoMode::Inline => true,
            IoMode::Blocking => false,
            IoMode::Adaptive => self.slow_until.is_none_or(|t| Instant::now() >= t),
        }
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Write {
                offset_bytes,
                data,
                fua,
                reply,
            } => {
                let req = ReqId(self.id());
                self.clients.insert(req, reply);
                self.feed(Event::ClientWrite {
                    req,
                    offset_bytes,
                    data,
                    fua,
                });
            }
            Input::Flush { reply } => {
                let req = ReqId(self.id());
                self.clients.insert(req, reply);
                self.feed(Event::ClientFlush { req });
            }
            Input::Admin { op, reply } => {
                let cmd = CmdId(self.id());
                self.admins.insert(cmd, reply);
                self.feed(Event::Admin { cmd, op });
            }
            Input::Io(event) => self.feed(event),
            Input::LinkUp { gen, tx } => {
                self.peer = Some((gen, tx));
                self.feed(Event::LinkUp);
            }
            Input::LinkDown { gen, reason } => {
                if self.peer.as_ref().is_some_and(|(g, _)| *g == gen) {
                    self.peer = None;
                    self.feed(Event::LinkDown { reason });
                }
            }
            Input::Peer { gen, msg } => {
                if self.peer.as_ref().is_some_and(|(g, _)| *g == gen) {
                    self.feed(Event::Peer(msg));
                }
            }
            Input::Status { reply } => {
                let _ = reply.send(self.core.status(self.now_ms()));
            }
            Input::Tick => self.feed(Event::Tick),
            Input::Stop { reply } => {
                self.stopping = Some(reply);
                let (tx, _rx) = oneshot::channel();
                self.input(Input::Admin {
                    op: AdminOp::Disconnect,
                    reply: tx,
                });
            }
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::WriteLocal {
                    io,
                    offset_bytes,
                    data,
                    fua,
                } => {
                    let disk = self.io.disk.clone();
                    if !fua && data.len() <= INLINE_MAX_BYTES && self.inline_io() {
                        self.write_inline(io, offset_bytes, &data);
                        continue;
                    }
                    self.blocking(io, move || {
                        disk.write_at(&data, offset_bytes)?;
                        if fua {
                            disk.sync_data()?;
                        }
                        Ok(())
                    });
                }
                Action::FlushLocal { io } => {
                    let disk = self.io.disk.clone();
                    self.blocking(io, move || disk.sync_data());
                }
                Action::ReadLocal {
                    io,
                    offset_bytes,
                    len_bytes,
                } => self.read(io, offset_bytes, len_bytes),
                Action::WriteMeta { io, update } => {
                    let meta = self.io.meta.clone();
                    let name = self.name.clone();
                    self.blocking(io, move || {
                        write_meta(&meta, &update).map_err(|e| {
                            warn!(resource = %name, error = %e, "metadata write failed");
                            std::io::Error::other(e)
                        })
                    });
                }
                Action::SaveDiverging { io, save } => self.save_diverging(io, *save),
                Action::Send(msg) => {
                    if let Some((_, tx)) = &self.peer {
                        let _ = tx.send(msg);
                    }
                }
                Action::Dial => {
                    let _ = self.link.send(LinkCmd::Dial);
                }
                Action::CloseLink { reason, redial } => {
                    info!(resource = %self.name, %reason, redial, "closing the peer link");
                    self.peer = None;
                    let _ = self.link.send(LinkCmd::Close { redial });
                }
                Action::ClientDone { req, result } => {
                    if let Some(reply) = self.clients.remove(&req) {
                        let _ = reply.send(result);
                    }
                }
                Action::AdminDone { cmd, result } => {
                    if let Some(reply) = self.admins.remove(&cmd) {
                        let _ = reply.send(result);
                    }
                }
                Action::WakeAt { at_ms } => {
                    let tx = self.inputs.clone();
                    let at = self.started + Duration::from_millis(at_ms);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        let _ = tx.send(Input::Tick);
                    });
                }
                Action::Transition { what, from, to } => {
                    info!(resource = %self.name, from = %from, to = %to, "{what}");
                }
            }
        }
    }

    fn blocking(&self, io: IoId, f: impl FnOnce() -> std::io::Result<()> + Send + 'static) {
        let tx = self.inputs.clone();
        let name = self.name.clone();
        tokio::task::spawn_blocking(move || {
            let ok = match f() {
                Ok(()) => true,
                Err(e) => {
                    warn!(resource = %name, error = %e, "local I/O failed");
                    false
                }
            };
            let _ = tx.send(Input::Io(Event::IoDone { io, ok }));
        });
    }

    /// A split-brain victim's blocks go to the split-brain directory on
    /// the blocking pool; the core waits for the completion.
    fn save_diverging(&self, io: IoId, save: hadisk_core::SaveRequest) {
        let disk = self.io.disk.clone();
        let cfg = self.io.sb_save.clone();
        let name = self.name.clone();
        let bytes = save.total_bytes();
        warn!(resource = %name, resolved_by = save.resolved_by, bytes, "split brain: this node's changes are discarded; saving its diverging blocks first");
        self.blocking(io, move || {
            match super::sb_save::save(&*disk, &cfg, &save, std::time::SystemTime::now()) {
                Ok(Some(saved)) => {
                    info!(resource = %name, bytes = saved.bytes, image = %saved.image.display(), index = %saved.index.display(), "split brain: diverging blocks saved");
                    Ok(())
                }
                Ok(None) => {
                    warn!(resource = %name, bytes, "split brain: diverging blocks NOT saved (split-brain-dir off): they are discarded");
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(resource = %name, error = %e, "split brain: saving the diverging blocks failed; nothing is discarded");
                    Err(std::io::Error::other(e))
                }
            }
        });
    }

    fn write_inline(&mut self, io: IoId, offset_bytes: u64, data: &[u8]) {
        let start = Instant::now();
        let ok = match self.io.disk.write_at(data, offset_bytes) {
            Ok(()) => true,
            Err(e) => {
                warn!(resource = %self.name, error = %e, "local I/O failed");
                false
            }
        };
        let allowed = SLOW_WRITE + SLOW_WRITE_PER_MIB * (data.len() >> 20) as u32;
        if self.io.mode == IoMode::Adaptive && start.elapsed() > allowed {
            self.slow_until = Some(Instant::now() + SLOW_PERIOD);
        }
        self.pending.push_back(Event::IoDone { io, ok });
    }

    fn read(&mut self, io: IoId, offset_bytes: u64, len_bytes: u32) {
        if self.io.mode != IoMode::Blocking {
            // A resync read served from the page cache needs no thread hop.
            let mut buf = vec![0u8; len_bytes as usize];
            if let Ok(true) = self.io.disk.read_at_cached(&mut buf, offset_bytes) {
                let data = Some(Bytes::from(buf));
                self.pending.push_back(Event::ReadDone { io, data });
                return;
            }
        }
        let tx = self.inputs.clone();
        let disk = self.io.disk.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len_bytes as usize];
            let data = disk
                .read_at(&mut buf, offset_bytes)
                .ok()
                .map(|()| Bytes::from(buf));
            let _ = tx.send(Input::Io(Event::ReadDone { io, data }));
        });
    }
}

/// Persists one `WriteMeta`: bitmap pages, AL transaction, superblock.
fn write_meta(meta: &Mutex<MetaStore>, update: &MetaUpdate) -> Result<(), String> {
    let mut m = lock(meta);
    let m = &mut *m;
    if !update.bitmap_pages.is_empty() {
        for (page, bytes) in &update.bitmap_pages {
            m.image.load_page(*page, bytes).map_err(|e| e.to_string())?;
        }
        m.md.store_bitmap(&m.image).map_err(|e| e.to_string())?;
    }
    if !update.al.is_empty() {
        m.md.write_al_transaction(&update.al)
            .map_err(|e| e.to_string())?;
    }
    if let Some(sb) = update.superblock {
        m.md.update(|s| apply_superblock(s, &sb))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Maps the core's superblock fields onto the on-disk superblock.
pub fn apply_superblock(s: &mut hadisk_metadata::Superblock, sb: &SuperblockState) {
    s.uuids = hadisk_metadata::Uuids {
        current: sb.uuids.current,
        bitmap: sb.uuids.bitmap,
        history: sb.uuids.history,
    };
    s.flags.set(Flags::CONSISTENT, sb.consistent);
    s.flags.set(Flags::WAS_UP_TO_DATE, sb.was_up_to_date);
    s.flags.set(Flags::PRIMARY, sb.primary);
    s.flags.set(Flags::CRASHED_PRIMARY, sb.crashed_primary);
    s.flags.set(Flags::PEER_OUTDATED, sb.peer_outdated);
}

/// The core's view of an on-disk superblock at attach. `PRIMARY` is taken
/// as cleared: a crash was recorded as `CRASHED_PRIMARY` by
/// `Metadata::attach`, and a clean stop is not a crash.
pub fn superblock_state(s: &hadisk_metadata::Superblock) -> SuperblockState {
    let f = s.flags;
    SuperblockState {
        uuids: hadisk_peer_proto::Uuids {
            current: s.uuids.current,
            bitmap: s.uuids.bitmap,
            history: s.uuids.history,
        },
        consistent: f.contains(Flags::CONSISTENT),
        was_up_to_date: f.contains(Flags::WAS_UP_TO_DATE),
        primary: false,
        crashed_primary: f.contains(Flags::CRASHED_PRIMARY),
        peer_outdated: f.contains(Flags::PEER_OUTDATED),
    }
}
