//! `hadisk daemon`: one process per node that owns the node's resources.
//!
//! It serves the control socket, attaches disks on `up`, exports a Primary's
//! volume over NBD and, on SIGTERM or SIGINT, shuts down in order: stop
//! accepting, let in-flight requests finish, flush, write the metadata clean,
//! exit 0 — so that the next start does not mistake a clean stop for a crash.

mod control_server;
mod disk_lock;
mod driver;
mod export;
mod link;
mod link_out;
mod meta_io;
mod replicated;
mod sb_save;
mod state;
mod usable;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hadisk_nbd_server::IoMode;
use tokio::sync::{watch, Mutex};
use tracing::{error, info, Instrument};

use crate::cli::GlobalOpts;
use crate::control::{Request, Response, CONTROL_SOCKET};
use crate::status::StatusReport;

use replicated::Resource;

/// The daemon's state: the resources that are up, by name.
#[derive(Debug)]
pub struct Daemon {
    run_dir: PathBuf,
    io_mode: IoMode,
    resources: Mutex<BTreeMap<String, Resource>>,
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT.
pub fn run(g: &GlobalOpts) -> anyhow::Result<()> {
    let io_mode = export::io_mode_from_env().map_err(|e| anyhow::anyhow!(e))?;
    let busy_poll = export::busy_poll_from_env().map_err(|e| anyhow::anyhow!(e))?;
    if !g.run_dir.exists() {
        // Only a directory we create gets our mode: a run dir the operator
        // chose (even /tmp) keeps its own.
        std::fs::create_dir_all(&g.run_dir)
            .with_context(|| format!("creating the run directory {}", g.run_dir.display()))?;
        std::fs::set_permissions(&g.run_dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("setting mode 0755 on {}", g.run_dir.display()))?;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("hadisk");
    if !busy_poll.is_zero() {
        // One event thread: the thread that polls must be the one the
        // runtime would wake (see `hadisk_nbd_server::busy_poll`).
        hadisk_nbd_server::busy_poll::enable(busy_poll).context("setting up busy polling")?;
        builder
            .worker_threads(1)
            .on_thread_park(hadisk_nbd_server::busy_poll::before_park);
    }
    let runtime = builder.build().context("starting the tokio runtime")?;
    runtime.block_on(run_async(g.run_dir.clone(), io_mode))
}

async fn run_async(run_dir: PathBuf, io_mode: IoMode) -> anyhow::Result<()> {
    let socket = run_dir.join(CONTROL_SOCKET);
    let _lock = control_server::lock_run_dir(&run_dir, &socket)?;
    let listener = control_server::bind(&socket)?;
    let daemon = Arc::new(Daemon {
        run_dir,
        io_mode,
        resources: Mutex::new(BTreeMap::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(control_server::serve(
        listener,
        socket.clone(),
        daemon.clone(),
        stop_rx,
    ));
    info!(socket = %socket.display(), pid = std::process::id(), "hadisk daemon started");

    wait_for_signal().await?;
    info!("shutting down: no new requests, finishing in-flight I/O");
    let _ = stop_tx.send(true);
    let _ = server.await;
    let failed = daemon.shutdown().await;
    if !failed.is_empty() {
        anyhow::bail!(
            "stopped, but the metadata of {} could not be written clean (see the log); the next `up` \
             treats them as not cleanly shut down",
            failed.join(", ")
        );
    }
    info!("hadisk daemon stopped cleanly");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    Ok(())
}

impl Daemon {
    /// Carries out one control request. Every refusal is a `Response` with a
    /// reason; nothing here may take the daemon down.
    ///
    /// Each request runs in a `resource{name}` span; refusals are logged
    /// with their reason, so the daemon's log tells what operators tried.
    pub async fn handle(&self, request: Request) -> Response {
        let Some(name) = request_resource(&request).map(str::to_owned) else {
            return self.dispatch(request).await;
        };
        let command = request_name(&request);
        let span = tracing::info_span!("resource", name = %name);
        let response = self.dispatch(request).instrument(span.clone()).await;
        if !response.ok {
            span.in_scope(|| info!(command, reason = %response.message, "refused"));
        }
        response
    }

    async fn dispatch(&self, request: Request) -> Response {
        match request {
            Request::Status { resource } => self.status(resource.as_deref()).await,
            Request::Up {
                resource,
                config,
                node,
                wait,
            } => self.up(&resource, config, node, wait).await,
            Request::Down { resource } => self.down(&resource).await,
            Request::Primary { resource, force } => {
                self.with_resource(&resource, |r| Box::pin(r.promote(force)))
                    .await
            }
            Request::Secondary { resource } => {
                self.with_resource(&resource, |r| Box::pin(r.demote()))
                    .await
            }
            Request::Connect {
                resource,
                discard_my_data,
            } => {
                self.with_resource(&resource, |r| Box::pin(r.connect(discard_my_data)))
                    .await
            }
            Request::Disconnect { resource } => {
                self.with_resource(&resource, |r| Box::pin(r.disconnect()))
                    .await
            }
            Request::PauseSync { resource } => {
                self.with_resource(&resource, |r| Box::pin(r.pause_sync(true)))
                    .await
            }
            Request::ResumeSync { resource } => {
                self.with_resource(&resource, |r| Box::pin(r.pause_sync(false)))
                    .await
            }
            Request::Invalidate { resource } => {
                self.with_resource(&resource, |r| Box::pin(r.invalidate(false)))
                    .await
            }
            Request::InvalidateRemote { resource } => {
                self.with_resource(&resource, |r| Box::pin(r.invalidate(true)))
                    .await
            }
            Request::Verify { resource } => {
                self.with_resource(&resource, |r| Box::pin(r.verify()))
                    .await
            }
        }
    }

    async fn status(&self, only: Option<&str>) -> Response {
        let resources = self.resources.lock().await;
        if let Some(name) = only {
            if !resources.contains_key(name) {
                return Response::refused(not_up(name, resources.keys()));
            }
        }
        let mut report = StatusReport::default();
        for r in resources.values() {
            if only.is_none_or(|n| n == r.name()) {
                report.resources.push(r.status().await);
            }
        }
        Response {
            ok: true,
            message: String::new(),
            status: Some(report),
        }
    }

    async fn up(&self, name: &str, config: PathBuf, node: String, wait: bool) -> Response {
        let mut resources = self.resources.lock().await;
        if resources.contains_key(name) {
            return Response::ok(format!("{name}: already up"));
        }
        let (msg, timeout) =
            match Resource::up(name, &config, &node, &self.run_dir, self.io_mode).await {
                Ok(r) => {
                    let msg = r.up_message();
                    let timeout = r.wait_timeout();
                    resources.insert(name.to_string(), r);
                    (msg, timeout)
                }
                Err(e) => return Response::refused(format!("{e:#}")),
            };
        drop(resources);
        if wait {
            return self.wait_connected(name, msg, timeout).await;
        }
        Response::ok(msg)
    }

    /// `up --wait`: until Connected, or `wfc-timeout` (DRBD's init script
    /// then goes on degraded; so does this: the answer is still success).
    async fn wait_connected(
        &self,
        name: &str,
        msg: String,
        timeout: Option<std::time::Duration>,
    ) -> Response {
        let start = std::time::Instant::now();
        loop {
            let connected = match self.resources.lock().await.get(name) {
                Some(r) => r.core_status().await.map(|s| s.connection.to_string()),
                None => return Response::refused(format!("{name}: went down while waiting")),
            };
            if connected.as_deref() == Some("Connected") {
                return Response::ok(format!("{msg}; connected"));
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Response::ok(format!(
                    "{msg}; the peer did not connect within the wfc-timeout: going on degraded"
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn down(&self, name: &str) -> Response {
        let mut resources = self.resources.lock().await;
        let Some(r) = resources.get_mut(name) else {
            return Response::refused(not_up(name, resources.keys()));
        };
        if let Err(e) = r.down().await {
            return Response::refused(format!("{e:#}"));
        }
        resources.remove(name);
        Response::ok(format!("{name}: down"))
    }

    async fn with_resource<F>(&self, name: &str, f: F) -> Response
    where
        F: for<'a> FnOnce(
            &'a mut Resource,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = anyhow::Result<String>> + Send + 'a>,
        >,
    {
        let mut resources = self.resources.lock().await;
        let Some(r) = resources.get_mut(name) else {
            return Response::refused(not_up(name, resources.keys()));
        };
        match f(r).await {
            Ok(msg) => Response::ok(msg),
            Err(e) => Response::refused(format!("{e:#}")),
        }
    }

    /// SIGTERM path: every resource writes its metadata clean.
    /// Returns the resources whose clean shutdown failed.
    async fn shutdown(&self) -> Vec<String> {
        let mut resources = self.resources.lock().await;
        let mut failed = Vec::new();
        for (name, r) in resources.iter_mut() {
            if let Err(e) = r.shutdown().await {
                error!(resource = %name, error = %format!("{e:#}"), "clean shutdown failed");
                failed.push(name.clone());
            }
        }
        failed
    }
}

/// The resource a request is about (`status` without one: none).
fn request_resource(request: &Request) -> Option<&str> {
    match request {
        Request::Status { resource } => resource.as_deref(),
        Request::Up { resource, .. }
        | Request::Down { resource }
        | Request::Primary { resource, .. }
        | Request::Secondary { resource }
        | Request::Connect { resource, .. }
        | Request::Disconnect { resource }
        | Request::Invalidate { resource }
        | Request::InvalidateRemote { resource }
        | Request::Verify { resource }
        | Request::PauseSync { resource }
        | Request::ResumeSync { resource } => Some(resource),
    }
}

/// The command's name as the CLI spells it, for the log.
fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Status { .. } => "status",
        Request::Up { .. } => "up",
        Request::Down { .. } => "down",
        Request::Primary { .. } => "primary",
        Request::Secondary { .. } => "secondary",
        Request::Connect { .. } => "connect",
        Request::Disconnect { .. } => "disconnect",
        Request::Invalidate { .. } => "invalidate",
        Request::InvalidateRemote { .. } => "invalidate-remote",
        Request::Verify { .. } => "verify",
        Request::PauseSync { .. } => "pause-sync",
        Request::ResumeSync { .. } => "resume-sync",
    }
}

fn not_up<'a>(name: &str, up: impl Iterator<Item = &'a String>) -> String {
    let up: Vec<&str> = up.map(String::as_str).collect();
    if up.is_empty() {
        format!("{name}: resource is not up (no resource is); run `hadisk up {name}`")
    } else {
        format!(
            "{name}: resource is not up (up: {}); run `hadisk up {name}`",
            up.join(", ")
        )
    }
}
