//! The driver of one resource: the pure replication core
//! ([`hadisk_core::Resource`]) behind a `std::sync::Mutex`, driven by the
//! threads that have something for it — the NBD connection tasks (client
//! writes and flushes), the peer link's reader task (peer messages), the
//! blocking pool (I/O completions), the control socket (admin commands).
//! Each caller locks, feeds its event, performs the actions that need no
//! waiting, unlocks, and then does the short I/O itself (see the core's
//! crate header for the contract). There is no driver task: a replicated
//! write crosses no task boundary on its way to the disk and the link, and
//! the client's reply is ready when the caller's own `ClientDone` comes
//! out of its feed.
//!
//! Invariants:
//! - the core is touched only under the lock, one event at a time; events
//!   are fed in the order their callers took the lock, and a peer's
//!   messages in arrival order (one reader task per link);
//! - the lock is never held across an `.await` nor across blocking I/O:
//!   local writes and cached reads that run inline ([`Deferred`]) are done
//!   after unlocking and their completions fed afterwards; everything else
//!   (syncs, FUA, large or slow writes, cache misses, metadata) runs on the
//!   blocking pool, which feeds its completion itself;
//! - `Send` actions are appended to the current link's FIFO
//!   ([`LinkOut::push`]) under the lock, so they leave in emission order;
//!   the socket write happens after unlocking ([`LinkOut::flush`]);
//!   messages of a link that is not the current generation are dropped in
//!   both directions;
//! - `WriteMeta` is performed in the core's order (it issues one at a time):
//!   bitmap pages, then the AL transaction, then the superblock, each
//!   durable before the next;
//! - every client request and admin command gets exactly one answer: from
//!   the core, or `ShuttingDown` (the reply dropped) once the driver
//!   stopped or gave up.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hadisk_core::{
    Action, AdminOp, CmdId, CoreError, Digested, Event, IoId, Replication, ReqId, Role, Status,
};
use hadisk_nbd_server::{IoMode, WriteGate};
use hadisk_peer_proto::{DigestAlg, Message};
use hadisk_storage::{BlockDevice, Payload};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::link::LinkCmd;
use super::link_out::LinkOut;
use super::meta_io::{lock, write_meta, MetaStore};

/// The answer to a client request or admin command.
pub type Reply = oneshot::Sender<Result<(), CoreError>>;

/// What the driver performs I/O on.
#[derive(Debug, Clone)]
pub struct Io {
    /// The usable area of the backing disk.
    pub disk: Arc<dyn BlockDevice>,
    pub meta: Arc<Mutex<MetaStore>>,
    /// Where plain (non-FUA) writes and reads run: in the caller (page-cache
    /// speed, no thread hop), on the blocking pool, or adaptively (inline
    /// until one waited). Syncs always run on the pool.
    pub mode: IoMode,
    /// Where a split-brain victim saves its diverging blocks.
    pub sb_save: Arc<super::sb_save::SaveConfig>,
}

/// Larger writes (while a peer link is up) and reads always go to the
/// blocking pool: a 1 MiB copy takes ~0.3 ms or more, long enough that
/// running several in parallel (and not stalling the caller's reads of the
/// socket, nor its send of the same data to the peer) beats saving the
/// thread hop.
const INLINE_MAX_BYTES: usize = 128 * 1024;

thread_local! {
    /// The inline I/O of the NBD batch this thread is starting
    /// ([`Driver::client_batched`]), run by [`Driver::batch_done`] once the
    /// batch's frames have left: at QD1 the peer then writes in parallel
    /// with the local write instead of after it. The NBD server starts a
    /// batch and ends it in one synchronous call, on one thread.
    static BATCH_IO: RefCell<Vec<(Arc<Driver>, Vec<Deferred>)>> = const { RefCell::new(Vec::new()) };
}

/// I/O the caller performs after unlocking, then reports.
#[derive(Debug)]
enum Deferred {
    Write {
        io: IoId,
        offset_bytes: u64,
        data: Payload,
    },
    /// A resync read, tried from the page cache (a miss goes to the pool).
    Read {
        io: IoId,
        offset_bytes: u64,
        len_bytes: u32,
    },
}

