//! The agent's loop: one task owns the [`Node`] and the groups' states.
//!
//! Every keepalive it sends a heartbeat on every path and an echo request
//! to every ping node; every datagram goes through the pure receiver (a bad
//! signature, a stranger, a replay are dropped and logged, rate-limited);
//! the policy is evaluated on every tick and every accepted heartbeat, and
//! its Start/Stop actions become group runs ([`crate::group`]). A heartbeat
//! also goes out at once when a group's state changes, so the peer learns of
//! a release without waiting a keepalive.
//!
//! SIGTERM/SIGINT: the node goes to standby, stops what it holds (right to
//! left), tells the peer, and exits, so the peer takes over without waiting
//! for deadtime. A second signal exits at once.
//!
//! Invariants: a group has at most one run in flight (its state is Starting
//! or Stopping while it does, and the policy leaves busy groups alone); only
//! this task changes group states and the mode.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hadisk_agent::membership::{Liveness, PingView};
use hadisk_agent::node::Node;
use hadisk_agent::plan::Outcome;
use hadisk_agent::policy::{Action, Decision, DiskGate, GroupState};
use hadisk_agent::replay::{Fresh, Rejected, ReplayError};
use hadisk_agent::replication::replicated_resources;
use hadisk_agent::wire::{Mode, MAX_MESSAGE_BYTES};
use hadisk_config::ha::Group;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::control::{self, Incoming};
use crate::files::{FilesError, HaFiles};
use crate::group::{self, Direction, ResourceState, RunEvent};
use crate::ping::{self, Pinger};
use crate::resource::{self, Env, Replicator};
use crate::transport::{Transport, TransportError};

mod requests;

/// A repeated warning (bad datagrams, a dead path) is logged at most once
/// per this interval, with the count of those not logged.
pub const LOG_EVERY_MS: u64 = 10_000;
/// The file in the run directory keeping the last heartbeat generation, so
/// that it grows across restarts even if the clock steps back.
pub const GENERATION_FILE: &str = "agent.generation";

/// How to run the agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--ha-dir`.
    pub ha_dir: PathBuf,
    /// `--run-dir`: the control socket `agent.sock` goes there.
    pub run_dir: PathBuf,
    /// This node's name.
    pub node: String,
    /// The daemon.
    pub replicator: Arc<dyn Replicator>,
}

/// Why the agent stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The files are wrong.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The heartbeat sockets.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The control socket.
    #[error(transparent)]
    Control(#[from] control::ServeError),
    /// Something else at start (ping socket, signals, ping node names).
    #[error("{0}")]
    Setup(String),
    /// At shutdown, a group could not be stopped cleanly.
    #[error("stopped with resources that may still be active: {0}")]
    StopFailed(String),
}

/// Logs the first of a kind at once, then at most once per interval.
#[derive(Debug, Default)]
struct RateLimit {
    last_ms: Option<u64>,
    suppressed: u64,
}

