//! `hadisk create-md` / `dump-md` through the built binary: a sparse 1 GiB
//! file and a loop device, every refusal with its exact message, the
//! not-defined-for-this-host message, real filesystems made by mkfs.ext4
//! and mkfs.xfs (kept when they fit, refused when the metadata would cut
//! their tail).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Usable size of a 1 GiB disk with al-extents 1237 (FORMAT.md §1).
const USABLE_1G: u64 = GIB - 73728;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::Builder::new()
                .prefix("hadisk-md-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn image(&self, size: u64) -> PathBuf {
        let p = self.path("disk.img");
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    /// The seed's data.res with `disk` as NAS1's disk, plus `extra` in the
    /// resource.
    fn config(&self, disk: &Path, extra: &str) -> PathBuf {
        let p = self.path("data.res");
        let text = format!(
            "resource data {{\n  {extra}\n  startup {{ wfc-timeout 30; degr-wfc-timeout 30; }}\n  \
             net {{ shared-secret sync_disk; }}\n  \
             on NAS1 {{ device /dev/drbd0; disk {}; address 127.0.0.1:7789; meta-disk internal; }}\n  \
             on NAS2 {{ device /dev/drbd0; disk /dev/sdb; address 127.0.0.2:7789; meta-disk internal; }}\n}}\n",
            disk.display()
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn hadisk(&self, node: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_hadisk"))
            .env_remove("RUST_LOG")
            .env("HADISK_CONFIG", self.path("data.res"))
            .env("HADISK_NODE", node)
            .env("HADISK_RUN_DIR", self.path("run"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one-line error of a failed command (exit code 1).
fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err.trim_end().to_string()
}

fn dump_json(s: &Setup) -> serde_json::Value {
    serde_json::from_str(&ok(&s.hadisk("NAS1", &["dump-md", "data", "--json"]))).unwrap()
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn create_and_dump_on_a_sparse_1g_file() {
    let s = Setup::new();
    let disk = s.image(GIB);
    s.config(&disk, "");
    let out = ok(&s.hadisk("NAS1", &["create-md", "data"]));
    assert_eq!(
        out,
        format!(
            "created hadisk metadata for 'data' on {} (node NAS1)\n\
             usable size: {USABLE_1G} bytes (1023.93 MiB); metadata: 73728 bytes at the end of the disk; al-extents 1237\n",
            disk.display()
        )
    );
    // Still sparse: the two superblock slots are all that was written.
    assert!(std::fs::metadata(&disk).unwrap().blocks() * 512 <= 64 * 1024);
    let j = dump_json(&s);
    assert_eq!(j["resource"], "data");
    assert_eq!(j["node"], "NAS1");
    assert_eq!(j["disk"], disk.display().to_string());
    assert_eq!(j["disk_size_bytes"], GIB);
    assert_eq!(j["usable_size_bytes"], USABLE_1G);
    assert_eq!(j["metadata_bytes"], 73728);
    assert_eq!(j["bitmap_area_bytes"], 32768);
    assert_eq!(j["al_ring_slots"], 8);
    assert_eq!(j["al_extents"], 1237);
    assert_eq!(j["flags"], serde_json::json!(["clean-shutdown"]));
    assert_eq!(j["uuids"]["current"], "0000000000000004");
    assert_eq!(
        j["uuids"]["history"],
        serde_json::json!(["0000000000000000", "0000000000000000"])
    );
    assert_eq!(j["dirty_blocks"], 0);
    assert_eq!(j["al"]["active_count"], 0);
    assert_eq!(j["al"]["last_transaction"], 0);
    assert_eq!(j["sequence"], 1);
    assert_eq!(j["superblock_fallback"], serde_json::Value::Null);
    let text = ok(&s.hadisk("NAS1", &["dump-md", "data"]));
    for line in [
        format!("resource 'data', node NAS1 (NAS1), disk {}", disk.display()),
        format!("usable-size    {USABLE_1G} bytes"),
        "flags          clean-shutdown (0x40)".to_string(),
        "uuids          0000000000000004:0000000000000000:0000000000000000:0000000000000000"
            .to_string(),
        "dirty          0 blocks (0 bytes)".to_string(),
        "al             0 active extents [], last transaction 0".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn existing_metadata_is_kept_without_force() {
    let s = Setup::new();
    let disk = s.image(GIB);
    s.config(&disk, "disk { al-extents 67; }");
    ok(&s.hadisk("NAS1", &["create-md", "data"]));
    let before = std::fs::read(&disk)
        .map(|b| b[b.len() - 8192..].to_vec())
        .unwrap();
    let err = fails(&s.hadisk("NAS1", &["create-md", "data"]));
    assert_eq!(
        err,
        format!(
            "hadisk: {} already holds hadisk metadata (usable size {} bytes, current UUID \
             0000000000000004, flags clean-shutdown); creating new metadata erases its generation \
             UUIDs and dirty bitmap (the peer will need a full sync). If that is what you want, run \
             `hadisk create-md data --force`",
            disk.display(),
            GIB - 8192 - 32768 - 32768
        )
    );
    let after = std::fs::read(&disk)
        .map(|b| b[b.len() - 8192..].to_vec())
        .unwrap();
    assert_eq!(before, after, "a refusal writes nothing");
    let out = ok(&s.hadisk("NAS1", &["create-md", "data", "--force"]));
    assert!(
        out.starts_with(&format!(
            "note: {} already holds hadisk metadata",
            disk.display()
        )),
        "{out}"
    );
    assert_eq!(dump_json(&s)["al_extents"], 67);
}

#[test]
fn damaged_metadata_and_slot_fallback() {
    let s = Setup::new();
    let disk = s.image(GIB);
    s.config(&disk, "");
    ok(&s.hadisk("NAS1", &["create-md", "data"]));
    // Damage slot 1 (the current one): dump-md falls back to slot 0 and says why.
    let slot1 = GIB - 4096;
    let patch = |offset: u64, byte: u8| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&[byte], offset).unwrap();
    };
    patch(slot1 + 200, 0x33);
    let j = dump_json(&s);
    assert_eq!(j["active_slot"], 0);
    let why = j["superblock_fallback"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "superblock slot 1 (byte {slot1}): checksum mismatch: stored 0x"
        )),
        "{why}"
    );
    // Both damaged: create-md refuses without --force, dump-md names both.
    patch(GIB - 8192 + 8, 9);
    let err = fails(&s.hadisk("NAS1", &["create-md", "data"]));
    assert!(
        err.starts_with(&format!(
            "hadisk: {} holds damaged hadisk metadata (no valid superblock: slot 0: superblock slot 0 \
             (byte {}): unsupported format version 9 (this build reads version 1); slot 1: ",
            disk.display(),
            GIB - 8192
        )),
        "{err}"
    );
    assert!(
        err.ends_with("run `hadisk create-md data --force`"),
        "{err}"
    );
    let err = fails(&s.hadisk("NAS1", &["dump-md", "data"]));
    assert!(
        err.starts_with(&format!(
            "hadisk: 'data': {}: no valid superblock: slot 0:",
            disk.display()
        )),
        "{err}"
    );
    ok(&s.hadisk("NAS1", &["create-md", "data", "--force"]));
    assert_eq!(
        dump_json(&s)["superblock_fallback"],
        serde_json::Value::Null
    );
}

#[test]
fn refusals_and_their_messages() {
    let s = Setup::new();
    let disk = s.image(MIB);
    s.config(&disk, "");
    assert_eq!(
        fails(&s.hadisk("NAS1", &["create-md", "data"])),
        format!(
            "hadisk: {}: disk of 1048576 bytes is too small: hadisk needs at least 1093632 bytes \
             (metadata plus 1 MiB of data); use a larger disk for 'data' (or a smaller al-extents)",
            disk.display()
        )
    );
    assert_eq!(
        fails(&s.hadisk("x", &["create-md", "data"])),
        "hadisk: 'data' not defined in your config (for this host 'x'); hosts: NAS1, NAS2"
    );
    assert_eq!(
        fails(&s.hadisk("x", &["dump-md", "data"])),
        "hadisk: 'data' not defined in your config (for this host 'x'); hosts: NAS1, NAS2"
    );
    assert_eq!(
        fails(&s.hadisk("NAS1", &["create-md", "r0"])),
        "hadisk: resource 'r0' not defined in your config; resources: data"
    );
    let big = s.image(GIB);
    assert_eq!(
        fails(&s.hadisk("NAS1", &["dump-md", "data"])),
        format!(
            "hadisk: 'data': {}: no hadisk metadata on this disk of 1073741824 bytes (run create-md first)",
            big.display()
        )
    );
    let missing = s.path("nope.img");
    s.config(&missing, "");
    let err = fails(&s.hadisk("NAS1", &["create-md", "data"]));
    assert!(
        err.starts_with(&format!("hadisk: cannot stat {}", missing.display()))
            || err.contains("No such file"),
        "{err}"
    );
    std::fs::write(
        s.path("data.res"),
        "resource data {\n  disk { al-extent 7; }\n}\n",
    )
    .unwrap();
    let err = fails(&s.hadisk("NAS1", &["create-md", "data"]));
    assert!(
        err.starts_with(&format!(
            "hadisk: reading the configuration {}: {}:2:10: ",
            s.path("data.res").display(),
            s.path("data.res").display()
        )),
        "{err}"
    );
    assert!(
        err.contains("al-extents"),
        "the nearest keyword is suggested: {err}"
    );
}

#[test]
fn a_filesystem_is_kept_when_it_fits_and_refused_when_its_tail_would_go() {
    let s = Setup::new();
    let disk = s.image(64 * MIB);
    s.config(&disk, "");
    // ext4 over the whole disk: the metadata would cut its tail.
    run(
        "mkfs.ext4",
        &["-q", "-F", "-L", "nas", disk.to_str().unwrap()],
    );
    let usable = 64 * MIB - 8192 - 32768 - 4096;
    assert_eq!(
        fails(&s.hadisk("NAS1", &["create-md", "data"])),
        format!(
            "hadisk: {d} holds an ext4 filesystem labelled 'nas' of {size} bytes, whose last {cut} \
             bytes the metadata would overwrite (the usable size is {usable} bytes); shrink the \
             filesystem to at most {kib} KiB first (ext2/3/4: `resize2fs {d} {kib}K`; xfs cannot \
             shrink: copy the data elsewhere), or run `hadisk create-md data --force` to destroy it",
            d = disk.display(),
            size = 64 * MIB,
            cut = 64 * MIB - usable,
            kib = usable / 1024
        )
    );
    // Shrunk to fit (as the message says): kept, and still clean after create-md.
    run(
        "resize2fs",
        &["-f", disk.to_str().unwrap(), &format!("{}K", usable / 1024)],
    );
    // resize2fs truncates an image file to the new size: give the disk back its size.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let out = ok(&s.hadisk("NAS1", &["create-md", "data"]));
    assert!(
        out.starts_with(&format!(
            "{} holds an ext4 filesystem labelled 'nas' of {} bytes; it ends below the usable size",
            disk.display(),
            usable / 4096 * 4096
        )),
        "{out}"
    );
    run("e2fsck", &["-fn", disk.to_str().unwrap()]);
    // ext2 (no journal) over the whole disk again: --force overwrites it and says so.
    run(
        "mkfs.ext2",
        &["-q", "-F", "-E", "nodiscard", disk.to_str().unwrap()],
    );
    let out = ok(&s.hadisk("NAS1", &["create-md", "data", "--force"]));
    let note = format!(
        "note: {} holds an ext2 filesystem of {} bytes, whose last {} bytes the metadata would \
         overwrite (overwritten: --force)",
        disk.display(),
        64 * MIB,
        64 * MIB - usable
    );
    assert!(out.lines().any(|l| l == note), "{out}");
}

#[test]
fn xfs_and_force() {
    let s = Setup::new();
    let disk = s.image(512 * MIB);
    s.config(&disk, "");
    run(
        "mkfs.xfs",
        &["-q", "-f", "-L", "nfs", disk.to_str().unwrap()],
    );
    let err = fails(&s.hadisk("NAS1", &["create-md", "data"]));
    assert!(
        err.starts_with(&format!(
            "hadisk: {} holds an xfs filesystem labelled 'nfs' of {} bytes, whose last",
            disk.display(),
            512 * MIB
        )),
        "{err}"
    );
    let out = ok(&s.hadisk("NAS1", &["create-md", "data", "--force"]));
    assert!(
        out.starts_with(&format!("note: {} holds an xfs filesystem", disk.display())),
        "{out}"
    );
    assert!(out.contains("(overwritten: --force)"), "{out}");
    assert_eq!(
        dump_json(&s)["usable_size_bytes"],
        512 * MIB - 8192 - 32768 - 16384
    );
}

/// A loop device, detached in Drop even when the test fails.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn create_and_dump_on_a_loop_device() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "loop devices need root (tests run as root here and in CI)"
    );
    let s = Setup::new();
    let backing = s.image(GIB);
    let out = run("losetup", &["-f", "--show", backing.to_str().unwrap()]);
    let dev = Loop(String::from_utf8(out.stdout).unwrap().trim().to_string());
    s.config(Path::new(&dev.0), "");
    let out = ok(&s.hadisk("NAS1", &["create-md", "data"]));
    assert!(
        out.starts_with(&format!(
            "created hadisk metadata for 'data' on {} (node NAS1)",
            dev.0
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("usable size: {USABLE_1G} bytes")),
        "{out}"
    );
    let j = dump_json(&s);
    assert_eq!(j["disk"], dev.0);
    assert_eq!(j["usable_size_bytes"], USABLE_1G);
    assert_eq!(j["uuids"]["current"], "0000000000000004");
    // The metadata went through the loop device to the file's end.
    let bytes = std::fs::read(&backing).unwrap();
    assert_eq!(&bytes[bytes.len() - 4096..][..8], b"HADISKSB");
    assert!(
        fails(&s.hadisk("NAS1", &["create-md", "data"])).contains("already holds hadisk metadata")
    );
}

/// A mount, unmounted in Drop (declared after the loop device, so dropped first).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_mounted_device_is_refused_even_with_force() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "loop devices and mounts need root (tests run as root here and in CI)"
    );
    let s = Setup::new();
    let backing = s.image(256 * MIB);
    let out = run("losetup", &["-f", "--show", backing.to_str().unwrap()]);
    let dev = Loop(String::from_utf8(out.stdout).unwrap().trim().to_string());
    s.config(Path::new(&dev.0), "");
    run("mkfs.ext4", &["-q", "-F", &dev.0]);
    let err = fails(&s.hadisk("NAS1", &["create-md", "data"]));
    assert!(
        err.starts_with(&format!(
            "hadisk: {} holds an ext4 filesystem of {} bytes, whose last",
            dev.0,
            256 * MIB
        )),
        "{err}"
    );
    let dir = s.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    run("mount", &[&dev.0, dir.to_str().unwrap()]);
    let _mount = Mount(dir);
    assert_eq!(
        fails(&s.hadisk("NAS1", &["create-md", "data", "--force"])),
        format!(
            "hadisk: {} is in use (mounted, or opened exclusively by another program): Device or \
             resource busy (os error 16); unmount it or stop the program holding it",
            dev.0
        )
    );
}

#[test]
fn dump_md_into_a_closed_pipe_exits_quietly() {
    let s = Setup::new();
    let disk = s.image(GIB);
    s.config(&disk, "");
    ok(&s.hadisk("NAS1", &["create-md", "data"]));
    for args in [&["dump-md", "data"][..], &["dump-md", "data", "--json"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hadisk"))
            .env("HADISK_CONFIG", s.path("data.res"))
            .env("HADISK_NODE", "NAS1")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before hadisk writes (as `| head -0` would).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.status.success(), "{err}");
    }
}

#[test]
fn config_directory_and_flags_over_environment() {
    let s = Setup::new();
    let disk = s.image(GIB);
    let res = s.config(&disk, "");
    let dir = s.path("etc");
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(&res, dir.join("data.res")).unwrap();
    // HADISK_CONFIG points at a missing file and HADISK_NODE at no host: the
    // flags win.
    let out = s.hadisk(
        "nas3",
        &[
            "--config",
            dir.to_str().unwrap(),
            "--node",
            "NAS1",
            "create-md",
            "data",
        ],
    );
    assert!(ok(&out).starts_with("created hadisk metadata for 'data'"));
    let err = fails(&s.hadisk(
        "nas3",
        &["--config", dir.to_str().unwrap(), "dump-md", "data"],
    ));
    assert_eq!(
        err,
        "hadisk: 'data' not defined in your config (for this host 'nas3'); hosts: NAS1, NAS2"
    );
}

/// `create-md --force` on a terminal asks first, as drbdadm does; `script`
/// (util-linux) gives hadisk a pseudo-terminal.
#[test]
fn force_on_a_terminal_asks_first() {
    let s = Setup::new();
    let disk = s.image(GIB);
    s.config(&disk, "");
    ok(&s.hadisk("NAS1", &["create-md", "data"]));
    ok(&s.hadisk("NAS1", &["create-md", "data", "--force"])); // not a terminal: no question
    let on_tty = |answer: &str, extra: &str| {
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!(
                    "{} create-md data --force {extra}",
                    env!("CARGO_BIN_EXE_hadisk")
                ),
                "/dev/null",
            ])
            .env("HADISK_CONFIG", s.path("data.res"))
            .env("HADISK_NODE", "NAS1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        )
    };
    let (code, out) = on_tty("no\n", "");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Do you want to overwrite it? Type 'yes' to continue: "),
        "{out}"
    );
    assert!(
        out.contains("hadisk: nothing written: answer 'yes' to overwrite, or pass --yes"),
        "{out}"
    );
    let (code, out) = on_tty("yes\n", "");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("created hadisk metadata for 'data'"), "{out}");
    assert!(!out.contains("note:"), "asked, so no note: {out}");
    let (code, out) = on_tty("", "--yes");
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("Do you want"), "{out}");
}
