//! The listeners and the table of connected clients.
//!
//! Invariants:
//! - every accepted connection has one entry in the client table from accept
//!   to its end; the entry names the export once the client has opened one
//!   (it is marked *before* the registry's `open`, see
//!   [`crate::ExportRegistry::open`]), which is what [`Server::client_count`]
//!   counts;
//! - at most [`MAX_CONNECTIONS`] connections are served at once; further
//!   clients wait in the listen backlog;
//! - one client's failure (protocol violation, socket error) never affects
//!   another: each connection is its own task and logs its own end;
//! - [`Server::shutdown`] stops accepting, refuses new exports, asks every
//!   connection to close (each finishes its in-flight requests and flushes),
//!   and returns when all are gone.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{info, warn, Instrument};

use crate::connection;
use crate::volume::ExportRegistry;

/// Connections served at once. Each costs a task, a socket and up to
/// [`crate::MAX_IN_FLIGHT_BYTES`] of buffers; beyond this, clients wait in the
/// kernel's backlog instead of exhausting descriptors or memory.
pub const MAX_CONNECTIONS: usize = 1024;

/// Pause after a failed `accept` (e.g. out of descriptors) before retrying,
/// so the loop does not spin.
const ACCEPT_BACKOFF_MS: u64 = 100;

/// Errors setting up a listener.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another live server answers on the socket path.
    #[error("{path} is in use by a running server; stop it first")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket; it is not replaced.
    #[error("{path} exists and is not a socket; remove it or choose another path")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Binding or preparing the Unix socket failed.
    #[error("cannot listen on {path}: {source}")]
    Unix {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Binding the TCP socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: io::Error,
    },
}

struct ClientEntry {
    export: Option<String>,
    close: watch::Sender<bool>,
}

pub(crate) struct Shared {
    pub(crate) registry: Arc<dyn ExportRegistry>,
    clients: Mutex<BTreeMap<u64, ClientEntry>>,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    stop_accepting: watch::Sender<bool>,
    client_gone: Notify,
    connection_slots: Arc<Semaphore>,
    unix_paths: Mutex<Vec<PathBuf>>,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, BTreeMap<u64, ClientEntry>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove/assign operations), so poisoning is ignored.
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_export(&self, id: u64, export: Option<&str>) {
        if let Some(entry) = self.clients().get_mut(&id) {
            entry.export = export.map(str::to_owned);
        }
    }

    fn register(&self) -> (u64, watch::Receiver<bool>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(self.is_shutting_down());
        self.clients().insert(
            id,
            ClientEntry {
                export: None,
                close,
            },
        );
        (id, closed)
    }

    fn unregister(&self, id: u64) {
        self.clients().remove(&id);
        self.client_gone.notify_waiters();
    }
}

/// The NBD server: listeners plus the client table. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("clients", &self.shared.clients().len())
            .finish()
    }
}

