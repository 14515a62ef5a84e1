//! The control socket protocol between the CLI and the daemon.
//!
//! One JSON object per line each way: the CLI writes one [`Request`] and reads
//! one [`Response`], then closes. JSON keeps the socket debuggable with
//! `socat` and lets scripts talk to the daemon without the CLI. A request is
//! bounded by [`MAX_REQUEST_BYTES`] so a misbehaving client cannot make the
//! daemon buffer without limit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::status::StatusReport;

/// Name of the control socket inside the run directory.
pub const CONTROL_SOCKET: &str = "hadisk.sock";

/// Largest request line the daemon accepts; real requests are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How long the CLI waits for the daemon's answer. Generous, because `up --wait`
/// waits for the peer up to the configured wfc-timeout; the daemon itself bounds
/// every command, so this only catches a wedged daemon.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(3600);

/// What the CLI asks of the daemon. The CLI sends its own `--config` and
/// `--node` so the daemon reads the same resource files the user named.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Up {
        resource: String,
        config: PathBuf,
        node: String,
        wait: bool,
    },
    Down {
        resource: String,
    },
    Primary {
        resource: String,
        force: bool,
    },
    Secondary {
        resource: String,
    },
    Connect {
        resource: String,
        discard_my_data: bool,
    },
    Disconnect {
        resource: String,
    },
    Invalidate {
        resource: String,
    },
    InvalidateRemote {
        resource: String,
    },
    Verify {
        resource: String,
    },
    PauseSync {
        resource: String,
    },
    ResumeSync {
        resource: String,
    },
    Status {
        resource: Option<String>,
    },
}

/// The daemon's answer: `ok` with an optional message, or the reason it refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: message.into(),
            status: None,
        }
    }
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            message: message.into(),
            status: None,
        }
    }
}

/// Why the CLI could not get an answer from the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not running: the one line DESIGN.md §1.1 asks for.
    #[error("the hadisk daemon is not running (no control socket at {path}); start it with `hadisk daemon` (systemd: `systemctl start hadisk`)")]
    NotRunning { path: PathBuf },
    #[error("talking to the hadisk daemon at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the hadisk daemon at {path} sent an answer that is not valid: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
}

/// Sends one request to the daemon listening in `run_dir` and returns its answer.
pub fn call(run_dir: &Path, request: &Request) -> Result<Response, ClientError> {
    let path = run_dir.join(CONTROL_SOCKET);
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning { path });
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::BadAnswer {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(ClientError::BadAnswer {
            path,
            reason: "the daemon closed the connection without answering (see its log)".into(),
        });
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::BadAnswer {
        path,
        reason: e.to_string(),
    })
}
