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
use hadisk_agent::replay::{Fresh, Rejected};
use hadisk_agent::replication::replicated_resources;
use hadisk_agent::wire::{Mode, MAX_MESSAGE_BYTES};
use hadisk_config::ha::Group;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::control::{self, AgentRequest, AgentResponse, AgentStatus, GroupStatus, ResourceView};
use crate::files::{FilesError, HaFiles};
use crate::group::{self, Direction, ResourceState, RunEvent};
use crate::ping::{self, Pinger};
use crate::resource::{Env, Replicator};
use crate::transport::{Transport, TransportError};

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
    let files = HaFiles::load(&opts.ha_dir, &opts.node)?;
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
    let transport = Transport::open(&files.hacf)?;
    let ping_ips = ping::resolve(&files.hacf.ping).map_err(RunError::Setup)?;
    let pinger = if ping_ips.is_empty() {
        None
    } else {
        Some(Pinger::open().map_err(|e| {
            RunError::Setup(format!("cannot open a raw ICMP socket for the ping nodes: {e} (the agent must run as root, or with CAP_NET_RAW)"))
        })?)
    };
    let listener = control::bind(&opts.run_dir)?;
    let generation = next_generation(&opts.run_dir);
    let node = Node::new(&files.hacf, &files.haresources, &opts.node, generation, 0)
        .map_err(|e| RunError::Setup(e.to_string()))?;
    let garp = crate::garp::detect().await;
    let env = Env {
        ha_dir: opts.ha_dir.clone(),
        replicator: Arc::clone(&opts.replicator),
        garp,
    };
    let slots: Vec<Slot> = files
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
        .collect();
    let clock = Instant::now();
    let keepalive = Duration::from_millis(files.hacf.keepalive_ms.max(1));
    let names: Vec<String> = slots.iter().flat_map(|s| s.replicated.clone()).collect();
    let (gates_tx, gates) = watch::channel((0u64, Gates::new()));
    if !names.is_empty() {
        tokio::spawn(poll_gates(
            Arc::clone(&opts.replicator),
            names,
            keepalive,
            clock,
            gates_tx,
        ));
    }
    let (runs, mut run_rx) = mpsc::unbounded_channel();
    let (ctl_tx, mut ctl_rx) = mpsc::channel(control::REQUEST_QUEUE);
    tokio::spawn(control::serve(listener, ctl_tx));
    let mut sigterm = signal(SignalKind::terminate())
        .map_err(|e| RunError::Setup(format!("SIGTERM handler: {e}")))?;
    let mut sigint = signal(SignalKind::interrupt())
        .map_err(|e| RunError::Setup(format!("SIGINT handler: {e}")))?;

    tracing::info!(
        node = %opts.node,
        peer = node.peer(),
        paths = %transport.paths.iter().map(|p| p.label.as_str()).collect::<Vec<_>>().join(", "),
        ping = ping_ips.len(),
        keepalive_ms = files.hacf.keepalive_ms,
        deadtime_ms = files.hacf.deadtime_ms,
        initdead_ms = files.hacf.initdead_ms,
        arping = %garp,
        "hadisk agent started"
    );
    let mut r = Runner {
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
    let mut tick = tokio::time::interval(keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = [0u8; MAX_MESSAGE_BYTES + 1];
    loop {
        let ping_reply = async {
            match &pinger {
                Some(p) => p.reply().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                r.heartbeat_due = true;
                if let Some(p) = &pinger {
                    r.send_pings(p);
                }
                r.evaluate();
            }
            got = transport.recv(&mut buf) => match got {
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
            Some(ev) = run_rx.recv() => {
                r.on_run_event(ev);
                r.evaluate();
            }
            Some(inc) = ctl_rx.recv() => {
                let response = r.answer(inc.request);
                let _ = inc.reply.send(response);
                r.evaluate();
            }
            _ = sigterm.recv() => r.begin_shutdown("SIGTERM"),
            _ = sigint.recv() => r.begin_shutdown("SIGINT"),
        }
        if r.heartbeat_due {
            r.heartbeat_due = false;
            r.send_heartbeat(&transport).await;
        }
        if r.shutting_down && r.all_released() {
            // Tell the peer twice (one may be lost) that nothing is held.
            r.send_heartbeat(&transport).await;
            r.send_heartbeat(&transport).await;
            let failed: Vec<String> = r
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
            return Ok(());
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
            // Broadcast loops back to the sender: not worth a line.
            Err(Rejected::Own) => false,
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
                let name = |k: usize| {
                    slot.group
                        .resources
                        .get(k)
                        .map(|r| r.to_string())
                        .unwrap_or_default()
                };
                let (state, failure) = match &outcome {
                    Outcome::Started => (GroupState::Running, None),
                    Outcome::Stopped => (GroupState::Stopped, None),
                    Outcome::StartFailed(f) => (
                        GroupState::StartFailed,
                        Some(format!(
                            "resource {} ({}) failed to start: {}; the group was stopped again",
                            f.resource + 1,
                            name(f.resource),
                            f.message
                        )),
                    ),
                    Outcome::StopFailed { start, stops } => {
                        let mut m: Vec<String> = stops
                            .iter()
                            .map(|f| {
                                format!(
                                    "resource {} ({}) failed to stop: {}",
                                    f.resource + 1,
                                    name(f.resource),
                                    f.message
                                )
                            })
                            .collect();
                        if let Some(f) = start {
                            m.insert(
                                0,
                                format!(
                                    "resource {} ({}) failed to start: {}",
                                    f.resource + 1,
                                    name(f.resource),
                                    f.message
                                ),
                            );
                        }
                        (GroupState::StopFailed, Some(format!("{}; resources may still be active here: clean up, then restart the agent", m.join("; "))))
                    }
                };
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

    fn all_released(&self) -> bool {
        self.slots.iter().all(|s| {
            !matches!(
                s.state,
                GroupState::Running | GroupState::Starting | GroupState::Stopping
            )
        })
    }

    fn answer(&mut self, request: AgentRequest) -> AgentResponse {
        let ok = |message: String| AgentResponse {
            ok: true,
            message,
            status: None,
        };
        match request {
            AgentRequest::Status => AgentResponse {
                ok: true,
                message: String::new(),
                status: Some(self.status()),
            },
            AgentRequest::Standby => {
                self.node.set_mode(Mode::Standby);
                self.heartbeat_due = true;
                tracing::info!("standby requested: the groups go to the peer while it is alive");
                ok(format!(
                    "{}: standby; the groups go to {} while it is alive",
                    self.files_me(),
                    self.node.peer()
                ))
            }
            AgentRequest::Takeover => {
                self.node.set_mode(Mode::Takeover);
                for s in &mut self.slots {
                    if s.state == GroupState::StartFailed {
                        s.state = GroupState::Stopped;
                    }
                }
                self.heartbeat_due = true;
                tracing::info!("takeover requested: the groups come to this node");
                ok(format!(
                    "{}: takeover; the groups come to this node",
                    self.files_me()
                ))
            }
            AgentRequest::Auto => {
                self.node.set_mode(Mode::Auto);
                self.heartbeat_due = true;
                tracing::info!("auto requested: the groups go where the policy says");
                ok(format!("{}: auto", self.files_me()))
            }
        }
    }

    fn files_me(&self) -> String {
        self.files
            .hacf
            .nodes
            .iter()
            .find(|n| !n.eq_ignore_ascii_case(self.node.peer()))
            .cloned()
            .unwrap_or_default()
    }

    fn status(&self) -> AgentStatus {
        let now = self.now_ms();
        let me = self.files_me();
        let heard = self.node.peer_heard();
        let peer_alive = self.last.as_ref().is_some_and(|d| d.peer.is_alive());
        let groups = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let peer_holds =
                    peer_alive && heard.is_some_and(|h| i < 16 && h.held & (1 << i) != 0);
                let holder = if s.state.held() {
                    me.clone()
                } else if peer_holds {
                    self.node.peer().to_owned()
                } else {
                    "nobody".to_owned()
                };
                GroupStatus {
                    index: i,
                    preferred: s.group.node.clone(),
                    state: format!("{:?}", s.state),
                    holder,
                    reason: s.reason.clone(),
                    last_failure: s.last_failure.clone(),
                    resources: s
                        .group
                        .resources
                        .iter()
                        .zip(&s.resources)
                        .map(|(r, st)| ResourceView {
                            name: r.to_string(),
                            state: st.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        AgentStatus {
            node: me,
            mode: self.node.mode().to_string(),
            peer: self.node.peer().to_owned(),
            peer_liveness: self
                .last
                .as_ref()
                .map(|d| match d.peer {
                    Liveness::Alive => "Alive".to_owned(),
                    Liveness::Late { .. } => "Late".to_owned(),
                    Liveness::Dead { .. } => "Dead".to_owned(),
                    Liveness::Waiting { .. } => "Waiting".to_owned(),
                })
                .unwrap_or_else(|| "Waiting".to_owned()),
            peer_last_heartbeat_age_ms: heard.map(|h| now.saturating_sub(h.last_seen_ms)),
            peer_mode: heard.map(|h| h.mode.to_string()),
            ping: self
                .last
                .as_ref()
                .map(|d| format!("{:?}", d.ping))
                .unwrap_or_else(|| "Waiting".to_owned()),
            rejected_datagrams: self.rejected,
            groups,
        }
    }
}