impl Server {
    /// A server answering from `registry`; add listeners with
    /// [`Self::listen_unix`] / [`Self::listen_tcp`].
    pub fn new(registry: Arc<dyn ExportRegistry>) -> Server {
        let (stop_accepting, _) = watch::channel(false);
        Server {
            shared: Arc::new(Shared {
                registry,
                clients: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
                stop_accepting,
                client_gone: Notify::new(),
                connection_slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
                unix_paths: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Listens on a Unix socket (mode 0600) and serves it until shutdown.
    ///
    /// A stale socket left by a killed server is replaced; a live one is an
    /// error. Must be called inside a tokio runtime.
    pub fn listen_unix(&self, path: impl AsRef<Path>) -> Result<(), ServerError> {
        let path = path.as_ref().to_path_buf();
        let listener = bind_unix(&path)?;
        if let Ok(mut paths) = self.shared.unix_paths.lock() {
            paths.push(path.clone());
        }
        let shared = Arc::clone(&self.shared);
        let label = path.display().to_string();
        let listener = Arc::new(listener);
        tokio::spawn(accept_loop(shared, label, move || {
            let listener = Arc::clone(&listener);
            async move {
                let (stream, _) = listener.accept().await?;
                crate::busy_poll::watch(stream.as_raw_fd());
                let (reader, writer) = stream.into_split();
                Ok((reader, writer, "unix".to_owned()))
            }
        }));
        Ok(())
    }

    /// Listens on TCP and serves it until shutdown; returns the bound address.
    pub async fn listen_tcp(&self, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Tcp { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServerError::Tcp { addr, source })?;
        let shared = Arc::clone(&self.shared);
        let listener = Arc::new(listener);
        tokio::spawn(accept_loop(shared, local.to_string(), move || {
            let listener = Arc::clone(&listener);
            async move {
                let (stream, peer) = listener.accept().await?;
                // Replies are already batched; Nagle would only add latency.
                stream.set_nodelay(true)?;
                crate::busy_poll::watch(stream.as_raw_fd());
                let (reader, writer) = stream.into_split();
                Ok((reader, writer, peer.to_string()))
            }
        }));
        Ok(local)
    }

    /// Clients currently connected to `export` (in transmission, or opening it).
    pub fn client_count(&self, export: &str) -> usize {
        self.shared
            .clients()
            .values()
            .filter(|c| c.export.as_deref() == Some(export))
            .count()
    }

    /// Asks every client of `export` to close: each finishes its in-flight
    /// requests, the volume is flushed, then the socket closes. Returns how
    /// many were asked; poll [`Self::client_count`] to see them go.
    pub fn disconnect_clients(&self, export: &str) -> usize {
        let clients = self.shared.clients();
        let mut asked = 0;
        for entry in clients
            .values()
            .filter(|c| c.export.as_deref() == Some(export))
        {
            entry.close.send_replace(true);
            asked += 1;
        }
        asked
    }

    /// Graceful shutdown: stop accepting, refuse new exports, let every
    /// connection finish its in-flight requests and flush, then return.
    pub async fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.shared.stop_accepting.send_replace(true);
        loop {
            let gone = self.shared.client_gone.notified();
            {
                let clients = self.shared.clients();
                if clients.is_empty() {
                    break;
                }
                for entry in clients.values() {
                    entry.close.send_replace(true);
                }
            }
            gone.await;
        }
        let paths = match self.shared.unix_paths.lock() {
            Ok(mut paths) => std::mem::take(&mut *paths),
            Err(_) => Vec::new(),
        };
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `path` with mode 0600 from the first moment: bind a private
/// temporary name, chmod, then rename over the final path (atomic).
fn bind_unix(path: &Path) -> Result<UnixListener, ServerError> {
    let unix_err = |source| ServerError::Unix {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
            info!(path = %path.display(), "replacing stale socket");
        }
        Ok(_) => {
            return Err(ServerError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unix_err(e)),
    }
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let _ = std::fs::remove_file(&temporary);
    let listener = UnixListener::bind(&temporary).map_err(unix_err)?;
    let prepared = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&temporary);
        return Err(unix_err(e));
    }
    Ok(listener)
}

async fn accept_loop<A, F, R, W>(shared: Arc<Shared>, label: String, mut accept: A)
where
    A: FnMut() -> F,
    F: std::future::Future<Output = io::Result<(R, W, String)>>,
    R: crate::splice::SpliceRead,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shared.stop_accepting.subscribe();
    info!(listener = %label, "NBD server listening");
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&shared.connection_slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let accepted = tokio::select! {
            accepted = accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let (reader, writer, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(listener = %label, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
                continue;
            }
        };
        let (id, close) = shared.register();
        let shared = Arc::clone(&shared);
        let span = tracing::info_span!("nbd", client = id, peer = %peer);
        tokio::spawn(
            async move {
                match connection::serve(reader, writer, Arc::clone(&shared), id, close).await {
                    Ok(()) => tracing::debug!("client left"),
                    Err(e) => info!(error = %e, "client connection ended"),
                }
                shared.unregister(id);
                drop(slot);
            }
            .instrument(span),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{ExportInfo, Volume};

    struct NoExports;
    impl ExportRegistry for NoExports {
        fn list(&self) -> Vec<ExportInfo> {
            Vec::new()
        }
        fn open(&self, name: &str) -> Result<Arc<dyn Volume>, String> {
            Err(format!("no export {name}"))
        }
    }

    #[tokio::test]
    async fn unix_socket_is_0600_stale_replaced_live_refused_removed_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.nbd");
        // A stale socket: bound by a listener that is gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let server = Server::new(Arc::new(NoExports));
        server.listen_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live one is refused, with the path and what to do.
        let other = Server::new(Arc::new(NoExports));
        let err = other.listen_unix(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is in use by a running server; stop it first",
                path.display()
            )
        );
        // Not a socket: left alone.
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep").unwrap();
        let err = other.listen_unix(&file).unwrap_err();
        assert!(matches!(err, ServerError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
        server.shutdown().await;
        assert!(!path.exists());
    }
}
