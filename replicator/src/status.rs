//! The status report (DESIGN.md §1.3): one serde model that the daemon fills
//! and that is printed three ways — `status --json` (what tests parse), the
//! `drbdadm status` text, and the `drbd-overview` line.
//!
//! State names are DRBD's strings, so DRBD users and their scripts read them
//! without a dictionary.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// `{"resources": [...]}`: the whole `status --json` document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusReport {
    pub resources: Vec<ResourceStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub name: String,
    /// This node's name.
    pub node: String,
    /// Primary | Secondary.
    pub role: String,
    /// Diskless, Attaching, Inconsistent, Outdated, Consistent, UpToDate, Failed.
    pub disk: String,
    pub size_bytes: u64,
    pub nbd_clients: usize,
    /// Where the export is served: the Unix socket path.
    pub nbd_socket: Option<String>,
    /// The TCP address of the export (`nbd-listen`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_tcp: Option<String>,
    /// This node crashed while Primary (found at attach); its activity-log
    /// extents are resynced with the peer.
    #[serde(default)]
    pub crashed_primary: bool,
    /// The resync rate controller (absent while the disk is not attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_rate: Option<ResyncRateStatus>,
    pub peer: PeerStatus,
}

/// The resync rate controller: its mode (`fixed` when `c-plan-ahead 0`,
/// else `dynamic`), its settings, and what it allows now. It is the
/// SyncTarget's controller that paces a resync.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResyncRateStatus {
    pub mode: String,
    /// `resync-rate` (fixed mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_rate_bytes_per_s: Option<u64>,
    /// The dynamic controller's `c-*` settings (`c_max_rate` 0: no cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_plan_ahead_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_fill_target_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_min_rate_bytes_per_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_max_rate_bytes_per_s: Option<u64>,
    /// The rate a resync may go at now; null: no limit.
    pub limit_bytes_per_s: Option<u64>,
    /// Application I/O seen lately: the resync leaves room for it.
    pub throttled: bool,
    /// The application's measured write rate.
    pub app_bytes_per_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    /// StandAlone, Connecting, Connected.
    pub connection: String,
    /// Primary | Secondary | Unknown.
    pub role: String,
    /// The peer's disk state, DUnknown while not connected.
    pub disk: String,
    /// Off, Established, SyncSource, SyncTarget, PausedSyncS, PausedSyncT, VerifyS, VerifyT.
    pub replication: String,
    pub out_of_sync_bytes: u64,
    pub resync: Option<ResyncStatus>,
    /// Why the link is not up, when there is a reason worth telling (a wrong
    /// shared secret, split brain, unrelated data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `pause-sync` was given here / on the peer (the replication state is
    /// then PausedSyncS or PausedSyncT during a resync).
    #[serde(default)]
    pub sync_paused_here: bool,
    #[serde(default)]
    pub sync_paused_by_peer: bool,
    /// The running online verify, else the last one since `up` (null:
    /// none ran).
    #[serde(default)]
    pub verify: Option<VerifyStatus>,
}

/// An online verify's progress, or the last one's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyStatus {
    pub running: bool,
    /// VerifyS (this node ran `verify`) or VerifyT.
    pub role: String,
    pub done_percent: f64,
    /// Bytes (whole 4 KiB blocks) this verify found different so far.
    pub out_of_sync_bytes: u64,
    /// It covered the whole device (false: stopped by a lost connection).
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResyncStatus {
    pub done_percent: f64,
    /// The current speed (over the last few seconds, as DRBD's).
    pub speed_bytes_per_s: u64,
    /// The average speed since the resync started.
    #[serde(default)]
    pub average_speed_bytes_per_s: u64,
    pub eta_s: u64,
    /// Bytes still to sync and the total of this resync, for the overview.
    pub remaining_bytes: u64,
    pub total_bytes: u64,
}

/// Prints `drbdadm status` text for each resource.
pub fn render_status(report: &StatusReport) -> String {
    let mut out = String::new();
    for r in &report.resources {
        let _ = writeln!(out, "{} role:{}", r.name, r.role);
        let _ = writeln!(out, "  disk:{}", r.disk);
        let p = &r.peer;
        if p.connection == "Connected" {
            let _ = writeln!(out, "  {} role:{}", p.name, p.role);
            let mut line = String::from("   ");
            if p.replication != "Established" {
                let _ = write!(line, " replication:{}", p.replication);
            }
            let _ = write!(line, " peer-disk:{}", p.disk);
            if let Some(s) = &p.resync {
                let _ = write!(line, " done:{:.2}", s.done_percent);
            }
            // DRBD's statistics figure, in KiB: what the next resync sends.
            let verifying = p.verify.as_ref().is_some_and(|v| v.running);
            if verifying || p.out_of_sync_bytes > 0 {
                let _ = write!(line, " out-of-sync:{}", p.out_of_sync_bytes / 1024);
            }
            let _ = writeln!(out, "{line}");
            if let Some(v) = p.verify.as_ref().filter(|v| !v.running) {
                let _ = writeln!(
                    out,
                    "    last-verify: {} {} KiB out of sync{}",
                    v.role,
                    v.out_of_sync_bytes / 1024,
                    if v.complete {
                        ""
                    } else {
                        " (stopped before the end)"
                    }
                );
            }
        } else {
            let _ = writeln!(out, "  {} connection:{}", p.name, p.connection);
        }
        if let Some(e) = &p.last_error {
            let _ = writeln!(out, "    last-error: {e}");
        }
        let _ = writeln!(out);
    }
    out
}

