//! Shared harness for the end-to-end tests: the built `hadisk` binary, a
//! per-test node (unique temp dir, config, run dir), daemons that are always
//! stopped by PID, and the real clients.
//!
//! These files live in the top-level `tests/` directory (the project layout)
//! and are compiled as the `hadisk` package's integration tests, so that
//! cargo builds the very binary they run (`CARGO_BIN_EXE_hadisk`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1024 * 1024;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hadisk")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when `cmd` is on PATH; tests that need a missing client fail loudly
/// rather than pass silently, because the test command installs them all.
pub fn require(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "`{cmd}` is not installed: run ./scripts/install-deps.sh (the test command does)"
    );
}

/// A node of a test: its own directory, resource file, run dir and disk image.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Node {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hadisk-test-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        Node {
            dir,
            name: name.to_string(),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn run_dir(&self) -> PathBuf {
        self.path("run")
    }
    pub fn config(&self) -> PathBuf {
        self.path("data.res")
    }
    pub fn socket(&self, res: &str) -> PathBuf {
        self.run_dir().join(format!("{res}.nbd"))
    }
    /// A sparse disk image of `size` bytes.
    pub fn image(&self, rel: &str, size: u64) -> PathBuf {
        let p = self.path(rel);
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        p
    }
    /// Writes a two-host resource file with this node as `self.name`.
    pub fn write_res(&self, res: &str, disk: &Path, port: u16, peer_port: u16, extra: &str) {
        let text = format!(
            "resource {res} {{\n  {extra}\n  on {me} {{ device /dev/nbd0; disk {disk}; address 127.0.0.1:{port}; meta-disk internal; }}\n  on peer-of-{me} {{ device /dev/nbd0; disk /nonexistent; address 127.0.0.1:{peer_port}; meta-disk internal; }}\n}}\n",
            me = self.name,
            disk = disk.display(),
        );
        std::fs::write(self.config(), text).unwrap();
    }
    /// `hadisk ARGS` with this node's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("HADISK_CONFIG", self.config())
            .env("HADISK_NODE", &self.name)
            .env("HADISK_RUN_DIR", self.run_dir())
            .env_remove("RUST_LOG");
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hadisk {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// Runs and asserts failure with exit code 1, returning stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "hadisk {args:?} should fail with 1:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
    /// Starts `hadisk daemon` for this node; stopped when the guard drops.
    pub fn daemon(&self) -> DaemonGuard {
        let log = std::fs::File::create(self.path("daemon.log")).unwrap();
        let child = self
            .cmd(&["daemon"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let sock = self.run_dir().join("hadisk.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "daemon did not create {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        DaemonGuard {
            child: Some(child),
            log: self.path("daemon.log"),
        }
    }
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }
}

/// A running daemon; dropping it stops it (SIGTERM, then SIGKILL) by PID.
pub struct DaemonGuard {
    child: Option<Child>,
    pub log: PathBuf,
}

impl DaemonGuard {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    /// SIGTERM and wait: returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        wait_or_kill(&mut child, Duration::from_secs(30))
    }
    /// kill -9, as a crash.
    pub fn crash(&mut self) {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait_or_kill(child: &mut Child, grace: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            wait_or_kill(&mut child, Duration::from_secs(10));
        }
    }
}

/// Runs an external command and asserts success; returns stdout.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free TCP port on 127.0.0.1 (bind to 0, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
