//! The service chain of the issue on one node, without NFS and without a
//! peer (the replication link is not there yet): `hadisk::data` promotes
//! the daemon's resource, a script resource turns its NBD export into a
//! block device (`nbdfuse` + `losetup`, as on a machine without kernel
//! nbd), `Filesystem::LABEL=…` mounts the ext4 on it, and a recorded script
//! stands for the NFS server. A stop undoes it right to left (the demote
//! waits for nbdfuse to let go: drbddisk's retries); the data written
//! through the mount is there, checksum equal, when the group starts again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "agent_harness.rs"]
mod harness;

use std::path::Path;
use std::process::{Command, Stdio};

use harness::*;

/// `nbdloop::RES`: the export of RES as a loop device. The FUSE mount point
/// and the loop device are kept in the ha.d directory; the run directory
/// (the daemon's sockets) is passed in HADISK_TEST_RUN.
const NBDLOOP: &str = r#"#!/bin/sh
d=$(cd "$(dirname "$0")/.." && pwd)
fuse=$d/fuse.$1
case "$2" in
start)
  mkdir -p "$fuse"
  if ! mountpoint -q "$fuse"; then
    setsid -f nbdfuse "$fuse" --unix "$RUN/$1.nbd" </dev/null >/dev/null 2>&1
    i=0; until [ -e "$fuse/nbd" ]; do i=$((i+1)); [ $i -gt 200 ] && { echo "nbdfuse did not start" >&2; exit 1; }; sleep 0.05; done
  fi
  [ -s "$d/loop.$1" ] && losetup "$(cat "$d/loop.$1")" >/dev/null 2>&1 && exit 0
  losetup -f --show "$fuse/nbd" > "$d/loop.$1" || exit 1
  udevadm settle 2>/dev/null; blkid -p "$(cat "$d/loop.$1")" >/dev/null 2>&1; exit 0 ;;
stop)
  if [ -s "$d/loop.$1" ]; then
    l=$(cat "$d/loop.$1"); losetup -d "$l" 2>/dev/null
    i=0; while losetup "$l" >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 100 ] && { echo "$l still attached" >&2; exit 1; }; sleep 0.05; done
    rm -f "$d/loop.$1"
  fi
  if mountpoint -q "$fuse"; then umount "$fuse" || exit 1; fi
  exit 0 ;;
status)
  [ -s "$d/loop.$1" ] && losetup "$(cat "$d/loop.$1")" >/dev/null 2>&1 || exit 3 ;;
esac
"#;

