//! `hadisk demo`: a complete two-node pair on this machine, narrated step
//! by step — the newcomer's first command. No root and no configuration:
//! a temporary directory with two sparse file-backed disks, two daemons on
//! 127.0.0.1 (free ports), `create-md`, `up`, `primary --force`, the
//! initial sync with live progress, data written through NBD, `status` of
//! both nodes, checksums of both disks, then the Primary killed, the
//! Secondary promoted and the data verified byte for byte through it.
//!
//! Invariants: every process the demo starts is stopped by its PID and the
//! directory removed, on success, on error and on Ctrl-C (the daemons run
//! in their own process group, so the terminal's SIGINT reaches only the
//! demo, which then cleans up).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::control::{self, Request};
use crate::status::{render_status, StatusReport};

/// Size of each demo disk (sparse: costs no space until written).
const DISK_BYTES: u64 = 256 * 1024 * 1024;
/// Data written through NBD.
const PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// The resource name.
const RES: &str = "demo";
/// Longest wait for any one step (the initial sync of 256 MiB takes
/// seconds).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted (Ctrl-C): stopping the demo and cleaning up");
    }
    Ok(())
}

/// One demo node: its name, run directory and daemon.
struct DemoNode {
    name: &'static str,
    run_dir: PathBuf,
    disk: PathBuf,
    daemon: Option<Child>,
}

/// Everything to clean up.
struct Demo {
    dir: PathBuf,
    config: PathBuf,
    nodes: [DemoNode; 2],
}

impl Drop for Demo {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.daemon.take() {
                // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(10);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        println!(
            "==> cleaned up: daemons stopped, {} removed",
            self.dir.display()
        );
    }
}

/// Runs the demo.
pub fn run() -> Result<()> {
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let mut demo = setup()?;
    steps(&mut demo)
}

