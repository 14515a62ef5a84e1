//! A connected pair on loopback: the initial sync after `primary --force`,
//! protocol C writes from real clients (nbdcopy, fio with verify), status
//! on both nodes, and byte-identical backing disks afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const RES: &str = "data";

#[test]
fn initial_sync_then_nbdcopy_and_fio_leave_identical_disks() {
    require("nbdcopy");
    require("fio");
    let pair = Pair::new(RES, 128 * MIB, "");
    let (_da, _db) = pair.daemons();
    pair.up_connected();
    // A new pair: both Inconsistent, nothing to sync until --force.
    let st = pair.b.resource_status(RES);
    assert_eq!(st["disk"], "Inconsistent");
    assert_eq!(st["peer"]["replication"], "Established");
    // Some data on alpha's disk before the promotion: the sync carries it.
    let usable = pair.usable_bytes();
    let seed = pair.a.path("seed.bin");
    sh(
        "sh",
        &[
            "-c",
            &format!(
                "head -c {} /dev/urandom > {} && dd if={} of={} conv=notrunc status=none",
                8 * MIB,
                seed.display(),
                seed.display(),
                pair.disk_a.display()
            ),
        ],
    );
    pair.first_sync();
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "the initial sync made the disks identical");
    let log = std::fs::read_to_string(pair.b.path("daemon.log")).unwrap();
    assert!(
        log.contains("replication resource=data from=Off to=SyncTarget")
            && log.contains("disk resource=data from=Inconsistent to=UpToDate"),
        "{log}"
    );

    // nbdcopy of random data into the export, then fio random writes with
    // verification through libnbd, many requests in flight.
    let src = pair.a.path("src.bin");
    sh(
        "sh",
        &[
            "-c",
            &format!("head -c {} /dev/urandom > {}", 48 * MIB, src.display()),
        ],
    );
    sh("nbdcopy", &[src.to_str().unwrap(), &pair.a.uri(RES)]);
    let (ok, out, err) = run_cmd(
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={}", pair.a.uri(RES)),
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=32",
            "--offset=64M",
            "--size=32M",
            "--verify=crc32c",
            "--do_verify=1",
            "--fsync=64",
            "--verify_state_save=0",
        ],
    );
    assert!(ok && !out.contains("verify: bad"), "fio:\n{out}\n{err}");
    // 1 MiB writes, 8 in flight: their payloads go from the client's socket
    // into pipes, to the local disk and over the link by splice, and on
    // the peer from its socket into pipes (several per payload) and disk.
    let (ok, out, err) = run_cmd(
        "fio",
        &[
            "--name=large",
            "--ioengine=nbd",
            &format!("--uri={}", pair.a.uri(RES)),
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            "--offset=80M",
            "--size=32M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_state_save=0",
        ],
    );
    assert!(ok && !out.contains("verify: bad"), "fio:\n{out}\n{err}");
    // The copy is readable back through the Primary.
    let back = pair.a.path("back.bin");
    sh("nbdcopy", &[&pair.a.uri(RES), back.to_str().unwrap()]);
    assert_eq!(
        sha256_prefix(&back, 48 * MIB),
        sha256_prefix(&src, 48 * MIB)
    );

    // Both nodes' status, every field of DESIGN.md §1.3.
    let a = pair.a.resource_status(RES);
    assert_eq!(a["role"], "Primary");
    assert_eq!(a["disk"], "UpToDate");
    assert_eq!(a["size_bytes"], usable);
    assert_eq!(a["nbd_clients"], 0);
    assert_eq!(a["peer"]["name"], "beta");
    assert_eq!(a["peer"]["connection"], "Connected");
    assert_eq!(a["peer"]["role"], "Secondary");
    assert_eq!(a["peer"]["disk"], "UpToDate");
    assert_eq!(a["peer"]["replication"], "Established");
    assert_eq!(a["peer"]["out_of_sync_bytes"], 0);
    assert!(a["peer"]["resync"].is_null());
    let b = pair.b.resource_status(RES);
    assert_eq!(b["role"], "Secondary");
    assert_eq!(b["peer"]["role"], "Primary");
    assert_eq!(
        pair.b.ok(&["status", RES]),
        "data role:Secondary\n  disk:UpToDate\n  alpha role:Primary\n    peer-disk:UpToDate\n\n"
    );

    // Protocol C: everything acknowledged is on both disks already.
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "the backing disks' usable areas differ");
}
