//! Hostile NBD clients against the real `hadisk daemon` (a standalone
//! Primary): after each attack the daemon is still running, answers its
//! control socket, and real clients (nbdinfo, nbdsh, qemu-io) read correct
//! data. The attacks themselves (raw sockets, the wire format written by
//! hand) live in `crates/nbd-server/tests/support/hostile.rs`, shared with
//! the server crate's own in-process test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../crates/nbd-server/tests/support/hostile.rs"]
mod hostile;

use common::*;
use hostile::Target;

const RES: &str = "data";

/// Resident memory of a process, from /proc (kB).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `attack` against a fresh standalone Primary, then checks the
/// daemon's health with real clients and its control socket.
fn scenario(name: &str, attack: fn(&Target)) {
    require("nbdinfo");
    require("qemu-io");
    let node = Node::new("alpha");
    node.setup(RES, 64 * MIB, "");
    let mut daemon = node.daemon();
    node.make_primary(RES);
    let size_bytes = node.resource_status(RES)["size_bytes"].as_u64().unwrap();
    let unseeded = Target {
        socket: node.socket(RES),
        export: RES.to_owned(),
        size_bytes,
        pattern_file: node.path("unused"),
    };
    let target = unseeded.seed(node.dir.path());
    target.assert_healthy("seeding");
    let rss_before_kb = rss_kb(daemon.pid());

    attack(&target);

    // Alive: the process has not exited and its control socket answers.
    // SAFETY: kill(pid, 0) only checks that our child process exists.
    let alive = unsafe { libc::kill(daemon.pid() as i32, 0) } == 0;
    assert!(alive, "daemon died after {name}:\n{}", daemon.log_text());
    assert_eq!(node.resource_status(RES)["role"], "Primary", "after {name}");
    target.assert_healthy(name);
    // The hostile clients leave no connection behind.
    wait_until(&format!("nbd_clients == 0 after {name}"), 30, || {
        node.resource_status(RES)["nbd_clients"] == 0
    });
    // Nothing a client declared was allocated up front (100 MB option,
    // 64 MiB of reads): the daemon grew by far less than that.
    let grown_kb = rss_kb(daemon.pid()).saturating_sub(rss_before_kb);
    assert!(
        grown_kb < 96 * 1024,
        "daemon RSS grew by {grown_kb} kB after {name}"
    );
    let status = daemon.stop();
    assert!(
        status.success(),
        "daemon exit after {name}: {status}\n{}",
        daemon.log_text()
    );
}

#[test]
fn garbage_instead_of_a_handshake() {
    scenario("garbage handshake", hostile::garbage_handshake);
}

#[test]
fn option_declaring_100_mb() {
    scenario("option of 100 MB", hostile::huge_option);
}

#[test]
fn bad_request_magic() {
    scenario("bad request magic", hostile::bad_request_magic);
}

#[test]
fn write_payload_shorter_than_declared() {
    scenario("short write payload", hostile::short_write_payload);
}

#[test]
fn large_write_payload_shorter_than_declared() {
    scenario(
        "short large write payload",
        hostile::short_large_write_payload,
    );
}

#[test]
fn large_write_trickling_in_64_byte_pieces() {
    scenario("trickled large write", hostile::trickled_large_write);
}

#[test]
fn read_past_the_end_over_the_maximum_and_unknown_command() {
    scenario("per-request errors", hostile::per_request_errors);
}

#[test]
fn disconnect_with_64_reads_in_flight() {
    scenario(
        "disconnect with 64 reads in flight",
        hostile::disconnect_with_reads_in_flight,
    );
}

#[test]
fn thousand_connections_opened_and_dropped() {
    scenario("1,000 connections", hostile::thousand_connections);
}
