//! One resource that is up on this node, driven by the replication core:
//! its disk and metadata, the driver task ([`super::driver`]), the peer
//! link ([`super::link`]) and the NBD listeners. Control commands become
//! core admin commands; the Primary's NBD volume ([`ReplicatedVolume`])
//! submits writes and flushes to the core, which completes them when both
//! disks have them (protocol C), and reads the local disk directly.
//!
//! Invariants:
//! - the export serves a volume only after the core reported the promotion
//!   done (the Primary flag and generation UUID are durable first);
//! - demotion closes the gate before counting clients, so a client opening
//!   the export meanwhile is either counted or refused;
//! - at detach the driver has finished everything in flight before the
//!   disk is flushed and the metadata written clean.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use hadisk_config::drbd::MetaDisk;
use hadisk_core::{AdminOp, Attached, CoreError, Event, ReqId, Status};
use hadisk_metadata::Metadata;
use hadisk_nbd_server::{IoMode, LocalVolume, Server, Volume, VolumeError, VolumeFuture};
use hadisk_peer_proto::{DigestAlg, HmacAlg, Role};
use hadisk_storage::{BlockDevice, FileDevice, Payload};
use tokio::sync::{mpsc, oneshot};
use tracing::info;

use super::disk_lock::DiskLock;
use super::driver::{Driver, Io};
use super::export::ExportGate;
use super::link::{self, LastError, LinkConfig};
use super::meta_io::{self, MetaStore};
use super::sb_save::SaveConfig;
use super::state;
use super::usable::UsableArea;
use crate::status::{PeerStatus, ResourceStatus, ResyncRateStatus, ResyncStatus, VerifyStatus};

/// Largest zeroing request turned into a replicated write of zeros (the
/// NBD server's request cap is the same order).
const MAX_ZERO_WRITE_BYTES: u32 = 32 * 1024 * 1024;
/// Longest wait at detach for the driver to finish what is in flight.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Resync requests in flight (of the core's 1 MiB chunks): enough to keep
/// a loopback or LAN link busy while the target writes.
const RESYNC_REQUESTS: usize = 16;
/// Completed writes not yet covered by a flush after which the core
/// flushes both disks on its own. The core's default (1,024) made a
/// page-cache workload of 4 KiB random writes pay an `fdatasync` of the
/// whole file 40 times a second (measured: half of nbdkit's IOPS, which
/// never flushes unasked). 64 Ki still meant one `fdatasync` of up to
/// 256 MiB of scattered dirty pages about every second at 70k IOPS: 12 %
/// of the daemon's CPU under `perf`, and a 72k → 94k IOPS difference in
/// one run (2026-11-30). The activity log still bounds what a crash costs
/// (a full AL forces a flush too); this bounds the unstable list's memory
/// (32 bytes an entry: at most 32 MiB).
const MAX_UNSTABLE_WRITES: usize = 1024 * 1024;
/// Longest time `primary` waits for a connection handshake in progress
/// (the core refuses a promotion during it) before reporting the refusal.
const PROMOTE_HANDSHAKE_WAIT: Duration = Duration::from_secs(15);
/// Pause between two promotion attempts while a handshake runs.
const PROMOTE_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The unit the core replicates.
const SECTOR_BYTES: u64 = hadisk_peer_proto::frame::SECTOR_BYTES;

/// A resource that is up on this node.
#[derive(Debug)]
pub struct Resource {
    name: String,
    node: String,
    peer: String,
    usable_bytes: u64,
    driver: Arc<Driver>,
    volume: Arc<ReplicatedVolume>,
    io: Io,
    gate: Arc<ExportGate>,
    server: Server,
    socket: PathBuf,
    tcp: Option<SocketAddr>,
    crashed_primary: bool,
    /// The disk state the superblock gave at attach (for `up`'s answer).
    attach_disk: state::DiskState,
    link_error: LastError,
    wfc: (u32, u32),
    _disk_lock: DiskLock,
}

