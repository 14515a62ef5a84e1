//! Harness for the agent's end-to-end tests: a small network of namespaces
//! (a bridge namespace and one namespace per node, as the NFS recipe does),
//! per-node Heartbeat directories, `hadisk agent` processes started with
//! `nsenter --net=` and killed by PID, and pollers.
//!
//! Everything has a unique name (namespaces carry this process's PID and a
//! counter) and is removed in `Drop`, also when a test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/ports.rs"]
mod ports;
#[allow(unused_imports)] // not every agent test starts a daemon on loopback
pub use ports::free_port;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The subnet of every test network (each test has its own namespaces, so
/// the addresses never meet).
pub const NET: &str = "10.77.0";
pub const PREFIX: u8 = 24;
/// The virtual IP.
pub const VIP: &str = "10.77.0.100";
/// Generous: states are polled, never timed.
pub const DEADLINE: Duration = Duration::from_secs(40);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hadisk")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, asserting success; its stdout.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` until it holds or the deadline passes (then panics with
/// `what` and the last `explain()`).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool, explain: impl Fn() -> String) {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for: {what}\n{}", explain());
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A bridge namespace and the node namespaces attached to it.
pub struct Net {
    pub prefix: String,
    made: Vec<String>,
}

impl Net {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("hxa{}-{n}", std::process::id());
        let mut net = Net {
            prefix,
            made: Vec::new(),
        };
        let sw = net.ns("sw");
        net.add_ns(&sw);
        sh("ip", &["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        sh("ip", &["-n", &sw, "link", "set", "br0", "up"]);
        net
    }

    /// The full name of namespace `tag`.
    pub fn ns(&self, tag: &str) -> String {
        format!("{}-{tag}", self.prefix)
    }

    fn add_ns(&mut self, name: &str) {
        sh("ip", &["netns", "add", name]);
        self.made.push(name.to_owned());
        sh("ip", &["-n", name, "link", "set", "lo", "up"]);
    }

    /// A namespace `tag` with `eth0` at `NET.host` on the bridge (port
    /// `port-TAG` in the bridge namespace).
    pub fn host(&mut self, tag: &str, host: u8) -> String {
        let name = self.ns(tag);
        self.add_ns(&name);
        let sw = self.ns("sw");
        let port = format!("port-{tag}");
        sh(
            "ip",
            &[
                "link", "add", "eth0", "netns", &name, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ],
        );
        sh(
            "ip",
            &["-n", &sw, "link", "set", &port, "master", "br0", "up"],
        );
        sh(
            "ip",
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{NET}.{host}/{PREFIX}"),
                "dev",
                "eth0",
            ],
        );
        sh("ip", &["-n", &name, "link", "set", "eth0", "up"]);
        name
    }

    /// Cuts (or restores) host `tag`'s link to the bridge.
    pub fn link(&self, tag: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        sh(
            "ip",
            &[
                "-n",
                &self.ns("sw"),
                "link",
                "set",
                &format!("port-{tag}"),
                state,
            ],
        );
    }

    /// The MAC address of `eth0` in namespace `ns`.
    pub fn mac(ns: &str) -> String {
        let out = sh("ip", &["-n", ns, "-o", "link", "show", "eth0"]);
        out.split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap()
            .to_owned()
    }

    /// Whether `eth0` in `ns` carries the VIP (with its label).
    pub fn has_vip(ns: &str) -> bool {
        let out = sh("ip", &["-n", ns, "-o", "-4", "addr", "show", "dev", "eth0"]);
        out.contains(&format!("inet {VIP}/{PREFIX}")) && out.contains("eth0:0")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The `rec` script: records `ARG ACTION` lines into `record.log` beside
/// it, and keeps a state file so `status` answers.
pub const REC_SCRIPT: &str = r#"#!/bin/sh
d=$(dirname "$0")/..
case "$2" in
  start) echo "$1 start" >> "$d/record.log"; touch "$d/rec.$1.on" ;;
  stop)  echo "$1 stop" >> "$d/record.log"; rm -f "$d/rec.$1.on" ;;
  status) [ -e "$d/rec.$1.on" ] ;;
esac
"#;

/// The `fail` script: its start fails, saying so on stderr; it is never
/// running (LSB status 3).
pub const FAIL_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  start) echo "cannot start: simulated failure" >&2; exit 1 ;;
  status) exit 3 ;;
  *) exit 0 ;;
esac
"#;

