//! Faults of the peer link with real daemons on loopback: a wrong shared
//! secret, garbage on the peer port, a peer that stops reading (SIGSTOP),
//! a Secondary restart, the role rules of a connected pair, and
//! `primary --force` racing the first connection handshake.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const RES: &str = "data";

/// Writes `mib` MiB of random data at `offset_mib` through `node`'s export.
fn write_random(node: &Node, offset_mib: u64, mib: u64) {
    let src = node.path(&format!("rand-{offset_mib}.bin"));
    sh(
        "sh",
        &[
            "-c",
            &format!("head -c {} /dev/urandom > {}", mib * MIB, src.display()),
        ],
    );
    sh(
        "qemu-io",
        &[
            "-f",
            "raw",
            &node.uri(RES),
            "-c",
            &format!("write -s {} {}M {}M", src.display(), offset_mib, mib),
            "-c",
            "flush",
        ],
    );
}

fn assert_identical(pair: &Pair) {
    let usable = pair.usable_bytes();
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "the backing disks' usable areas differ");
}

#[test]
fn a_wrong_shared_secret_never_connects_and_says_why() {
    let mut pair = Pair::new(RES, 32 * MIB, "");
    pair.write_res_each(
        "cram-hmac-alg sha256; shared-secret \"one\";",
        "cram-hmac-alg sha256; shared-secret \"two\";",
    );
    let (da, db) = pair.daemons();
    pair.a.ok(&["up", RES]);
    pair.b.ok(&["up", RES]);
    for node in [&pair.a, &pair.b] {
        wait_until("the authentication failure in status", 30, || {
            node.resource_status(RES)["peer"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("the shared-secret differs between the nodes"))
        });
        let st = node.resource_status(RES);
        assert_ne!(st["peer"]["connection"], "Connected");
        assert!(
            node.ok(&["status", RES]).contains("shared-secret differs"),
            "the human status says it too"
        );
    }
    for d in [&da, &db] {
        assert!(
            d.log_text()
                .contains("the shared-secret differs between the nodes"),
            "{}",
            d.log_text()
        );
    }
    // Retrying does not change the answer: still not connected.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_ne!(
        pair.a.resource_status(RES)["peer"]["connection"],
        "Connected"
    );
    // The same secret on both sides connects (fresh daemons read the file).
    drop((da, db));
    pair.write_res("cram-hmac-alg sha256; shared-secret \"same\";");
    let (_da, _db) = pair.daemons();
    pair.up_connected();
    assert!(pair.a.resource_status(RES)["peer"]["last_error"].is_null());
}

