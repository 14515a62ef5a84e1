//! What a resource's NBD listeners serve: an [`ExportGate`], the registry
//! the server consults at every handshake (the Primary's data path is
//! `super::replicated::ReplicatedVolume`).
//!
//! Invariants:
//! - the listeners exist from `up` to `down`, whatever the role: a client
//!   that reaches a Secondary gets a handshake error naming the reason
//!   ("resource data is Secondary on node beta"), never a hang or a bare
//!   close;
//! - the gate serves a volume only while the resource is Primary; the
//!   daemon closes the gate *before* counting clients when it demotes, so a
//!   client that opens the export concurrently is either counted or refused
//!   (the server counts a client before it calls [`ExportRegistry::open`]);
//! - every request reaching the disk lies inside the usable size
//!   ([`super::usable::UsableArea`]): the metadata is out of reach.

use std::sync::{Arc, Mutex, MutexGuard};

use hadisk_nbd_server::{ExportInfo, ExportRegistry, IoMode, Volume};

/// Environment variable choosing where the Primary's disk I/O runs:
/// `adaptive` (default: in the connection task while writes complete at
/// page-cache speed, on the blocking pool for a while after one that
/// waited), `blocking` (tokio's blocking pool, a slow disk never stalls the
/// daemon) or `inline` (in the connection task: fastest when the data is in
/// the page cache). See `hadisk_nbd_server::IoMode`.
pub const IO_MODE_ENV: &str = "HADISK_IO_MODE";

/// Environment variable that, set to `off`, keeps large write payloads in
/// memory instead of moving them through pipes with `splice` (for
/// comparison; see `hadisk_payload`).
pub const SPLICE_ENV: &str = "HADISK_SPLICE";

/// Environment variable: how long, in microseconds, the daemon's event
/// thread polls its sockets before it sleeps (`0`: never; see
/// `hadisk_nbd_server::busy_poll`). With busy polling the daemon runs one
/// event thread (the one that polls is then always the one that would be
/// woken).
pub const BUSY_POLL_ENV: &str = "HADISK_BUSY_POLL_US";

/// The default poll before sleeping. Measured in the pair on this
/// project's machine (4 KiB writes, alternating pairs, 3 runs each): QD1
/// mean latency 62–69 µs without, 42–48 µs with 50 µs (58 µs with 20, 51
/// with 100); QD32 49–62k IOPS without, 67–72k with (the bench's
/// same-window A/B: 60.3k vs 64.0k); 1 MiB writes
/// unchanged within noise.
pub const DEFAULT_BUSY_POLL_US: u64 = 50;

/// The largest poll accepted: beyond a few hundred microseconds a spin
/// only burns CPU.
pub const MAX_BUSY_POLL_US: u64 = 10_000;

/// The poll named by `value` (of [`BUSY_POLL_ENV`]; `None`: unset), or why
/// it is not one.
pub fn parse_busy_poll(value: Option<&str>) -> Result<std::time::Duration, String> {
    let us = match value {
        None => DEFAULT_BUSY_POLL_US,
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&us| us <= MAX_BUSY_POLL_US)
            .ok_or_else(|| {
                format!(
                    "{BUSY_POLL_ENV}={v:?} is not valid: use a number of microseconds from 0 (off) to {MAX_BUSY_POLL_US}"
                )
            })?,
    };
    Ok(std::time::Duration::from_micros(us))
}

/// [`parse_busy_poll`] of the environment.
pub fn busy_poll_from_env() -> Result<std::time::Duration, String> {
    parse_busy_poll(std::env::var(BUSY_POLL_ENV).ok().as_deref())
}

/// Whether large payloads go through pipes ([`SPLICE_ENV`] not `off`).
pub fn splice_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var(SPLICE_ENV).map_or(true, |v| v != "off"))
}

/// The I/O mode named by [`IO_MODE_ENV`], or why its value is not one.
pub fn io_mode_from_env() -> Result<IoMode, String> {
    match std::env::var(IO_MODE_ENV) {
        Err(_) => Ok(IoMode::default()),
        Ok(v) if v == "adaptive" => Ok(IoMode::Adaptive),
        Ok(v) if v == "blocking" => Ok(IoMode::Blocking),
        Ok(v) if v == "inline" => Ok(IoMode::Inline),
        Ok(v) => Err(format!(
            "{IO_MODE_ENV}={v:?} is not valid: use `adaptive`, `blocking` or `inline`"
        )),
    }
}

enum Gate {
    Serving(Arc<dyn Volume>),
    Refusing(String),
}

/// One resource's export: its name, and either the volume or the reason
/// clients are refused.
pub struct ExportGate {
    resource: String,
    node: String,
    gate: Mutex<Gate>,
}