struct Opened {
    disk_lock: DiskLock,
    disk_path: PathBuf,
    disk: Arc<dyn BlockDevice>,
    md: Metadata,
    link: LinkConfig,
    al_extents: u32,
    /// The resync rate controller (`resync-rate`, `c-plan-ahead`, `c-*`).
    rate: hadisk_core::RateMode,
    csums_alg: Option<DigestAlg>,
    verify_alg: Option<DigestAlg>,
    nbd_listen: Option<SocketAddr>,
    wfc: (u32, u32),
    policies: hadisk_core::AfterSbPolicies,
    /// `None`: `split-brain-dir off;`.
    split_brain_dir: Option<PathBuf>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("internal: a blocking task failed: {e}"))?
}

fn core_err(name: &str, e: CoreError) -> anyhow::Error {
    anyhow!("{name}: {e}")
}

impl Resource {
    /// `hadisk up RES`: attach the disk, start the core, listen on NBD and
    /// the peer address, and start connecting (DRBD's `up`).
    pub async fn up(
        name: &str,
        config: &Path,
        node: &str,
        run_dir: &Path,
        io_mode: IoMode,
    ) -> anyhow::Result<Resource> {
        let (n, c, me) = (name.to_owned(), config.to_path_buf(), node.to_owned());
        let mut opened = blocking(move || open(&n, &c, &me)).await?;
        let usable_bytes = opened.md.layout().usable_size_bytes;
        // Every address is bound before the metadata is touched: a busy
        // port fails `up` with the disk as it was.
        let link_error: LastError = Arc::new(Mutex::new(None));
        let bound = link::bind(opened.link.clone()).await?;
        let gate = Arc::new(ExportGate::refusing(
            name,
            node,
            state::secondary_refusal(name, node),
        ));
        let server = Server::new(gate.clone());
        let socket = run_dir.join(format!("{name}.nbd"));
        let listened = listen(&server, &socket, opened.nbd_listen.take()).await;
        let tcp = match listened {
            Ok(tcp) => tcp,
            Err(e) => {
                server.shutdown().await;
                bail!("{name}: {e} (nbd-listen in {})", config.display());
            }
        };
        let attached = attach(name, opened.md, &opened.disk_path, opened.disk.size_bytes()).await;
        let (attached, attach_state, md) = match attached {
            Ok(a) => a,
            Err(e) => {
                server.shutdown().await;
                return Err(e);
            }
        };
        let mut cfg = hadisk_core::Config::new(
            usable_bytes,
            opened.link.local_name > opened.link.peer_name,
            rand::random(),
        );
        cfg.al_extents = opened.al_extents;
        cfg.policies = opened.policies;
        cfg.resource = name.to_owned();
        cfg.rate = opened.rate;
        cfg.csums_alg = opened.csums_alg;
        cfg.verify_alg = opened.verify_alg;
        cfg.resync_requests = RESYNC_REQUESTS;
        cfg.max_unstable = MAX_UNSTABLE_WRITES;
        let image = attached.bitmap.clone();
        let (core, initial) =
            hadisk_core::Resource::new(cfg, attached).map_err(|e| core_err(name, e))?;
        let area: Arc<dyn BlockDevice> = Arc::new(
            UsableArea::new(opened.disk.clone(), usable_bytes)
                .with_context(|| format!("{name}: the usable size does not fit the disk"))?,
        );
        let io = Io {
            disk: area.clone(),
            meta: Arc::new(Mutex::new(MetaStore { md, image })),
            mode: io_mode,
            sb_save: Arc::new(SaveConfig {
                dir: opened.split_brain_dir.clone(),
                resource: name.to_owned(),
                node: node.to_owned(),
                peer: opened.link.peer_name.clone(),
            }),
        };
        let (link_cmds, link_rx) = mpsc::unbounded_channel();
        let driver = Driver::start(name.to_owned(), core, initial, io.clone(), link_cmds);
        bound.start(driver.clone(), link_rx, link_error.clone());
        let volume = Arc::new(ReplicatedVolume::new(
            area,
            usable_bytes,
            io_mode,
            driver.clone(),
        )?);
        let crashed_primary = attach_state.crashed_primary;
        let disk_now = if attach_state.disk == state::DiskState::Inconsistent {
            "Inconsistent"
        } else {
            "Consistent"
        };
        info!(resource = %name, from = %"Diskless", to = %disk_now, "disk attached");
        let attach_disk = attach_state.disk;
        let r = Resource {
            name: name.to_owned(),
            node: node.to_owned(),
            peer: opened.link.peer_name.clone(),
            usable_bytes,
            driver,
            volume,
            io,
            gate,
            server,
            socket,
            tcp,
            crashed_primary,
            attach_disk,
            link_error,
            wfc: opened.wfc,
            _disk_lock: opened.disk_lock,
        };
        r.admin(AdminOp::Connect {
            discard_my_data: false,
        })
        .await?;
        info!(resource = %name, socket = %r.socket.display(), peer = %opened.link.peer, "resource up, connecting to the peer");
        Ok(r)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `up --wait`: DRBD's init script waits `wfc-timeout` seconds for the
    /// peer (`degr-wfc-timeout` when this node was degraded, i.e. knew its
    /// peer outdated); 0 waits forever.
    pub fn wait_timeout(&self) -> Option<Duration> {
        let degraded = meta_io::lock(&self.io.meta)
            .md
            .superblock()
            .flags
            .contains(hadisk_metadata::Flags::PEER_OUTDATED);
        let s = if degraded { self.wfc.1 } else { self.wfc.0 };
        (s > 0).then(|| Duration::from_secs(u64::from(s)))
    }

    /// The answer to `up`.
    pub fn up_message(&self) -> String {
        let mut msg = format!("{}: up as Secondary, disk {}", self.name, self.attach_disk);
        if self.crashed_primary {
            msg.push_str(
                "; this node crashed while Primary (found primary without clean-shutdown): \
                 its activity-log extents will be resynced with the peer",
            );
        }
        msg
    }

    async fn admin(&self, op: AdminOp) -> anyhow::Result<()> {
        self.admin_core(op)
            .await?
            .map_err(|e| core_err(&self.name, e))
    }

    /// An admin command; the outer error is a stopped driver, the inner one
    /// the core's answer (for callers that retry on some of them).
    async fn admin_core(&self, op: AdminOp) -> anyhow::Result<Result<(), CoreError>> {
        let (reply, rx) = oneshot::channel();
        self.driver.admin(op, reply);
        match rx.await {
            Ok(r) => Ok(r),
            Err(_) => bail!("{}: the resource's driver has stopped", self.name),
        }
    }

    pub async fn core_status(&self) -> Option<Status> {
        Some(self.driver.status())
    }

    /// `primary [--force]`. A connection handshake in progress (both nodes
    /// just did `up`) is waited for: the decision between a disconnected
    /// promotion and the connected `--force` path depends on its outcome.
    pub async fn promote(&mut self, force: bool) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + PROMOTE_HANDSHAKE_WAIT;
        loop {
            match self.promote_once(force).await? {
                Ok(msg) => return Ok(msg),
                Err(CoreError::Handshaking | CoreError::ForceWhileConnected { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    // The link came up (or its handshake started) after
                    // the status we decided on: look again.
                    tokio::time::sleep(PROMOTE_RETRY_PAUSE).await;
                }
                Err(e) => return Err(core_err(&self.name, e)),
            }
        }
    }

    /// One promotion attempt from a fresh status; `Ok(Err)` is the core's
    /// refusal.
    async fn promote_once(&mut self, force: bool) -> anyhow::Result<Result<String, CoreError>> {
        let st = self.core_status().await;
        if st.as_ref().is_some_and(|s| s.role == Role::Primary) {
            return Ok(Ok(format!("{}: already Primary", self.name)));
        }
        let was_up_to_date = meta_io::lock(&self.io.meta)
            .md
            .superblock()
            .flags
            .contains(hadisk_metadata::Flags::WAS_UP_TO_DATE);
        // DRBD attaches a consistent disk that was UpToDate as UpToDate
        // when fencing is `dont-care` (its default; hadisk has no fencing):
        // with no peer to ask, such a disk may be promoted without
        // --force. The core keeps it Consistent until it hears from the
        // peer, so the daemon applies the rule here. A disconnected
        // promotion starts a new generation either way.
        let force = force
            || (was_up_to_date
                && st.as_ref().is_some_and(|s| {
                    s.disk == hadisk_peer_proto::DiskState::Consistent
                        && s.connection != hadisk_core::Connection::Connected
                }));
        let forced_while_connected = force
            && st.as_ref().is_some_and(|s| {
                s.connection == hadisk_core::Connection::Connected
                    && s.disk != hadisk_peer_proto::DiskState::UpToDate
                    && s.peer_role != Role::Primary
            });
        if forced_while_connected {
            // DRBD's first `primary --force` on a connected new pair: this
            // node's data becomes the good copy and the peer gets a full
            // sync. The core starts a new generation only while
            // disconnected, so: disconnect, promote, reconnect; the
            // handshake then finds the peer "just created" (or behind)
            // and makes it SyncTarget of a full sync.
            info!(resource = %self.name, "primary --force while connected: reconnecting as the sync source");
            self.admin(AdminOp::Disconnect).await?;
            let promoted = self.admin_core(AdminOp::Promote { force }).await;
            self.admin(AdminOp::Connect {
                discard_my_data: false,
            })
            .await?;
            if let Err(e) = promoted? {
                return Ok(Err(e));
            }
        } else if let Err(e) = self.admin_core(AdminOp::Promote { force }).await? {
            return Ok(Err(e));
        }
        self.gate.serve(self.volume.clone());
        Ok(Ok(format!(
            "{}: Primary, disk UpToDate; export {} is served",
            self.name,
            self.socket.display()
        )))
    }

    /// `secondary`: refused while NBD clients are connected.
    pub async fn demote(&mut self) -> anyhow::Result<String> {
        let role = self.core_status().await.map(|s| s.role);
        if role != Some(Role::Primary) {
            return Ok(format!("{}: already Secondary", self.name));
        }
        let served = self
            .gate
            .refuse(state::secondary_refusal(&self.name, &self.node));
        let clients = self.clients();
        let refused = if clients > 0 {
            let st = state::ResourceState {
                role: state::Role::Primary,
                disk: state::DiskState::UpToDate,
                connection: state::Connection::StandAlone,
                crashed_primary: false,
            };
            state::demote(&self.name, &st, clients)
                .err()
                .map(|m| anyhow!(m))
        } else {
            self.admin(AdminOp::Demote).await.err()
        };
        if let Some(e) = refused {
            if let Some(v) = served {
                self.gate.serve(v);
            }
            return Err(e);
        }
        Ok(format!(
            "{}: Secondary; the export refuses clients",
            self.name
        ))
    }

    /// `connect` / `disconnect`.
    pub async fn connect(&mut self, discard_my_data: bool) -> anyhow::Result<String> {
        self.admin(AdminOp::Connect { discard_my_data }).await?;
        Ok(format!("{}: connecting to {}", self.name, self.peer))
    }

    /// `verify`: starts the online verify (it runs in the background;
    /// `status` shows its progress and result).
    pub async fn verify(&mut self) -> anyhow::Result<String> {
        self.admin(AdminOp::Verify).await?;
        Ok(format!(
            "{}: online verify started (VerifyS); `hadisk status {}` shows its progress",
            self.name, self.name
        ))
    }

    /// `invalidate` / `invalidate-remote`: a full resync, this node (or the
    /// peer) the SyncTarget.
    pub async fn invalidate(&mut self, remote: bool) -> anyhow::Result<String> {
        let op = if remote {
            AdminOp::InvalidateRemote
        } else {
            AdminOp::Invalidate
        };
        self.admin(op).await?;
        Ok(if remote {
            format!(
                "{}: full resync to {} started (SyncSource)",
                self.name, self.peer
            )
        } else {
            format!(
                "{}: full resync from {} started (SyncTarget)",
                self.name, self.peer
            )
        })
    }

    pub async fn disconnect(&mut self) -> anyhow::Result<String> {
        self.admin(AdminOp::Disconnect).await?;
        Ok(format!("{}: disconnected (StandAlone)", self.name))
    }

    /// `down`: demote (refused while clients are connected), then detach.
    pub async fn down(&mut self) -> anyhow::Result<()> {
        self.demote().await?;
        self.detach("resource is going down").await
    }

    /// SIGTERM: stop accepting, finish in-flight requests, detach cleanly.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        self.detach("the hadisk daemon is shutting down").await
    }