impl RateLimit {
    /// Whether to log now; `Some(n)`: n were not logged since the last one.
    fn admit(&mut self, now_ms: u64) -> Option<u64> {
        match self.last_ms {
            Some(t) if now_ms.saturating_sub(t) < LOG_EVERY_MS => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// One group here.
#[derive(Debug)]
struct Slot {
    group: Group,
    state: GroupState,
    resources: Vec<ResourceState>,
    replicated: Vec<String>,
    reason: String,
    last_failure: Option<String>,
}

/// The daemon's answers, refreshed every keepalive by the poller.
type Gates = BTreeMap<String, DiskGate>;

struct Runner {
    files: HaFiles,
    node: Node,
    clock: Instant,
    slots: Vec<Slot>,
    env: Env,
    runs: mpsc::UnboundedSender<RunEvent>,
    gates: watch::Receiver<(u64, Gates)>,
    ping_ips: Vec<Ipv4Addr>,
    last: Option<Decision>,
    rejected: u64,
    reject_log: RateLimit,
    send_log: RateLimit,
    heartbeat_due: bool,
    shutting_down: bool,
}

fn next_generation(run_dir: &Path) -> u64 {
    let path = run_dir.join(GENERATION_FILE);
    let before = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let generation = wall.max(before.saturating_add(1));
    if let Err(e) = std::fs::write(&path, format!("{generation}\n")) {
        tracing::warn!(
            "cannot record the heartbeat generation in {}: {e}",
            path.display()
        );
    }
    generation
}

/// Runs the agent until SIGTERM/SIGINT (and its groups are stopped).
pub async fn run(opts: AgentOptions) -> Result<(), RunError> {
    let (mut runner, io) = setup(opts).await?;
    drive(&mut runner, io).await
}

/// The loop's I/O endpoints.
struct Io {
    transport: Transport,
    pinger: Option<Pinger>,
    runs: mpsc::UnboundedReceiver<RunEvent>,
    requests: mpsc::Receiver<Incoming>,
    sigterm: Signal,
    sigint: Signal,
    keepalive: Duration,
}

fn log_files(files: &HaFiles) {
    let c = &files.hacf;
    for f in c.logfile.iter().chain(c.debugfile.iter()) {
        tracing::info!(
            "ha.cf names {}: the agent logs to stderr (the journal under systemd; RUST_LOG sets the level), it does not write that file",
            f.display()
        );
    }
    for w in &files.hacf.warnings {
        tracing::warn!("{w}");
    }
    for i in &files.hacf.ignored {
        tracing::info!(
            "ha.cf:{}: `{}` is ignored: {}",
            i.line,
            i.directive,
            i.reason
        );
    }
}

fn new_slots(files: &HaFiles) -> Vec<Slot> {
    files
        .haresources
        .groups
        .iter()
        .map(|g| Slot {
            group: g.clone(),
            state: GroupState::Stopped,
            resources: vec![ResourceState::Stopped; g.resources.len()],
            replicated: replicated_resources(g)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            reason: String::new(),
            last_failure: None,
        })
        .collect()
}

fn open_pinger(ips: &[Ipv4Addr]) -> Result<Option<Pinger>, RunError> {
    if ips.is_empty() {
        return Ok(None);
    }
    Pinger::open().map(Some).map_err(|e| {
        RunError::Setup(format!("cannot open a raw ICMP socket for the ping nodes: {e} (the agent must run as root, or with CAP_NET_RAW)"))
    })
}

/// Reads the files, opens every socket and spawns the helpers (control
/// socket server, daemon poller): nothing is started on the machine yet.
async fn setup(opts: AgentOptions) -> Result<(Runner, Io), RunError> {
    let files = HaFiles::load(&opts.ha_dir, &opts.node)?;
    log_files(&files);
    let transport = Transport::open(&files.hacf)?;
    let ping_ips = ping::resolve(&files.hacf.ping).map_err(RunError::Setup)?;
    let pinger = open_pinger(&ping_ips)?;
    let listener = control::bind(&opts.run_dir)?;
    let generation = next_generation(&opts.run_dir);
    let node = Node::new(&files.hacf, &files.haresources, &opts.node, generation, 0)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let garp = crate::garp::detect().await;
    let slots = new_slots(&files);
    let clock = Instant::now();
    let keepalive = Duration::from_millis(files.hacf.keepalive_ms.max(1));
    let names: Vec<String> = slots.iter().flat_map(|s| s.replicated.clone()).collect();
    let (gates_tx, gates) = watch::channel((0u64, Gates::new()));
    if !names.is_empty() {
        let r = Arc::clone(&opts.replicator);
        tokio::spawn(poll_gates(r, names, keepalive, clock, gates_tx));
    }
    let (runs, run_rx) = mpsc::unbounded_channel();
    let (ctl_tx, ctl_rx) = mpsc::channel(control::REQUEST_QUEUE);
    tokio::spawn(control::serve(listener, ctl_tx));
    let handler = |kind: SignalKind, name: &str| {
        signal(kind).map_err(|e| RunError::Setup(format!("{name} handler: {e}")))
    };
    let io = Io {
        sigterm: handler(SignalKind::terminate(), "SIGTERM")?,
        sigint: handler(SignalKind::interrupt(), "SIGINT")?,
        transport,
        pinger,
        runs: run_rx,
        requests: ctl_rx,
        keepalive,
    };
    tracing::info!(
        node = %opts.node,
        peer = node.peer(),
        paths = %io.transport.paths.iter().map(|p| p.label.as_str()).collect::<Vec<_>>().join(", "),
        ping = ping_ips.len(),
        keepalive_ms = files.hacf.keepalive_ms,
        deadtime_ms = files.hacf.deadtime_ms,
        initdead_ms = files.hacf.initdead_ms,
        arping = %garp,
        "hadisk agent started"
    );
    let env = Env {
        ha_dir: opts.ha_dir.clone(),
        replicator: Arc::clone(&opts.replicator),
        garp,
    };
    let runner = Runner {
        files,
        node,
        clock,
        slots,
        env,
        runs,
        gates,
        ping_ips,
        last: None,
        rejected: 0,
        reject_log: RateLimit::default(),
        send_log: RateLimit::default(),
        heartbeat_due: true,
        shutting_down: false,
    };
    Ok((runner, io))
}

/// The loop: until shut down and every group released.
async fn drive(r: &mut Runner, mut io: Io) -> Result<(), RunError> {
    r.stop_leftovers().await;
    let mut tick = tokio::time::interval(io.keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; MAX_MESSAGE_BYTES + 1];
    loop {
        let pinger = io.pinger.as_ref();
        let ping_reply = async {
            match pinger {
                Some(p) => p.reply().await,
                None => std::future::pending().await,
            }
        };
        // The peer's silence reaches deadtime between two ticks: judge it
        // at that moment, not up to a keepalive later.
        let peer_deadline = r.peer_deadline();
        let peer_dies = async {
            match peer_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = peer_dies => r.evaluate(),
            _ = tick.tick() => {
                r.heartbeat_due = true;
                if let Some(p) = pinger {
                    r.send_pings(p);
                }
                r.evaluate();
            }
            got = io.transport.recv(&mut buf) => match got {
                Ok((n, from)) => {
                    if r.receive(buf.get(..n).unwrap_or(&[]), from) {
                        r.evaluate();
                    }
                }
                Err(e) => tracing::warn!("heartbeat receive failed: {e}"),
            },
            src = ping_reply => match src {
                Ok(ip) => r.ping_reply(ip),
                Err(e) => tracing::warn!("ping socket: {e}"),
            },
            Some(ev) = io.runs.recv() => {
                r.on_run_event(ev);
                r.evaluate();
            }
            Some(inc) = io.requests.recv() => {
                let response = r.answer(inc.request);
                let _ = inc.reply.send(response);
                r.evaluate();
            }
            _ = io.sigterm.recv() => r.begin_shutdown("SIGTERM"),
            _ = io.sigint.recv() => r.begin_shutdown("SIGINT"),
        }
        if r.heartbeat_due {
            r.heartbeat_due = false;
            r.send_heartbeat(&io.transport).await;
        }
        if r.shutting_down && r.all_released() {
            // Tell the peer twice (one may be lost) that nothing is held.
            r.send_heartbeat(&io.transport).await;
            r.send_heartbeat(&io.transport).await;
            return r.exit_result();
        }
    }
}

async fn poll_gates(
    replicator: Arc<dyn Replicator>,
    mut names: Vec<String>,
    every: Duration,
    clock: Instant,
    tx: watch::Sender<(u64, Gates)>,
) {
    names.sort();
    names.dedup();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = Arc::clone(&replicator);
        let list = names.clone();
        let gates = tokio::task::spawn_blocking(move || {
            list.into_iter()
                .map(|n| {
                    let g = match r.status(&n) {
                        Ok(v) => DiskGate::Status(v),
                        Err(e) => {
                            tracing::debug!(resource = %n, "daemon status: {e}");
                            DiskGate::Unavailable
                        }
                    };
                    (n, g)
                })
                .collect::<Gates>()
        })
        .await
        .unwrap_or_default();
        let now = clock.elapsed().as_millis() as u64;
        if tx.send((now, gates)).is_err() {
            return;
        }
    }
}

impl Runner {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// When the peer becomes dead if nothing more is heard: its last
    /// heartbeat plus deadtime, while that is still ahead.
    fn peer_deadline(&self) -> Option<tokio::time::Instant> {
        let heard = self.node.peer_heard()?;
        let at_ms = heard
            .last_seen_ms
            .saturating_add(self.files.hacf.deadtime_ms);
        if at_ms <= self.now_ms() {
            return None;
        }
        Some(tokio::time::Instant::from_std(self.clock) + Duration::from_millis(at_ms))
    }

    fn states(&self) -> Vec<GroupState> {
        self.slots.iter().map(|s| s.state).collect()
    }

    async fn send_heartbeat(&mut self, transport: &Transport) {
        let Some(key) = self.files.authkeys.active_key().cloned() else {
            return;
        };
        let states = self.states();
        let datagram = match self.node.heartbeat(&states, &key) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("cannot encode a heartbeat: {e}");
                return;
            }
        };
        let failed = transport.send(&datagram).await;
        if failed.is_empty() {
            return;
        }
        let now = self.now_ms();
        if let Some(skipped) = self.send_log.admit(now) {
            for (path, e) in &failed {
                tracing::warn!(path = %path, skipped, "heartbeat not sent: {e}");
            }
        }
    }

