//! The simulated world: two nodes running the real core, the event queue,
//! the link, the workload, the fault injector and the operator (a failover
//! agent that only does what is safe). See FAULTS.md.
//!
//! Invariants of the harness itself:
//! * Every delay, fault and request comes from `rng`; events at the same
//!   millisecond run in scheduling order, so a seed replays exactly.
//! * A message is delivered only on the link epoch it was sent on, and only
//!   to a node that has seen that link come up.
//! * I/O completions of a crashed node's previous incarnation are dropped.

use std::collections::BTreeMap;

use hadisk_bitmap::{DirtyBitmap, BLOCKS_PER_PAGE};
use hadisk_core::{
    Action, AdminOp, Attached, CmdId, Config, Connection, Digested, Event, IoId, Replication,
    ReqId, Resource, SuperblockState,
};
use hadisk_peer_proto::{DiskState, Message, Role, Uuids};

mod split;
mod verify;

use crate::disk::{encode, Disk, SECTOR};
use crate::model::Model;
use crate::rng::Rng;
use crate::Options;

/// Client requests in flight at most (per Primary).
const MAX_CLIENT_INFLIGHT: usize = 8;
/// Simulated time allowed for quiescence after the faults stop.
const QUIESCE_LIMIT_MS: u64 = 60_000;
/// The hot region half of the writes go to, so that they overlap.
const HOT_BYTES: u64 = 256 * 1024;

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        epoch: u64,
        msg: Message,
    },
    LinkUp {
        to: usize,
        epoch: u64,
    },
    LinkDown {
        to: usize,
        inc: u64,
        reason: &'static str,
    },
    Io {
        node: usize,
        inc: u64,
        action: Action,
        flush_point: u64,
    },
    Connect,
    ClientTick,
    FaultTick,
    OperatorTick,
    Restart {
        node: usize,
    },
    Heal,
    SpikeEnd,
    Reconnect {
        node: usize,
    },
    /// `resume-sync` after a `pause-sync` fault.
    Resume {
        node: usize,
    },
    /// A time node `node` asked for with `WakeAt`.
    Tick {
        node: usize,
        inc: u64,
    },
}

#[derive(Debug, Clone)]
struct Meta {
    sb: SuperblockState,
    pages: BTreeMap<u64, Vec<u8>>,
    al: Vec<Option<u32>>,
}

#[derive(Debug)]
struct Node {
    name: &'static str,
    core: Option<Resource>,
    inc: u64,
    disk: Disk,
    meta: Meta,
    dialing: bool,
    /// The link epoch this node has seen come up (and not yet go down).
    link: Option<u64>,
    fail_next_write: bool,
    /// Client requests in flight: req -> write id (0 for a flush).
    clients: BTreeMap<ReqId, u64>,
    /// Admin command in flight.
    admin: Option<(CmdId, AdminOp)>,
    /// Was Established and UpToDate when the peer crashed.
    safe_survivor: bool,
    /// Saving its diverging blocks (split-brain victim): no local write
    /// may be issued until the save is done.
    saving: bool,
}

#[derive(Debug, Default)]
struct Link {
    epoch: u64,
    up: bool,
    connect_scheduled: bool,
    partitioned: bool,
    spike: bool,
    /// Per direction (from node i): the earliest next delivery (FIFO).
    next_free: [u64; 2],
}

/// Counters for the summary line.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    pub writes_acked: u64,
    pub writes_unknown: u64,
    pub crashes: u64,
    pub resets: u64,
    pub partitions: u64,
    pub disk_errors: u64,
    pub failovers: u64,
    pub switchovers: u64,
    pub disconnects: u64,
    pub pauses: u64,
    pub resyncs: u64,
    /// Handshakes at which "every difference is in a bitmap" was checked.
    pub bitmap_checks: u64,
    /// Split brains made and resolved (the victim saved its blocks).
    pub split_brains: u64,
    /// Of those, resolved by an after-sb policy (the rest by hand).
    pub split_brains_by_policy: u64,
    pub saved_bytes: u64,
    /// Local digests performed (csums resync, verify).
    pub digests: u64,
    /// Online verifies run on injected corruption.
    pub verifies: u64,
    pub end_ms: u64,
}

impl Stats {
    /// Adds another run's counters (for the sweep's summary).
    pub fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.writes_acked += o.writes_acked;
        self.writes_unknown += o.writes_unknown;
        self.crashes += o.crashes;
        self.resets += o.resets;
        self.partitions += o.partitions;
        self.disk_errors += o.disk_errors;
        self.failovers += o.failovers;
        self.switchovers += o.switchovers;
        self.disconnects += o.disconnects;
        self.pauses += o.pauses;
        self.bitmap_checks += o.bitmap_checks;
        self.digests += o.digests;
        self.verifies += o.verifies;
        self.resyncs += o.resyncs;
        self.split_brains += o.split_brains;
        self.split_brains_by_policy += o.split_brains_by_policy;
        self.saved_bytes += o.saved_bytes;
        self.end_ms += o.end_ms;
    }
}