fn hadisk(node: &AgentNode, args: &[&str]) -> String {
    let out = node
        .cmd(args)
        .env("HADISK_CONFIG", node.dir.path().join("data.res"))
        .output()
        .unwrap();
    assert!(out.status.success(), "hadisk {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn resource(node: &AgentNode) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&hadisk(node, &["status", "--json"])).unwrap();
    v["resources"][0].clone()
}

struct Daemon(Option<std::process::Child>);
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Unmounts what a failed test may leave: the ext4, the loop device, the
/// FUSE mount (in that order).
struct Leftovers<'a> {
    node: &'a AgentNode,
    mnt: std::path::PathBuf,
    mkfs: std::path::PathBuf,
}
impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
        let ha = self.node.ha_dir();
        if let Ok(l) = std::fs::read_to_string(ha.join("loop.data")) {
            let _ = Command::new("losetup").args(["-d", l.trim()]).status();
        }
        for fuse in [ha.join("fuse.data"), self.mkfs.clone()] {
            let _ = Command::new("umount")
                .arg(fuse)
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn sha256(p: &Path) -> String {
    sh("sha256sum", &[&path_str(p)])
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn promote_export_as_loop_device_mount_by_label_and_back() {
    need_root();
    for c in ["nbdfuse", "losetup", "findfs", "mkfs.ext4"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success(),
            "{c} missing: run scripts/install-deps.sh"
        );
    }
    let mut net = Net::new();
    let ns = net.host("a", 1);
    let label = format!("hx{}", std::process::id() % 100_000);
    let probe = tempfile::Builder::new()
        .prefix("hadisk-agent-vol-")
        .tempdir()
        .unwrap();
    let mnt = probe.path().join("srv");
    std::fs::create_dir(&mnt).unwrap();
    let cf = format!("{TIMING}ucast eth0 {NET}.2\nauto_failback on\nnode alpha\nnode beta\n");
    let a = AgentNode::new(
        "alpha",
        &ns,
        &cf,
        "s3cret",
        &format!(
            "alpha hadisk::data nbdloop::data Filesystem::LABEL={label}::{}::ext4 rec::nfs\n",
            mnt.display()
        ),
    );
    // The script finds the daemon's sockets through RUN (its environment
    // is the agent's).
    a.script("nbdloop", &NBDLOOP.replace("$RUN", &path_str(&a.run_dir())));

    // The daemon, the resource up, this node's data declared good, and an
    // ext4 made through the export (nbdfuse's file), then Secondary again.
    let disk = a.dir.path().join("data.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(96 << 20)
        .unwrap();
    std::fs::write(
        a.dir.path().join("data.res"),
        format!(
            "resource data {{\n  on alpha {{ device /dev/nbd0; disk {}; address 127.0.0.1:{}; meta-disk internal; }}\n  on beta {{ device /dev/nbd0; disk /nonexistent; address 127.0.0.1:{}; meta-disk internal; }}\n}}\n",
            disk.display(), free_port(), free_port()
        ),
    )
    .unwrap();
    hadisk(&a, &["create-md", "data"]);
    let log = std::fs::File::create(a.dir.path().join("daemon.log")).unwrap();
    let _daemon = Daemon(Some(
        a.cmd(&["daemon"])
            .env("HADISK_CONFIG", a.dir.path().join("data.res"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    // Dropped before the daemon: the mounts go while it still serves.
    let _leftovers = Leftovers {
        node: &a,
        mnt: mnt.clone(),
        mkfs: probe.path().join("mkfs"),
    };
    let sock = a.run_dir().join("hadisk.sock");
    wait_for(
        "the daemon",
        || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        String::new,
    );
    hadisk(&a, &["up", "data"]);
    hadisk(&a, &["primary", "--force", "data"]);
    let nbd = a.run_dir().join("data.nbd");
    // mkfs through a temporary nbdfuse file.
    let f = probe.path().join("mkfs");
    std::fs::create_dir(&f).unwrap();
    sh(
        "sh",
        &[
            "-c",
            &format!(
                "setsid -f nbdfuse {} --unix {} </dev/null >/dev/null 2>&1",
                f.display(),
                nbd.display()
            ),
        ],
    );
    wait_for("nbdfuse", || f.join("nbd").exists(), String::new);
    sh(
        "mkfs.ext4",
        &["-q", "-F", "-L", &label, &path_str(&f.join("nbd"))],
    );
    sh("umount", &[&path_str(&f)]);
    wait_for(
        "nbdfuse to disconnect",
        || resource(&a)["nbd_clients"] == 0,
        || resource(&a).to_string(),
    );
    hadisk(&a, &["secondary", "data"]);

    // The agent: no peer, so it takes the group after initdead.
    let mut agent = a.start();
    wait_for(
        "the group to run",
        || a.group_state(0) == "Running",
        || a.explain(),
    );
    assert_eq!(resource(&a)["role"], "Primary");
    let ext4 = std::fs::read_to_string(a.ha_dir().join("loop.data")).unwrap();
    let findmnt = sh(
        "findmnt",
        &["-n", "-o", "SOURCE,FSTYPE", "--mountpoint", &path_str(&mnt)],
    );
    assert_eq!(
        findmnt.split_whitespace().collect::<Vec<_>>(),
        vec![ext4.trim(), "ext4"]
    );
    let payload: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(mnt.join("payload.bin"), &payload).unwrap();
    let want = sha256(&mnt.join("payload.bin"));

    let st = agent.terminate().unwrap();
    assert!(st.success(), "{st:?}\n{}", a.log());
    assert_eq!(a.record(), vec!["nfs start", "nfs stop"]);
    assert_eq!(resource(&a)["role"], "Secondary");
    assert_eq!(resource(&a)["nbd_clients"], 0);
    let still = Command::new("findmnt")
        .args(["-n", "--mountpoint", &path_str(&mnt)])
        .output()
        .unwrap();
    assert!(!still.status.success(), "still mounted: {still:?}");
    assert!(
        !a.ha_dir().join("loop.data").exists(),
        "the loop device is still recorded"
    );

    // Again: the data written before is there, byte for byte.
    let _agent = a.start();
    wait_for(
        "the group to run again",
        || a.group_state(0) == "Running",
        || a.explain(),
    );
    assert_eq!(sha256(&mnt.join("payload.bin")), want);
}