/// Prints one `drbd-overview` line per resource, with the progress bar,
/// `sync'ed:` and `finish:` lines while a resync runs.
pub fn render_overview(report: &StatusReport) -> String {
    let mut out = String::new();
    for (minor, r) in report.resources.iter().enumerate() {
        let p = &r.peer;
        let cstate = if p.connection == "Connected" && p.replication != "Established" {
            p.replication.as_str()
        } else {
            p.connection.as_str()
        };
        let _ = writeln!(
            out,
            "{:>3}:{}/0  {} {}/{} {}/{}",
            minor, r.name, cstate, r.role, p.role, r.disk, p.disk
        );
        if let Some(s) = &p.resync {
            let _ = writeln!(out, "\t{}", progress_line(s, &p.replication));
            let _ = writeln!(out, "\t{}", finish_line(s));
        }
    }
    out
}

/// Width of the progress bar between its brackets, as in /proc/drbd.
const BAR_WIDTH: u64 = 20;

/// `[=====>..............] sync'ed: 31.4% (702/1024)M` as DRBD's
/// `drbd_syncer_progress` prints it: the percentage in tenths with its whole
/// part right-aligned in 3 columns (`sync'ed:  5.3%`, `sync'ed:100.0%`), the
/// first number what is still to do, the second the total of this resync;
/// `verified:` in place of `sync'ed:` during an online verify.
fn progress_line(s: &ResyncStatus, replication: &str) -> String {
    // Per mille done, truncated as DRBD does (it never shows 100.0% early);
    // the epsilon keeps 31.4 from truncating to 313 by binary rounding.
    let res = ((s.done_percent.clamp(0.0, 100.0) * 10.0 + 1e-6) as u64).min(1000);
    // DRBD: x = res/50 bars, of which the last is '>', then 20-x dots.
    let x = res / 50;
    let mut bar = String::with_capacity(BAR_WIDTH as usize + 3);
    bar.push('[');
    for _ in 1..x {
        bar.push('=');
    }
    bar.push('>');
    for _ in 0..BAR_WIDTH.saturating_sub(x) {
        bar.push('.');
    }
    bar.push(']');
    let what = if replication.starts_with("Verify") {
        "verified:"
    } else {
        "sync'ed:"
    };
    const MIB: u64 = 1024 * 1024;
    format!(
        "{bar} {what}{:>3}.{}% ({}/{})M",
        res / 10,
        res % 10,
        s.remaining_bytes / MIB,
        s.total_bytes / MIB
    )
}