    async fn detach(&mut self, why: &str) -> anyhow::Result<()> {
        self.gate.refuse(format!(
            "resource {} on node {}: {why}",
            self.name, self.node
        ));
        self.server.shutdown().await;
        let disk_before = self
            .core_status()
            .await
            .map_or("Diskless".to_string(), |s| s.disk.to_string());
        let (reply, rx) = oneshot::channel();
        self.driver.stop(reply);
        let stopped = tokio::time::timeout(STOP_TIMEOUT, rx).await.is_ok();
        if !stopped {
            self.driver.abandon();
            // Not clean: the next `up` then recovers the activity log, so
            // whatever was still in flight is resynced.
            bail!(
                "{}: in-flight I/O did not finish within {} s; the metadata is left as after a crash",
                self.name,
                STOP_TIMEOUT.as_secs()
            );
        }
        let io = self.io.clone();
        blocking(move || {
            io.disk.sync_data().context("flushing the disk")?;
            let mut m = meta_io::lock(&io.meta);
            let flags = state::detach_flags(m.md.superblock().flags);
            m.md.update(|sb| sb.flags = flags)
                .context("writing the metadata clean")?;
            Ok(())
        })
        .await
        .with_context(|| format!("{}: detaching", self.name))?;
        info!(resource = %self.name, from = %disk_before, to = %"Diskless", "disk detached, metadata clean");
        Ok(())
    }