    fn send_pings(&self, p: &Pinger) {
        for ip in &self.ping_ips {
            if let Err(e) = p.send(*ip) {
                tracing::debug!(%ip, "echo request not sent: {e}");
            }
        }
    }

    fn ping_reply(&mut self, src: Ipv4Addr) {
        let now = self.now_ms();
        for (i, ip) in self.ping_ips.iter().enumerate() {
            if *ip == src {
                self.node.ping_reply(now, i);
            }
        }
    }

    /// Feeds a datagram to the receiver; true when it was an accepted
    /// heartbeat.
    fn receive(&mut self, datagram: &[u8], from: std::net::SocketAddr) -> bool {
        let now = self.now_ms();
        match self.node.receive(now, datagram, &self.files.authkeys) {
            Ok((hb, fresh)) => {
                match fresh {
                    Fresh::First => {
                        tracing::info!(peer = %hb.from, %from, mode = %hb.mode, "first heartbeat from the peer")
                    }
                    Fresh::Restarted { previous } => {
                        tracing::info!(peer = %hb.from, %from, previous, generation = hb.generation, "the peer restarted")
                    }
                    Fresh::Next { lost } if lost > 0 => {
                        tracing::debug!(peer = %hb.from, lost, "heartbeats lost")
                    }
                    Fresh::Next { .. } => {}
                }
                true
            }
            // Broadcast loops back to the sender, and a heartbeat sent on
            // two paths (bcast and ucast) arrives twice: neither is an
            // attack, neither is worth a line.
            Err(Rejected::Own) => false,
            Err(Rejected::Replay(ReplayError::Replayed { seq, last_seq, .. }))
                if seq == last_seq =>
            {
                tracing::trace!(seq, "duplicate heartbeat (another path)");
                false
            }
            Err(e) => {
                self.rejected += 1;
                if let Some(skipped) = self.reject_log.admit(now) {
                    tracing::warn!(%from, skipped, total = self.rejected, "dropped a datagram: {e}");
                }
                false
            }
        }
    }