/// The world of one seed.
pub struct World {
    opts: Options,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: [Node; 2],
    link: Link,
    model: Model,
    next_write: u64,
    next_req: u64,
    next_cmd: u64,
    quiescing: bool,
    switchover: Option<usize>,
    final_flush: Option<(usize, ReqId, bool)>,
    /// A split brain in progress (at most one per run).
    sb: Option<split::SplitBrain>,
    /// A split brain was drawn but the pair was not in sync yet.
    sb_wanted: bool,
    sb_done: bool,
    /// The online-verify scenario of this seed (world/verify.rs).
    verify: verify::VerifyPhase,
    pub stats: Stats,
    trace: Vec<String>,
}

fn fresh_meta(al_extents: u32) -> Meta {
    Meta {
        sb: SuperblockState {
            uuids: Uuids::just_created(),
            consistent: false,
            was_up_to_date: false,
            primary: false,
            crashed_primary: false,
            peer_outdated: false,
        },
        pages: BTreeMap::new(),
        al: vec![None; al_extents as usize],
    }
}

impl World {
    pub fn new(opts: Options, seed: u64) -> World {
        let al_extents = opts.al_extents;
        let opts_verify = opts.verify_corrupt;
        let size_bytes = opts.size_bytes;
        let node = |name| Node {
            name,
            core: None,
            inc: 0,
            disk: Disk::new(size_bytes),
            meta: fresh_meta(al_extents),
            dialing: false,
            link: None,
            fail_next_write: false,
            clients: BTreeMap::new(),
            admin: None,
            safe_survivor: false,
            saving: false,
        };
        World {
            rng: Rng::new(seed),
            opts,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes: [node("a"), node("b")],
            link: Link::default(),
            model: Model::new(size_bytes),
            next_write: 0,
            next_req: 0,
            next_cmd: 0,
            quiescing: false,
            switchover: None,
            final_flush: None,
            sb: None,
            sb_wanted: false,
            sb_done: false,
            verify: if opts_verify {
                verify::VerifyPhase::Pending
            } else {
                verify::VerifyPhase::Off
            },
            stats: Stats::default(),
            trace: Vec::new(),
        }
    }