    fn clients(&self) -> usize {
        self.server.client_count(&self.name) + self.server.client_count("")
    }

    /// The `status` view (DESIGN.md §1.3).
    pub async fn status(&self) -> ResourceStatus {
        let st = self.core_status().await;
        let link_error = meta_io::lock(&self.link_error).clone();
        let (role, disk, peer, resync_rate) = match st {
            Some(s) => (
                s.role.to_string(),
                s.disk.to_string(),
                PeerStatus {
                    name: self.peer.clone(),
                    connection: s.connection.to_string(),
                    role: s.peer_role.to_string(),
                    disk: s.peer_disk.map_or("DUnknown".into(), |d| d.to_string()),
                    replication: s.replication.to_string(),
                    out_of_sync_bytes: s.out_of_sync_bytes,
                    resync: s.resync.map(|r| ResyncStatus {
                        done_percent: r.done_percent,
                        speed_bytes_per_s: r.speed_bytes_per_s,
                        average_speed_bytes_per_s: r.average_speed_bytes_per_s,
                        eta_s: r.eta_s.unwrap_or(0),
                        remaining_bytes: r.total_bytes.saturating_sub(r.done_bytes),
                        total_bytes: r.total_bytes,
                    }),
                    last_error: s.last_error.or(link_error),
                    sync_paused_here: s.sync_paused_here,
                    sync_paused_by_peer: s.sync_paused_by_peer,
                    verify: s.verify.map(|v| VerifyStatus {
                        running: v.running,
                        role: if v.source { "VerifyS" } else { "VerifyT" }.into(),
                        done_percent: v.done_percent,
                        out_of_sync_bytes: v.out_of_sync_bytes,
                        complete: v.complete,
                    }),
                },
                Some(rate_status(&s.rate)),
            ),
            None => (
                "Secondary".into(),
                "Diskless".into(),
                PeerStatus {
                    name: self.peer.clone(),
                    connection: "StandAlone".into(),
                    role: "Unknown".into(),
                    disk: "DUnknown".into(),
                    replication: "Off".into(),
                    out_of_sync_bytes: 0,
                    resync: None,
                    last_error: link_error,
                    sync_paused_here: false,
                    sync_paused_by_peer: false,
                    verify: None,
                },
                None,
            ),
        };
        ResourceStatus {
            name: self.name.clone(),
            node: self.node.clone(),
            role,
            disk,
            size_bytes: self.usable_bytes,
            nbd_clients: self.clients(),
            nbd_socket: Some(self.socket.display().to_string()),
            nbd_tcp: self.tcp.map(|a| a.to_string()),
            crashed_primary: self.crashed_primary,
            resync_rate,
            peer,
        }
    }

