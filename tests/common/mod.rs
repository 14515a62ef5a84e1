//! Shared harness for the end-to-end tests: the built `hadisk` binary, a
//! per-test node (unique temp dir, config, run dir), daemons that are always
//! stopped by PID, and the real clients.
//!
//! These files live in the top-level `tests/` directory (the project layout)
//! and are compiled as the `hadisk` package's integration tests, so that
//! cargo builds the very binary they run (`CARGO_BIN_EXE_hadisk`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ports;
pub use ports::free_port;

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
    /// Its log is appended to `daemon.log` (every start of the test).
    pub fn daemon(&self) -> DaemonGuard {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("daemon.log"))
            .unwrap();
        let child = self
            .cmd(&["daemon"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut guard = DaemonGuard {
            child: Some(child),
            log: self.path("daemon.log"),
        };
        let sock = self.run_dir().join("hadisk.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if let Some(Ok(Some(st))) = guard.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "the daemon exited ({st}) before answering:\n{}",
                    guard.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not answer on {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        guard
    }
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }
    /// The one resource of `status --json` called `res`.
    pub fn resource_status(&self, res: &str) -> serde_json::Value {
        let all = self.status_json();
        all["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == res)
            .unwrap_or_else(|| panic!("{res} not in status: {all}"))
            .clone()
    }
    /// Writes fresh metadata on `disk` through the metadata library, with
    /// the resource file's al-extents.
    pub fn create_md(&self, res: &str, disk: &Path) {
        let cfg = hadisk_config::load(&self.config()).unwrap();
        let al_extents = cfg.resource(res).unwrap().disk.al_extents;
        let dev = hadisk_storage::FileDevice::open(disk, false).unwrap();
        hadisk_metadata::Metadata::create(std::sync::Arc::new(dev), al_extents, 0).unwrap();
    }
    /// The superblock flags on `disk`, as names (`clean-shutdown`, ...).
    pub fn md_flags(&self, disk: &Path) -> Vec<&'static str> {
        let dev = hadisk_storage::FileDevice::open(disk, true).unwrap();
        let md = hadisk_metadata::Metadata::open(std::sync::Arc::new(dev)).unwrap();
        md.superblock().flags.names()
    }
    /// Makes `disk`'s metadata look like that of a node that finished a
    /// sync with its peer: UpToDate, current generation `current`, no
    /// bitmap generation (as the peer link will leave it).
    pub fn md_as_synced(&self, disk: &Path, current: u64) {
        let dev = hadisk_storage::FileDevice::open(disk, false).unwrap();
        let mut md = hadisk_metadata::Metadata::open(std::sync::Arc::new(dev)).unwrap();
        md.update(|sb| {
            sb.uuids = hadisk_metadata::Uuids {
                current,
                bitmap: 0,
                history: [hadisk_metadata::UUID_JUST_CREATED, 0],
            };
            sb.flags.insert(
                hadisk_metadata::Flags::CONSISTENT | hadisk_metadata::Flags::WAS_UP_TO_DATE,
            );
        })
        .unwrap();
    }
    /// The generation UUIDs on `disk`.
    pub fn md_uuids(&self, disk: &Path) -> hadisk_metadata::Uuids {
        let dev = hadisk_storage::FileDevice::open(disk, true).unwrap();
        hadisk_metadata::Metadata::open(std::sync::Arc::new(dev))
            .unwrap()
            .superblock()
            .uuids
    }
    /// A resource `res` on a sparse disk of `disk_bytes` with metadata:
    /// returns the disk path. `extra` goes into the resource section.
    pub fn setup(&self, res: &str, disk_bytes: u64, extra: &str) -> PathBuf {
        let disk = self.image(&format!("{res}.img"), disk_bytes);
        self.write_res(res, &disk, free_port(), free_port(), extra);
        self.create_md(res, &disk);
        disk
    }
    /// `up RES` then `primary --force RES`: a standalone Primary.
    pub fn make_primary(&self, res: &str) {
        self.ok(&["up", res]);
        self.ok(&["primary", "--force", res]);
    }
    /// The libnbd/qemu URI of the export over the Unix socket.
    pub fn uri(&self, res: &str) -> String {
        format!("nbd+unix:///{res}?socket={}", self.socket(res).display())
    }
}

/// Polls `cond` every 20 ms until it holds; fails the test after `secs`.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs an external command; returns (success, stdout, stderr).
pub fn run_cmd(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Debian's python with libnbd (`python3-libnbd` is importable only by
/// `/usr/bin/python3`; the first `python3` on PATH may be another build).
pub const LIBNBD_PYTHON: &str = "/usr/bin/python3";

/// A real libnbd client that connects to `uri`, prints `connected`, and
/// holds the connection until its stdin closes or it is killed.
pub fn hold_connection(uri: &str) -> ChildGuard {
    let script = "import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint('connected', flush=True)\nsys.stdin.read()\n";
    let mut cmd = Command::new(LIBNBD_PYTHON);
    cmd.args(["-c", script, uri])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd, "libnbd client");
    let stdout = guard.child.as_mut().and_then(|c| c.stdout.take()).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(
        line, "connected\n",
        "the libnbd client did not connect to {uri}"
    );
    guard
}

/// A child process (a client holding a connection, nbdfuse) killed by PID
/// when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut Command, name: &str) -> ChildGuard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: {e}"));
        ChildGuard {
            child: Some(child),
            name: name.to_string(),
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    /// SIGTERM and wait (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            wait_or_kill(&mut child, Duration::from_secs(10));
        }
    }
    /// Waits for the process to exit by itself; returns (success, stderr)
    /// when stderr was piped.
    pub fn wait(&mut self) -> Output {
        let child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} already stopped", self.name));
        child.wait_with_output().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The NBD export as a block device: `nbdfuse DIR --unix SOCK`, then
