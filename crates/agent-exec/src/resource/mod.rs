//! The resource types of `haresources` (DESIGN.md §1.4) and what `start`,
//! `stop` and `status` do for each.
//!
//! Every type follows the OCF rule that [`hadisk_agent::plan`] relies on:
//! starting a started resource and stopping a stopped one succeed and change
//! nothing, so a roll-back may stop a resource whose start failed half way.
//! A failure is one line saying what failed and, where it helps, what to do.

use std::path::PathBuf;
use std::sync::Arc;

use hadisk_agent::replication::ReplicaView;
use hadisk_config::ha::HaResource;

use crate::garp::Flavour;

pub mod filesystem;
pub mod hadisk;
pub mod ipaddr;
pub mod script;

/// The daemon, as the agent uses it. The `hadisk` binary implements it over
/// its control socket; calls block (the executor runs them on tokio's
/// blocking pool), and each is bounded by the daemon.
pub trait Replicator: Send + Sync + std::fmt::Debug {
    /// The resource's state as `hadisk status --json` reports it.
    fn status(&self, resource: &str) -> Result<ReplicaView, String>;
    /// `hadisk primary RES`.
    fn promote(&self, resource: &str) -> Result<(), String>;
    /// `hadisk secondary RES`.
    fn demote(&self, resource: &str) -> Result<(), String>;
}

/// What resources need from the agent.
#[derive(Debug, Clone)]
pub struct Env {
    /// `--ha-dir`: scripts are looked up in its `resource.d` first.
    pub ha_dir: PathBuf,
    /// The daemon.
    pub replicator: Arc<dyn Replicator>,
    /// The installed arping.
    pub garp: Flavour,
}

/// Starts one resource.
pub async fn start(env: &Env, r: &HaResource) -> Result<(), String> {
    match r {
        HaResource::Hadisk { resource, .. } => hadisk::promote(env, resource).await,
        HaResource::Filesystem {
            device,
            directory,
            fstype,
            options,
        } => filesystem::mount(device, directory, fstype, options.as_deref()).await,
        HaResource::IpAddr {
            addr,
            prefix,
            iface,
            label,
            broadcast,
            ..
        } => {
            let a = ipaddr::Address {
                addr: *addr,
                prefix: *prefix,
                iface: iface.clone(),
                label: label.clone(),
                broadcast: *broadcast,
            };
            ipaddr::add(&a, env.garp).await
        }
        HaResource::Delay { start_ms, .. } => {
            tokio::time::sleep(std::time::Duration::from_millis(*start_ms)).await;
            Ok(())
        }
        HaResource::Script { name, args } => {
            script::call(&env.ha_dir, name, args, script::Action::Start).await
        }
    }
}

/// Stops one resource.
pub async fn stop(env: &Env, r: &HaResource) -> Result<(), String> {
    match r {
        HaResource::Hadisk { resource, .. } => hadisk::demote(env, resource).await,
        HaResource::Filesystem { directory, .. } => filesystem::unmount(directory).await,
        HaResource::IpAddr {
            addr,
            prefix,
            iface,
            ..
        } => ipaddr::remove(*addr, *prefix, iface).await,
        HaResource::Delay { stop_ms, .. } => {
            tokio::time::sleep(std::time::Duration::from_millis(*stop_ms)).await;
            Ok(())
        }
        HaResource::Script { name, args } => {
            script::call(&env.ha_dir, name, args, script::Action::Stop).await
        }
    }
}

/// Whether one resource is active on this node (for `hadisk agent status`).
pub async fn status(env: &Env, r: &HaResource) -> Result<bool, String> {
    match r {
        HaResource::Hadisk { resource, .. } => hadisk::is_primary(env, resource).await,
        HaResource::Filesystem {
            device, directory, ..
        } => filesystem::is_mounted(device, directory).await,
        HaResource::IpAddr {
            addr,
            prefix,
            iface,
            ..
        } => ipaddr::is_present(*addr, *prefix, iface).await,
        HaResource::Delay { .. } => Ok(false),
        HaResource::Script { name, args } => {
            match script::call(&env.ha_dir, name, args, script::Action::Status).await {
                Ok(()) => Ok(true),
                Err(e) if e.starts_with(script::NOT_FOUND) => Err(e),
                Err(_) => Ok(false),
            }
        }
    }
}