    fn at(&mut self, delay_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay_ms, self.seq), ev);
    }

    fn log(&mut self, line: String) {
        if self.opts.trace {
            eprintln!("{:>7} {line}", self.now);
        }
        if self.trace.len() >= 400 {
            self.trace.drain(..200);
        }
        self.trace.push(format!("{:>7} {line}", self.now));
    }

    /// The last trace lines and both nodes' states, for a failure report.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            match &n.core {
                Some(c) => s.push_str(&format!("node {}: {:?}\n", n.name, c.status(self.now))),
                None => s.push_str(&format!("node {}: crashed\n", n.name)),
            }
        }
        s.push_str("last events:\n");
        for l in self.trace.iter().rev().take(60).rev() {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    fn config(&self, i: usize) -> Config {
        let mut cfg = Config::new(
            self.opts.size_bytes,
            i == 1,
            1000 + i as u64 + 7 * self.nodes[i].inc,
        );
        cfg.al_extents = self.opts.al_extents;
        cfg.resync_chunk_bytes = self.opts.resync_chunk_bytes;
        cfg.resync_requests = 4;
        cfg.max_unstable = self.opts.max_unstable;
        cfg.rate = self.opts.rate;
        cfg.policies = self.opts.policies;
        cfg.csums_alg = self.opts.csums_alg;
        cfg.verify_alg = Some(hadisk_peer_proto::DigestAlg::Crc32c);
        cfg
    }

    /// Attaches node `i` from its durable metadata and asks it to connect.
    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let meta = self.nodes[i].meta.clone();
        let mut bitmap = DirtyBitmap::new(self.opts.size_bytes).map_err(|e| e.to_string())?;
        for (p, bytes) in &meta.pages {
            bitmap.load_page(*p, bytes).map_err(|e| e.to_string())?;
        }
        let attached = Attached {
            superblock: meta.sb,
            bitmap,
            al_slots: meta.al.clone(),
        };
        let (core, actions) = Resource::new(self.config(i), attached).map_err(|e| e.to_string())?;
        self.nodes[i].core = Some(core);
        self.perform(i, actions)?;
        self.admin(
            i,
            AdminOp::Connect {
                discard_my_data: false,
            },
        )
    }

    fn admin(&mut self, i: usize, op: AdminOp) -> Result<(), String> {
        self.next_cmd += 1;
        let cmd = CmdId(self.next_cmd);
        self.nodes[i].admin = Some((cmd, op));
        self.log(format!("{} admin {op:?}", self.nodes[i].name));
        self.feed(i, Event::Admin { cmd, op })
    }

    /// Feeds one event to node `i`'s core and performs the actions.
    fn feed(&mut self, i: usize, ev: Event) -> Result<(), String> {
        let now = self.now;
        let Some(core) = self.nodes[i].core.as_mut() else {
            return Ok(());
        };
        let actions = core.handle(now, ev);
        self.perform(i, actions)?;
        self.check_primaries()
    }

    fn perform(&mut self, i: usize, actions: Vec<Action>) -> Result<(), String> {
        for a in actions {
            self.perform_one(i, a)?;
        }
        Ok(())
    }

    fn perform_one(&mut self, i: usize, a: Action) -> Result<(), String> {
        let inc = self.nodes[i].inc;
        if let (
            true,
            Action::WriteLocal {
                offset_bytes, data, ..
            },
        ) = (self.nodes[i].saving, &a)
        {
            return Err(format!(
                "{} issued a local write of {} bytes at {offset_bytes} while saving its diverging blocks (split-brain victim)",
                self.nodes[i].name,
                data.len()
            ));
        }
        if let Action::SaveDiverging { save, .. } = &a {
            self.save_issued(i, save)?;
        }
        match a {
            Action::WriteLocal { .. }
            | Action::ReadLocal { .. }
            | Action::DigestLocal { .. }
            | Action::FlushLocal { .. }
            | Action::WriteMeta { .. }
            | Action::SaveDiverging { .. } => {
                let flush_point = self.nodes[i].disk.flush_point();
                let d = self.rng.range(0, 3);
                self.at(
                    d,
                    Ev::Io {
                        node: i,
                        inc,
                        action: a,
                        flush_point,
                    },
                );
            }
            Action::Send(msg) => self.send(i, msg),
            Action::Dial => {
                self.nodes[i].dialing = true;
                self.maybe_connect();
            }
            Action::CloseLink { reason, redial } => {
                self.log(format!(
                    "{} closes the link ({reason}), redial {redial}",
                    self.nodes[i].name
                ));
                self.nodes[i].dialing = redial;
                self.teardown([0, 0], "closed by the peer");
            }
            Action::ClientDone { req, result } => self.client_done(i, req, result.is_ok()),
            Action::AdminDone { cmd, result } => {
                if self.nodes[i].admin.is_some_and(|(c, _)| c == cmd) {
                    let op = self.nodes[i].admin.take().map(|(_, op)| op);
                    self.log(format!("{} admin {op:?} -> {result:?}", self.nodes[i].name));
                    if op == Some(AdminOp::Demote) && result.is_ok() {
                        self.after_demote(i)?;
                    }
                }
            }
            Action::WakeAt { at_ms } => {
                let d = at_ms.saturating_sub(self.now);
                self.at(d, Ev::Tick { node: i, inc });
            }
            Action::Notice { message } => {
                self.log(format!("{} {message}", self.nodes[i].name));
            }
            Action::Transition { what, from, to } => {
                if what == "replication" && to == "SyncTarget" {
                    self.stats.resyncs += 1;
                }
                if what == "connection" && to == "Connected" {
                    self.check_differences_are_marked()?;
                }
                self.log(format!("{} {what}: {from} -> {to}", self.nodes[i].name));
            }
        }
        Ok(())
    }

    fn send(&mut self, from: usize, msg: Message) {
        if !self.link.up || self.nodes[from].link != Some(self.link.epoch) {
            return;
        }
        let max = if self.link.spike { 40 } else { 3 };
        let t = (self.now + self.rng.range(0, max)).max(self.link.next_free[from]);
        self.link.next_free[from] = t;
        let epoch = self.link.epoch;
        self.seq += 1;
        self.queue.insert(
            (t, self.seq),
            Ev::Deliver {
                to: 1 - from,
                epoch,
                msg,
            },
        );
    }

    /// Breaks the link; each node that saw it up notices after its delay.
    fn teardown(&mut self, notice_ms: [u64; 2], reason: &'static str) {
        if !self.link.up {
            return;
        }
        self.link.up = false;
        self.link.epoch += 1;
        for (i, delay) in notice_ms.into_iter().enumerate() {
            if self.nodes[i].link.is_some() {
                let inc = self.nodes[i].inc;
                self.at(delay, Ev::LinkDown { to: i, inc, reason });
            }
        }
    }

    fn maybe_connect(&mut self) {
        let ready = !self.link.up
            && !self.link.connect_scheduled
            && !self.link.partitioned
            && self
                .nodes
                .iter()
                .all(|n| n.core.is_some() && n.dialing && n.link.is_none());
        if ready {
            self.link.connect_scheduled = true;
            let d = self.rng.range(5, 50);
            self.at(d, Ev::Connect);
        }
    }

    fn check_primaries(&self) -> Result<(), String> {
        let connected_primaries = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.role() == Role::Primary && c.connection() == Connection::Connected)
            .count();
        if connected_primaries == 2 {
            return Err("two Primaries while connected".into());
        }
        Ok(())
    }

    /// When the second node has decided the handshake, every sector in which
    /// the live images differ (outside writes still in flight) must be in
    /// one of the two (merged) bitmaps: else the resync would miss it.
    fn check_differences_are_marked(&mut self) -> Result<(), String> {
        let (Some(a), Some(b)) = (self.nodes[0].core.as_ref(), self.nodes[1].core.as_ref()) else {
            return Ok(());
        };
        if a.connection() != Connection::Connected || b.connection() != Connection::Connected {
            return Ok(());
        }
        self.stats.bitmap_checks += 1;
        let (la, lb) = (&self.nodes[0].disk.live, &self.nodes[1].disk.live);
        let per_block = 4096 / SECTOR;
        for (s, (x, y)) in la.iter().zip(lb).enumerate() {
            let s = s as u64;
            if x == y || self.pending_covers(s) {
                continue;
            }
            let block = s / per_block;
            if !a.bitmap().test_block(block) && !b.bitmap().test_block(block) {
                return Err(format!(
                    "at reconnect, sector {s} differs (a holds write {x}, b write {y}) but block {block} is in neither bitmap: the resync would miss it"
                ));
            }
        }
        Ok(())
    }

    // ---- the event loop ----

    pub fn run(&mut self) -> Result<(), String> {
        self.start_node(0)?;
        self.start_node(1)?;
        self.admin(0, AdminOp::Promote { force: true })?;
        self.at(1, Ev::ClientTick);
        self.at(self.opts.first_fault_ms, Ev::FaultTick);
        self.at(20, Ev::OperatorTick);
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            self.now = t;
            self.stats.events += 1;
            if !self.quiescing && self.now >= self.opts.run_ms {
                self.start_quiescing();
            }
            if self.quiescing && self.now > self.opts.run_ms + QUIESCE_LIMIT_MS {
                return Err(
                    "no quiescence within 60 s of simulated time after the faults stopped".into(),
                );
            }
            self.step(ev)?;
            if self.quiescing && self.try_finish()? {
                self.stats.end_ms = self.now;
                return Ok(());
            }
        }
        Err("the event queue ran dry before quiescence".into())
    }

    fn step(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Deliver { to, epoch, msg } => {
                if self.link.up && self.link.epoch == epoch && self.nodes[to].link == Some(epoch) {
                    self.feed(to, Event::Peer(msg))?;
                }
            }
            Ev::LinkUp { to, epoch } => {
                if self.link.up && self.link.epoch == epoch && self.nodes[to].core.is_some() {
                    self.nodes[to].link = Some(epoch);
                    self.log(format!("{} link up (epoch {epoch})", self.nodes[to].name));
                    self.feed(to, Event::LinkUp)?;
                }
            }
            Ev::LinkDown { to, inc, reason } => {
                if self.nodes[to].inc == inc && self.nodes[to].link.is_some() {
                    self.nodes[to].link = None;
                    self.log(format!("{} link down: {reason}", self.nodes[to].name));
                    self.feed(
                        to,
                        Event::LinkDown {
                            reason: reason.to_string(),
                        },
                    )?;
                    self.maybe_connect();
                }
            }
            Ev::Io {
                node,
                inc,
                action,
                flush_point,
            } => {
                if self.nodes[node].inc == inc && self.nodes[node].core.is_some() {
                    self.complete_io(node, action, flush_point)?;
                }
            }
            Ev::Connect => {
                self.link.connect_scheduled = false;
                let ready = !self.link.up
                    && !self.link.partitioned
                    && self
                        .nodes
                        .iter()
                        .all(|n| n.core.is_some() && n.dialing && n.link.is_none());
                if ready {
                    self.link.up = true;
                    self.link.epoch += 1;
                    self.link.next_free = [self.now; 2];
                    let first = self.rng.range(0, 1) as usize;
                    let epoch = self.link.epoch;
                    self.at(0, Ev::LinkUp { to: first, epoch });
                    self.at(
                        0,
                        Ev::LinkUp {
                            to: 1 - first,
                            epoch,
                        },
                    );
                }
            }
            Ev::ClientTick => {
                self.client_tick()?;
                if !self.quiescing || self.split_brain_pending() {
                    let d = self.rng.range(0, 2);
                    self.at(d, Ev::ClientTick);
                }
            }
            Ev::FaultTick => {
                if !self.quiescing {
                    self.fault_tick()?;
                    let d = self
                        .rng
                        .range(self.opts.fault_gap_ms / 2, self.opts.fault_gap_ms * 3 / 2);
                    self.at(d, Ev::FaultTick);
                }
            }
            Ev::OperatorTick => {
                self.operator_tick()?;
                self.at(20, Ev::OperatorTick);
            }
            Ev::Restart { node } => {
                if self.nodes[node].core.is_none() {
                    self.log(format!("{} restarts", self.nodes[node].name));
                    self.start_node(node)?;
                }
            }
            Ev::Heal if self.split_brain_holds_partition() => {}
            Ev::Heal => {
                self.link.partitioned = false;
                self.log("partition heals".into());
                self.maybe_connect();
            }
            Ev::SpikeEnd => self.link.spike = false,
            Ev::Tick { node, inc } => {
                if self.nodes[node].inc == inc {
                    self.feed(node, Event::Tick)?;
                }
            }
            Ev::Resume { node } => {
                if self.nodes[node].admin.is_some() {
                    self.at(20, Ev::Resume { node });
                } else if self.nodes[node].core.is_some() {
                    self.admin(node, AdminOp::ResumeSync)?;
                }
            }
            Ev::Reconnect { node } => {
                let standalone = self.nodes[node]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.connection() == Connection::StandAlone);
                if standalone && self.nodes[node].admin.is_none() {
                    self.admin(
                        node,
                        AdminOp::Connect {
                            discard_my_data: false,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    fn complete_io(&mut self, i: usize, action: Action, flush_point: u64) -> Result<(), String> {
        match action {
            Action::WriteLocal {
                io,
                offset_bytes,
                data,
                fua,
            } => {
                if std::mem::take(&mut self.nodes[i].fail_next_write) {
                    self.log(format!(
                        "{} write error at {offset_bytes}",
                        self.nodes[i].name
                    ));
                    self.stats.disk_errors += 1;
                    return self.feed(i, Event::IoDone { io, ok: false });
                }
                // The simulator's payloads are always in memory.
                let Ok(bytes) = data.to_bytes() else {
                    return self.feed(i, Event::IoDone { io, ok: false });
                };
                self.nodes[i].disk.write(offset_bytes, &bytes, fua);
                self.feed(i, Event::IoDone { io, ok: true })
            }
            Action::ReadLocal {
                io,
                offset_bytes,
                len_bytes,
            } => {
                let data = self.nodes[i].disk.read(offset_bytes, u64::from(len_bytes));
                self.feed(
                    i,
                    Event::ReadDone {
                        io,
                        data: Some(data),
                    },
                )
            }
            Action::DigestLocal {
                io,
                offset_bytes,
                len_bytes,
                alg,
            } => {
                let data = self.nodes[i].disk.read(offset_bytes, u64::from(len_bytes));
                let digests = alg.digest_blocks(&data).into();
                self.stats.digests += 1;
                let result = Some(Digested { data, digests });
                self.feed(i, Event::DigestDone { io, result })
            }
            Action::FlushLocal { io } => {
                self.nodes[i].disk.flush(flush_point);
                self.feed(i, Event::IoDone { io, ok: true })
            }
            Action::WriteMeta { io, update } => {
                let meta = &mut self.nodes[i].meta;
                for (p, bytes) in update.bitmap_pages {
                    meta.pages.insert(p, bytes);
                }
                for c in update.al {
                    if let Some(slot) = meta.al.get_mut(c.slot as usize) {
                        *slot = Some(c.new_extent);
                    }
                }
                if let Some(sb) = update.superblock {
                    meta.sb = sb;
                }
                if self.opts.trace {
                    let sb = self.nodes[i].meta.sb;
                    self.log(format!("{} metadata durable: {sb:?}", self.nodes[i].name));
                }
                self.feed(i, Event::IoDone { io, ok: true })
            }
            Action::SaveDiverging { io, save } => {
                // The save copies the live image's blocks (the daemon
                // fsyncs it before reporting).
                self.save_done(i, &save)?;
                self.feed(i, Event::IoDone { io, ok: true })
            }
            _ => Ok(()),
        }
    }

    fn client_done(&mut self, i: usize, req: ReqId, ok: bool) {
        let Some(write) = self.nodes[i].clients.remove(&req) else {
            return;
        };
        if self.opts.trace {
            let name = self.nodes[i].name;
            self.log(format!(
                "{name} client request {} (write {write}) done, ok {ok}",
                req.0
            ));
        }
        if let Some((node, r, _)) = self.final_flush {
            if node == i && r == req {
                self.final_flush = Some((node, r, ok));
            }
        }
        if write == 0 {
            return;
        }
        let model = self.model_of(i);
        if ok {
            model.acked(write);
        } else {
            model.unknown(write);
        }
    }

    // ---- workload ----

    fn primary(&self) -> Option<usize> {
        (0..2).find(|i| {
            self.nodes[*i]
                .core
                .as_ref()
                .is_some_and(|c| c.role() == Role::Primary)
        })
    }

    fn client_tick(&mut self) -> Result<(), String> {
        let Some(p) = self.client_target() else {
            return Ok(());
        };
        // During quiescence only the two Primaries of a split brain in
        // progress take writes (not while one is still awaited).
        if (self.quiescing && self.sb.is_none())
            || self.switchover.is_some()
            || self.nodes[p].clients.len() >= MAX_CLIENT_INFLIGHT
        {
            return Ok(());
        }
        if self.nodes[p]
            .core
            .as_ref()
            .is_some_and(|c| c.disk() == DiskState::Failed)
        {
            return Ok(());
        }
        self.next_req += 1;
        let req = ReqId(self.next_req);
        if self.rng.chance(self.opts.flush_percent) {
            self.nodes[p].clients.insert(req, 0);
            return self.feed(p, Event::ClientFlush { req });
        }
        let (offset, len) = self.random_extent();
        self.next_write += 1;
        let id = self.next_write;
        let fua = self.rng.chance(self.opts.fua_percent);
        self.model_of(p).issue(id, offset, len);
        if self.opts.trace {
            let name = self.nodes[p].name;
            self.log(format!(
                "{name} client write {id}: {len} bytes at {offset} (sectors {}..{}), fua {fua}",
                offset / SECTOR,
                (offset + len) / SECTOR
            ));
        }
        self.nodes[p].clients.insert(req, id);
        let data = encode(&vec![id; (len / SECTOR) as usize]);
        self.feed(
            p,
            Event::ClientWrite {
                req,
                offset_bytes: offset,
                data: data.into(),
                fua,
            },
        )
    }

    fn random_extent(&mut self) -> (u64, u64) {
        let size = self.opts.size_bytes;
        if self.rng.chance(50) {
            let sectors = self.rng.range(1, 16);
            let len = sectors * SECTOR;
            let off = self.rng.range(0, (HOT_BYTES - len) / SECTOR) * SECTOR;
            return (off, len);
        }
        let blocks = self.rng.range(1, 16);
        let len = blocks * 4096;
        let off = self.rng.range(0, (size - len) / 4096) * 4096;
        (off, len)
    }

    // ---- faults ----

    /// Whether node `i` may fail now: the other node holds every
    /// acknowledged write and nothing else is down.
    fn may_fail(&self, i: usize) -> bool {
        let other = &self.nodes[1 - i];
        let (Some(me), Some(oc)) = (self.nodes[i].core.as_ref(), other.core.as_ref()) else {
            return false;
        };
        // Ground truth: "Established" counts only while the link is really up.
        let link_up =
            self.link.up && other.link == Some(self.link.epoch) && self.nodes[i].link == other.link;
        let other_has_all = (oc.role() == Role::Primary && oc.disk() == DiskState::UpToDate)
            || (link_up
                && oc.replication() == Replication::Established
                && oc.disk() == DiskState::UpToDate);
        other_has_all && me.disk() != DiskState::Failed && self.switchover.is_none()
    }

    fn fault_tick(&mut self) -> Result<(), String> {
        if self.sb.is_some() {
            // One fault at a time: the split brain runs its course alone.
            return Ok(());
        }
        let roll = self.rng.range(0, 99);
        let o = self.opts.clone();
        let mut edge = 0;
        let mut pick = |w: u64| {
            let hit = roll >= edge && roll < edge + w;
            edge += w;
            hit
        };
        if pick(o.reset_weight) {
            self.stats.resets += 1;
            self.log("fault: connection reset".into());
            self.teardown([0, 0], "connection reset");
        } else if pick(o.partition_weight) {
            if !self.link.partitioned {
                self.stats.partitions += 1;
                self.link.partitioned = true;
                self.log("fault: partition".into());
                let notice = [self.rng.range(0, 60), self.rng.range(0, 60)];
                self.teardown(notice, "partition (keepalive timeout)");
                let d = self.rng.range(50, 500);
                self.at(d, Ev::Heal);
            }
        } else if pick(o.crash_weight) {
            let i = self.rng.range(0, 1) as usize;
            if self.may_fail(i) {
                self.crash(i);
            }
        } else if pick(o.disk_error_weight) {
            // A write error loses no data (the repair keeps the disk), so it
            // may hit either node at any time.
            let i = self.rng.range(0, 1) as usize;
            if self.nodes[i].core.is_some() {
                self.log(format!(
                    "fault: {} will fail its next write",
                    self.nodes[i].name
                ));
                self.nodes[i].fail_next_write = true;
            }
        } else if pick(o.spike_weight) {
            self.link.spike = true;
            let d = self.rng.range(50, 300);
            self.at(d, Ev::SpikeEnd);
        } else if pick(o.switchover_weight) {
            self.start_switchover();
        } else if pick(o.disconnect_weight) {
            let i = self.rng.range(0, 1) as usize;
            if self.nodes[i].core.is_some() && self.nodes[i].admin.is_none() {
                self.stats.disconnects += 1;
                self.admin(i, AdminOp::Disconnect)?;
                let d = self.rng.range(20, 300);
                self.at(d, Ev::Reconnect { node: i });
            }
        } else if pick(o.pause_weight) {
            let i = self.rng.range(0, 1) as usize;
            if self.nodes[i].core.is_some() && self.nodes[i].admin.is_none() {
                self.stats.pauses += 1;
                self.admin(i, AdminOp::PauseSync)?;
                let d = self.rng.range(20, 300);
                self.at(d, Ev::Resume { node: i });
            }
        } else if pick(o.split_brain_weight) {
            // Last, so that the other kinds keep their share of the rolls.
            self.start_split_brain();
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        let name = self.nodes[i].name;
        self.log(format!("fault: {name} crashes"));
        self.nodes[i].disk.crash();
        self.stop_node(i);
    }

    /// A failed disk is repaired: the node stops (its in-flight I/O never
    /// completes) and restarts; what its disk had is kept, as a detach that
    /// flushes the cache keeps it.
    fn repair(&mut self, i: usize) {
        let name = self.nodes[i].name;
        self.log(format!("operator repairs {name}'s disk (restart)"));
        let disk = &mut self.nodes[i].disk;
        disk.flush(disk.flush_point());
        self.stop_node(i);
    }

    /// Takes node `i` down: in-flight I/O and client requests are lost, the
    /// peer notices after a keepalive timeout; it restarts later.
    fn stop_node(&mut self, i: usize) {
        let j = 1 - i;
        // Ground truth, not the survivor's possibly stale view: the link
        // must really be up (a partition the survivor has not noticed yet
        // means the Primary wrote alone; promoting then is a split brain,
        // which only fencing would prevent).
        let link_up = self.link.up && self.nodes[j].link == Some(self.link.epoch);
        self.nodes[j].safe_survivor = link_up
            && self.nodes[j].core.as_ref().is_some_and(|c| {
                c.replication() == Replication::Established && c.disk() == DiskState::UpToDate
            });
        let n = &mut self.nodes[i];
        n.core = None;
        n.inc += 1;
        n.dialing = false;
        n.fail_next_write = false;
        n.admin = None;
        let lost: Vec<u64> = std::mem::take(&mut n.clients).into_values().collect();
        let had_link = n.link.take().is_some();
        for w in lost.into_iter().filter(|w| *w != 0) {
            self.model.unknown(w);
        }
        if let Some((node, _, _)) = self.final_flush {
            if node == i {
                self.final_flush = None;
            }
        }
        if self.switchover.is_some() {
            self.switchover = None;
        }
        let notice = self.rng.range(20, 120);
        let mut delays = [0, 0];
        delays[j] = notice;
        if had_link || self.link.up {
            self.teardown(delays, "peer silent (keepalive timeout)");
        }
        let d = self.rng.range(50, 500);
        self.at(d, Ev::Restart { node: i });
    }

    fn start_switchover(&mut self) {
        let Some(p) = self.primary() else { return };
        let both_ok = self.nodes.iter().all(|n| {
            n.core.as_ref().is_some_and(|c| {
                c.replication() == Replication::Established && c.disk() == DiskState::UpToDate
            })
        });
        if both_ok && self.switchover.is_none() && self.sb.is_none() {
            self.log(format!("switchover away from {}", self.nodes[p].name));
            self.switchover = Some(p);
        }
    }

    fn after_demote(&mut self, i: usize) -> Result<(), String> {
        if self.switchover == Some(i) {
            self.switchover = None;
            self.stats.switchovers += 1;
            // Only a peer still connected and in sync takes over (a
            // partition may have cut the link meanwhile: promoting it then
            // would make a split brain, as an agent that skips this check).
            let in_sync = self.nodes[1 - i].core.as_ref().is_some_and(|c| {
                c.replication() == Replication::Established && c.disk() == DiskState::UpToDate
            });
            if in_sync && self.nodes[1 - i].admin.is_none() {
                self.admin(1 - i, AdminOp::Promote { force: false })?;
            }
        }
        Ok(())
    }

    // ---- the operator (a careful failover agent) ----

    fn operator_tick(&mut self) -> Result<(), String> {
        if self.sb.is_some() {
            return self.split_brain_operator();
        }
        if self.sb_wanted {
            self.start_split_brain();
            if self.sb.is_some() {
                return Ok(());
            }
        }
        if let Some(p) = self.switchover {
            let idle = self.nodes[p].clients.is_empty() && self.nodes[p].admin.is_none();
            if idle
                && self.nodes[p]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Primary)
            {
                self.admin(p, AdminOp::Demote)?;
            }
            return Ok(());
        }
        for i in 0..2 {
            let failed = self.nodes[i]
                .core
                .as_ref()
                .is_some_and(|c| c.disk() == DiskState::Failed);
            if failed {
                self.repair(i);
            }
        }
        if self.quiescing {
            self.link.partitioned = false;
            self.link.spike = false;
            for i in 0..2 {
                let standalone = self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.connection() == Connection::StandAlone);
                if standalone && self.nodes[i].admin.is_none() {
                    self.admin(
                        i,
                        AdminOp::Connect {
                            discard_my_data: false,
                        },
                    )?;
                }
            }
            self.maybe_connect();
        }
        if self.primary().is_none() {
            self.promote_someone()?;
        }
        Ok(())
    }

    /// Promotes a node that surely holds every acknowledged write.
    fn promote_someone(&mut self) -> Result<(), String> {
        for i in 0..2 {
            let peer_alive = self.nodes[1 - i].core.is_some();
            let Some(c) = self.nodes[i].core.as_ref() else {
                continue;
            };
            if self.nodes[i].admin.is_some() || c.disk() != DiskState::UpToDate {
                continue;
            }
            let in_sync = c.replication() == Replication::Established;
            let safe = in_sync || (!peer_alive && self.nodes[i].safe_survivor);
            if safe {
                if !in_sync {
                    self.stats.failovers += 1;
                }
                return self.admin(i, AdminOp::Promote { force: false });
            }
        }
        Ok(())
    }

    // ---- the end ----

    fn start_quiescing(&mut self) {
        self.quiescing = true;
        self.switchover = None;
        self.log("faults stop; quiescing".into());
        self.link.partitioned = false;
        self.split_brain_quiesce();
        for i in 0..2 {
            self.nodes[i].fail_next_write = false;
            if self.nodes[i].core.is_none() {
                self.at(0, Ev::Restart { node: i });
            }
        }
        self.maybe_connect();
    }

    /// Whether the pair is quiescent; then flushes once and runs the checks.
    fn try_finish(&mut self) -> Result<bool, String> {
        let settled = self.nodes.iter().all(|n| {
            n.core.as_ref().is_some_and(|c| {
                let st = c.status(0);
                c.is_idle()
                    && st.connection == Connection::Connected
                    && st.replication == Replication::Established
                    && st.disk == DiskState::UpToDate
                    && st.out_of_sync_bytes == 0
            }) && n.clients.is_empty()
                && n.admin.is_none()
        });
        let Some(p) = self.primary() else {
            return Ok(false);
        };
        if self.split_brain_pending() || self.verify_step(settled, p)? || !settled {
            return Ok(false);
        }
        match self.final_flush {
            None => {
                self.next_req += 1;
                let req = ReqId(self.next_req);
                self.final_flush = Some((p, req, false));
                self.nodes[p].clients.insert(req, 0);
                self.feed(p, Event::ClientFlush { req })?;
                Ok(false)
            }
            Some((_, _, false)) => Ok(false),
            Some((_, _, true)) => self.check_end().map(|_| true),
        }
    }

    fn check_end(&mut self) -> Result<(), String> {
        let (a, b) = (&self.nodes[0].disk, &self.nodes[1].disk);
        if a.durable != b.durable {
            let s = a
                .durable
                .iter()
                .zip(&b.durable)
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            return Err(format!(
                "after quiescence the disks differ: first at sector {s}: a holds write {}, b holds write {}",
                a.durable[s], b.durable[s]
            ));
        }
        for n in &self.nodes {
            if n.disk.durable != n.disk.live {
                return Err(format!(
                    "node {}: the final flush left writes not durable",
                    n.name
                ));
            }
            self.model.check(n.name, &n.disk.durable)?;
        }
        self.stats.writes_acked = self.model.acked_writes;
        self.stats.writes_unknown = self.model.unknown_writes;
        let _ = BLOCKS_PER_PAGE;
        let _ = IoId(0);
        Ok(())
    }
}
