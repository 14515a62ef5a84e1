//! What `status` shows: states with DRBD's names, out-of-sync bytes and
//! resync progress (done %, bytes, speed, ETA from the time the driver
//! passes in).

use hadisk_bitmap::BLOCK_BYTES;
use hadisk_peer_proto::{DiskState, Role, Uuids};

use crate::resource::Resource;
use crate::states::{Connection, Replication};

/// Progress of a running resync.
#[derive(Debug, Clone, PartialEq)]
pub struct ResyncProgress {
    pub total_bytes: u64,
    pub done_bytes: u64,
    pub done_percent: f64,
    /// The current speed: over the last few seconds (DRBD's sync marks).
    pub speed_bytes_per_s: u64,
    /// The average speed since the resync started.
    pub average_speed_bytes_per_s: u64,
    /// From the current speed (the average if nothing moved lately);
    /// `None` until something was synced.
    pub eta_s: Option<u64>,
}

/// A snapshot of the resource's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub role: Role,
    pub disk: DiskState,
    pub connection: Connection,
    pub peer_role: Role,
    /// `None`: unknown (DRBD's DUnknown).
    pub peer_disk: Option<DiskState>,
    pub replication: Replication,
    pub out_of_sync_bytes: u64,
    pub resync: Option<ResyncProgress>,
    pub uuids: Uuids,
    /// Why the link was refused or dropped last (split brain, …).
    pub last_error: Option<String>,
    /// `pause-sync` was given on this node / on the peer.
    pub sync_paused_here: bool,
    pub sync_paused_by_peer: bool,
    /// The resync rate controller's mode and what it allows now.
    pub rate: crate::rate::RateStatus,
    /// The running online verify, else the last one (None: never ran).
    pub verify: Option<crate::VerifyReport>,
}

impl Resource {
    pub fn status(&self, now_ms: u64) -> Status {
        Status {
            role: self.role,
            disk: self.disk,
            connection: self.conn,
            peer_role: self.peer_role,
            peer_disk: self.peer_disk,
            replication: self.repl,
            out_of_sync_bytes: self.bitmap.dirty_bytes(),
            resync: self.resync_progress(now_ms),
            uuids: self.sb.uuids,
            last_error: self.last_error.clone(),
            sync_paused_here: self.sync_paused_here,
            sync_paused_by_peer: self.sync_paused_by_peer,
            // A copy: measuring advances the controller's window.
            rate: self.rate.clone().status(now_ms),
            verify: self.verify_report(),
        }
    }

    fn resync_progress(&self, now_ms: u64) -> Option<ResyncProgress> {
        if let Some(v) = &self.verify {
            return Some(self.verify_progress(v, now_ms));
        }
        let p = self.progress.as_ref()?;
        let total_bytes = p.total_blocks * BLOCK_BYTES;
        let left = self.bitmap.dirty_blocks().min(p.total_blocks) * BLOCK_BYTES;
        let done_bytes = total_bytes - left;
        let done_percent = if total_bytes == 0 {
            100.0
        } else {
            done_bytes as f64 * 100.0 / total_bytes as f64
        };
        let elapsed_ms = now_ms.saturating_sub(p.started_ms).max(1);
        let average_speed_bytes_per_s = done_bytes.saturating_mul(1000) / elapsed_ms;
        let (mark_ms, mark_left) = p
            .marks
            .front()
            .copied()
            .unwrap_or((p.started_ms, p.total_blocks));
        let moved = (mark_left * BLOCK_BYTES).saturating_sub(left);
        let speed_bytes_per_s = moved.saturating_mul(1000) / now_ms.saturating_sub(mark_ms).max(1);
        let eta_speed = if speed_bytes_per_s > 0 {
            speed_bytes_per_s
        } else {
            average_speed_bytes_per_s
        };
        let eta_s = (eta_speed > 0).then(|| left / eta_speed);
        Some(ResyncProgress {
            total_bytes,
            done_bytes,
            done_percent,
            speed_bytes_per_s,
            average_speed_bytes_per_s,
            eta_s,
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn disk(&self) -> DiskState {
        self.disk
    }

    pub fn connection(&self) -> Connection {
        self.conn
    }

    pub fn replication(&self) -> Replication {
        self.repl
    }

    /// Whether NBD reads may be served from the local disk.
    pub fn can_serve_reads(&self) -> bool {
        self.role == Role::Primary && self.disk == DiskState::UpToDate
    }

    /// Whether nothing is in flight (no writes, flushes, resync I/O, metadata).
    pub fn is_idle(&self) -> bool {
        self.writes.is_empty()
            && self.flushes.is_empty()
            && self.peer_writes.is_empty()
            && self.source_reads.is_empty()
            && self.digest_ops.is_empty()
            && self.meta_inflight.is_none()
            && self.peer_flushes.is_empty()
            && self.promoting.is_none()
            && !self.demoting
            && self.saving.is_none()
    }

    /// The dirty bitmap: blocks that may differ from the peer (read-only; the
    /// daemon persists it through [`crate::Action::WriteMeta`]).
    pub fn bitmap(&self) -> &hadisk_bitmap::DirtyBitmap {
        &self.bitmap
    }

    /// The superblock fields as the core last asked to persist them.
    pub fn superblock(&self) -> crate::event::SuperblockState {
        self.sb
    }
}
