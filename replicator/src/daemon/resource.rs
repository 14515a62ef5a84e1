//! One resource that is up on this node: its disk, metadata, state and NBD
//! listeners. The decisions are [`super::state`]'s; this module performs
//! them: metadata writes, flushes, opening and closing the export.
//!
//! Invariants:
//! - the metadata is written *before* the state it records is acted on: the
//!   superblock says Primary (and carries the new generation UUID) before
//!   the export serves a byte; CLEAN_SHUTDOWN is cleared before the disk is
//!   used and set only after the last write was flushed;
//! - blocking work (config files, `fdatasync`, superblock writes) runs on
//!   tokio's blocking pool, never on the threads that serve NBD clients;
//! - the Unix socket `RUN_DIR/RES.nbd` (and the `nbd-listen` TCP address)
//!   exist from `up` to `down`; what they serve is decided by the
//!   [`ExportGate`] at each handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context};
use hadisk_config::drbd::MetaDisk;
use hadisk_metadata::{Metadata, UUID_JUST_CREATED};
use hadisk_nbd_server::{IoMode, Server, Volume};
use hadisk_storage::{BlockDevice, FileDevice};
use tracing::{info, warn};

use super::export::{ExportGate, PrimaryVolume};
use super::missed::MissedWrites;
use super::state::{self, DiskState, Promote, ResourceState, Role};
use super::usable::UsableArea;
use crate::status::{PeerStatus, ResourceStatus};

/// A resource that is up on this node.
#[derive(Debug)]
pub struct Resource {
    name: String,
    node: String,
    peer: String,
    state: ResourceState,
    disk: Arc<dyn BlockDevice>,
    /// Behind a std mutex because it is used from the blocking pool, by
    /// control commands (serialised by the daemon) and by [`MissedWrites`]
    /// when a write first enters an extent (lock order: MissedWrites's
    /// state, then this).
    metadata: Arc<Mutex<Metadata>>,
    usable_bytes: u64,
    /// What the absent peer has missed (the dirty bitmap), shared with the
    /// Primary's data path.
    missed: Arc<MissedWrites>,
    io_mode: IoMode,
    gate: Arc<ExportGate>,
    server: Server,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    /// Held while the resource is up: no second resource or daemon attaches
    /// the same disk.
    _disk_lock: DiskLock,
}

/// What attaching reads from the configuration and the disk.
struct Opened {
    disk_lock: DiskLock,
    peer: String,
    disk_path: PathBuf,
    disk: Arc<dyn BlockDevice>,
    metadata: Arc<Mutex<Metadata>>,
    nbd_listen: Option<SocketAddr>,
    missed: Arc<MissedWrites>,
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("internal: a blocking task failed: {e}"))?
}