    fn gates_for(&self, slot: &Slot) -> Vec<DiskGate> {
        let now = self.now_ms();
        let (at, gates) = &*self.gates.borrow();
        let fresh = now.saturating_sub(*at) < self.files.hacf.deadtime_ms && *at > 0;
        slot.replicated
            .iter()
            .map(|n| match gates.get(n) {
                Some(g) if fresh => *g,
                _ => DiskGate::Unavailable,
            })
            .collect()
    }

    fn evaluate(&mut self) {
        let now = self.now_ms();
        let inputs: Vec<(GroupState, Vec<DiskGate>)> = self
            .slots
            .iter()
            .map(|s| (s.state, self.gates_for(s)))
            .collect();
        let d = self.node.decide(now, &inputs);
        self.log_membership(&d);
        for (i, gd) in d.groups.iter().enumerate() {
            let reason = gd.reason.to_string();
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            if slot.reason != reason {
                tracing::info!(group = i, state = ?slot.state, action = ?gd.action, "{reason}");
                slot.reason = reason;
            }
            if self.shutting_down {
                continue;
            }
            match gd.action {
                Action::Start => self.launch(i, Direction::Start),
                Action::Stop => self.launch(i, Direction::Stop),
                Action::Nothing => {}
            }
        }
        if self.shutting_down {
            for i in 0..self.slots.len() {
                if self
                    .slots
                    .get(i)
                    .is_some_and(|s| s.state == GroupState::Running)
                {
                    self.launch(i, Direction::Stop);
                }
            }
        }
        self.last = Some(d);
    }