#[test]
fn garbage_on_the_peer_ports_is_dropped_and_the_link_goes_on() {
    require("qemu-io");
    let pair = Pair::new(RES, 32 * MIB, "");
    let (da, db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    for port in [pair.port_a, pair.port_b] {
        for junk in [
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            // A valid magic with a nonsense header.
            b"HDSK\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        ] {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let _ = s.write_all(&junk);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    assert!(
        db.log_text().contains("bad frame magic"),
        "beta logs the garbage: {}",
        db.log_text()
    );
    // Both daemons alive, the link up, and writes still mirrored.
    assert_eq!(
        pair.a.resource_status(RES)["peer"]["connection"],
        "Connected"
    );
    write_random(&pair.a, 1, 4);
    pair.wait_in_sync(30);
    assert_identical(&pair);
    drop((da, db));
}

#[test]
fn a_peer_that_stops_reading_is_dropped_and_resynced_after() {
    require("qemu-io");
    let pair = Pair::new(RES, 64 * MIB, "");
    let (_da, db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    // SAFETY: kill(2) on the PID of a daemon this test started.
    unsafe { libc::kill(db.pid() as i32, libc::SIGSTOP) };
    // The Primary's writes do not hang: after the timeout it goes on alone.
    write_random(&pair.a, 8, 16);
    let st = pair.a.resource_status(RES);
    assert_ne!(st["peer"]["connection"], "Connected");
    assert!(st["peer"]["out_of_sync_bytes"].as_u64().unwrap() > 0);
    let log = std::fs::read_to_string(pair.a.path("daemon.log")).unwrap();
    assert!(
        log.contains("declared dead") || log.contains("the peer stopped reading"),
        "{log}"
    );
    // SAFETY: as above.
    unsafe { libc::kill(db.pid() as i32, libc::SIGCONT) };
    pair.wait_connected(60);
    pair.wait_in_sync(60);
    assert_eq!(pair.a.resource_status(RES)["peer"]["out_of_sync_bytes"], 0);
    assert_identical(&pair);
}

#[test]
fn a_restarted_secondary_reconnects_and_resyncs() {
    require("qemu-io");
    let pair = Pair::new(RES, 64 * MIB, "");
    let (_da, mut db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    write_random(&pair.a, 0, 4);
    assert_eq!(db.stop().code(), Some(0));
    wait_until("alpha to lose the link", 30, || {
        pair.a.resource_status(RES)["peer"]["connection"] != "Connected"
    });
    write_random(&pair.a, 20, 8);
    let missed = pair.a.resource_status(RES)["peer"]["out_of_sync_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(missed, 8 * MIB, "exactly the blocks written alone");
    let _db = pair.b.daemon();
    pair.b.ok(&["up", RES]);
    pair.wait_connected(30);
    pair.wait_in_sync(60);
    assert_identical(&pair);
}

#[test]
fn a_connected_pair_refuses_two_primaries_and_demotion_under_clients() {
    let pair = Pair::new(RES, 32 * MIB, "");
    let (_da, _db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    let err = pair.b.fails(&["primary", RES]);
    assert_eq!(
        err,
        "hadisk: data: the peer is Primary: demote it first (hadisk secondary RES on the peer); two Primaries are not allowed\n"
    );
    let err = pair.b.fails(&["primary", "--force", RES]);
    assert!(err.contains("the peer is Primary"), "{err}");
    let mut client = hold_connection(&pair.a.uri(RES));
    let err = pair.a.fails(&["secondary", RES]);
    assert!(err.contains("1 NBD client is connected"), "{err}");
    assert_eq!(pair.a.resource_status(RES)["role"], "Primary");
    client.stop();
    wait_until("the client to go", 20, || {
        pair.a.resource_status(RES)["nbd_clients"] == 0
    });
    pair.a.ok(&["secondary", RES]);
    // Now beta may take over, without --force: its disk is UpToDate.
    pair.b.ok(&["primary", RES]);
    assert_eq!(pair.b.resource_status(RES)["role"], "Primary");
    // alpha granted the promotion before beta took it; beta's new role
    // reaches alpha's status with beta's next state message.
    wait_until("alpha to see beta as Primary", 20, || {
        pair.a.resource_status(RES)["peer"]["role"] == "Primary"
    });
    let err = pair.a.fails(&["primary", RES]);
    assert!(err.contains("the peer is Primary"), "{err}");
}

#[test]
fn up_wait_honours_wfc_timeout_and_returns_connected_when_the_peer_is_there() {
    let mut pair = Pair::new(RES, 32 * MIB, "");
    // startup { } goes beside net { }: write_res puts `net` text inside net,
    // so close it and open the startup section.
    pair.write_res("} startup { wfc-timeout 2; degr-wfc-timeout 1;");
    let (_da, _db) = pair.daemons();
    // No peer yet: waits wfc-timeout, then goes on degraded (success).
    let start = std::time::Instant::now();
    let out = pair.a.ok(&["up", "--wait", RES]);
    assert!(
        out.contains("the peer did not connect within the wfc-timeout: going on degraded"),
        "{out}"
    );
    assert!(start.elapsed() >= std::time::Duration::from_secs(2));
    // With the peer up it returns once connected.
    let out = pair.b.ok(&["up", "--wait", RES]);
    assert!(out.ends_with("; connected\n"), "{out}");
}

/// Rounds of `up`, `up`, `primary --force` on a fresh pair.
const FORCE_RACE_ROUNDS: usize = 20;

/// `primary --force` sent right after both `up`s, while the pair is still
/// Connecting (its handshake may be in flight, or start while the
/// promotion is being persisted): it once left the pair StandAlone with
/// "this node should become SyncSource but its disk is not consistent
/// [just-created-peer (rule 30)]". Every round must end Connected and in
/// sync with the promoted node's data on both disks. Alternates the
/// promoted node (alpha dials the link, beta accepts it).
#[test]
fn primary_force_right_after_up_always_ends_connected_and_in_sync() {
    for round in 0..FORCE_RACE_ROUNDS {
        let pair = Pair::new(RES, 8 * MIB, "");
        let (primary, disk) = if round % 2 == 0 {
            (&pair.a, &pair.disk_a)
        } else {
            (&pair.b, &pair.disk_b)
        };
        // Data only the promoted node has: the sync must carry it.
        sh(
            "sh",
            &[
                "-c",
                &format!(
                    "head -c {} /dev/urandom | dd of={} conv=notrunc status=none",
                    2 * MIB,
                    disk.display()
                ),
            ],
        );
        let seeded = sha256_prefix(disk, 2 * MIB);
        let (_da, _db) = pair.daemons();
        pair.a.ok(&["up", RES]);
        pair.b.ok(&["up", RES]);
        let out = primary.ok(&["primary", "--force", RES]);
        assert!(
            out.contains("Primary, disk UpToDate"),
            "round {round}: {out}"
        );
        let in_sync = |n: &Node| {
            let s = n.resource_status(RES);
            s["peer"]["connection"] == "Connected"
                && s["disk"] == "UpToDate"
                && s["peer"]["disk"] == "UpToDate"
                && s["peer"]["replication"] == "Established"
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !(in_sync(&pair.a) && in_sync(&pair.b)) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: not connected and in sync after 60 s:\nalpha {}\nbeta {}",
                pair.a.resource_status(RES),
                pair.b.resource_status(RES)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let st = primary.resource_status(RES);
        assert_eq!(st["role"], "Primary", "round {round}: {st}");
        assert_eq!(
            st["peer"]["last_error"],
            serde_json::Value::Null,
            "round {round}: {st}"
        );
        assert_identical(&pair);
        assert_eq!(
            sha256_prefix(&pair.disk_a, 2 * MIB),
            seeded,
            "round {round}"
        );
    }
}

#[test]
fn the_peer_link_uses_the_configured_congestion_control() {
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .unwrap()
        .trim()
        .to_string();
    let mut pair = Pair::new(RES, 32 * MIB, "");
    // The default is cubic whatever the machine's (this one's is bbr).
    for (net, want) in [
        ("", "cubic".to_string()),
        ("tcp-congestion reno;", "reno".to_string()),
        ("tcp-congestion system;", system.clone()),
    ] {
        pair.write_res(net);
        let (da, db) = pair.daemons();
        pair.up_connected();
        let both = vec![want.clone(), want.clone()];
        wait_until(
            &format!("both ends of the link on {want} ({net})"),
            10,
            || link_congestion(&pair) == both,
        );
        // The log says which one the link runs on.
        for d in [&da, &db] {
            let log = d.log_text();
            assert!(log.contains(&format!("congestion={want}")), "{log}");
        }
    }
    // A name the kernel does not have: the link still comes up, on the
    // system's default, and both logs say why.
    pair.write_res("tcp-congestion nosuchcc;");
    let (da, db) = pair.daemons();
    pair.up_connected();
    assert_eq!(link_congestion(&pair), vec![system.clone(), system.clone()]);
    for d in [&da, &db] {
        let log = d.log_text();
        assert!(
            log.contains("tcp-congestion nosuchcc: refused by the kernel; the peer link uses the system's default"),
            "{log}"
        );
        assert!(log.contains(&format!("congestion={system}")), "{log}");
    }
}

/// `sndbuf-size` / `rcvbuf-size` fix both ends' socket buffers at the
/// configured sizes (the socket's buffer is the size itself, as DRBD sets
/// it); without them the kernel autotunes, and the log says which.
#[test]
fn the_peer_link_uses_the_configured_socket_buffers() {
    let root = is_root();
    // Without CAP_NET_ADMIN the kernel caps a buffer at the sysctl.
    let expect = |bytes: u64, sysctl: &str| {
        if root {
            return bytes;
        }
        let max: u64 = std::fs::read_to_string(sysctl)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        2 * (bytes / 2).min(max)
    };
    let want = (
        expect(1 << 20, "/proc/sys/net/core/rmem_max"),
        expect(512 << 10, "/proc/sys/net/core/wmem_max"),
    );
    let mut pair = Pair::new(RES, 32 * MIB, "");
    pair.write_res("sndbuf-size 512k; rcvbuf-size 1M;");
    let (da, db) = pair.daemons();
    pair.up_connected();
    wait_until("both ends' buffers at the configured sizes", 10, || {
        link_buffers(&pair) == vec![want, want]
    });
    for d in [&da, &db] {
        let log = d.log_text();
        assert!(
            log.contains(&format!("sndbuf={} rcvbuf={}", want.1, want.0)),
            "{log}"
        );
    }
    drop((da, db));
    // The initial sync and 8 MiB of writes cross a link with small fixed
    // buffers intact.
    pair.write_res("sndbuf-size 64k; rcvbuf-size 64k;");
    let (da, db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    write_random(&pair.a, 4, 8);
    pair.wait_in_sync(30);
    assert_identical(&pair);
    drop((da, db));
    // By default the kernel autotunes both.
    pair.write_res("");
    let (da, db) = pair.daemons();
    pair.up_connected();
    for d in [&da, &db] {
        let log = d.log_text();
        assert!(
            log.contains("sndbuf=auto(") && log.contains("rcvbuf=auto("),
            "{log}"
        );
    }
}
