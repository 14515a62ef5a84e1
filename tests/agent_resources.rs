//! The resource types that touch the machine, through a real agent: a
//! `hadisk::RES` promoted and demoted through a real standalone daemon, and
//! a `Filesystem` (ext4 on a loop device) mounted and unmounted; the refusal
//! to mount a device already mounted elsewhere (with the promote rolled
//! back), and a busy unmount reported as a failed stop, never "fixed" by
//! killing the holder.
//!
//! One node only: its peer never answers, so the agent takes the group
//! after initdead (the replication link is not there yet, so there is no
//! second daemon to fail over to).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "agent_harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use harness::*;

/// A standalone daemon with resource `data` up, UpToDate and Secondary.
struct Daemon {
    child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn hadisk(node: &AgentNode, args: &[&str]) -> String {
    let out = node
        .cmd(args)
        .env("HADISK_CONFIG", node.dir.path().join("data.res"))
        .output()
        .unwrap();
    assert!(out.status.success(), "hadisk {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn role(node: &AgentNode) -> String {
    let v: serde_json::Value = serde_json::from_str(&hadisk(node, &["status", "--json"])).unwrap();
    v["resources"][0]["role"].as_str().unwrap().to_owned()
}

fn start_daemon(node: &AgentNode) -> Daemon {
    let disk = node.dir.path().join("data.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    std::fs::write(
        node.dir.path().join("data.res"),
        format!(
            "resource data {{\n  on alpha {{ device /dev/nbd0; disk {}; address 127.0.0.1:{}; meta-disk internal; }}\n  on beta {{ device /dev/nbd0; disk /nonexistent; address 127.0.0.1:{}; meta-disk internal; }}\n}}\n",
            disk.display(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    hadisk(node, &["create-md", "data"]);
    let log = std::fs::File::create(node.dir.path().join("daemon.log")).unwrap();
    let child = node
        .cmd(&["daemon"])
        .env("HADISK_CONFIG", node.dir.path().join("data.res"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon { child: Some(child) };
    let sock = node.run_dir().join("hadisk.sock");
    wait_for(
        "the daemon to answer",
        || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
        || std::fs::read_to_string(node.dir.path().join("daemon.log")).unwrap_or_default(),
    );
    hadisk(node, &["up", "data"]);
    hadisk(node, &["primary", "--force", "data"]);
    hadisk(node, &["secondary", "data"]);
    d
}

/// An ext4 image on a loop device; detached (and unmounted) when dropped.
struct Loop {
    dev: String,
    mounts: Vec<PathBuf>,
}

impl Loop {
    fn new(dir: &Path) -> Self {
        let img = dir.join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        sh("mkfs.ext4", &["-q", "-F", &path_str(&img)]);
        let dev = sh("losetup", &["-f", "--show", &path_str(&img)])
            .trim()
            .to_owned();
        Loop {
            dev,
            mounts: Vec::new(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).stderr(Stdio::null()).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn mounted_on(dev: &str, dir: &Path) -> bool {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "--mountpoint", &path_str(dir)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == dev
}

fn one_node(net: &mut Net, haresources: &str) -> AgentNode {
    let ns = net.host("a", 1);
    let cf = format!("{TIMING}ucast eth0 {NET}.2\nauto_failback on\nnode alpha\nnode beta\n");
    AgentNode::new("alpha", &ns, &cf, "s3cret", haresources)
}

#[test]
fn hadisk_and_filesystem_start_left_to_right_and_stop_right_to_left() {
    need_root();
    let mut net = Net::new();
    let dir = tempfile::Builder::new()
        .prefix("hadisk-agent-fs-")
        .tempdir()
        .unwrap();
    let mut lo = Loop::new(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    lo.mounts.push(mnt.clone());
    let a = one_node(
        &mut net,
        &format!(
            "alpha drbddisk::data Filesystem::{}::{}::ext4::noatime rec::g1\n",
            lo.dev,
            mnt.display()
        ),
    );
    let _daemon = start_daemon(&a);
    assert_eq!(role(&a), "Secondary");
    let mut agent = a.start();
    wait_for(
        "the peer-less node to take the group after initdead",
        || a.group_state(0) == "Running",
        || a.explain(),
    );
    assert_eq!(role(&a), "Primary");
    assert!(mounted_on(&lo.dev, &mnt));
    assert_eq!(a.record(), vec!["g1 start"]);
    std::fs::write(mnt.join("proof"), "written while the group ran").unwrap();

    let st = agent.terminate().unwrap();
    assert!(st.success(), "{st:?}\n{}", a.log());
    assert_eq!(a.record(), vec!["g1 start", "g1 stop"]);
    assert!(!mounted_on(&lo.dev, &mnt), "still mounted after the stop");
    assert_eq!(role(&a), "Secondary");
    let log = a.log();
    let at = |s: &str| log.find(s).unwrap_or_else(|| panic!("no '{s}' in\n{log}"));
    assert!(at("stopping group=0 resource=rec::g1") < at("stopping group=0 resource=Filesystem::"));
    assert!(
        at("stopping group=0 resource=Filesystem::")
            < at("stopping group=0 resource=drbddisk::data")
    );
}

#[test]
fn a_device_mounted_elsewhere_is_refused_and_the_promote_rolled_back() {
    need_root();
    let mut net = Net::new();
    let dir = tempfile::Builder::new()
        .prefix("hadisk-agent-fs-")
        .tempdir()
        .unwrap();
    let mut lo = Loop::new(dir.path());
    let mnt = dir.path().join("mnt");
    let other = dir.path().join("other");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&other).unwrap();
    sh("mount", &[&lo.dev, &path_str(&other)]);
    lo.mounts.push(other.clone());
    let a = one_node(
        &mut net,
        &format!(
            "alpha hadisk::data Filesystem::{}::{}::ext4 rec::g1\n",
            lo.dev,
            mnt.display()
        ),
    );
    let _daemon = start_daemon(&a);
    let _agent = a.start();
    wait_for(
        "the start to fail",
        || a.group_state(0) == "StartFailed",
        || a.explain(),
    );
    let s = a.status();
    assert_eq!(
        s["groups"][0]["last_failure"],
        format!(
            "resource 2 (Filesystem::{dev}::{mnt}::ext4) failed to start: {dev} is already mounted on {other}; refusing to mount it twice (unmount it there first); the group was stopped again",
            dev = lo.dev,
            mnt = mnt.display(),
            other = other.display()
        ),
        "{s}"
    );
    assert_eq!(role(&a), "Secondary", "the promote was not rolled back");
    assert!(a.record().is_empty(), "{:?}", a.record());
    assert!(!mounted_on(&lo.dev, &mnt));
    let text = String::from_utf8_lossy(&a.run(&["agent", "status"]).stdout).into_owned();
    assert!(
        text.contains("group 1 (preferred alpha): StartFailed here, held by nobody"),
        "{text}"
    );
    assert!(text.contains("    hadisk::data stopped\n"), "{text}");
}

#[test]
fn a_busy_unmount_is_a_failed_stop_and_nothing_is_killed() {
    need_root();
    let mut net = Net::new();
    let dir = tempfile::Builder::new()
        .prefix("hadisk-agent-fs-")
        .tempdir()
        .unwrap();
    let mut lo = Loop::new(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    lo.mounts.push(mnt.clone());
    let a = one_node(
        &mut net,
        &format!(
            "alpha IPaddr::{VIP}/{PREFIX}/eth0:0 Filesystem::{}::{}::ext4\n",
            lo.dev,
            mnt.display()
        ),
    );
    let mut agent = a.start();
    wait_for(
        "the group to run",
        || a.group_state(0) == "Running",
        || a.explain(),
    );
    // A process holding the filesystem (its working directory).
    let mut holder = Command::new("sleep")
        .arg("600")
        .current_dir(&mnt)
        .spawn()
        .unwrap();
    let st = agent.terminate().unwrap();
    assert_eq!(st.code(), Some(1), "{}", a.log());
    let log = a.log();
    assert!(
        log.contains(&format!("`umount {}` failed (exit 32): umount: {}: target is busy.; the agent does not kill what holds it: see `fuser -vm {}`", mnt.display(), mnt.display(), mnt.display())),
        "{log}"
    );
    assert!(
        log.contains(
            "stopped with resources that may still be active: group 1: resource 2 (Filesystem::"
        ),
        "{log}"
    );
    // The holder lives, the filesystem is still mounted, the VIP (to the
    // left) was still removed.
    assert!(
        holder.try_wait().unwrap().is_none(),
        "the holder was killed"
    );
    assert!(mounted_on(&lo.dev, &mnt));
    assert!(!Net::has_vip(&a.ns));
    holder.kill().unwrap();
    holder.wait().unwrap();
}
