//! `hadisk agent`: the failover agent in the foreground, and its client
//! commands `agent status|standby|takeover|auto`.
//!
//! The agent itself lives in `hadisk-agent` (pure policy) and
//! `hadisk-agent-exec` (tokio executor); this module is glue: it gives the
//! executor the daemon through the daemon's own control client
//! ([`ControlReplicator`]), so the agent and `hadisk primary`/`secondary`
//! speak one protocol, and prints what the agent's control socket answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use hadisk_agent::replication::ReplicaView;
use hadisk_agent_exec::control::{call, GroupStatus};
use hadisk_agent_exec::group::ResourceState;
use hadisk_agent_exec::{AgentOptions, AgentRequest, AgentStatus, Replicator};

use crate::cli::{AgentAction, GlobalOpts};
use crate::control::{self, Request};

/// Worker threads of the agent's runtime: one loop, short group runs and
/// blocking daemon calls; two are plenty.
pub const AGENT_WORKERS: usize = 2;

/// Runs `hadisk agent [ACTION]`.
pub fn run(g: &GlobalOpts, ha_dir: PathBuf, action: Option<AgentAction>) -> Result<()> {
    match action {
        None => foreground(g, ha_dir),
        Some(AgentAction::Status { json }) => {
            let status = ask(&g.run_dir, AgentRequest::Status)?
                .status
                .context("the agent answered a status request without a status")?;
            if json {
                crate::emit(&format!("{}\n", serde_json::to_string_pretty(&status)?))?;
            } else {
                crate::emit(&render(&status))?;
            }
            Ok(())
        }
        Some(AgentAction::Standby) => say(&g.run_dir, AgentRequest::Standby),
        Some(AgentAction::Takeover) => say(&g.run_dir, AgentRequest::Takeover),
        Some(AgentAction::Auto) => say(&g.run_dir, AgentRequest::Auto),
    }
}

fn ask(run_dir: &Path, request: AgentRequest) -> Result<hadisk_agent_exec::AgentResponse> {
    let response = call(run_dir, request)?;
    if !response.ok {
        anyhow::bail!("{}", response.message);
    }
    Ok(response)
}

fn say(run_dir: &Path, request: AgentRequest) -> Result<()> {
    let response = ask(run_dir, request)?;
    if !response.message.is_empty() {
        crate::emit(&format!("{}\n", response.message))?;
    }
    Ok(())
}

fn foreground(g: &GlobalOpts, ha_dir: PathBuf) -> Result<()> {
    let node = crate::node_name(g)?;
    let replicator = Arc::new(ControlReplicator {
        run_dir: g.run_dir.clone(),
    });
    let opts = AgentOptions {
        ha_dir,
        run_dir: g.run_dir.clone(),
        node,
        replicator,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(AGENT_WORKERS)
        .enable_all()
        .build()
        .context("cannot start the agent's runtime")?;
    rt.block_on(hadisk_agent_exec::run(opts))?;
    Ok(())
}

/// The daemon, through its control socket in the run directory.
#[derive(Debug)]
pub struct ControlReplicator {
    run_dir: PathBuf,
}

impl ControlReplicator {
    fn request(&self, request: &Request) -> Result<control::Response, String> {
        let response = control::call(&self.run_dir, request).map_err(|e| e.to_string())?;
        if response.ok {
            Ok(response)
        } else {
            Err(response.message)
        }
    }
}

impl Replicator for ControlReplicator {
    fn status(&self, resource: &str) -> Result<ReplicaView, String> {
        let response = self.request(&Request::Status {
            resource: Some(resource.to_owned()),
        })?;
        let report = response
            .status
            .ok_or_else(|| "the daemon answered a status request without a status".to_owned())?;
        let r = report
            .resources
            .iter()
            .find(|r| r.name == resource)
            .ok_or_else(|| {
                format!("the daemon has no resource '{resource}' up; run `hadisk up {resource}`")
            })?;
        ReplicaView::from_names(
            &r.role,
            &r.disk,
            &r.peer.connection,
            &r.peer.role,
            &r.peer.disk,
            &r.peer.replication,
        )
        .map_err(|e| e.to_string())
    }

    fn promote(&self, resource: &str) -> Result<(), String> {
        self.request(&Request::Primary {
            resource: resource.to_owned(),
            force: false,
        })
        .map(|_| ())
    }

    fn demote(&self, resource: &str) -> Result<(), String> {
        self.request(&Request::Secondary {
            resource: resource.to_owned(),
        })
        .map(|_| ())
    }
}

fn resource_state(s: &ResourceState) -> String {
    match s {
        ResourceState::Stopped => "stopped".to_owned(),
        ResourceState::Starting => "starting".to_owned(),
        ResourceState::Started => "started".to_owned(),
        ResourceState::Stopping => "stopping".to_owned(),
        ResourceState::StartFailed(why) => format!("start failed: {why}"),
        ResourceState::StopFailed(why) => format!("stop failed: {why}"),
    }
}

fn render_group(g: &GroupStatus, out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "  group {} (preferred {}): {} here, held by {} — {}",
        g.index + 1,
        g.preferred,
        g.state,
        g.holder,
        g.reason
    );
    if let Some(f) = &g.last_failure {
        let _ = writeln!(out, "    last failure: {f}");
    }
    for r in &g.resources {
        let _ = writeln!(out, "    {} {}", r.name, resource_state(&r.state));
    }
}

/// `hadisk agent status` as text.
pub fn render(s: &AgentStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} mode:{}", s.node, s.mode);
    let heard = match s.peer_last_heartbeat_age_ms {
        Some(ms) => format!("last heartbeat {ms} ms ago"),
        None => "never heard".to_owned(),
    };
    let _ = writeln!(
        out,
        "  peer {}: {} ({heard}{})",
        s.peer,
        s.peer_liveness,
        s.peer_mode
            .as_deref()
            .map(|m| format!(", mode {m}"))
            .unwrap_or_default()
    );
    let _ = writeln!(out, "  ping nodes: {}", s.ping);
    if s.rejected_datagrams > 0 {
        let _ = writeln!(
            out,
            "  dropped datagrams: {} (bad signature, stranger or replay; see the log)",
            s.rejected_datagrams
        );
    }
    for g in &s.groups {
        render_group(g, &mut out);
    }
    out
}