    fn log_membership(&self, d: &Decision) {
        let Some(before) = &self.last else { return };
        let kind = |l: Liveness| std::mem::discriminant(&l);
        if kind(before.peer) != kind(d.peer) {
            match d.peer {
                Liveness::Dead { silent_ms } => {
                    tracing::warn!(peer = self.node.peer(), silent_ms, "the peer is dead")
                }
                Liveness::Late { silent_ms } => tracing::warn!(
                    peer = self.node.peer(),
                    silent_ms,
                    "the peer's heartbeat is late"
                ),
                Liveness::Alive => tracing::info!(peer = self.node.peer(), "the peer is alive"),
                Liveness::Waiting { .. } => {}
            }
        }
        if before.ping != d.ping {
            match d.ping {
                PingView::Unreachable => tracing::warn!("no ping node answers"),
                PingView::Reachable => tracing::info!("a ping node answers"),
                PingView::Waiting | PingView::NotConfigured => {}
            }
        }
    }

    fn launch(&mut self, i: usize, direction: Direction) {
        let Some(slot) = self.slots.get_mut(i) else {
            return;
        };
        let from = slot.state;
        slot.state = match direction {
            Direction::Start => GroupState::Starting,
            Direction::Stop => GroupState::Stopping,
        };
        tracing::info!(group = i, from = ?from, to = ?slot.state, "group transition");
        self.heartbeat_due = true;
        tokio::spawn(group::run(
            self.env.clone(),
            i,
            slot.group.resources.clone(),
            direction,
            self.runs.clone(),
        ));
    }

    fn on_run_event(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Resource {
                group,
                resource,
                state,
            } => {
                if let Some(s) = self
                    .slots
                    .get_mut(group)
                    .and_then(|s| s.resources.get_mut(resource))
                {
                    *s = state;
                }
            }
            RunEvent::Done { group, outcome } => {
                let Some(slot) = self.slots.get_mut(group) else {
                    return;
                };
                let (state, failure) = outcome_state(&slot.group, &outcome);
                tracing::info!(group, from = ?slot.state, to = ?state, "group transition");
                if let Some(f) = &failure {
                    tracing::error!(group, "{f}");
                    slot.last_failure = failure;
                }
                slot.state = state;
                self.heartbeat_due = true;
            }
        }
    }

    /// At start, a group with a resource still active here (an agent
    /// killed while holding it: its address, mount or Primary role stays
    /// behind) is stopped first, right to left, so the node starts clean
    /// and never answers for an address the peer now holds. This runs
    /// before the first heartbeat, so the peer never sees this node holding
    /// a group it is only cleaning up (which would count as both holding
    /// it). The policy starts it again if this node is to hold it.
    async fn stop_leftovers(&mut self) {
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots.get(i) else {
                continue;
            };
            let mut active = Vec::new();
            for r in &slot.group.resources {
                if matches!(resource::status(&self.env, r).await, Ok(true)) {
                    active.push(r.to_string());
                }
            }
            if !active.is_empty() {
                tracing::warn!(
                    group = i,
                    "active at start (left by an earlier agent): {}; stopping the group first",
                    active.join(", ")
                );
                let resources = slot.group.resources.clone();
                if let Some(s) = self.slots.get_mut(i) {
                    s.state = GroupState::Stopping;
                }
                let (tx, mut rx) = mpsc::unbounded_channel();
                group::run(self.env.clone(), i, resources, Direction::Stop, tx).await;
                while let Ok(ev) = rx.try_recv() {
                    self.on_run_event(ev);
                }
            }
        }
    }

    fn begin_shutdown(&mut self, why: &str) {
        if self.shutting_down {
            tracing::warn!("{why} again: exiting without waiting for the groups to stop");
            std::process::exit(1);
        }
        tracing::info!("{why}: standing by and stopping every group before exiting");
        self.shutting_down = true;
        self.node.set_mode(Mode::Standby);
        self.heartbeat_due = true;
        self.evaluate();
    }

    /// At the end of a shutdown: an error naming every group whose stop
    /// failed.
    fn exit_result(&self) -> Result<(), RunError> {
        let failed: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == GroupState::StopFailed)
            .map(|(i, s)| {
                format!(
                    "group {}: {}",
                    i + 1,
                    s.last_failure.clone().unwrap_or_default()
                )
            })
            .collect();
        if !failed.is_empty() {
            return Err(RunError::StopFailed(failed.join("; ")));
        }
        tracing::info!("every group is stopped; the agent exits");
        Ok(())
    }

    fn all_released(&self) -> bool {
        self.slots.iter().all(|s| {
            !matches!(
                s.state,
                GroupState::Running | GroupState::Starting | GroupState::Stopping
            )
        })
    }
}

