//! One resource as the daemon holds it. Placeholder until the metadata
//! store lands: `up` refuses with the reason, so the binary builds and every
//! command answers.

use std::path::Path;

use crate::status::ResourceStatus;

/// A resource that is up on this node.
#[derive(Debug)]
pub struct Resource {
    name: String,
}

impl Resource {
    pub async fn up(
        name: &str,
        _config: &Path,
        _node: &str,
        _run_dir: &Path,
    ) -> anyhow::Result<Resource> {
        anyhow::bail!("{name}: attaching a disk is not in this build of hadisk yet")
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn disk_state(&self) -> &'static str {
        "Diskless"
    }
    pub fn status(&self) -> ResourceStatus {
        unreachable_status(&self.name)
    }
    pub async fn promote(&mut self, _force: bool) -> anyhow::Result<String> {
        anyhow::bail!("{}: not attached", self.name)
    }
    pub async fn demote(&mut self) -> anyhow::Result<String> {
        anyhow::bail!("{}: not attached", self.name)
    }
    pub async fn down(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

fn unreachable_status(name: &str) -> ResourceStatus {
    ResourceStatus {
        name: name.to_string(),
        node: String::new(),
        role: "Secondary".into(),
        disk: "Diskless".into(),
        size_bytes: 0,
        nbd_clients: 0,
        nbd_socket: None,
        peer: crate::status::PeerStatus {
            name: String::new(),
            connection: "StandAlone".into(),
            role: "Unknown".into(),
            disk: "DUnknown".into(),
            replication: "Off".into(),
            out_of_sync_bytes: 0,
            resync: None,
            last_error: None,
        },
    }
}