/// A script that does nothing and succeeds; LSB status 3 (not running)
/// until started, as a real init script.
pub const NOOP_SCRIPT: &str = r#"#!/bin/sh
d=$(dirname "$0")/..
case "$1" in
  start) touch "$d/noop.on" ;;
  stop) rm -f "$d/noop.on" ;;
  status) [ -e "$d/noop.on" ] || exit 3 ;;
esac
"#;

/// One node: its directory (ha.d, run dir, log) and its namespace.
pub struct AgentNode {
    pub name: String,
    pub ns: String,
    pub dir: tempfile::TempDir,
}

/// ha.cf's timing for the tests: fast, as the benchmark's settings.
pub const TIMING: &str = "keepalive 200ms\ndeadtime 1\nwarntime 500ms\ninitdead 2\n";

impl AgentNode {
    /// A node `name` in namespace `ns` with `ha.cf` (body after the node
    /// lines), an authkeys with `key`, and `haresources`.
    pub fn new(name: &str, ns: &str, hacf: &str, key: &str, haresources: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hadisk-agent-")
            .tempdir()
            .unwrap();
        let node = AgentNode {
            name: name.to_owned(),
            ns: ns.to_owned(),
            dir,
        };
        std::fs::create_dir_all(node.ha_dir().join("resource.d")).unwrap();
        std::fs::create_dir_all(node.run_dir()).unwrap();
        std::fs::write(node.ha_dir().join("ha.cf"), hacf).unwrap();
        let keys = node.ha_dir().join("authkeys");
        std::fs::write(&keys, format!("auth 1\n1 sha1 {key}\n")).unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(node.ha_dir().join("haresources"), haresources).unwrap();
        node.script("rec", REC_SCRIPT);
        node
    }

    pub fn ha_dir(&self) -> PathBuf {
        self.dir.path().join("ha.d")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
    /// Lines the `rec` script wrote.
    pub fn record(&self) -> Vec<String> {
        std::fs::read_to_string(self.ha_dir().join("record.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Installs `resource.d/NAME`.
    pub fn script(&self, name: &str, body: &str) {
        let p = self.ha_dir().join("resource.d").join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `hadisk ARGS` for this node (its name and run dir).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--node")
            .arg(&self.name)
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(args)
            .env_remove("RUST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Starts `hadisk agent` inside the node's namespace.
    pub fn start(&self) -> AgentGuard {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(bin())
            .arg("--node")
            .arg(&self.name)
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("agent")
            .arg("--ha-dir")
            .arg(self.ha_dir())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let guard = AgentGuard { child: Some(child) };
        let sock = self.run_dir().join("agent.sock");
        wait_for(
            &format!("agent {} to answer on its control socket", self.name),
            || std::os::unix::net::UnixStream::connect(&sock).is_ok(),
            || self.log(),
        );
        guard
    }

    /// `hadisk agent status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["agent", "status", "--json"]);
        if !out.status.success() {
            return serde_json::Value::Null;
        }
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// Group `i`'s state here.
    pub fn group_state(&self, i: usize) -> String {
        self.status()["groups"][i]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Everything useful when a wait fails.
    pub fn explain(&self) -> String {
        format!(
            "--- {} status:\n{}\n--- {} log:\n{}",
            self.name,
            String::from_utf8_lossy(&self.run(&["agent", "status"]).stdout),
            self.name,
            self.log()
        )
    }
}

/// A running agent; kill -9 by PID when dropped.
pub struct AgentGuard {
    child: Option<Child>,
}

impl AgentGuard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }
    /// kill -9, as a crash.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGTERM and wait for the exit; its status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        c.wait().ok()
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        self.crash();
    }
}

/// ha.cf for nodes alpha (.1) and beta (.2) with ucast paths to both and
/// `extra` lines.
pub fn hacf(extra: &str) -> String {
    format!(
        "{TIMING}udpport 694\nucast eth0 {NET}.1\nucast eth0 {NET}.2\nauto_failback on\nnode alpha\nnode beta\n{extra}"
    )
}

/// The test group: the VIP and a recorded script resource.
pub fn group(extra: &str) -> String {
    format!("alpha IPaddr::{VIP}/{PREFIX}/eth0:0 rec::g1{extra}\n")
}

/// Fails unless root: namespaces need it (tests run as root here and in CI).
pub fn need_root() {
    assert!(
        is_root(),
        "the agent tests need root (network namespaces, addresses)"
    );
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