/// `losetup` on `DIR/nbd`. Dropping it tears down in reverse (umount of
/// anything mounted from the loop device is the caller's [`MountGuard`],
/// which must be dropped first), `losetup -d`, `umount DIR`, nbdfuse stopped
/// by PID.
pub struct FuseLoop {
    pub dir: PathBuf,
    pub loop_dev: Option<String>,
    fuse: Option<ChildGuard>,
}

impl FuseLoop {
    pub fn new(dir: PathBuf, socket: &Path) -> FuseLoop {
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("setsid");
        cmd.arg("nbdfuse")
            .arg(&dir)
            .arg("--unix")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let fuse = ChildGuard::spawn(&mut cmd, "nbdfuse");
        let mut me = FuseLoop {
            dir: dir.clone(),
            loop_dev: None,
            fuse: Some(fuse),
        };
        let file = dir.join("nbd");
        wait_until("nbdfuse to show DIR/nbd", 20, || file.exists());
        let dev = sh("losetup", &["-f", "--show", file.to_str().unwrap()]);
        me.loop_dev = Some(dev.trim().to_string());
        me
    }
    pub fn dev(&self) -> &str {
        self.loop_dev.as_deref().unwrap()
    }
    /// Tears down now (same steps as drop).
    pub fn teardown(&mut self) {
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
        if self.fuse.is_some() {
            let _ = Command::new("umount")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
            if let Some(mut f) = self.fuse.take() {
                f.stop();
            }
        }
    }
}

