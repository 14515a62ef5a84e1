//! `hadisk demo`: runs to the end with identical disks and the failover
//! verified, leaves nothing behind; Ctrl-C in the middle cleans up too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

fn demo_dir(out: &str) -> std::path::PathBuf {
    let line = out
        .lines()
        .find(|l| l.starts_with("==> working in "))
        .unwrap_or_else(|| panic!("no working directory in:\n{out}"));
    line.trim_start_matches("==> working in ").into()
}

#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    require("nbdcopy");
    let out = Command::new(bin())
        .arg("demo")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "==> 4. alpha's data is declared the good copy",
        "==> 7. checksums",
        "[beta] $ hadisk primary demo",
        "==> done:",
        "==> cleaned up:",
    ] {
        assert!(text.contains(step), "no {step:?} in:\n{text}");
    }
    // The two checksum lines of step 7 are equal, and so are step 10's.
    let sums: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("    alpha ") || l.starts_with("    beta  "))
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0], sums[1]);
    assert!(!demo_dir(&text).exists(), "the demo directory is removed");
}

#[test]
fn ctrl_c_during_the_demo_stops_the_daemons_and_removes_everything() {
    let mut child = Command::new(bin())
        .arg("demo")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("==> 3.") {
            break;
        }
    }
    let dir = demo_dir(&seen);
    let pids = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    // Only the daemons: a `hadisk up` the demo is running at
                    // this moment names the same directory.
                    let args = String::from_utf8_lossy(&c).into_owned();
                    args.contains(dir.to_str().unwrap()) && args.split('\0').any(|a| a == "daemon")
                })
                .unwrap_or(false)
        })
        .collect::<Vec<_>>();
    assert_eq!(pids.len(), 2, "two daemons of this demo run: {pids:?}");
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{seen}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted (Ctrl-C)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen.contains("==> cleaned up:"), "{seen}");
    assert!(!dir.exists(), "the demo directory is removed");
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z "))
                    .unwrap_or(true),
            "daemon {pid} still runs"
        );
    }
}