/// When a feed writes what it queued for the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// At once (before the local I/O it performs).
    Now,
    /// When the caller says so ([`Driver::flush_link`]), or as soon as
    /// much is queued (resync data must not wait for a batch's end).
    Later,
}

impl LinkOut {
    fn flush_as(&self, flush: Flush) {
        match flush {
            Flush::Now => self.flush(),
            Flush::Later => self.flush_if_large(),
        }
    }
}

/// One resource's driver; shared by every thread that feeds it.
pub struct Driver {
    name: String,
    started: Instant,
    io: Io,
    gate: WriteGate,
    link_cmds: mpsc::UnboundedSender<LinkCmd>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("name", &self.name).finish()
    }
}

/// What the lock protects.
struct State {
    core: hadisk_core::Resource,
    peer: Option<(u64, Arc<LinkOut>)>,
    next_id: u64,
    clients: BTreeMap<ReqId, Reply>,
    admins: BTreeMap<CmdId, Reply>,
    /// `stop` was asked: answered once the core is idle.
    stopping: Option<oneshot::Sender<()>>,
    /// Stopped or abandoned: new requests are refused.
    stopped: bool,
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

impl Driver {
    /// Creates the driver and performs `initial`, the actions
    /// `Resource::new` returned. Must run inside the tokio runtime.
    pub fn start(
        name: String,
        core: hadisk_core::Resource,
        initial: Vec<Action>,
        io: Io,
        link_cmds: mpsc::UnboundedSender<LinkCmd>,
    ) -> Arc<Driver> {
        let d = Arc::new(Driver {
            name,
            started: Instant::now(),
            io,
            gate: WriteGate::new(),
            link_cmds,
            state: Mutex::new(State {
                core,
                peer: None,
                next_id: 1,
                clients: BTreeMap::new(),
                admins: BTreeMap::new(),
                stopping: None,
                stopped: false,
            }),
        });
        let mut deferred = Vec::new();
        {
            let mut st = lock(&d.state);
            d.perform(&mut st, initial, &mut deferred);
        }
        d.run_deferred(deferred, Flush::Now);
        d
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A client write or flush; `make` builds the event from the request id.
    /// The reply is sent on `reply` (at once if the core completes it
    /// within this call).
    pub fn client(self: &Arc<Self>, reply: Reply, make: impl FnOnce(ReqId) -> Event) {
        self.client_as(reply, make, Flush::Now);
    }

    /// [`Driver::client`] for a request of an NBD batch: what it sends the
    /// peer waits for [`Driver::batch_done`] at the end of the batch (or
    /// until [`super::link_out`]'s eager threshold), so the frames of a
    /// batch leave in one write; its inline local I/O waits for them.
    pub fn client_batched(self: &Arc<Self>, reply: Reply, make: impl FnOnce(ReqId) -> Event) {
        self.client_as(reply, make, Flush::Later);
    }

    fn client_as(self: &Arc<Self>, reply: Reply, make: impl FnOnce(ReqId) -> Event, flush: Flush) {
        let first = move |st: &mut State| {
            if st.stopped {
                drop(reply);
                return None;
            }
            let req = ReqId(st.id());
            st.clients.insert(req, reply);
            Some(make(req))
        };
        match flush {
            Flush::Now => self.feed_inner(first, flush),
            Flush::Later => {
                // The batch's frames have not left yet: its local writes
                // wait for them (see `BATCH_IO`).
                let deferred = self.feed_locked(first, flush);
                if !deferred.is_empty() {
                    BATCH_IO.with(|b| b.borrow_mut().push((Arc::clone(self), deferred)));
                }
            }
        }
    }

    /// The end of an NBD batch started on this thread: its frames leave
    /// for the peer in one write, then its local writes run (the peer
    /// writes in parallel with them).
    pub fn batch_done(self: &Arc<Self>) {
        self.flush_link();
        let batch = BATCH_IO.with(|b| std::mem::take(&mut *b.borrow_mut()));
        for (driver, deferred) in batch {
            driver.flush_link();
            driver.run_deferred(deferred, Flush::Now);
        }
    }

    /// An admin command, answered on `reply`.
    pub fn admin(self: &Arc<Self>, op: AdminOp, reply: Reply) {
        self.feed_with(move |st| {
            if st.stopped {
                drop(reply);
                return None;
            }
            let cmd = CmdId(st.id());
            st.admins.insert(cmd, reply);
            Some(Event::Admin { cmd, op })
        });
    }

    pub fn status(&self) -> Status {
        let st = lock(&self.state);
        st.core.status(self.now_ms())
    }

    /// Disconnects and answers `reply` once nothing is in flight.
    pub fn stop(self: &Arc<Self>, reply: oneshot::Sender<()>) {
        lock(&self.state).stopping = Some(reply);
        let (tx, _rx) = oneshot::channel();
        self.admin(AdminOp::Disconnect, tx);
        // Already idle: answer now.
        self.feed_with(|_| None);
    }

    /// Gives up on what is in flight (stop timed out): every pending
    /// request is answered `ShuttingDown`, new ones are refused.
    pub fn abandon(&self) {
        let mut st = lock(&self.state);
        st.stopped = true;
        st.clients.clear();
        st.admins.clear();
        if let Some((_, out)) = st.peer.take() {
            out.close("the resource is detaching");
        }
        let _ = self.link_cmds.send(LinkCmd::Stop);
    }

    /// A peer link is up (large NBD payloads are then spliced).
    pub fn has_peer(&self) -> bool {
        lock(&self.state).peer.is_some()
    }

    /// The link manager: an authenticated link `gen` is up.
    pub fn link_up(self: &Arc<Self>, gen: u64, out: Arc<LinkOut>) {
        self.feed_with(move |st| {
            st.peer = Some((gen, out));
            Some(Event::LinkUp)
        });
    }

    /// The link manager: link `gen` ended.
    pub fn link_down(self: &Arc<Self>, gen: u64, reason: String) {
        self.feed_with(move |st| {
            if st.peer.as_ref().is_none_or(|(g, _)| *g != gen) {
                return None;
            }
            st.peer = None;
            Some(Event::LinkDown { reason })
        });
    }

    /// The link's reader task: a message from link `gen`. What it makes
    /// the core send (acks) stays queued until [`Driver::flush_link`]:
    /// the reader calls it once it has fed every message it received
    /// together, so a batch of acks leaves in one write.
    pub fn peer(self: &Arc<Self>, gen: u64, msg: Message) {
        let first = move |st: &mut State| {
            st.peer
                .as_ref()
                .is_some_and(|(g, _)| *g == gen)
                .then_some(Event::Peer(msg))
        };
        self.feed_inner(first, Flush::Later);
    }

    /// Writes what is queued for the peer (see [`Driver::peer`]).
    pub fn flush_link(&self) {
        let out = lock(&self.state).peer.as_ref().map(|(_, out)| out.clone());
        if let Some(out) = out {
            out.flush();
        }
    }

    /// Feeds the event `first` makes under the lock, then performs the
    /// deferred I/O and feeds its completions, until nothing is left.
    fn feed_with(self: &Arc<Self>, first: impl FnOnce(&mut State) -> Option<Event>) {
        self.feed_inner(first, Flush::Now);
    }

    fn feed_inner(self: &Arc<Self>, first: impl FnOnce(&mut State) -> Option<Event>, flush: Flush) {
        let deferred = self.feed_locked(first, flush);
        self.run_deferred(deferred, flush);
    }

    /// The locked half of [`Driver::feed_inner`]: feeds the event and
    /// returns the inline I/O to perform.
    fn feed_locked(
        self: &Arc<Self>,
        first: impl FnOnce(&mut State) -> Option<Event>,
        flush: Flush,
    ) -> Vec<Deferred> {
        let mut deferred = Vec::new();
        let out = {
            let mut st = lock(&self.state);
            if let Some(event) = first(&mut st) {
                let actions = st.core.handle(self.now_ms(), event);
                self.perform(&mut st, actions, &mut deferred);
            }
            self.check_stopped(&mut st);
            st.peer.as_ref().map(|(_, out)| out.clone())
        };
        if let Some(out) = out {
            // Before the local I/O: the peer works in parallel with it.
            out.flush_as(flush);
        }
        deferred
    }

    /// Performs inline I/O after unlocking, feeding the completions (which
    /// may release more inline I/O) until none is left.
    fn run_deferred(self: &Arc<Self>, mut deferred: Vec<Deferred>, flush: Flush) {
        while !deferred.is_empty() {
            let events: Vec<Event> = deferred.drain(..).filter_map(|d| self.inline(d)).collect();
            let out = {
                let mut st = lock(&self.state);
                for event in events {
                    let actions = st.core.handle(self.now_ms(), event);
                    self.perform(&mut st, actions, &mut deferred);
                }
                self.check_stopped(&mut st);
                st.peer.as_ref().map(|(_, out)| out.clone())
            };
            if let Some(out) = out {
                out.flush_as(flush);
            }
        }
    }

    /// Runs one deferred I/O in the calling thread; returns its completion
    /// (none for a read that missed the cache: the pool reports it).
    fn inline(self: &Arc<Self>, d: Deferred) -> Option<Event> {
        match d {
            Deferred::Write {
                io,
                offset_bytes,
                data,
            } => {
                let start = self.gate.start();
                let len = data.len();
                let ok = match self.io.disk.write_payload_owned(data, offset_bytes) {
                    Ok(()) => true,
                    Err(e) => {
                        warn!(resource = %self.name, error = %e, "local I/O failed");
                        false
                    }
                };
                if self.io.mode == IoMode::Adaptive {
                    self.gate.finish(start, len);
                }
                Some(Event::IoDone { io, ok })
            }
            Deferred::Read {
                io,
                offset_bytes,
                len_bytes,
            } => {
                match self
                    .io
                    .disk
                    .read_vec_cached(len_bytes as usize, offset_bytes)
                {
                    Ok(Some(buf)) => Some(Event::ReadDone {
                        io,
                        data: Some(Bytes::from(buf)),
                    }),
                    // A miss waits for the disk: the pool reads and reports.
                    _ => {
                        self.read_pooled(io, offset_bytes, len_bytes);
                        None
                    }
                }
            }
        }
    }

    fn check_stopped(&self, st: &mut State) {
        if st.stopping.is_some() && st.core.is_idle() {
            st.stopped = true;
            let _ = self.link_cmds.send(LinkCmd::Stop);
            if let Some(reply) = st.stopping.take() {
                let _ = reply.send(());
            }
        }
    }

    fn inline_io(&self) -> bool {
        match self.io.mode {
            IoMode::Inline => true,
            IoMode::Blocking => false,
            IoMode::Adaptive => !self.gate.pooled(),
        }
    }

    fn perform(
        self: &Arc<Self>,
        st: &mut State,
        actions: Vec<Action>,
        deferred: &mut Vec<Deferred>,
    ) {
        for action in actions {
            match action {
                Action::WriteLocal {
                    io,
                    offset_bytes,
                    data,
                    fua,
                } => {
                    // A SyncTarget ends its resync with a flush of all it
                    // wrote: resync data written back as it arrives (as
                    // DRBD's, which goes to the disk) overlaps that flush
                    // with the copy instead of leaving gigabytes for it.
                    let behind = !fua
                        && matches!(
                            st.core.replication(),
                            Replication::SyncTarget | Replication::PausedSyncT
                        );
                    // Large writes go to the pool so that a Primary's local
                    // write runs beside the link's send. Without a peer
                    // nothing runs beside it; on a Secondary the reader
                    // that received the write has nothing better to do
                    // than write it (and ack it) — the hop to the pool and
                    // back only cost two thread wake-ups: 1 MiB QD8 writes
                    // through the pair went 1.225 → 1.356 GB/s (means of 6
                    // alternating runs in one pair) with a Secondary's
                    // large writes inline, and 1.18 → 1.14 with a
                    // Primary's. Resync writes keep the pool and their
                    // write-behind. The adaptive gate still moves writes
                    // to the pool while the disk makes them wait.
                    let applying = st.core.role() != Role::Primary && !behind;
                    let small = data.len() <= INLINE_MAX_BYTES || st.peer.is_none() || applying;
                    if !fua && small && self.inline_io() {
                        deferred.push(Deferred::Write {
                            io,
                            offset_bytes,
                            data,
                        });
                        continue;
                    }
                    let disk = self.io.disk.clone();
                    self.blocking(io, move || {
                        let len = data.len() as u64;
                        disk.write_payload_owned(data, offset_bytes)?;
                        if fua {
                            disk.sync_data()?;
                        }
                        if behind {
                            let _ = disk.start_writeback(offset_bytes, len);
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
                } => {
                    // Resync chunks (1 MiB) are read on the pool, several at
                    // once and off the reader task that takes the peer's
                    // requests (measured: a 512 MiB sync 20-30 % faster
                    // than reading them inline one after the other).
                    if self.io.mode == IoMode::Blocking || len_bytes as usize > INLINE_MAX_BYTES {
                        self.read_pooled(io, offset_bytes, len_bytes);
                    } else {
                        deferred.push(Deferred::Read {
                            io,
                            offset_bytes,
                            len_bytes,
                        });
                    }
                }
                Action::DigestLocal {
                    io,
                    offset_bytes,
                    len_bytes,
                    alg,
                } => self.digest(io, offset_bytes, len_bytes, alg),
                Action::Notice { message } => {
                    info!(resource = %self.name, "{message}");
                }
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
                    if let Some((_, out)) = &st.peer {
                        out.push(&msg);
                    }
                }
                Action::Dial => {
                    let _ = self.link_cmds.send(LinkCmd::Dial);
                }
                Action::CloseLink { reason, redial } => {
                    info!(resource = %self.name, %reason, redial, "closing the peer link");
                    if let Some((_, out)) = st.peer.take() {
                        out.close(&reason);
                    }
                    let _ = self.link_cmds.send(LinkCmd::Close { redial });
                }
                Action::ClientDone { req, result } => {
                    if let Some(reply) = st.clients.remove(&req) {
                        let _ = reply.send(result);
                    }
                }
                Action::AdminDone { cmd, result } => {
                    if let Some(reply) = st.admins.remove(&cmd) {
                        let _ = reply.send(result);
                    }
                }
                Action::WakeAt { at_ms } => {
                    let me = self.clone();
                    let at = self.started + Duration::from_millis(at_ms);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        me.feed_with(|_| Some(Event::Tick));
                    });
                }
                Action::Transition { what, from, to } => {
                    info!(resource = %self.name, from = %from, to = %to, "{what}");
                }
            }
        }
    }

    /// Runs `f` on the blocking pool, which then feeds its completion.
    fn blocking(
        self: &Arc<Self>,
        io: IoId,
        f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let ok = match f() {
                Ok(()) => true,
                Err(e) => {
                    warn!(resource = %me.name, error = %e, "local I/O failed");
                    false
                }
            };
            me.feed_with(|_| Some(Event::IoDone { io, ok }));
        });
    }

