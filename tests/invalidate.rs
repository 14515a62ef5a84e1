//! `invalidate`, `invalidate-remote` and the checksum-based resync
//! (`csums-alg`) with real daemons on loopback (issue 5, item 4).
//!
//! The csums claims are checked on the link's byte counter (tcp_info of the
//! peer connection, both directions), never on time: a csums resync of
//! identical disks sends < 1 % of their size; with a few differing blocks it
//! sends about those blocks more; without csums a full resync sends the
//! whole device.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::FileExt;

use common::*;

const RES: &str = "data";
/// Backing files of both nodes (sparse). Large enough that 1 % is well
/// above the handshake's and the pings' bytes.
const DISK_BYTES: u64 = 128 * MIB;
const BLOCK: u64 = 4096;

/// A connected, in-sync pair with alpha Primary.
fn synced_pair(net: &str) -> (Pair, DaemonGuard, DaemonGuard, u64) {
    require("ss");
    let pair = Pair::new(RES, DISK_BYTES, net);
    let (da, db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    let usable = pair.usable_bytes();
    (pair, da, db, usable)
}

/// Waits until a resync started by the command just run is over.
fn wait_resync_done(pair: &Pair) {
    pair.wait_in_sync(120);
}

fn corrupt(path: &std::path::Path, blocks: &[u64]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for (i, &b) in blocks.iter().enumerate() {
        let data: Vec<u8> = (0..BLOCK).map(|j| (j as u8) ^ (i as u8) ^ 0xA5).collect();
        f.write_all_at(&data, b * BLOCK).unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
fn csums_resync_after_invalidate_sends_under_one_percent_and_repairs_exactly_the_differences() {
    if !is_root() {
        eprintln!("skipped: needs root (as CI)");
        return;
    }
    let (pair, _da, db, usable) = synced_pair("csums-alg sha256;");
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b);

    // Identical disks: the digests go over the link, no data.
    let before = link_bytes(&pair);
    assert_eq!(
        pair.b.ok(&["invalidate", RES]),
        "data: full resync from alpha started (SyncTarget)\n"
    );
    wait_resync_done(&pair);
    let sent = link_bytes(&pair) - before;
    eprintln!(
        "csums resync of identical disks: {sent} link bytes for {usable} ({:.3} %)",
        sent as f64 * 100.0 / usable as f64
    );
    assert!(
        sent * 100 < usable,
        "a csums resync of identical disks sent {sent} bytes over the link for {usable}"
    );
    assert!(db.log_text().contains("invalidated"), "{}", db.log_text());
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b);

    // A few differing blocks: exactly those are sent (plus the digests).
    let blocks = [1, 2, 3, 1000, usable / BLOCK - 1];
    corrupt(&pair.disk_b, &blocks);
    let before = link_bytes(&pair);
    pair.b.ok(&["invalidate", RES]);
    wait_resync_done(&pair);
    let sent = link_bytes(&pair) - before;
    let differing = blocks.len() as u64 * BLOCK;
    eprintln!("csums resync with {differing} differing bytes: {sent} link bytes");
    assert!(
        sent >= differing && sent < usable / 100 + differing,
        "csums resync with {differing} differing bytes sent {sent} (device {usable})"
    );
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "the differing blocks were not repaired");
}

#[test]
fn invalidate_and_invalidate_remote_run_a_full_resync() {
    if !is_root() {
        eprintln!("skipped: needs root (as CI)");
        return;
    }
    let (pair, da, _db, usable) = synced_pair("");
    // Without csums-alg a full resync sends the whole device.
    let blocks = [10, 20, 30];
    corrupt(&pair.disk_b, &blocks);
    let before = link_bytes(&pair);
    pair.b.ok(&["invalidate", RES]);
    wait_resync_done(&pair);
    let sent = link_bytes(&pair) - before;
    assert!(
        sent >= usable,
        "a full resync sent {sent} bytes for {usable}"
    );
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b);

    // invalidate-remote on the Primary: the peer becomes SyncTarget.
    corrupt(&pair.disk_b, &blocks);
    let before = link_bytes(&pair);
    assert_eq!(
        pair.a.ok(&["invalidate-remote", RES]),
        "data: full resync to beta started (SyncSource)\n"
    );
    wait_resync_done(&pair);
    assert!(link_bytes(&pair) - before >= usable);
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b);
    let log = da.log_text();
    assert!(log.contains("full resync from this node"), "{log}");
    assert!(log.contains("to=SyncSource"), "{log}");
}

#[test]
fn invalidate_refusals_say_why() {
    if !is_root() {
        eprintln!("skipped: needs root (as CI)");
        return;
    }
    let (pair, _da, _db, _usable) = synced_pair("");
    assert_eq!(
        pair.a.fails(&["invalidate", RES]),
        "hadisk: data: this node is Primary: a Primary cannot discard its data; demote it first (hadisk secondary RES)\n"
    );
    assert_eq!(
        pair.b.fails(&["invalidate-remote", RES]),
        "hadisk: data: the peer is Primary: a Primary cannot discard its data; demote it first (hadisk secondary RES on the peer)\n"
    );
    pair.b.ok(&["disconnect", RES]);
    assert_eq!(
        pair.b.fails(&["invalidate", RES]),
        "hadisk: data: invalidate needs a connected peer (the connection is StandAlone): connect first (hadisk connect RES) and wait for Connected\n"
    );
    assert_eq!(
        pair.a.fails(&["invalidate-remote", RES]),
        "hadisk: data: invalidate-remote needs a connected peer (the connection is Connecting): connect first (hadisk connect RES) and wait for Connected\n"
    );
}