/// `finish: 0:00:12 speed: 55,232 (54,112) K/sec`: as DRBD, the speed of
/// the last few seconds and, in parentheses, the average since the start.
fn finish_line(s: &ResyncStatus) -> String {
    let (h, m, sec) = (s.eta_s / 3600, (s.eta_s / 60) % 60, s.eta_s % 60);
    let now = group_thousands(s.speed_bytes_per_s / 1024);
    let avg = group_thousands(s.average_speed_bytes_per_s / 1024);
    format!("finish: {h}:{m:02}:{sec:02} speed: {now} ({avg}) K/sec")
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(connection: &str, replication: &str, resync: Option<ResyncStatus>) -> StatusReport {
        StatusReport {
            resources: vec![ResourceStatus {
                name: "data".into(),
                node: "nas1".into(),
                role: "Primary".into(),
                disk: "UpToDate".into(),
                size_bytes: 1 << 30,
                nbd_clients: 1,
                nbd_socket: None,
                nbd_tcp: None,
                crashed_primary: false,
                resync_rate: None,
                peer: PeerStatus {
                    name: "nas2".into(),
                    connection: connection.into(),
                    role: "Secondary".into(),
                    disk: "Inconsistent".into(),
                    replication: replication.into(),
                    out_of_sync_bytes: 0,
                    resync,
                    last_error: None,
                    sync_paused_here: false,
                    sync_paused_by_peer: false,
                    verify: None,
                },
            }],
        }
    }

    fn resync() -> ResyncStatus {
        ResyncStatus {
            done_percent: 45.2,
            speed_bytes_per_s: 56_557_568,
            average_speed_bytes_per_s: 55_410_688,
            eta_s: 12,
            remaining_bytes: 702 << 20,
            total_bytes: 1024 << 20,
        }
    }

    #[test]
    fn status_text_during_sync_matches_drbdadm() {
        let text = render_status(&sample("Connected", "SyncSource", Some(resync())));
        assert_eq!(
            text,
            "data role:Primary\n  disk:UpToDate\n  nas2 role:Secondary\n    replication:SyncSource peer-disk:Inconsistent done:45.20\n\n"
        );
    }

    #[test]
    fn status_text_during_and_after_a_verify() {
        let verify = |running: bool| VerifyStatus {
            running,
            role: "VerifyS".into(),
            done_percent: if running { 12.5 } else { 100.0 },
            out_of_sync_bytes: 8192,
            complete: !running,
        };
        let mut r = sample("Connected", "VerifyS", Some(at(12.5, 896)));
        r.resources[0].peer.disk = "UpToDate".into();
        r.resources[0].peer.out_of_sync_bytes = 8192;
        r.resources[0].peer.verify = Some(verify(true));
        assert_eq!(
            render_status(&r),
            "data role:Primary\n  disk:UpToDate\n  nas2 role:Secondary\n    replication:VerifyS peer-disk:UpToDate done:12.50 out-of-sync:8\n\n"
        );
        let p = &mut r.resources[0].peer;
        p.replication = "Established".into();
        p.resync = None;
        p.verify = Some(verify(false));
        assert_eq!(
            render_status(&r),
            "data role:Primary\n  disk:UpToDate\n  nas2 role:Secondary\n    peer-disk:UpToDate out-of-sync:8\n    last-verify: VerifyS 8 KiB out of sync\n\n"
        );
    }

    #[test]
    fn status_text_disconnected_shows_connection_state() {
        let text = render_status(&sample("Connecting", "Off", None));
        assert_eq!(
            text,
            "data role:Primary\n  disk:UpToDate\n  nas2 connection:Connecting\n\n"
        );
    }

    #[test]
    fn overview_shows_bar_and_speed() {
        let text = render_overview(&sample("Connected", "SyncSource", Some(resync())));
        assert_eq!(
            text,
            "  0:data/0  SyncSource Primary/Secondary UpToDate/Inconsistent\n\t[========>...........] sync'ed: 45.2% (702/1024)M\n\tfinish: 0:00:12 speed: 55,232 (54,112) K/sec\n"
        );
    }

    fn at(done_percent: f64, remaining_mib: u64) -> ResyncStatus {
        ResyncStatus {
            done_percent,
            remaining_bytes: remaining_mib << 20,
            ..resync()
        }
    }

    #[test]
    fn progress_line_pads_and_draws_as_proc_drbd() {
        assert_eq!(
            progress_line(&at(0.0, 1024), "SyncSource"),
            "[>....................] sync'ed:  0.0% (1024/1024)M"
        );
        assert_eq!(
            progress_line(&at(5.39, 970), "SyncTarget"),
            "[>...................] sync'ed:  5.3% (970/1024)M"
        );
        assert_eq!(
            progress_line(&at(31.4, 702), "SyncSource"),
            "[=====>..............] sync'ed: 31.4% (702/1024)M"
        );
        assert_eq!(
            progress_line(&at(99.99, 0), "SyncSource"),
            "[==================>.] sync'ed: 99.9% (0/1024)M"
        );
        assert_eq!(
            progress_line(&at(100.0, 0), "VerifyS"),
            "[===================>] verified:100.0% (0/1024)M"
        );
    }

    #[test]
    fn finish_line_formats_eta_over_an_hour() {
        let s = ResyncStatus {
            eta_s: 3 * 3600 + 7 * 60 + 5,
            speed_bytes_per_s: 1024 * 1_234_567,
            average_speed_bytes_per_s: 1024 * 999,
            ..resync()
        };
        assert_eq!(
            finish_line(&s),
            "finish: 3:07:05 speed: 1,234,567 (999) K/sec"
        );
    }

    #[test]
    fn overview_without_resync_is_one_line_per_resource() {
        let mut report = sample("Connected", "Established", None);
        report.resources[0].peer.disk = "UpToDate".into();
        let mut second = report.resources[0].clone();
        second.name = "logs".into();
        second.peer.connection = "StandAlone".into();
        second.peer.role = "Unknown".into();
        second.peer.disk = "DUnknown".into();
        second.peer.replication = "Off".into();
        report.resources.push(second);
        assert_eq!(
            render_overview(&report),
            "  0:data/0  Connected Primary/Secondary UpToDate/UpToDate\n  1:logs/0  StandAlone Primary/Unknown UpToDate/DUnknown\n"
        );
    }

    #[test]
    fn thousands_grouping() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1234567), "1,234,567");
    }
}
