//! The daemon's side of the control socket: a bounded accept loop that reads
//! one JSON request per connection and writes one JSON answer.
//!
//! Invariants: the socket file is mode 0600 (only root administers the
//! replicator); a stale socket left by a killed daemon is replaced, but a live
//! daemon's socket is never stolen; a client that sends garbage gets an error
//! answer and the daemon goes on.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use crate::control::{Request, Response, MAX_REQUEST_BYTES};

use super::Daemon;

/// Control connections served at once; administration is rare, a flood is abuse.
const MAX_CONTROL_CONNECTIONS: usize = 64;

/// Binds the control socket, replacing a stale one.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "another hadisk daemon is already running (its control socket {} answers); stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale control socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", path.display()))?;
    Ok(listener)
}

/// Serves control connections until `shutdown` turns true.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    daemon: Arc<Daemon>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        warn!("too many control connections; dropping one");
                        continue;
                    };
                    let daemon = daemon.clone();
                    tokio::spawn(async move {
                        handle(stream, daemon).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle(stream: UnixStream, daemon: Arc<Daemon>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64);
    let mut line = String::new();
    let response = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) if !line.ends_with('\n') => Response::refused(format!(
            "control request longer than {MAX_REQUEST_BYTES} bytes or not newline-terminated"
        )),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                debug!(?req, "control request");
                daemon.handle(req).await
            }
            Err(e) => Response::refused(format!("malformed control request: {e}")),
        },
        Err(e) => Response::refused(format!("reading the control request: {e}")),
    };
    let mut out = match serde_json::to_vec(&response) {
        Ok(v) => v,
        Err(e) => {
            warn!(error = %e, "cannot encode a control answer");
            return;
        }
    };
    out.push(b'\n');
    if let Err(e) = write.write_all(&out).await {
        debug!(error = %e, "control client went away before the answer");
    }
}