    /// A split-brain victim's blocks go to the split-brain directory on
    /// the blocking pool; the core waits for the completion.
    fn save_diverging(self: &Arc<Self>, io: IoId, save: hadisk_core::SaveRequest) {
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

    fn read_pooled(self: &Arc<Self>, io: IoId, offset_bytes: u64, len_bytes: u32) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let data = me
                .io
                .disk
                .read_vec(len_bytes as usize, offset_bytes)
                .ok()
                .map(Bytes::from);
            me.feed_with(|_| Some(Event::ReadDone { io, data }));
        });
    }
}

impl Driver {
    /// Reads a range and digests its blocks on the blocking pool (verify,
    /// csums resync): hashing 1 MiB takes a millisecond or more, too long
    /// to hold the caller that performs the core's actions.
    fn digest(self: &Arc<Self>, io: IoId, offset_bytes: u64, len_bytes: u32, alg: DigestAlg) {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = me
                .io
                .disk
                .read_vec(len_bytes as usize, offset_bytes)
                .ok()
                .map(|buf| {
                    let digests = Bytes::from(alg.digest_blocks(&buf));
                    Digested {
                        data: Bytes::from(buf),
                        digests,
                    }
                });
            me.feed_with(|_| Some(Event::DigestDone { io, result }));
        });
    }
}