    /// `pause-sync` / `resume-sync`.
    pub async fn pause_sync(&mut self, paused: bool) -> anyhow::Result<String> {
        if paused {
            self.admin(AdminOp::PauseSync).await?;
            Ok(format!("{}: resync paused", self.name))
        } else {
            self.admin(AdminOp::ResumeSync).await?;
            Ok(format!("{}: resync resumed", self.name))
        }
    }
}

/// The controller's settings and what it allows now, for `status --json`.
fn rate_status(r: &hadisk_core::RateStatus) -> ResyncRateStatus {
    let mut s = ResyncRateStatus {
        mode: r.mode.name().to_string(),
        limit_bytes_per_s: r.limit_bytes_per_s,
        throttled: r.throttled,
        app_bytes_per_s: r.app_bytes_per_s,
        ..ResyncRateStatus::default()
    };
    match r.mode {
        hadisk_core::RateMode::Fixed { rate_bytes_per_s } => {
            s.resync_rate_bytes_per_s = Some(rate_bytes_per_s);
        }
        hadisk_core::RateMode::Dynamic(d) => {
            s.c_plan_ahead_ms = Some(d.plan_ahead_ms);
            s.c_fill_target_bytes = Some(d.fill_target_bytes);
            s.c_min_rate_bytes_per_s = Some(d.min_rate_bytes_per_s);
            s.c_max_rate_bytes_per_s = Some(d.max_rate_bytes_per_s);
        }
    }
    s
}