impl std::fmt::Debug for ExportGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let serving = matches!(*self.lock(), Gate::Serving(_));
        f.debug_struct("ExportGate")
            .field("resource", &self.resource)
            .field("serving", &serving)
            .finish()
    }
}

impl ExportGate {
    /// A gate that refuses with `reason` until [`Self::serve`] is called.
    pub fn refusing(resource: &str, node: &str, reason: String) -> ExportGate {
        ExportGate {
            resource: resource.to_owned(),
            node: node.to_owned(),
            gate: Mutex::new(Gate::Refusing(reason)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Gate> {
        // Each critical section is one assignment or one clone: a panic
        // cannot leave the gate half-changed, so poisoning is ignored.
        self.gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Serves `volume` to the next clients.
    pub fn serve(&self, volume: Arc<dyn Volume>) {
        *self.lock() = Gate::Serving(volume);
    }

    /// Refuses the next clients with `reason`; returns the volume that was
    /// served, if any (to reopen the gate when a demotion is refused).
    pub fn refuse(&self, reason: String) -> Option<Arc<dyn Volume>> {
        match std::mem::replace(&mut *self.lock(), Gate::Refusing(reason)) {
            Gate::Serving(volume) => Some(volume),
            Gate::Refusing(_) => None,
        }
    }
}

impl ExportRegistry for ExportGate {
    fn list(&self) -> Vec<ExportInfo> {
        let role = match *self.lock() {
            Gate::Serving(_) => "Primary",
            Gate::Refusing(_) => "not served",
        };
        vec![ExportInfo {
            name: self.resource.clone(),
            description: format!(
                "hadisk resource {} on node {} ({role})",
                self.resource, self.node
            ),
        }]
    }

    fn open(&self, name: &str) -> Result<Arc<dyn Volume>, String> {
        if !name.is_empty() && name != self.resource {
            return Err(format!(
                "no export named {name:?} on this socket: it serves resource {} (export name {:?})",
                self.resource, self.resource
            ));
        }
        match &*self.lock() {
            Gate::Serving(volume) => Ok(Arc::clone(volume)),
            Gate::Refusing(reason) => Err(reason.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn busy_poll_values() {
        use std::time::Duration;
        assert_eq!(
            parse_busy_poll(None),
            Ok(Duration::from_micros(DEFAULT_BUSY_POLL_US))
        );
        assert_eq!(parse_busy_poll(Some("0")), Ok(Duration::ZERO));
        assert_eq!(parse_busy_poll(Some(" 75 ")), Ok(Duration::from_micros(75)));
        assert_eq!(
            parse_busy_poll(Some("10000")),
            Ok(Duration::from_micros(10_000))
        );
        for bad in ["10001", "-1", "50us", "", "off"] {
            assert_eq!(
                parse_busy_poll(Some(bad)),
                Err(format!(
                    "HADISK_BUSY_POLL_US={bad:?} is not valid: use a number of microseconds from 0 (off) to 10000"
                )),
            );
        }
    }

    use super::*;
    use hadisk_nbd_server::LocalVolume;
    use hadisk_storage::MemDevice;

    fn volume() -> Arc<dyn Volume> {
        let disk = Arc::new(MemDevice::new(512 << 10));
        Arc::new(LocalVolume::new(disk, 512 << 10, false, IoMode::Inline).unwrap())
    }

    #[test]
    fn gate_refuses_with_the_reason_then_serves() {
        let gate = ExportGate::refusing(
            "data",
            "beta",
            "resource data is Secondary on node beta".into(),
        );
        assert_eq!(
            gate.open("data").err().as_deref(),
            Some("resource data is Secondary on node beta")
        );
        assert_eq!(
            gate.open("").err().as_deref(),
            Some("resource data is Secondary on node beta")
        );
        gate.serve(volume());
        assert_eq!(
            gate.open("data").map(|v| v.size_bytes()).ok(),
            Some(512 << 10)
        );
        assert_eq!(gate.open("").map(|v| v.size_bytes()).ok(), Some(512 << 10));
        assert_eq!(
            gate.open("other").err().as_deref(),
            Some("no export named \"other\" on this socket: it serves resource data (export name \"data\")")
        );
        assert!(gate.refuse("stopping".into()).is_some());
        assert!(gate.refuse("stopping".into()).is_none());
        assert_eq!(gate.open("data").err().as_deref(), Some("stopping"));
    }

    #[test]
    fn listing_shows_the_one_export() {
        let gate = ExportGate::refusing("data", "beta", String::new());
        let list = gate.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "data");
        assert_eq!(
            list[0].description,
            "hadisk resource data on node beta (not served)"
        );
    }
}
