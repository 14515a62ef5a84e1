//! The daemon's control surface with a real `hadisk daemon` process:
//! commands without a daemon, the control socket (stale vs live), the
//! promotion rules, status, refusals seen by real NBD clients, and what
//! SIGTERM and kill -9 leave in the metadata.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};

use common::*;

const RES: &str = "data";

#[test]
fn commands_without_a_daemon_fail_with_one_line_saying_how_to_start_it() {
    let node = Node::new("alpha");
    node.write_res(RES, &node.path("disk.img"), free_port(), free_port(), "");
    let expected = format!(
        "hadisk: the hadisk daemon is not running (no control socket at {}); start it with \
         `hadisk daemon` (systemd: `systemctl start hadisk`)\n",
        node.run_dir().join("hadisk.sock").display()
    );
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["overview"],
        &["up", RES],
        &["down", RES],
        &["primary", RES],
        &["primary", "--force", RES],
        &["secondary", RES],
        &["connect", RES],
    ] {
        assert_eq!(node.fails(args), expected, "hadisk {args:?}");
    }
    // A socket file left by a killed daemon is "not running" too.
    let _stale =
        std::os::unix::net::UnixListener::bind(node.run_dir().join("hadisk.sock")).unwrap();
    drop(_stale);
    assert_eq!(node.fails(&["status"]), expected);
}

/// The daemon, started with `var=value`, exits 1 with `message` before it
/// makes its control socket.
fn daemon_refuses(var: &str, value: &str, message: &str) {
    let node = Node::new("alpha");
    let out = node
        .cmd(&["daemon"])
        .env(var, value)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), message);
    assert!(!node.run_dir().join("hadisk.sock").exists());
}

#[test]
fn an_unknown_io_mode_stops_the_daemon_at_start() {
    daemon_refuses(
        "HADISK_IO_MODE",
        "fast",
        "hadisk: HADISK_IO_MODE=\"fast\" is not valid: use `adaptive`, `blocking` or `inline`\n",
    );
}

#[test]
fn a_bad_busy_poll_stops_the_daemon_at_start() {
    daemon_refuses(
        "HADISK_BUSY_POLL_US",
        "lots",
        "hadisk: HADISK_BUSY_POLL_US=\"lots\" is not valid: use a number of microseconds from 0 (off) to 10000\n",
    );
}

#[test]
fn usage_errors_exit_2() {
    let node = Node::new("alpha");
    for args in [&["primary"][..], &["status", "--bogus"], &["frobnicate"]] {
        let out = node.run(args);
        assert_eq!(out.status.code(), Some(2), "hadisk {args:?}");
    }
}

#[test]
fn a_live_daemon_keeps_its_socket_and_a_stale_one_is_replaced() {
    let node = Node::new("alpha");
    node.write_res(RES, &node.path("disk.img"), free_port(), free_port(), "");
    let mut first = node.daemon();
    let sock = node.run_dir().join("hadisk.sock");
    let mode = std::fs::metadata(&sock)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap();
    assert_eq!(mode & 0o777, 0o600);

    let second = node.cmd(&["daemon"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!(
            "another hadisk daemon is already running (its control socket {} answers); stop it first",
            sock.display()
        )),
        "{err}"
    );
    node.ok(&["status"]);

    first.crash();
    assert!(sock.exists(), "kill -9 leaves the socket file behind");
    let _third = node.daemon();
    node.ok(&["status"]);
}

#[test]
fn peer_commands_without_a_peer_refuse_with_a_reason() {
    let node = Node::new("alpha");
    node.setup(RES, 64 * MIB, "");
    let _d = node.daemon();
    node.ok(&["up", RES]);
    // connect/disconnect manage the peer link (tests/repl_*.rs).
    assert_eq!(
        node.ok(&["disconnect", RES]),
        "data: disconnected (StandAlone)\n"
    );
    assert_eq!(
        node.resource_status(RES)["peer"]["connection"],
        "StandAlone"
    );
    assert_eq!(
        node.ok(&["connect", RES]),
        "data: connecting to peer-of-alpha\n"
    );
    assert_eq!(
        node.resource_status(RES)["peer"]["connection"],
        "Connecting"
    );
    // verify and invalidate need the peer (tests/verify.rs, tests/invalidate.rs).
    for cmd in ["invalidate", "invalidate-remote", "verify"] {
        assert_eq!(
            node.fails(&[cmd, RES]),
            format!("hadisk: data: {cmd} needs a connected peer (the connection is Connecting): connect first (hadisk connect RES) and wait for Connected\n"),
        );
    }
}