/// Binds the NBD listeners (Unix socket, `nbd-listen` TCP address).
async fn listen(
    server: &Server,
    socket: &Path,
    tcp: Option<SocketAddr>,
) -> anyhow::Result<Option<SocketAddr>> {
    server.listen_unix(socket).map_err(|e| anyhow!("{e}"))?;
    match tcp {
        Some(addr) => Ok(Some(
            server.listen_tcp(addr).await.map_err(|e| anyhow!("{e}"))?,
        )),
        None => Ok(None),
    }
}

/// Records the attach in the superblock and reads what the core needs.
async fn attach(
    name: &str,
    mut md: Metadata,
    disk_path: &Path,
    disk_bytes: u64,
) -> anyhow::Result<(Attached, state::ResourceState, Metadata)> {
    let label = format!("{} ({disk_bytes} bytes)", disk_path.display());
    blocking(move || {
        let attach = state::attach(md.superblock().flags);
        md.update(|sb| sb.flags = attach.flags)
            .context("recording the attach in the metadata")?;
        let attached = Attached {
            superblock: meta_io::superblock_state(md.superblock()),
            bitmap: md.load_bitmap()?,
            al_slots: md.al_slots().to_vec(),
        };
        Ok((attached, attach.state, md))
    })
    .await
    .with_context(|| format!("{name}: attaching {label}"))
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
    let peer = res.peer_host(node)?;
    let alg = match &res.net.cram_hmac_alg {
        Some(a) => HmacAlg::from_cram_name(a).map_err(|e| anyhow!("{name}: {e}"))?,
        None => HmacAlg::Sha256,
    };
    let link = LinkConfig {
        resource: name.to_owned(),
        local_name: host.name.clone(),
        peer_name: peer.name.clone(),
        listen: host.address,
        peer: peer.address,
        secret: res
            .net
            .shared_secret
            .as_ref()
            .map(|s| s.as_bytes().to_vec()),
        alg,
        timeout: Duration::from_millis(res.net.timeout_ms.max(100)),
        ping_int: Duration::from_millis(res.net.ping_int_ms.max(100)),
        ping_timeout: Duration::from_millis(res.net.ping_timeout_ms.max(100)),
        connect_int: Duration::from_millis(res.net.connect_int_ms.max(100)),
        tcp_congestion: res.net.tcp_congestion.clone(),
        sndbuf_bytes: res.net.sndbuf_bytes,
        rcvbuf_bytes: res.net.rcvbuf_bytes,
    };
    let digest = |key: &str, value: &Option<String>| -> anyhow::Result<Option<DigestAlg>> {
        value
            .as_deref()
            .map(DigestAlg::from_name)
            .transpose()
            .map_err(|e| anyhow!("{name}: {}: {key}: {e}", res.file.display()))
    };
    let csums_alg = digest("csums-alg", &res.net.csums_alg)?;
    let verify_alg = digest("verify-alg", &res.net.verify_alg)?;
    let disk_lock = DiskLock::take(name, &host.disk)?;
    let device = FileDevice::open(&host.disk, false).map_err(|e| anyhow!("{name}: {e}"))?;
    let disk: Arc<dyn BlockDevice> = Arc::new(device);
    let md = Metadata::open(disk.clone())
        .map_err(|e| anyhow!("{name}: metadata on {}: {e}", host.disk.display()))?;
    Ok(Opened {
        disk_lock,
        disk_path: host.disk.clone(),
        disk,
        md,
        link,
        al_extents: res.disk.al_extents,
        rate: hadisk_core::RateMode::from_options(
            res.disk.resync_rate_bytes_per_s,
            res.disk.c_plan_ahead_ms,
            res.disk.c_fill_target_bytes,
            res.disk.c_min_rate_bytes_per_s,
            res.disk.c_max_rate_bytes_per_s,
        ),
        csums_alg,
        verify_alg,
        nbd_listen: host.nbd_listen,
        wfc: (res.startup.wfc_timeout_s, res.startup.degr_wfc_timeout_s),
        policies: after_sb_policies(name, res)?,
        split_brain_dir: (!res.split_brain_save_off).then(|| {
            res.split_brain_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(hadisk_config::drbd::DEFAULT_SPLIT_BRAIN_DIR))
        }),
    })
}

