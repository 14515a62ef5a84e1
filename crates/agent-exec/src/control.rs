//! The agent's control socket, `RUN_DIR/agent.sock` (mode 600): one JSON
//! request line in, one JSON response line out, as the daemon's
//! `hadisk.sock`. `hadisk agent status|standby|takeover` are its clients.
//!
//! The server side only parses and forwards: the runner answers, so the
//! state it reports is the state it acts on.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::group::ResourceState;

/// The socket's name inside the run directory.
pub const AGENT_SOCKET: &str = "agent.sock";
/// The longest request line (real ones are a few dozen bytes).
pub const MAX_REQUEST_BYTES: usize = 4096;
/// How long a client waits for the agent's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued to the runner at most; more wait in the kernel's backlog.
pub const REQUEST_QUEUE: usize = 16;

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum AgentRequest {
    /// The agent's view.
    Status,
    /// hb_standby: hand the groups to the peer.
    Standby,
    /// hb_takeover: take the groups (also clears a failed start).
    Takeover,
    /// Back to the automatic policy.
    Auto,
}

/// One resource in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    /// As written in haresources.
    pub name: String,
    /// Its state here.
    pub state: ResourceState,
}

/// One group in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Index in haresources.
    pub index: usize,
    /// The preferred node.
    pub preferred: String,
    /// Its state here (Stopped, Starting, Running, Stopping, StartFailed, StopFailed).
    pub state: String,
    /// Who holds it: this node's name, the peer's, or "nobody".
    pub holder: String,
    /// The policy's latest reason.
    pub reason: String,
    /// The last failure (which resource, why).
    pub last_failure: Option<String>,
    /// The resources, in start order.
    pub resources: Vec<ResourceView>,
}

/// The agent's view, as `hadisk agent status` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// This node.
    pub node: String,
    /// This node's mode (auto, standby, takeover).
    pub mode: String,
    /// The peer.
    pub peer: String,
    /// The peer as judged now (Alive, Late, Dead, Waiting).
    pub peer_liveness: String,
    /// Milliseconds since the peer's last accepted heartbeat (none: never).
    pub peer_last_heartbeat_age_ms: Option<u64>,
    /// The peer's mode as its heartbeat says.
    pub peer_mode: Option<String>,
    /// Ping nodes together (NotConfigured, Reachable, Waiting, Unreachable).
    pub ping: String,
    /// Datagrams dropped (bad signature, stranger, replay) since start.
    pub rejected_datagrams: u64,
    /// The groups.
    pub groups: Vec<GroupStatus>,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentResponse {
    /// Done / refused.
    pub ok: bool,
    /// A line for the user.
    #[serde(default)]
    pub message: String,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
}

/// A request with the way back to its client.
#[derive(Debug)]
pub struct Incoming {
    /// The request.
    pub request: AgentRequest,
    /// Where the runner answers.
    pub reply: oneshot::Sender<AgentResponse>,
}

/// Why the control socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another agent answers on the socket.
    #[error(
        "another hadisk agent is already running (its control socket {0} answers); stop it first"
    )]
    Running(PathBuf),
    /// A socket call failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds `run_dir/agent.sock` (replacing a stale one, refusing a live one),
/// mode 600.
pub fn bind(run_dir: &Path) -> Result<UnixListener, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let path = run_dir.join(AGENT_SOCKET);
    let io = |source| ServeError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(run_dir).map_err(io)?;
    if UnixStream::connect(&path).is_ok() {
        return Err(ServeError::Running(path));
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Accepts clients forever, forwarding each request to `tx`.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("agent control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Err(e) = client(stream, tx).await {
                tracing::debug!("agent control client: {e}");
            }
        });
    }
}

async fn client(stream: tokio::net::UnixStream, tx: mpsc::Sender<Incoming>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(r).take(MAX_REQUEST_BYTES as u64);
    reader.read_line(&mut line).await?;
    let response = match serde_json::from_str::<AgentRequest>(line.trim()) {
        Err(e) => AgentResponse {
            ok: false,
            message: format!("bad request: {e}"),
            status: None,
        },
        Ok(request) => {
            let (reply, rx) = oneshot::channel();
            if tx.send(Incoming { request, reply }).await.is_err() {
                return Ok(());
            }
            match rx.await {
                Ok(r) => r,
                Err(_) => return Ok(()),
            }
        }
    };
    let mut text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
    text.push('\n');
    w.write_all(text.as_bytes()).await?;
    w.shutdown().await
}

use tokio::io::AsyncReadExt as _;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing listens.
    #[error("the hadisk agent is not running (no control socket at {0}); start it with `hadisk agent` (systemd: `systemctl start hadisk-agent`)")]
    NotRunning(PathBuf),
    /// The exchange failed.
    #[error("agent control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Sends `request` to the agent of `run_dir` and reads its answer
/// (blocking: the CLI is synchronous).
pub fn call(run_dir: &Path, request: AgentRequest) -> Result<AgentResponse, CallError> {
    let path = run_dir.join(AGENT_SOCKET);
    let io = |source| CallError::Io {
        path: path.clone(),
        source,
    };
    let mut s = UnixStream::connect(&path).map_err(|_| CallError::NotRunning(path.clone()))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut text = serde_json::to_string(&request).map_err(|e| io(std::io::Error::other(e)))?;
    text.push('\n');
    s.write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(io)?;
    serde_json::from_str(line.trim()).map_err(|e| io(std::io::Error::other(e)))
}
