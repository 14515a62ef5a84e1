//! The daemon's side of the control socket: a bounded accept loop that reads
//! one JSON request per connection and writes one JSON answer.
//!
//! Invariants: the socket file is mode 0600 (only root administers the
//! replicator); a stale socket left by a killed daemon is replaced, but a live
//! daemon's socket is never stolen; a client that sends garbage gets an error
//! answer and the daemon goes on.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use crate::control::{Request, Response, MAX_REQUEST_BYTES};

use super::Daemon;

/// Control connections served at once; administration is rare, a flood is abuse.
const MAX_CONTROL_CONNECTIONS: usize = 64;

/// Name of the lock file next to the control socket: held (flock) for the
/// daemon's lifetime, so that two daemons started at once cannot both
/// decide the socket is stale.
pub const LOCK_FILE: &str = "hadisk.lock";

/// The daemon's claim on a run directory; released when the process exits.
#[derive(Debug)]
pub struct RunDirLock {
    _file: std::fs::File,
}

/// Takes the run directory's lock, or says which daemon holds it.
pub fn lock_run_dir(run_dir: &Path, socket: &Path) -> anyhow::Result<RunDirLock> {
    use std::os::fd::AsRawFd;
    let path = run_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor this function owns for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(already_running(socket));
        }
        return Err(e).with_context(|| format!("locking {}", path.display()));
    }
    Ok(RunDirLock { _file: file })
}

fn already_running(socket: &Path) -> String {
    format!(
        "another hadisk daemon is already running (its control socket {} answers); stop it first",
        socket.display()
    )
}

/// Binds the control socket, replacing a stale one. The socket appears
/// under its name already listening and with mode 0600: it is bound under
/// a temporary name, chmod-ed, then renamed (atomic), so a client never
/// sees a socket that refuses or is open to everyone.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(already_running(path));
            }
            info!(path = %path.display(), "replacing the stale control socket of a daemon that did not stop cleanly");
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; remove it or choose another --run-dir",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary)
        .with_context(|| format!("binding the control socket {}", temporary.display()))?;
    let prepared = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("creating the control socket {}", path.display()));
    }
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
