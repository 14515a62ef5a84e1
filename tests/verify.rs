//! Online verify with real daemons on loopback (issue 5, item 4): `hadisk
//! verify RES` compares every block of the pair by digest (`verify-alg`),
//! marks the differing blocks out of sync, reports them in status and log,
//! and the next resync (disconnect + connect) repairs them.
//!
//! The differences are made on purpose: random bytes written straight into
//! the Secondary's backing file (below the daemon) at known 4 KiB blocks,
//! so the expected count is exact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::FileExt;
use std::process::Command;

use common::*;

const RES: &str = "data";
/// Backing files of both nodes (sparse).
const DISK_BYTES: u64 = 64 * MIB;
const BLOCK: u64 = 4096;

/// Waits until the verify `node` ran as `role` is over, returns its status.
fn wait_verify_done(node: &Node, role: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until("the online verify to finish", 60, || {
        last = node.resource_status(RES);
        let v = &last["peer"]["verify"];
        v["running"] == false && v["role"] == role && last["peer"]["replication"] == "Established"
    });
    last
}

/// Writes 4 KiB of seeded pseudo-random bytes at each block of `blocks`.
fn corrupt(path: &std::path::Path, blocks: &[u64], seed: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut x = seed | 1;
    for &b in blocks {
        let data: Vec<u8> = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all_at(&data, b * BLOCK).unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
fn verify_finds_exactly_the_corrupted_blocks_and_the_next_resync_repairs_them() {
    if !is_root() {
        eprintln!("skipped: needs root (as CI)");
        return;
    }
    require("ss");
    let pair = Pair::new(RES, DISK_BYTES, "verify-alg sha256;");
    let (da, db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    let usable = pair.usable_bytes();

    // Identical disks: nothing out of sync.
    assert_eq!(
        pair.a.ok(&["verify", RES]),
        "data: online verify started (VerifyS); `hadisk status data` shows its progress\n"
    );
    let st = wait_verify_done(&pair.a, "VerifyS");
    assert_eq!(st["peer"]["verify"]["out_of_sync_bytes"], 0, "{st}");
    assert_eq!(st["peer"]["verify"]["complete"], true, "{st}");
    assert_eq!(st["peer"]["verify"]["done_percent"], 100.0, "{st}");
    assert_eq!(st["peer"]["out_of_sync_bytes"], 0, "{st}");
    wait_until("beta's side of the verify", 20, || {
        pair.b.resource_status(RES)["peer"]["verify"]["role"] == "VerifyT"
    });
    assert!(da
        .log_text()
        .contains("online verify done: 0 KiB out of sync"));
    assert!(da.log_text().contains("to=VerifyS"), "{}", da.log_text());
    assert!(db.log_text().contains("to=VerifyT"), "{}", db.log_text());

    // Known blocks of the Secondary's disk, changed behind the daemon's
    // back: the first, two neighbours, one in the middle, the last.
    let last = usable / BLOCK - 1;
    let blocks = [0, 777, 778, 5000, last];
    corrupt(&pair.disk_b, &blocks, 42);
    let (a, b) = pair.checksums(usable);
    assert_ne!(a, b);

    // This time verify from the Secondary: VerifyS need not be Primary.
    pair.b.ok(&["verify", RES]);
    let st = wait_verify_done(&pair.b, "VerifyS");
    let expected = blocks.len() as u64 * BLOCK;
    assert_eq!(st["peer"]["verify"]["out_of_sync_bytes"], expected, "{st}");
    assert_eq!(st["peer"]["out_of_sync_bytes"], expected, "{st}");
    let human = pair.b.ok(&["status", RES]);
    assert!(
        human.contains(&format!("out-of-sync:{}", expected / 1024))
            && human.contains("last-verify: VerifyS 20 KiB out of sync"),
        "{human}"
    );
    assert!(db
        .log_text()
        .contains("online verify done: 20 KiB out of sync"));
    // The Primary (VerifyT) marked the same blocks.
    let st_a = wait_verify_done(&pair.a, "VerifyT");
    assert_eq!(st_a["peer"]["verify"]["out_of_sync_bytes"], expected);
    assert_eq!(st_a["peer"]["out_of_sync_bytes"], expected);

    // The next resync (DRBD: disconnect + connect) repairs exactly them.
    pair.b.ok(&["disconnect", RES]);
    pair.b.ok(&["connect", RES]);
    pair.wait_connected(30);
    pair.wait_in_sync(60);
    assert_eq!(pair.a.resource_status(RES)["peer"]["out_of_sync_bytes"], 0);
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "the disks differ after the resync");
}

#[test]
fn verify_refusals_say_what_to_do() {
    if !is_root() {
        eprintln!("skipped: needs root (as CI)");
        return;
    }
    // No verify-alg configured.
    let pair = Pair::new(RES, DISK_BYTES, "");
    let _d = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    assert_eq!(
        pair.a.fails(&["verify", RES]),
        "hadisk: data: verify-alg is not set for this resource: add e.g. `verify-alg sha256;` to its net section (on both nodes) and restart the resource (down, up)\n"
    );
    pair.b.ok(&["disconnect", RES]);
    assert_eq!(
        pair.b.fails(&["verify", RES]),
        "hadisk: data: verify needs a connected peer (the connection is StandAlone): connect first (hadisk connect RES) and wait for Connected\n"
    );
}

#[test]
fn an_unknown_digest_algorithm_is_refused_at_up_with_the_valid_names() {
    let node = Node::new("alpha");
    node.setup(RES, 64 * MIB, "net { verify-alg crc33; }");
    let _d = node.daemon();
    let err = node.fails(&["up", RES]);
    assert_eq!(
        err,
        format!(
            "hadisk: data: {}: verify-alg: unknown digest algorithm \"crc33\": use one of sha256, sha1, md5, crc32c\n",
            node.config().display()
        )
    );
}

/// Verify runs while the Primary serves writes: a verify from the Primary
/// finds nothing (each chunk is digested under the range lock, and the peer
/// digests it after every write mirrored before), and the disks end
/// identical.
#[test]
fn verify_from_the_primary_under_fio_writes_finds_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root (as CI)");
        return;
    }
    require("fio");
    let pair = Pair::new(RES, DISK_BYTES, "verify-alg md5;");
    let _d = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    let usable = pair.usable_bytes();
    let uri = pair.a.uri(RES);
    let mut fio = ChildGuard::spawn(
        Command::new("fio").args([
            "--name=app",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--iodepth=16",
            &format!("--size={}", usable / 2),
            "--time_based",
            "--runtime=6",
            "--randseed=5",
            "--end_fsync=1",
            "--output=/dev/null",
        ]),
        "fio",
    );
    // Let the writes start, then verify (more than once if it is quick).
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mut rounds = 0;
    while rounds < 3 {
        pair.a.ok(&["verify", RES]);
        let st = wait_verify_done(&pair.a, "VerifyS");
        assert_eq!(st["peer"]["verify"]["out_of_sync_bytes"], 0, "{st}");
        assert_eq!(st["peer"]["verify"]["complete"], true, "{st}");
        rounds += 1;
    }
    let out = fio.wait();
    assert!(out.status.success(), "fio failed");
    assert_eq!(pair.a.resource_status(RES)["peer"]["out_of_sync_bytes"], 0);
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b);
}