/// Two distinct free loopback ports: both listeners are held until both
/// ports are known, because the kernel may hand a just-released port out
/// again at once (and a resource whose two hosts share an address is
/// refused by the config parser).
fn free_ports() -> Result<(u16, u16)> {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port");
    let (a, b) = (bind()?, bind()?);
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

fn setup() -> Result<Demo> {
    let dir = std::env::temp_dir().join(format!(
        "hadisk-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("==> working in {}", dir.display());
    let node = |name: &'static str| -> Result<DemoNode> {
        let run_dir = dir.join(name).join("run");
        std::fs::create_dir_all(&run_dir)?;
        let disk = dir.join(name).join("disk.img");
        std::fs::File::create(&disk)?.set_len(DISK_BYTES)?;
        Ok(DemoNode {
            name,
            run_dir,
            disk,
            daemon: None,
        })
    };
    let nodes = [node("alpha")?, node("beta")?];
    let config = dir.join("demo.res");
    let (pa, pb) = free_ports()?;
    let text = format!(
        "# hadisk demo: two nodes on this machine (DRBD's resource-file grammar)\n\
         resource {RES} {{\n  net {{ protocol C; ping-int 1; timeout 20; connect-int 1; }}\n  \
         on alpha {{ device /dev/nbd0; disk {}; address 127.0.0.1:{pa}; meta-disk internal; }}\n  \
         on beta {{ device /dev/nbd0; disk {}; address 127.0.0.1:{pb}; meta-disk internal; }}\n}}\n",
        nodes[0].disk.display(),
        nodes[1].disk.display()
    );
    std::fs::write(&config, &text)?;
    println!(
        "==> two sparse {} MiB disks and this resource file ({}):\n{text}",
        DISK_BYTES >> 20,
        config.display()
    );
    Ok(Demo { dir, config, nodes })
}

impl Demo {
    fn hadisk(&self, node: usize, args: &[&str]) -> Command {
        let n = &self.nodes[node];
        let mut c = Command::new(std::env::current_exe().unwrap_or_else(|_| "hadisk".into()));
        c.args(["--config", &self.config.display().to_string()])
            .args(["--node", n.name])
            .args(["--run-dir", &n.run_dir.display().to_string()])
            .args(args);
        c
    }

    /// Runs `hadisk ARGS` on a node, printing the command and its answer.
    fn run(&self, node: usize, args: &[&str]) -> Result<()> {
        interrupted()?;
        println!("[{}] $ hadisk {}", self.nodes[node].name, args.join(" "));
        let out = self.hadisk(node, args).stdin(Stdio::null()).output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "`hadisk {}` on {} failed: {}",
                args.join(" "),
                self.nodes[node].name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn start_daemon(&mut self, node: usize) -> Result<()> {
        let log = self.dir.join(self.nodes[node].name).join("daemon.log");
        println!(
            "[{}] $ hadisk daemon   (log: {})",
            self.nodes[node].name,
            log.display()
        );
        let file = std::fs::File::create(&log)?;
        let child = self
            .hadisk(node, &["daemon"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .context("starting a daemon")?;
        self.nodes[node].daemon = Some(child);
        let sock = self.nodes[node].run_dir.join(control::CONTROL_SOCKET);
        self.wait("the daemon to answer", || Ok(sock.exists()))
    }

    fn status(&self, node: usize) -> Result<StatusReport> {
        let r = control::call(
            &self.nodes[node].run_dir,
            &Request::Status {
                resource: Some(RES.into()),
            },
        )?;
        r.status.context("no status in the daemon's answer")
    }

    fn wait(&self, what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
        let start = Instant::now();
        while !done()? {
            interrupted()?;
            if start.elapsed() > STEP_TIMEOUT {
                bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn socket_uri(&self, node: usize) -> String {
        format!(
            "nbd+unix:///{RES}?socket={}",
            self.nodes[node]
                .run_dir
                .join(format!("{RES}.nbd"))
                .display()
        )
    }
}

fn steps(d: &mut Demo) -> Result<()> {
    println!("==> 1. fresh metadata on both disks");
    d.run(0, &["create-md", RES, "--yes"])?;
    d.run(1, &["create-md", RES, "--yes"])?;
    println!("==> 2. one daemon per node (in a real cluster: one per machine)");
    d.start_daemon(0)?;
    d.start_daemon(1)?;
    println!("==> 3. attach and connect: both Secondary, Inconsistent");
    d.run(0, &["up", RES])?;
    d.run(1, &["up", RES])?;
    d.wait("the nodes to connect", || {
        Ok(d.status(0)?
            .resources
            .first()
            .map(|r| r.peer.connection.as_str())
            == Some("Connected"))
    })?;
    d.run(0, &["status", RES])?;
    println!("==> 4. alpha's data is declared the good copy: the initial full sync to beta");
    d.run(0, &["primary", "--force", RES])?;
    let mut last = Instant::now() - Duration::from_secs(1);
    d.wait("the initial sync", || {
        let s = d.status(0)?;
        let Some(r) = s.resources.first() else {
            return Ok(false);
        };
        if let Some(sync) = &r.peer.resync {
            if last.elapsed() >= Duration::from_millis(500) {
                last = Instant::now();
                println!(
                    "    {} {:6.2}% done, {:.1} MiB/s, ETA {} s",
                    r.peer.replication,
                    sync.done_percent,
                    sync.speed_bytes_per_s as f64 / 1048576.0,
                    sync.eta_s
                );
            }
        }
        Ok(r.peer.replication == "Established" && r.peer.disk == "UpToDate")
    })?;
    d.run(0, &["status", RES])?;
    let payload = d.dir.join("payload.bin");
    write_payload(d, &payload)?;
    println!("==> 6. both nodes' status");
    for n in 0..2 {
        print!("[{}]\n{}", d.nodes[n].name, render_status(&d.status(n)?));
    }
    println!("==> 7. checksums of both backing disks' usable areas (protocol C: identical)");
    let usable = d
        .status(0)?
        .resources
        .first()
        .map(|r| r.size_bytes)
        .context("no status")?;
    let (a, b) = (
        sha256_prefix(&d.nodes[0].disk, usable)?,
        sha256_prefix(&d.nodes[1].disk, usable)?,
    );
    println!("    alpha {a}\n    beta  {b}");
    if a != b {
        bail!(
            "the disks differ: replication is broken (logs in {})",
            d.dir.display()
        );
    }
    failover(d, &payload)?;
    println!(
        "==> done: a replicated pair, a sync, writes on both disks, a failover with no data lost"
    );
    Ok(())
}

fn write_payload(d: &Demo, payload: &Path) -> Result<()> {
    println!(
        "==> 5. {} MiB of random data written through alpha's NBD export",
        PAYLOAD_BYTES >> 20
    );
    let mut data = vec![0u8; PAYLOAD_BYTES];
    rand::Rng::fill(&mut rand::thread_rng(), &mut data[..]);
    std::fs::write(payload, &data)?;
    let uri = d.socket_uri(0);
    println!("    $ nbdcopy {} '{uri}'", payload.display());
    let st = Command::new("nbdcopy")
        .arg(payload)
        .arg(&uri)
        .status()
        .context("nbdcopy is not installed (Debian: apt install libnbd-bin)")?;
    if !st.success() {
        bail!("nbdcopy failed ({st})");
    }
    Ok(())
}

fn failover(d: &mut Demo, payload: &Path) -> Result<()> {
    println!("==> 8. alpha crashes (kill -9 of its daemon); beta notices and goes on alone");
    if let Some(mut child) = d.nodes[0].daemon.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    d.wait("beta to lose the link", || {
        Ok(d.status(1)?
            .resources
            .first()
            .map(|r| r.peer.connection.as_str())
            != Some("Connected"))
    })?;
    println!("==> 9. beta is promoted (its disk is UpToDate: no --force needed)");
    d.run(1, &["primary", RES])?;
    println!("==> 10. the data read back through beta's export, byte for byte");
    let back = d.dir.join("readback.bin");
    let st = Command::new("nbdcopy")
        .arg(d.socket_uri(1))
        .arg(&back)
        .status()
        .context("running nbdcopy")?;
    if !st.success() {
        bail!("nbdcopy from beta failed ({st})");
    }
    let (want, got) = (
        sha256_prefix(payload, PAYLOAD_BYTES as u64)?,
        sha256_prefix(&back, PAYLOAD_BYTES as u64)?,
    );
    println!("    written {want}\n    on beta {got}");
    if want != got {
        bail!("beta's data differs from what was written");
    }
    d.run(1, &["secondary", RES])?;
    Ok(())
}

fn sha256_prefix(path: &Path, len: u64) -> Result<String> {
    let mut f = std::fs::File::open(path)?.take(len);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
