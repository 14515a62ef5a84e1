//! Resync concurrent with heavy application writes (issue 5): fio random
//! writes with crc32c verification run through the Primary's export while
//! (1) the full initial sync to a new Secondary runs, then (2) a bitmap
//! resync after `disconnect` / `connect` runs. The range lock must keep a
//! resync chunk from overwriting newer application data on the target:
//! afterwards fio's verify passes and both backing disks are identical.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::*;

const RES: &str = "data";
/// The size of both backing files (sparse).
const DISK_BYTES: u64 = 512 * MIB;

/// fio through libnbd: random writes of 4–64 KiB blocks, 32 in flight, over
/// `size` at `offset`, each block written with a crc32c header and read back
/// and checked once the writes are done. Output goes to `out`.
fn spawn_fio(node: &Node, offset: &str, size: &str, out: &std::path::Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new("fio")
            .args([
                "--name=resync-verify",
                "--ioengine=nbd",
                &format!("--uri={}", node.uri(RES)),
                "--rw=randwrite",
                "--bsrange=4k-64k",
                "--iodepth=32",
                &format!("--offset={offset}"),
                &format!("--size={size}"),
                "--randseed=4242",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--fsync=256",
                "--verify_state_save=0",
                &format!("--output={}", out.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "fio",
    )
}

/// Waits for fio; asserts it succeeded and its verify found nothing bad.
/// Returns whether `during` held at some poll while fio ran.
fn finish_fio(fio: ChildGuard, out: &std::path::Path, mut during: impl FnMut() -> bool) -> bool {
    let mut seen = false;
    let pid = fio.pid() as i32;
    loop {
        seen |= during();
        let mut status = 0;
        // SAFETY: waitpid(2) with WNOHANG on the PID of our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            let text = std::fs::read_to_string(out).unwrap_or_default();
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "fio failed ({status}):\n{text}"
            );
            assert!(
                !text.contains("verify: bad") && text.contains("err= 0"),
                "fio:\n{text}"
            );
            // Reaped here: the guard must not signal a reused PID.
            std::mem::forget(fio);
            return seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `  0:data/0  SyncSource Primary/Secondary UpToDate/Inconsistent`, then
/// the bar with `sync'ed: 31.4% (702/1024)M` and the `finish:` line.
fn assert_overview_during_sync(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0], "  0:data/0  SyncSource Primary/Secondary UpToDate/Inconsistent",
        "{text}"
    );
    let bar = lines[1].strip_prefix("\t[").expect(text);
    let (bar, rest) = bar.split_once("] sync'ed:").expect(text);
    assert!(
        (20..=21).contains(&bar.len()) && bar.contains('>'),
        "bar: {text}"
    );
    let (pct, counts) = rest.split_once("% (").expect(text);
    let pct: f64 = pct.trim().parse().expect(text);
    assert!((0.0..=100.0).contains(&pct), "{text}");
    let (left, total) = counts
        .strip_suffix(")M")
        .and_then(|c| c.split_once('/'))
        .expect(text);
    let (left, total): (u64, u64) = (left.parse().expect(text), total.parse().expect(text));
    // The usable area: the disk less its metadata (under 2 MiB here).
    assert!(
        left <= total && (DISK_BYTES / MIB - 2..DISK_BYTES / MIB).contains(&total),
        "{text}"
    );
    let finish = lines[2].strip_prefix("\tfinish: ").expect(text);
    assert!(
        finish.contains(" speed: ") && finish.ends_with(" K/sec"),
        "{text}"
    );
}

fn syncing(node: &Node) -> bool {
    let s = node.resource_status(RES);
    s["peer"]["connection"] == "Connected" && s["peer"]["replication"] == "SyncSource"
}

#[test]
fn fio_verify_passes_and_disks_match_across_resyncs_under_writes() {
    require("fio");
    let pair = Pair::new(RES, DISK_BYTES, "");
    let (_da, _db) = pair.daemons();
    // alpha alone first: a standalone Primary with data beta does not have.
    pair.a.ok(&["up", RES]);
    pair.a.ok(&["primary", "--force", RES]);
    let src = pair.a.path("src.bin");
    sh(
        "sh",
        &[
            "-c",
            &format!("head -c {} /dev/urandom > {}", 64 * MIB, src.display()),
        ],
    );
    sh("nbdcopy", &[src.to_str().unwrap(), &pair.a.uri(RES)]);

    // (1) The full sync to beta runs while fio writes.
    let out1 = pair.a.path("fio1.txt");
    let fio = spawn_fio(&pair.a, "128M", "256M", &out1);
    pair.b.ok(&["up", RES]);
    let mut overview = None;
    let overlapped = finish_fio(fio, &out1, || {
        let text = pair.a.ok(&["overview"]);
        if text.contains("sync'ed:") {
            overview.get_or_insert(text);
        }
        syncing(&pair.a)
    });
    pair.wait_in_sync(300);
    assert!(overlapped, "the full sync never ran while fio wrote");
    // `hadisk overview` during the sync, as drbd-overview shows it.
    let overview = overview.expect("no overview showed the sync");
    assert_overview_during_sync(&overview);
    let usable = pair.usable_bytes();
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "disks differ after the full sync under fio");

    // (2) Disconnected writes, then a bitmap resync while fio writes again
    // over (partly) the same region.
    pair.a.ok(&["disconnect", RES]);
    let out2 = pair.a.path("fio2.txt");
    let fio = spawn_fio(&pair.a, "160M", "192M", &out2);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let dirty = pair.a.resource_status(RES)["peer"]["out_of_sync_bytes"]
        .as_u64()
        .unwrap();
    assert!(dirty > 0, "writes while disconnected marked nothing dirty");
    pair.a.ok(&["connect", RES]);
    finish_fio(fio, &out2, || false);
    pair.wait_in_sync(300);
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "disks differ after the bitmap resync under fio");
    // The data copied before is intact on the Primary.
    let back = pair.a.path("back.bin");
    sh("nbdcopy", &[&pair.a.uri(RES), back.to_str().unwrap()]);
    assert_eq!(
        sha256_prefix(&back, 64 * MIB),
        sha256_prefix(&src, 64 * MIB)
    );
}
