//! `pause-sync` / `resume-sync` and the resync rate settings with real
//! daemons on loopback (issue 5, item 5).
//!
//! * A full sync paced by a fixed `resync-rate` (so that it is still running
//!   when the test pauses it) is paused on the SyncSource: both nodes show
//!   the paused states (PausedSyncS / PausedSyncT), the pause flags say who
//!   paused; after `resume-sync` it completes and both disks are identical.
//! * The refusals' exact texts (pausing twice, resuming what is not paused).
//! * The configured rate and the controller's mode appear in
//!   `status --json` (fixed with `c-plan-ahead 0`, dynamic by default).
//!   Speeds are never asserted: that is bench/resync-compare.sh's job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const RES: &str = "data";
/// The size of both backing files (sparse).
const DISK_BYTES: u64 = 128 * MIB;
/// The fixed resync rate: the 128 MiB full sync takes ~8 s at it, long
/// enough to be caught running by a status poll.
const RATE: &str = "16M";

/// `net { … }` ends early to add a `disk { }` section with the rate
/// settings (the harness's resource file has only a `net` section).
fn fixed_rate_sections() -> String {
    format!("}} disk {{ c-plan-ahead 0; resync-rate {RATE};")
}

fn repl(n: &Node) -> String {
    n.resource_status(RES)["peer"]["replication"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn pause_and_resume_mid_resync_then_identical_disks() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let p = Pair::new(RES, DISK_BYTES, &fixed_rate_sections());
    let (_da, _db) = p.daemons();
    p.up_connected();

    // The configured rate and mode, on both nodes.
    for n in [&p.a, &p.b] {
        let rate = &n.resource_status(RES)["resync_rate"];
        assert_eq!(rate["mode"], "fixed", "{rate}");
        assert_eq!(rate["resync_rate_bytes_per_s"], 16 * MIB, "{rate}");
        assert_eq!(rate["limit_bytes_per_s"], 16 * MIB, "{rate}");
    }

    // Nonzero data on alpha, so that an unsynced beta differs.
    sh(
        "sh",
        &[
            "-c",
            &format!(
                "head -c {} /dev/urandom | dd of={} conv=notrunc status=none",
                64 * MIB,
                p.disk_a.display()
            ),
        ],
    );
    p.a.ok(&["primary", "--force", RES]);
    wait_until("the full sync running on both nodes", 30, || {
        repl(&p.a) == "SyncSource" && repl(&p.b) == "SyncTarget"
    });

    let out = p.a.ok(&["pause-sync", RES]);
    assert_eq!(out.trim(), "data: resync paused");
    wait_until("PausedSyncS on alpha and PausedSyncT on beta", 20, || {
        repl(&p.a) == "PausedSyncS" && repl(&p.b) == "PausedSyncT"
    });
    let sa = p.a.resource_status(RES);
    let sb = p.b.resource_status(RES);
    assert_eq!(sa["peer"]["sync_paused_here"], true, "{sa}");
    assert_eq!(sb["peer"]["sync_paused_by_peer"], true, "{sb}");
    assert_eq!(sb["disk"], "Inconsistent", "{sb}");
    let left = sb["peer"]["out_of_sync_bytes"].as_u64().unwrap();
    assert!(left > 0, "the resync finished before the pause: {sb}");
    // The overview shows the paused state with its progress bar.
    let overview = p.b.ok(&["overview"]);
    assert!(
        overview.contains("PausedSyncT") && overview.contains("sync'ed:"),
        "{overview}"
    );

    // Pausing twice, and resuming on the node that did not pause, are
    // refused with what to do.
    let again = p.a.fails(&["pause-sync", RES]);
    assert!(
        again.contains(
            "data: the resync is already paused on this node: resume it with hadisk resume-sync"
        ),
        "{again}"
    );
    let not_here = p.b.fails(&["resume-sync", RES]);
    assert!(
        not_here.contains(
            "data: the resync is not paused on this node (a pause made on the peer is resumed there)"
        ),
        "{not_here}"
    );

    let out = p.a.ok(&["resume-sync", RES]);
    assert_eq!(out.trim(), "data: resync resumed");
    p.wait_in_sync(120);
    let usable = p.usable_bytes();
    let (a, b) = p.checksums(usable);
    assert_eq!(a, b, "the disks differ after the resumed resync");
}

#[test]
fn a_pause_made_before_the_resync_holds_it_until_resumed() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let p = Pair::new(RES, 64 * MIB, "");
    let (_da, _db) = p.daemons();
    p.up_connected();

    // The default controller: dynamic, DRBD's c-* defaults, except no cap.
    let rate = &p.a.resource_status(RES)["resync_rate"];
    assert_eq!(rate["mode"], "dynamic", "{rate}");
    assert_eq!(rate["c_plan_ahead_ms"], 2000, "{rate}");
    assert_eq!(rate["c_fill_target_bytes"], 50 * 1024, "{rate}");
    assert_eq!(rate["c_min_rate_bytes_per_s"], 250 * 1024, "{rate}");
    assert_eq!(rate["c_max_rate_bytes_per_s"], 0, "{rate}");
    assert_eq!(rate["limit_bytes_per_s"], serde_json::Value::Null, "{rate}");

    // Paused on the future SyncTarget while nothing syncs: the full sync
    // that `primary --force` starts begins paused, and nothing is synced.
    p.b.ok(&["pause-sync", RES]);
    p.a.ok(&["primary", "--force", RES]);
    wait_until("PausedSyncS on alpha and PausedSyncT on beta", 20, || {
        repl(&p.a) == "PausedSyncS" && repl(&p.b) == "PausedSyncT"
    });
    let sb = p.b.resource_status(RES);
    let usable = p.usable_bytes();
    assert_eq!(sb["peer"]["out_of_sync_bytes"], usable, "{sb}");
    assert_eq!(sb["peer"]["sync_paused_here"], true, "{sb}");

    p.b.ok(&["resume-sync", RES]);
    p.wait_in_sync(120);
    let (a, b) = p.checksums(usable);
    assert_eq!(a, b, "the disks differ after the resumed resync");
}