impl Drop for FuseLoop {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A mounted filesystem, unmounted when dropped.
pub struct MountGuard {
    pub dir: PathBuf,
    mounted: bool,
}

impl MountGuard {
    pub fn mount(dev: &str, dir: PathBuf) -> MountGuard {
        std::fs::create_dir_all(&dir).unwrap();
        sh("mount", &[dev, dir.to_str().unwrap()]);
        MountGuard { dir, mounted: true }
    }
    pub fn umount(&mut self) {
        if self.mounted {
            sh("umount", &[self.dir.to_str().unwrap()]);
            self.mounted = false;
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
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
    /// SIGINT (Ctrl-C) and wait: returns the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        wait_or_kill(&mut child, Duration::from_secs(30))
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
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
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
/// Two nodes of one resource on loopback (`alpha` and `beta`, each with its
/// own directory, disk image, run dir and daemon), for the replication
/// tests. `alpha` sorts first, so its outgoing connection is the link.
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub disk_a: PathBuf,
    pub disk_b: PathBuf,
    pub port_a: u16,
    pub port_b: u16,
    pub res: String,
}

impl Pair {
    /// Sparse disks of `disk_bytes` with fresh metadata; `net` goes into
    /// the resource's `net { }` section (default: fast keepalive so that
    /// tests of dead links finish in seconds).
    pub fn new(res: &str, disk_bytes: u64, net: &str) -> Pair {
        let (a, b) = (Node::new("alpha"), Node::new("beta"));
        let disk_a = a.image(&format!("{res}.img"), disk_bytes);
        let disk_b = b.image(&format!("{res}.img"), disk_bytes);
        let mut p = Pair {
            a,
            b,
            disk_a,
            disk_b,
            port_a: free_port(),
            port_b: free_port(),
            res: res.to_string(),
        };
        p.write_res(net);
        p.a.create_md(res, &p.disk_a.clone());
        p.b.create_md(res, &p.disk_b.clone());
        p
    }
    /// (Re)writes both nodes' resource files; `net` as in [`Pair::new`].
    pub fn write_res(&mut self, net: &str) {
        self.write_res_each(net, net);
    }
    /// Resource files whose `net` sections differ (e.g. secrets).
    pub fn write_res_each(&mut self, net_a: &str, net_b: &str) {
        for (node, net) in [(&self.a, net_a), (&self.b, net_b)] {
            let text = format!(
                "resource {res} {{\n  net {{ ping-int 1; ping-timeout 5; timeout 20; connect-int 1; {net} }}\n  on alpha {{ device /dev/nbd0; disk {da}; address 127.0.0.1:{pa}; meta-disk internal; }}\n  on beta {{ device /dev/nbd0; disk {db}; address 127.0.0.1:{pb}; meta-disk internal; }}\n}}\n",
                res = self.res,
                da = self.disk_a.display(),
                db = self.disk_b.display(),
                pa = self.port_a,
                pb = self.port_b,
            );
            std::fs::write(node.config(), text).unwrap();
        }
    }
    pub fn daemons(&self) -> (DaemonGuard, DaemonGuard) {
        (self.a.daemon(), self.b.daemon())
    }
    /// `up` on both, then waits until they are connected.
    pub fn up_connected(&self) {
        self.a.ok(&["up", &self.res]);
        self.b.ok(&["up", &self.res]);
        self.wait_connected(30);
    }
    pub fn wait_connected(&self, secs: u64) {
        wait_until("both nodes Connected", secs, || {
            [&self.a, &self.b]
                .iter()
                .all(|n| n.resource_status(&self.res)["peer"]["connection"] == "Connected")
        });
    }
    /// Waits until both disks are UpToDate and replication is Established.
    pub fn wait_in_sync(&self, secs: u64) {
        wait_until("both disks UpToDate, replication Established", secs, || {
            [&self.a, &self.b].iter().all(|n| {
                let s = n.resource_status(&self.res);
                s["disk"] == "UpToDate"
                    && s["peer"]["disk"] == "UpToDate"
                    && s["peer"]["replication"] == "Established"
            })
        });
    }
    /// `primary --force` on alpha and the initial full sync to beta.
    pub fn first_sync(&self) {
        self.a.ok(&["primary", "--force", &self.res]);
        self.wait_in_sync(120);
    }
    /// The usable size as status reports it.
    pub fn usable_bytes(&self) -> u64 {
        self.a.resource_status(&self.res)["size_bytes"]
            .as_u64()
            .unwrap()
    }
    /// sha256 of the first `usable` bytes of both backing disks.
    pub fn checksums(&self, usable: u64) -> (String, String) {
        (
            sha256_prefix(&self.disk_a, usable),
            sha256_prefix(&self.disk_b, usable),
        )
    }
}

/// sha256 of the first `len` bytes of `path`, in hex.
pub fn sha256_prefix(path: &Path, len: u64) -> String {
    let script = format!(
        "head -c {len} {} | sha256sum | cut -d' ' -f1",
        path.display()
    );
    sh("sh", &["-c", &script]).trim().to_string()
}

/// Bytes the pair's peer link carried so far, both directions: tcp_info of
/// alpha's outgoing connection to beta's port (`bytes_acked` sent,
/// `bytes_received` received), read with `ss -ti` as bench/ does (the
/// daemon keeps no byte counter of its own).
pub fn link_bytes(pair: &Pair) -> u64 {
    let filter = format!("( dport = :{} )", pair.port_b);
    let out = sh("ss", &["-tinH", "state", "established", &filter]);
    let field = |name: &str| -> u64 {
        out.split_whitespace()
            .filter_map(|w| w.strip_prefix(name))
            .filter_map(|v| v.parse::<u64>().ok())
            .sum()
    };
    let total = field("bytes_acked:") + field("bytes_received:");
    assert!(
        total > 0,
        "no established link to port {}: {out}",
        pair.port_b
    );
    total
}

/// The receive and send buffers (`rb`, `tb` of `ss -m`, bytes) of each end
/// of the pair's peer link.
pub fn link_buffers(pair: &Pair) -> Vec<(u64, u64)> {
    link_sockets(pair)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("skmem:("))
        .map(|m| {
            let field = |name: &str| {
                m.trim_end_matches(')')
                    .split(',')
                    .find_map(|f| f.strip_prefix(name))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (field("rb"), field("tb"))
        })
        .collect()
}

/// The congestion control of each end of the pair's peer link (alpha's
/// outgoing connection to beta's port and beta's accepted end), as `ss -ti`
/// names it.
pub fn link_congestion(pair: &Pair) -> Vec<String> {
    let known = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")
        .unwrap_or_default();
    let known: Vec<&str> = known.split_whitespace().collect();
    link_sockets(pair)
        .split_whitespace()
        .filter(|w| known.contains(w))
        .map(str::to_string)
        .collect()
}

/// `ss -tim` of both ends of the pair's peer link (alpha's outgoing
/// connection to beta's port and beta's accepted end): TCP info and
/// socket memory, one line per end.
fn link_sockets(pair: &Pair) -> String {
    let filter = format!("( sport = :{p} or dport = :{p} )", p = pair.port_b);
    sh("ss", &["-tinmH", "state", "established", &filter])
}