#[test]
fn up_reports_what_is_wrong() {
    let node = Node::new("alpha");
    let disk = node.image("data.img", 64 * MIB);
    node.write_res(RES, &disk, free_port(), free_port(), "");
    let _d = node.daemon();
    let err = node.fails(&["up", "nosuch"]);
    assert!(err.contains("nosuch") && err.contains("data"), "{err}");
    let err = node.fails(&["up", RES]);
    assert_eq!(
        err,
        format!(
            "hadisk: data: metadata on {}: no hadisk metadata on this disk of {} bytes (run create-md first)\n",
            disk.display(),
            64 * MIB
        )
    );
    assert_eq!(
        node.fails(&["primary", RES]),
        "hadisk: data: resource is not up (no resource is); run `hadisk up data`\n"
    );
    assert!(
        !node.socket(RES).exists(),
        "a failed up leaves no NBD socket"
    );
}

#[test]
fn a_disk_is_attached_by_one_daemon_only() {
    let node = Node::new("alpha");
    let disk = node.setup(RES, 64 * MIB, "");
    let _d = node.daemon();
    node.ok(&["up", RES]);
    // A second daemon (its own run directory) with the same configuration.
    let other_run = node.path("run2");
    std::fs::create_dir_all(&other_run).unwrap();
    let other = |args: &[&str]| {
        let mut c = node.cmd(args);
        c.env("HADISK_RUN_DIR", &other_run);
        c
    };
    let mut second = ChildGuard::spawn(
        other(&["daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "second daemon",
    );
    wait_until("the second daemon", 20, || {
        std::os::unix::net::UnixStream::connect(other_run.join("hadisk.sock")).is_ok()
    });
    let out = other(&["up", RES]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "hadisk: data: the disk {} is already attached by another hadisk resource or daemon; \
             `hadisk down` it there first\n",
            disk.display()
        )
    );
    assert!(!other_run.join("data.nbd").exists());
    node.ok(&["down", RES]);
    assert!(other(&["up", RES]).output().unwrap().status.success());
    second.stop();
}

#[test]
fn sigint_stops_cleanly_too_and_a_busy_nbd_listen_port_fails_up() {
    let node = Node::new("alpha");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let disk = node.setup(RES, 64 * MIB, &format!("nbd-listen 127.0.0.1:{port};"));
    let mut d = node.daemon();
    let err = node.fails(&["up", RES]);
    assert!(
        err.starts_with(&format!(
            "hadisk: data: cannot listen on 127.0.0.1:{port}: "
        )) && err.ends_with(&format!("(nbd-listen in {})\n", node.config().display())),
        "{err}"
    );
    assert!(
        !node.socket(RES).exists(),
        "a failed up leaves no NBD socket"
    );
    assert!(
        node.md_flags(&disk).contains(&"clean-shutdown"),
        "a failed up does not touch the metadata"
    );
    drop(busy);
    node.make_primary(RES);
    let status = d.interrupt();
    assert!(status.success(), "SIGINT exit {status}:\n{}", d.log_text());
    assert!(d.log_text().contains("SIGINT received"));
    let flags = node.md_flags(&disk);
    assert!(
        flags.contains(&"clean-shutdown") && !flags.contains(&"primary"),
        "{flags:?}"
    );
}

#[test]
fn a_standalone_primary_records_what_the_peer_missed_before_writing() {
    require("qemu-io");
    let node = Node::new("alpha");
    let disk = node.setup(RES, 64 * MIB, "");
    // A node whose peer had its data (a finished sync): promoting it
    // standalone records precisely what the peer then misses.
    node.md_as_synced(&disk, 0x1234_5678_9abc_def0);
    let mut d = node.daemon();
    assert_eq!(
        node.ok(&["up", RES]),
        "data: up as Secondary, disk UpToDate\n"
    );
    node.ok(&["primary", RES]);
    // The low bit of a generation UUID is DRBD's "Primary" flag.
    assert_eq!(node.md_uuids(&disk).bitmap & !1, 0x1234_5678_9abc_def0);
    assert_eq!(node.resource_status(RES)["peer"]["out_of_sync_bytes"], 0);
    // Extent 0, extent 2, extents 4 and 5 (a write across their border),
    // and extent 7 by a zeroing: 5 activity-log extents of 4 MiB.
    sh(
        "qemu-io",
        &[
            "-f",
            "raw",
            &node.uri(RES),
            "-c",
            "write -P 0x11 0 4k",
            "-c",
            "write -P 0x12 10M 64k",
            "-c",
            "write -P 0x13 20971008 1k",
            "-c",
            "write -P 0x14 8k 4k",
            "-c",
            "write -z 28M 4k",
        ],
    );
    // The bitmap marks exactly the 4 KiB blocks written: 4k + 64k + the
    // two blocks the 1k write straddles + 4k + 4k.
    assert_eq!(
        node.resource_status(RES)["peer"]["out_of_sync_bytes"],
        84 * 1024
    );
    // The activity log was durable before the writes were acknowledged:
    // after kill -9 the restarted node is a crashed Primary whose active
    // extents (exactly the 5 written) are all out of sync.
    d.crash();
    let _d = node.daemon();
    node.ok(&["up", RES]);
    let st = node.resource_status(RES);
    assert_eq!(st["crashed_primary"], true);
    assert_eq!(st["peer"]["out_of_sync_bytes"], 20 * MIB);
}

#[test]
fn a_peer_that_never_had_the_data_gets_a_full_sync_by_the_uuids_not_the_bitmap() {
    // The bitmap generation stays "just created": the peer's first sync is
    // a full one by the UUID rules (just-created-peer), so the promotion
    // marks nothing (tests/repl_pair.rs shows the sync).
    let node = Node::new("alpha");
    let disk = node.setup(RES, 64 * MIB, "");
    let _d = node.daemon();
    node.make_primary(RES);
    assert_eq!(node.resource_status(RES)["peer"]["out_of_sync_bytes"], 0);
    assert_eq!(
        node.md_uuids(&disk).bitmap & !1,
        hadisk_metadata::UUID_JUST_CREATED
    );
}

#[test]
fn promotion_rules_status_and_generation_uuids() {
    let node = Node::new("alpha");
    let disk = node.setup(RES, 64 * MIB, "");
    let usable = {
        let dev = hadisk_storage::FileDevice::open(&disk, true).unwrap();
        hadisk_metadata::Metadata::open(std::sync::Arc::new(dev))
            .unwrap()
            .layout()
            .usable_size_bytes
    };
    let d = node.daemon();
    assert_eq!(
        node.ok(&["up", RES]),
        "data: up as Secondary, disk Inconsistent\n"
    );
    let st = node.resource_status(RES);
    assert_eq!(st["role"], "Secondary");
    assert_eq!(st["disk"], "Inconsistent");
    assert_eq!(st["size_bytes"], usable);
    assert_eq!(st["nbd_clients"], 0);
    assert_eq!(st["peer"]["name"], "peer-of-alpha");
    // `up` connects (DRBD 9 shows Connecting while the peer is away).
    assert_eq!(st["peer"]["connection"], "Connecting");
    assert_eq!(st["peer"]["role"], "Unknown");
    assert_eq!(st["peer"]["disk"], "DUnknown");
    assert_eq!(st["peer"]["replication"], "Off");
    assert_eq!(st["peer"]["out_of_sync_bytes"], 0);
    assert!(st["peer"]["resync"].is_null());
    let mode = std::fs::metadata(node.socket(RES))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap();
    assert_eq!(mode & 0o777, 0o600, "the NBD socket is mode 0600");

    assert_eq!(
        node.fails(&["primary", RES]),
        "hadisk: data: the local disk is Inconsistent, not UpToDate: refusing to promote (use \
         primary --force only if this node's data is the good copy)\n"
    );
    let before = node.md_uuids(&disk);
    assert_eq!(before.current, hadisk_metadata::UUID_JUST_CREATED);
    node.ok(&["primary", "--force", RES]);
    let after = node.md_uuids(&disk);
    assert_ne!(after.current, before.current);
    assert!(after.current > hadisk_metadata::UUID_JUST_CREATED);
    assert_eq!(
        after.bitmap & !1,
        before.current,
        "the old generation moves into bitmap"
    );
    let flags = node.md_flags(&disk);
    assert!(
        flags.contains(&"primary")
            && flags.contains(&"consistent")
            && flags.contains(&"was-up-to-date"),
        "{flags:?}"
    );
    assert!(!flags.contains(&"clean-shutdown"), "{flags:?}");

    let st = node.resource_status(RES);
    assert_eq!(
        (st["role"].as_str(), st["disk"].as_str()),
        (Some("Primary"), Some("UpToDate"))
    );
    assert_eq!(
        node.ok(&["status", RES]),
        "data role:Primary\n  disk:UpToDate\n  peer-of-alpha connection:Connecting\n\n"
    );
    assert_eq!(
        node.ok(&["overview"]),
        "  0:data/0  Connecting Primary/Unknown UpToDate/Outdated\n"
    );
    assert_eq!(node.ok(&["primary", RES]), "data: already Primary\n");

    node.ok(&["secondary", RES]);
    assert!(!node.md_flags(&disk).contains(&"primary"));
    // An UpToDate disk with no peer may be promoted without --force (as
    // after the Primary crashed); no new generation while a bitmap
    // generation is set (DRBD's condition: the bitmap already tracks
    // everything since the peer was lost).
    node.ok(&["primary", RES]);
    let third = node.md_uuids(&disk);
    assert_eq!(third.current, after.current);
    assert_eq!(
        third.bitmap & !1,
        before.current,
        "bitmap keeps the oldest generation the peer may hold"
    );

    node.ok(&["secondary", RES]);
    node.ok(&["down", RES]);
    assert!(node.md_flags(&disk).contains(&"clean-shutdown"));
    assert!(!node.socket(RES).exists(), "down removes the NBD socket");
    assert_eq!(
        node.ok(&["status", "--json"])
            .replace(char::is_whitespace, ""),
        "{\"resources\":[]}"
    );
    // Every transition is logged with from/to (RUST_LOG=info).
    let log = d.log_text();
    for line in [
        "disk attached resource=data from=Diskless to=Inconsistent",
        "disk resource=data from=Inconsistent to=UpToDate",
        "role resource=data from=Secondary to=Primary",
        "role resource=data from=Primary to=Secondary",
        "disk detached, metadata clean resource=data from=UpToDate to=Diskless",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
}

#[test]
fn a_secondary_export_refuses_clients_with_the_reason() {
    require("nbdinfo");
    require("qemu-io");
    let node = Node::new("alpha");
    node.setup(RES, 64 * MIB, "");
    let _d = node.daemon();
    node.ok(&["up", RES]);
    let reason = "resource data is Secondary on node alpha; connect to the Primary's export";
    let refused = |node: &Node| {
        // libnbd puts the server's text in its debug log, and the errno
        // (NBD_REP_ERR_UNKNOWN: ENOENT) in the error.
        let out = Command::new("nbdinfo")
            .arg(node.uri(RES))
            .env("LIBNBD_DEBUG", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!("handshake: server error message: {reason}")),
            "nbdinfo said: {err}"
        );
        // qemu prints it as the reason the open failed.
        let (ok, out, err) = run_cmd("qemu-io", &["-f", "raw", &node.uri(RES), "-c", "read 0 4k"]);
        assert!(!ok);
        assert!(
            format!("{out}{err}").contains(&format!(
                "Requested export not available\nserver reported: {reason}"
            )),
            "qemu-io said: {out}{err}"
        );
    };
    refused(&node);
    // The daemon goes on: promote and the same client succeeds.
    node.ok(&["primary", "--force", RES]);
    let (ok, out, err) = run_cmd("nbdinfo", &["--size", &node.uri(RES)]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim().parse::<u64>().unwrap(),
        node.resource_status(RES)["size_bytes"].as_u64().unwrap()
    );
    // Demoted again: refused again.
    node.ok(&["secondary", RES]);
    refused(&node);
}

#[test]
fn secondary_is_refused_while_clients_are_connected() {
    let node = Node::new("alpha");
    node.setup(RES, 64 * MIB, "");
    let _d = node.daemon();
    node.make_primary(RES);
    // One client asks for the export by name, the other for the default
    // export (""), as nbdfuse and nbd-client without -N do.
    let default_uri = format!("nbd+unix://?socket={}", node.socket(RES).display());
    let mut first = hold_connection(&default_uri);
    let mut second = hold_connection(&node.uri(RES));
    wait_until("two NBD clients", 20, || {
        node.resource_status(RES)["nbd_clients"] == 2
    });
    assert_eq!(
        node.fails(&["secondary", RES]),
        "hadisk: data: refusing to become Secondary: 2 NBD clients are connected to the export; \
         disconnect them first (umount, `nbd-client -d`, stop qemu or nbdfuse)\n"
    );
    assert_eq!(node.resource_status(RES)["role"], "Primary");
    first.stop();
    wait_until("one NBD client", 20, || {
        node.resource_status(RES)["nbd_clients"] == 1
    });
    assert!(node
        .fails(&["secondary", RES])
        .contains("1 NBD client is connected"));
    assert!(node
        .fails(&["down", RES])
        .contains("1 NBD client is connected"));
    // Still Primary and still serving: a new client works.
    let (ok, _, err) = run_cmd("nbdinfo", &["--size", &node.uri(RES)]);
    assert!(ok, "{err}");
    second.stop();
    wait_until("no NBD client", 20, || {
        node.resource_status(RES)["nbd_clients"] == 0
    });
    node.ok(&["secondary", RES]);
}

#[test]
fn sigterm_leaves_the_metadata_clean_and_kill_9_is_a_crashed_primary() {
    require("qemu-io");
    let node = Node::new("alpha");
    let disk = node.setup(RES, 64 * MIB, "");
    let mut d = node.daemon();
    node.make_primary(RES);
    sh(
        "qemu-io",
        &["-f", "raw", &node.uri(RES), "-c", "write -P 0x5a 0 1M"],
    );
    let status = d.stop();
    assert!(
        status.success(),
        "SIGTERM exit: {status}; log:\n{}",
        d.log_text()
    );
    let flags = node.md_flags(&disk);
    assert!(
        flags.contains(&"clean-shutdown") && !flags.contains(&"primary"),
        "{flags:?}"
    );
    let log = d.log_text();
    assert!(
        log.contains("SIGTERM received") && log.contains("hadisk daemon stopped cleanly"),
        "{log}"
    );
    assert!(!node.socket(RES).exists() && !node.run_dir().join("hadisk.sock").exists());

    // Restart: the disk is UpToDate; promotion without --force is allowed.
    let mut d = node.daemon();
    assert_eq!(
        node.ok(&["up", RES]),
        "data: up as Secondary, disk UpToDate\n"
    );
    node.ok(&["primary", RES]);
    sh(
        "qemu-io",
        &["-f", "raw", &node.uri(RES), "-c", "read -P 0x5a 0 1M"],
    );
    d.crash();
    let flags = node.md_flags(&disk);
    assert!(
        flags.contains(&"primary") && !flags.contains(&"clean-shutdown"),
        "{flags:?}"
    );

    let _d = node.daemon();
    assert_eq!(
        node.ok(&["up", RES]),
        "data: up as Secondary, disk UpToDate; this node crashed while Primary (found primary without \
         clean-shutdown): its activity-log extents will be resynced with the peer\n"
    );
    assert_eq!(node.resource_status(RES)["crashed_primary"], true);
    let flags = node.md_flags(&disk);
    assert!(
        flags.contains(&"crashed-primary") && !flags.contains(&"primary"),
        "{flags:?}"
    );
    node.ok(&["primary", RES]);
    sh(
        "qemu-io",
        &["-f", "raw", &node.uri(RES), "-c", "read -P 0x5a 0 1M"],
    );
}

/// `hadisk status | grep -q …` in a script: a reader that is gone before
/// hadisk writes ends the output quietly (exit 0, no panic message).
#[test]
fn status_into_a_closed_pipe_exits_quietly() {
    let node = Node::new("alpha");
    node.setup("data", 64 * MIB, "");
    let _d = node.daemon();
    node.ok(&["up", "data"]);
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["overview"][..],
    ] {
        let mut child = node
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {err}");
    }
}