impl Resource {
    /// `hadisk up RES`: read the configuration, open the disk and its
    /// metadata, listen on the NBD addresses, record the attach, as Secondary.
    pub async fn up(
        name: &str,
        config: &Path,
        node: &str,
        run_dir: &Path,
        io_mode: IoMode,
    ) -> anyhow::Result<Resource> {
        let (n, c, me) = (name.to_owned(), config.to_path_buf(), node.to_owned());
        let opened = blocking(move || open(&n, &c, &me)).await?;
        let gate = Arc::new(ExportGate::refusing(
            name,
            node,
            state::secondary_refusal(name, node),
        ));
        let server = Server::new(gate.clone());
        let socket = run_dir.join(format!("{name}.nbd"));
        let tcp = listen(name, config, &server, &socket, opened.nbd_listen).await?;
        let metadata = opened.metadata;
        let md = metadata.clone();
        let attached = blocking(move || {
            let mut md = lock(&md);
            let attach = state::attach(md.superblock().flags);
            md.update(|sb| sb.flags = attach.flags)
                .context("recording the attach in the metadata")?;
            Ok(attach)
        })
        .await;
        let attach = match attached {
            Ok(a) => a,
            Err(e) => {
                server.shutdown().await;
                let disk = format!(
                    "{} ({} bytes)",
                    opened.disk_path.display(),
                    opened.disk.size_bytes()
                );
                return Err(e.context(format!("{name}: attaching {disk}")));
            }
        };
        let usable_bytes = lock(&metadata).layout().usable_size_bytes;
        info!(resource = %name, from = %DiskState::Diskless, to = %attach.state.disk, "disk attached");
        info!(resource = %name, role = %attach.state.role, socket = %socket.display(), tcp = ?tcp, "resource up");
        if attach.state.crashed_primary {
            warn!(resource = %name, "this node crashed while Primary: its activity-log extents will be resynced with the peer");
        }
        Ok(Resource {
            name: name.to_owned(),
            node: node.to_owned(),
            peer: opened.peer,
            state: attach.state,
            disk: opened.disk,
            metadata,
            usable_bytes,
            missed: opened.missed,
            io_mode,
            gate,
            server,
            socket,
            tcp,
            _disk_lock: opened.disk_lock,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The answer to `up`: the state, and what the operator should know.
    pub fn up_message(&self) -> String {
        let mut msg = format!("{}: up as Secondary, disk {}", self.name, self.state.disk);
        if self.state.crashed_primary {
            msg.push_str(
                "; this node crashed while Primary (found primary without clean-shutdown): \
                 its activity-log extents will be resynced with the peer",
            );
        }
        msg
    }

    /// `primary [--force]`.
    pub async fn promote(&mut self, force: bool) -> anyhow::Result<String> {
        let flags = lock(&self.metadata).superblock().flags;
        let (flags, forced) =
            match state::promote(&self.name, &self.state, flags, force).map_err(|e| anyhow!(e))? {
                Promote::AlreadyPrimary => return Ok(format!("{}: already Primary", self.name)),
                Promote::Become { flags, forced } => (flags, forced),
            };
        let area = UsableArea::new(self.disk.clone(), self.usable_bytes)
            .with_context(|| format!("{}: the usable size does not fit the disk", self.name))?;
        let volume: Arc<dyn Volume> = Arc::new(
            PrimaryVolume::new(area, self.io_mode, self.missed.clone())
                .map_err(|e| anyhow!("{}: preparing the export: {e}", self.name))?,
        );
        let fresh = new_generation_uuid();
        let (md, missed) = (self.metadata.clone(), self.missed.clone());
        blocking(move || {
            let peer_never_synced = {
                let mut md = lock(&md);
                let mut uuids = md.superblock().uuids;
                uuids.new_current(fresh)?;
                md.update(|sb| {
                    sb.flags = flags;
                    sb.uuids = uuids;
                })?;
                uuids.bitmap == UUID_JUST_CREATED
            };
            // The generation the peer may hold is "just created": it never
            // had our data, so its first sync is a full one whatever the
            // bitmap says. Marking everything now (before any write, so the
            // sync is cheap) spares the per-extent syncs while serving.
            if peer_never_synced {
                missed.record_all()?;
            }
            Ok(())
        })
        .await
        .with_context(|| format!("{}: recording the promotion in the metadata", self.name))?;
        let before = self.state;
        self.state.role = Role::Primary;
        self.state.disk = DiskState::UpToDate;
        if before.disk != self.state.disk {
            info!(resource = %self.name, from = %before.disk, to = %self.state.disk, forced, "disk state");
        }
        info!(resource = %self.name, from = %before.role, to = %self.state.role, uuid = format_args!("{fresh:016X}"), "role");
        self.gate.serve(volume);
        Ok(format!(
            "{}: Primary, disk UpToDate; export {} is served",
            self.name,
            self.socket.display()
        ))
    }

    /// `secondary`: refused while NBD clients are connected.
    pub async fn demote(&mut self) -> anyhow::Result<String> {
        if self.state.role == Role::Secondary {
            return Ok(format!("{}: already Secondary", self.name));
        }
        // Close the gate first, then count: a client opening the export
        // meanwhile is either counted or refused (see export.rs).
        let served = self
            .gate
            .refuse(state::secondary_refusal(&self.name, &self.node));
        let clients = self.clients();
        if let Err(reason) = state::demote(&self.name, &self.state, clients) {
            if let Some(volume) = served {
                self.gate.serve(volume);
            }
            bail!(reason);
        }
        let (disk, md) = (self.disk.clone(), self.metadata.clone());
        let written = blocking(move || {
            disk.sync_data().context("flushing the disk")?;
            let mut md = lock(&md);
            let flags = state::demoted_flags(md.superblock().flags);
            md.update(|sb| sb.flags = flags)
                .context("recording the demotion in the metadata")?;
            Ok(())
        })
        .await;
        if let Err(e) = written {
            if let Some(volume) = served {
                self.gate.serve(volume);
            }
            return Err(e.context(format!("{}: still Primary", self.name)));
        }
        let before = self.state.role;
        self.state.role = Role::Secondary;
        info!(resource = %self.name, from = %before, to = %self.state.role, "role");
        Ok(format!(
            "{}: Secondary; the export refuses clients",
            self.name
        ))
    }

    /// `down`: demote (refused while clients are connected), stop the
    /// listeners, flush and write the metadata clean.
    pub async fn down(&mut self) -> anyhow::Result<()> {
        if self.state.role == Role::Primary {
            self.demote().await?;
        }
        self.detach("resource is going down").await
    }

    /// SIGTERM: stop accepting, let the clients' in-flight requests finish
    /// (the server flushes each connection), then detach cleanly.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.detach("the hadisk daemon is shutting down").await
    }

    async fn detach(&mut self, why: &str) -> anyhow::Result<()> {
        self.gate.refuse(format!(
            "resource {} on node {}: {why}",
            self.name, self.node
        ));
        self.server.shutdown().await;
        let (disk, md) = (self.disk.clone(), self.metadata.clone());
        blocking(move || {
            disk.sync_data().context("flushing the disk")?;
            let mut md = lock(&md);
            let flags = state::detach_flags(md.superblock().flags);
            md.update(|sb| sb.flags = flags)
                .context("writing the metadata clean")?;
            Ok(())
        })
        .await
        .with_context(|| format!("{}: detaching", self.name))?;
        let before = self.state;
        self.state.role = Role::Secondary;
        self.state.disk = DiskState::Diskless;
        if before.role != self.state.role {
            info!(resource = %self.name, from = %before.role, to = %self.state.role, "role");
        }
        info!(resource = %self.name, from = %before.disk, to = %self.state.disk, "disk detached, metadata clean");
        Ok(())
    }

    /// NBD clients that have the export open. The server marks a client
    /// with the name it asked for, and the default export `""` is this
    /// resource too (nbdfuse, `nbd-client` without `-N` use it); every
    /// other name is refused, so the two counts are all the clients.
    fn clients(&self) -> usize {
        self.server.client_count(&self.name) + self.server.client_count("")
    }

    /// The `status` view (DESIGN.md §1.3). No peer link yet: StandAlone.
    pub fn status(&self) -> ResourceStatus {
        ResourceStatus {
            name: self.name.clone(),
            node: self.node.clone(),
            role: self.state.role.to_string(),
            disk: self.state.disk.to_string(),
            size_bytes: self.usable_bytes,
            nbd_clients: self.clients(),
            nbd_socket: Some(self.socket.display().to_string()),
            nbd_tcp: self.tcp.map(|a| a.to_string()),
            crashed_primary: self.state.crashed_primary,
            peer: PeerStatus {
                name: self.peer.clone(),
                connection: self.state.connection.to_string(),
                role: "Unknown".into(),
                disk: "DUnknown".into(),
                replication: "Off".into(),
                out_of_sync_bytes: self.missed.dirty_bytes(),
                resync: None,
                last_error: None,
            },
        }
    }
}

fn lock(md: &Mutex<Metadata>) -> std::sync::MutexGuard<'_, Metadata> {
    // A panic in a metadata update leaves the in-memory superblock as it
    // was (it is replaced only after a durable write), so poisoning is
    // ignored.
    md.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Listens on `socket` and, when configured, on the `nbd-listen` address;
/// returns the bound TCP address. On failure nothing is left listening.
async fn listen(
    name: &str,
    config: &Path,
    server: &Server,
    socket: &Path,
    nbd_listen: Option<SocketAddr>,
) -> anyhow::Result<Option<SocketAddr>> {
    server
        .listen_unix(socket)
        .map_err(|e| anyhow!("{name}: {e}"))?;
    let Some(addr) = nbd_listen else {
        return Ok(None);
    };
    match server.listen_tcp(addr).await {
        Ok(bound) => Ok(Some(bound)),
        Err(e) => {
            server.shutdown().await;
            bail!("{name}: {e} (nbd-listen in {})", config.display());
        }
    }
}

/// Reads the configuration and opens this node's disk and metadata.
fn open(name: &str, config: &Path, node: &str) -> anyhow::Result<Opened> {
    let cfg = hadisk_config::load(config)?;
    let res = cfg.resource(name)?;
    let host = res.this_host(node)?;
    if !matches!(host.meta_disk, MetaDisk::Internal) {
        bail!(
            "{name}: {}:{}: only `meta-disk internal;` is supported (on {})",
            res.file.display(),
            host.line,
            host.name
        );
    }
    let peer = res
        .peer_host(node)
        .map(|h| h.name.clone())
        .unwrap_or_default();
    let disk_lock = DiskLock::take(name, &host.disk)?;
    let device = FileDevice::open(&host.disk, false).map_err(|e| anyhow!("{name}: {e}"))?;
    let disk: Arc<dyn BlockDevice> = Arc::new(device);
    let metadata = Metadata::open(disk.clone())
        .map_err(|e| anyhow!("{name}: metadata on {}: {e}", host.disk.display()))?;
    let metadata = Arc::new(Mutex::new(metadata));
    let missed = MissedWrites::new(metadata.clone()).map_err(|e| {
        anyhow!(
            "{name}: reading the dirty bitmap on {}: {e}",
            host.disk.display()
        )
    })?;
    Ok(Opened {
        disk_lock,
        peer,
        disk_path: host.disk.clone(),
        disk,
        metadata,
        nbd_listen: host.nbd_listen,
        missed: Arc::new(missed),
    })
}

/// An exclusive `flock` on the backing disk's path, for as long as the
/// resource is up. Block devices are also opened `O_EXCL` by the storage
/// layer; the lock covers regular files, which have no such guard, and
/// tells the operator which resource is in the way.
#[derive(Debug)]
pub(super) struct DiskLock {
    _file: std::fs::File,
}

impl DiskLock {
    pub(super) fn take(name: &str, disk: &Path) -> anyhow::Result<DiskLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(disk)
            .map_err(|e| anyhow!("{name}: cannot open the disk {}: {e}", disk.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "{name}: the disk {} is already attached by another hadisk resource or daemon; \
                     `hadisk down` it there first",
                    disk.display()
                );
            }
            bail!("{name}: cannot lock the disk {}: {e}", disk.display());
        }
        Ok(DiskLock { _file: file })
    }
}

/// A fresh generation UUID: random, never 0 (empty) nor DRBD's
/// "just created" value.
fn new_generation_uuid() -> u64 {
    loop {
        let v: u64 = rand::random();
        if v > UUID_JUST_CREATED {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_uuids_are_never_reserved_values() {
        for _ in 0..1000 {
            assert!(new_generation_uuid() > UUID_JUST_CREATED);
        }
    }
}