/// The resource file's `after-sb-0pri/1pri/2pri` as the core's policies
/// (the config crate spells DRBD's names; the core parses the same names).
fn after_sb_policies(
    name: &str,
    res: &hadisk_config::Resource,
) -> anyhow::Result<hadisk_core::AfterSbPolicies> {
    let parse = |v: &str| {
        v.parse::<hadisk_core::AfterSbPolicy>()
            .map_err(|e| anyhow!("{name}: {}: {e}", res.file.display()))
    };
    Ok(hadisk_core::AfterSbPolicies {
        zero_primaries: parse(res.net.after_sb_0pri.name())?,
        one_primary: parse(res.net.after_sb_1pri.name())?,
        two_primaries: parse(res.net.after_sb_2pri.name())?,
    })
}

/// The Primary's data path: writes and flushes go through the core
/// (protocol C), reads straight to the local disk.
pub struct ReplicatedVolume {
    local: Arc<LocalVolume<UsableArea>>,
    size_bytes: u64,
    driver: Arc<Driver>,
    /// Taken by a read-modify-write for its whole duration (see
    /// [`ReplicatedVolume::write_unaligned`]).
    rmw: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for ReplicatedVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedVolume")
            .field("size_bytes", &self.size_bytes)
            .finish()
    }
}