/// A group's state after a run, and the failure to report (which resource,
/// numbered from 1 as written, and why).
fn outcome_state(group: &Group, outcome: &Outcome) -> (GroupState, Option<String>) {
    let named = |k: usize, what: &str, message: &str| {
        let name = group
            .resources
            .get(k)
            .map(|r| r.to_string())
            .unwrap_or_default();
        format!("resource {} ({name}) failed to {what}: {message}", k + 1)
    };
    match outcome {
        Outcome::Started => (GroupState::Running, None),
        Outcome::Stopped => (GroupState::Stopped, None),
        Outcome::StartFailed(f) => (
            GroupState::StartFailed,
            Some(format!(
                "{}; the group was stopped again",
                named(f.resource, "start", &f.message)
            )),
        ),
        Outcome::StopFailed { start, stops } => {
            let all: Vec<String> = start
                .iter()
                .map(|f| named(f.resource, "start", &f.message))
                .chain(stops.iter().map(|f| named(f.resource, "stop", &f.message)))
                .collect();
            (
                GroupState::StopFailed,
                Some(format!(
                    "{}; resources may still be active here: clean up, then restart the agent",
                    all.join("; ")
                )),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadisk_agent::plan::Failure;

    #[test]
    fn failures_name_the_resource_and_why() {
        let hr = hadisk_config::ha::parse_haresources(
            "alpha hadisk::data Filesystem::/dev/x::/srv::ext4 nfs",
            Path::new("haresources"),
        )
        .unwrap();
        let g = &hr.groups[0];
        let f = |resource: usize, m: &str| Failure {
            resource,
            message: m.to_owned(),
        };
        assert_eq!(
            outcome_state(g, &Outcome::Started),
            (GroupState::Running, None)
        );
        assert_eq!(
            outcome_state(g, &Outcome::StartFailed(f(2, "exit 1"))),
            (
                GroupState::StartFailed,
                Some(
                    "resource 3 (nfs) failed to start: exit 1; the group was stopped again".into()
                )
            )
        );
        assert_eq!(
            outcome_state(
                g,
                &Outcome::StopFailed {
                    start: Some(f(2, "exit 1")),
                    stops: vec![f(1, "busy")]
                }
            ),
            (
                GroupState::StopFailed,
                Some("resource 3 (nfs) failed to start: exit 1; resource 2 (Filesystem::/dev/x::/srv::ext4) failed to stop: busy; resources may still be active here: clean up, then restart the agent".into())
            )
        );
    }

    #[test]
    fn rate_limit_admits_the_first_then_one_per_interval() {
        let mut r = RateLimit::default();
        assert_eq!(r.admit(0), Some(0));
        assert_eq!(r.admit(1), None);
        assert_eq!(r.admit(LOG_EVERY_MS - 1), None);
        assert_eq!(r.admit(LOG_EVERY_MS), Some(2));
        assert_eq!(r.admit(LOG_EVERY_MS + 1), None);
    }
}
