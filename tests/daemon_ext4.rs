//! A real ext4 on a standalone Primary's export: nbdfuse turns the export
//! into a file, losetup into a block device; mkfs.ext4, mount, files
//! written and read back by checksum, umount, `e2fsck -fn` clean; then the
//! daemon is restarted (SIGTERM, start, up, primary) and everything is
//! checked again. Needs root (losetup, mount), which tests have here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;

const RES: &str = "data";

/// Writes `count` files of different sizes (4 KiB to 1.2 MiB, most not a
/// multiple of the block size) with deterministic pseudo-random contents.
fn write_files(dir: &Path, count: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..count {
        let len = 4096 * (1 + i * 37 % 300) + i * 13;
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        data.truncate(len);
        std::fs::write(dir.join(format!("file-{i:03}.bin")), &data).unwrap();
    }
}

fn checksums(dir: &Path) -> String {
    sh(
        "sh",
        &[
            "-c",
            &format!("cd {} && sha256sum file-*.bin", dir.display()),
        ],
    )
}

fn fsck_clean(dev: &str) {
    let (ok, out, err) = run_cmd("e2fsck", &["-fn", dev]);
    assert!(ok, "e2fsck -fn {dev} is not clean:\n{out}{err}");
}

#[test]
fn ext4_on_the_export_survives_a_daemon_restart() {
    for cmd in [
        "nbdfuse",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
        "sha256sum",
    ] {
        require(cmd);
    }
    assert!(is_root(), "this test needs root (losetup, mount)");
    let node = Node::new("alpha");
    let disk = node.setup(RES, 256 * MIB, "");
    let mut d = node.daemon();
    node.make_primary(RES);

    let sums = {
        let fuse = FuseLoop::new(node.path("fuse"), &node.socket(RES));
        sh("mkfs.ext4", &["-q", "-F", fuse.dev()]);
        let mut mnt = MountGuard::mount(fuse.dev(), node.path("mnt"));
        write_files(&mnt.dir, 60);
        sh("sync", &[]);
        let sums = checksums(&mnt.dir);
        assert_eq!(sums.lines().count(), 60);
        // Read back through a fresh page cache: remount.
        mnt.umount();
        let mut mnt = MountGuard::mount(fuse.dev(), node.path("mnt"));
        assert_eq!(checksums(&mnt.dir), sums);
        mnt.umount();
        fsck_clean(fuse.dev());
        assert!(node.resource_status(RES)["nbd_clients"].as_u64().unwrap() >= 1);
        assert!(node
            .fails(&["secondary", RES])
            .contains("connected to the export"));
        sums
        // `fuse` drops here: losetup -d, umount DIR, nbdfuse stopped.
    };
    wait_until("nbdfuse's connections to close", 20, || {
        node.resource_status(RES)["nbd_clients"] == 0
    });

    let status = d.stop();
    assert!(status.success(), "SIGTERM exit {status}:\n{}", d.log_text());
    assert!(node.md_flags(&disk).contains(&"clean-shutdown"));

    let _d = node.daemon();
    assert_eq!(
        node.ok(&["up", RES]),
        "data: up as Secondary, disk UpToDate\n"
    );
    node.ok(&["primary", RES]);
    let fuse = FuseLoop::new(node.path("fuse"), &node.socket(RES));
    fsck_clean(fuse.dev());
    let mut mnt = MountGuard::mount(fuse.dev(), node.path("mnt"));
    assert_eq!(checksums(&mnt.dir), sums);
    // Write more after the restart, then check the whole tree again.
    std::fs::write(
        mnt.dir.join("after-restart.txt"),
        b"written after the restart\n",
    )
    .unwrap();
    mnt.umount();
    let mut mnt = MountGuard::mount(fuse.dev(), node.path("mnt"));
    assert_eq!(checksums(&mnt.dir), sums);
    assert_eq!(
        std::fs::read(mnt.dir.join("after-restart.txt")).unwrap(),
        b"written after the restart\n"
    );
    mnt.umount();
    fsck_clean(fuse.dev());
}