impl ReplicatedVolume {
    fn new(
        area: Arc<dyn BlockDevice>,
        size_bytes: u64,
        mode: IoMode,
        driver: Arc<Driver>,
    ) -> anyhow::Result<ReplicatedVolume> {
        let reader = UsableArea::new(area, size_bytes)?;
        let local = LocalVolume::new(Arc::new(reader), size_bytes, false, mode)
            .map_err(|e| anyhow!("preparing the export: {e}"))?;
        Ok(ReplicatedVolume {
            local: Arc::new(local),
            size_bytes,
            driver,
            rmw: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Hands a request to the core in this task. When the core completes
    /// it within the call (no peer, or a page-cache write that needs no
    /// ack), the future is ready at its first poll and the NBD server
    /// replies with no task hop.
    fn submit(&self, make: impl FnOnce(ReqId) -> Event) -> VolumeFuture<()> {
        Box::pin(answer(submit(&self.driver, make)))
    }
}

impl ReplicatedVolume {
    /// The core replicates whole 512-byte sectors: a write that is not
    /// sector aligned is widened by reading the sectors it touches
    /// (read-modify-write). Two such writes into different bytes of one
    /// sector must not both read the old sector (the second write-back would
    /// undo the first), so read-modify-writes take turns; they are rare
    /// (file systems and fio issue aligned writes), and aligned writes never
    /// wait for them.
    fn write_unaligned(&self, offset_bytes: u64, data: Payload, fua: bool) -> VolumeFuture<()> {
        let start = offset_bytes - offset_bytes % SECTOR_BYTES;
        let end = (offset_bytes + data.len() as u64)
            .div_ceil(SECTOR_BYTES)
            .saturating_mul(SECTOR_BYTES)
            .min(self.size_bytes);
        let (local, driver, rmw) = (self.local.clone(), self.driver.clone(), self.rmw.clone());
        Box::pin(async move {
            let _turn = rmw.lock_owned().await;
            let data = data
                .to_bytes()
                .map_err(|source| VolumeError::Io { source })?;
            let old = local.read(start, (end - start) as u32).await?;
            let mut buf = old.to_vec();
            let at = (offset_bytes - start) as usize;
            let Some(dst) = buf.get_mut(at..at + data.len()) else {
                return Err(VolumeError::Unsupported);
            };
            dst.copy_from_slice(&data);
            let data = Bytes::from(buf);
            answer(submit(&driver, |req| Event::ClientWrite {
                req,
                offset_bytes: start,
                data: data.into(),
                fua,
            }))
            .await
        })
    }
}

impl Volume for ReplicatedVolume {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    fn read_only(&self) -> bool {
        false
    }
    fn can_multi_conn(&self) -> bool {
        // Every flush goes through the one core, which flushes both disks.
        true
    }
    fn read(&self, offset_bytes: u64, length_bytes: u32) -> VolumeFuture<Bytes> {
        self.local.read(offset_bytes, length_bytes)
    }
    fn accepts_pipes(&self) -> bool {
        // Pipes pay when a payload goes to two places (the disk and the
        // peer's socket: no copy into the socket); for the disk alone a
        // read into memory and a `pwrite` was faster here (A/B in one
        // daemon: 1.61-1.93 GB/s spliced vs 1.79-2.13 GB/s not, 1 MiB
        // writes; in one pair: 1.36-1.44 vs 1.06-1.27 GB/s).
        super::export::splice_enabled() && self.driver.has_peer()
    }
    fn write(&self, offset_bytes: u64, data: Payload, fua: bool) -> VolumeFuture<()> {
        let len = data.len() as u64;
        if !offset_bytes.is_multiple_of(SECTOR_BYTES) || !len.is_multiple_of(SECTOR_BYTES) {
            return self.write_unaligned(offset_bytes, data, fua);
        }
        let (reply, rx) = oneshot::channel();
        self.driver.client_batched(reply, |req| Event::ClientWrite {
            req,
            offset_bytes,
            data,
            fua,
        });
        Box::pin(answer(rx))
    }
    fn flush(&self) -> VolumeFuture<()> {
        self.submit(|req| Event::ClientFlush { req })
    }
    fn batch_done(&self) {
        self.driver.batch_done();
    }
    fn trim(&self, _offset_bytes: u64, _length_bytes: u32, fua: bool) -> VolumeFuture<()> {
        // A trim leaves the contents unspecified: doing nothing keeps both
        // disks identical (a local-only discard would make them differ).
        if fua {
            self.flush()
        } else {
            Box::pin(async { Ok(()) })
        }
    }
    fn write_zeroes(
        &self,
        offset_bytes: u64,
        length_bytes: u32,
        _no_hole: bool,
        fua: bool,
    ) -> VolumeFuture<()> {
        if length_bytes > MAX_ZERO_WRITE_BYTES {
            return Box::pin(async { Err(VolumeError::Unsupported) });
        }
        let data = Bytes::from(vec![0u8; length_bytes as usize]);
        self.write(offset_bytes, data.into(), fua)
    }
}

/// Feeds a client request to the driver; the receiver gets its answer.
fn submit(
    driver: &Arc<Driver>,
    make: impl FnOnce(ReqId) -> Event,
) -> oneshot::Receiver<Result<(), CoreError>> {
    let (reply, rx) = oneshot::channel();
    driver.client(reply, make);
    rx
}

/// The core's answer as the NBD server's result (a dropped reply: the
/// driver stopped).
async fn answer(rx: oneshot::Receiver<Result<(), CoreError>>) -> Result<(), VolumeError> {
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(VolumeError::Io {
            source: std::io::Error::other(e.to_string()),
        }),
        Err(_) => Err(VolumeError::ShuttingDown),
    }
}
