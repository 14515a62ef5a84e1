//! A standalone Primary's export used by real NBD clients: libnbd's
//! nbdinfo and nbdcopy, Debian's nbd-client, qemu-io and fio's nbd engine.
//! Every check is on data (checksums, `cmp`, patterns) or on what the
//! client reports, never on timing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const RES: &str = "data";

/// A node with a Primary `data` of `disk_bytes`, its daemon, and the
/// exported (usable) size.
fn primary(disk_bytes: u64, extra: &str) -> (Node, DaemonGuard, u64) {
    let node = Node::new("alpha");
    node.setup(RES, disk_bytes, extra);
    let d = node.daemon();
    node.make_primary(RES);
    let size = node.resource_status(RES)["size_bytes"].as_u64().unwrap();
    (node, d, size)
}

#[test]
fn nbdinfo_sees_the_size_flags_and_block_sizes() {
    require("nbdinfo");
    let (node, _d, size) = primary(64 * MIB, "");
    let dev = hadisk_storage::FileDevice::open(node.path("data.img"), true).unwrap();
    let md = hadisk_metadata::Metadata::open(std::sync::Arc::new(dev)).unwrap();
    assert_eq!(
        size,
        md.layout().usable_size_bytes,
        "the export is the usable size"
    );
    assert!(size < 64 * MIB, "the metadata is not exported");

    let info: serde_json::Value =
        serde_json::from_str(&sh("nbdinfo", &["--json", &node.uri(RES)])).unwrap();
    let export = &info["exports"][0];
    assert_eq!(export["export-name"], RES);
    assert_eq!(export["export-size"], size);
    assert_eq!(export["is_read_only"], false);
    assert_eq!(export["can_flush"], true);
    assert_eq!(export["can_fua"], true);
    assert_eq!(export["can_trim"], true);
    assert_eq!(export["can_zero"], true);
    assert_eq!(export["can_multi_conn"], true);
    assert_eq!(export["block_size_minimum"], 1);
    assert_eq!(export["block_size_preferred"], 4096);
    assert_eq!(export["block_size_maximum"], 32 * MIB);

    let list = sh(
        "nbdinfo",
        &[
            "--list",
            &format!("nbd+unix://?socket={}", node.socket(RES).display()),
        ],
    );
    assert!(list.contains("export=\"data\""), "{list}");
    assert!(
        list.contains("hadisk resource data on node alpha (Primary)"),
        "{list}"
    );
    // The default export ("") is the resource too.
    let size_default = sh(
        "nbdinfo",
        &[
            "--size",
            &format!("nbd+unix://?socket={}", node.socket(RES).display()),
        ],
    );
    assert_eq!(size_default.trim().parse::<u64>().unwrap(), size);
}

#[test]
fn nbd_client_lists_the_export_over_unix_and_tcp() {
    require("nbd-client");
    let port = free_port();
    let (node, _d, _) = primary(64 * MIB, &format!("nbd-listen 127.0.0.1:{port};"));
    assert_eq!(
        node.resource_status(RES)["nbd_tcp"],
        format!("127.0.0.1:{port}")
    );
    let sock = node.socket(RES);
    let (ok, out, err) = run_cmd("nbd-client", &["-l", "-u", sock.to_str().unwrap()]);
    assert!(
        ok && out.lines().any(|l| l.trim().starts_with("data")),
        "nbd-client -l -u: {out}{err}"
    );
    let (ok, out, err) = run_cmd("nbd-client", &["-l", "127.0.0.1", &port.to_string()]);
    assert!(
        ok && out.lines().any(|l| l.trim().starts_with("data")),
        "nbd-client -l tcp: {out}{err}"
    );
    // libnbd over TCP reaches the same data as over the Unix socket.
    sh(
        "qemu-io",
        &["-f", "raw", &node.uri(RES), "-c", "write -P 0x3c 8M 1M"],
    );
    sh(
        "qemu-io",
        &[
            "-f",
            "raw",
            &format!("nbd://127.0.0.1:{port}/data"),
            "-c",
            "read -P 0x3c 8M 1M",
        ],
    );
}

#[test]
fn nbdcopy_256_mib_in_and_out_is_identical() {
    require("nbdcopy");
    let (node, _d, size) = primary(300 * MIB, "");
    assert!(size >= 256 * MIB);
    let input = node.path("in.bin");
    sh(
        "sh",
        &[
            "-c",
            &format!("head -c {} /dev/urandom > {}", 256 * MIB, input.display()),
        ],
    );
    sh(
        "nbdcopy",
        &["--flush", input.to_str().unwrap(), &node.uri(RES)],
    );
    let output = node.path("out.bin");
    sh("nbdcopy", &[&node.uri(RES), output.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&output).unwrap().len(), size);
    sh(
        "cmp",
        &[
            "-n",
            &(256 * MIB).to_string(),
            input.to_str().unwrap(),
            output.to_str().unwrap(),
        ],
    );
    // The bytes past the copy are still zero: nothing was written beyond it.
    let tail = std::fs::read(&output).unwrap();
    assert!(tail[(256 * MIB) as usize..].iter().all(|&b| b == 0));
}

#[test]
fn qemu_io_patterns_zeroes_discard_and_the_end_of_the_export() {
    require("qemu-io");
    let (node, _d, size) = primary(64 * MIB, "");
    let uri = node.uri(RES);
    let last = size - MIB;
    let cmds = [
        "write -P 0xab 0 1M".to_string(),
        "read -P 0xab 0 1M".to_string(),
        "write -f -P 0xcd 1M 64k".to_string(),
        "read -P 0xcd 1M 64k".to_string(),
        "write -z 2M 1M".to_string(),
        "read -P 0 2M 1M".to_string(),
        "write -P 0x11 4M 3M".to_string(),
        "discard 4M 1M".to_string(),
        "read -P 0x11 5M 2M".to_string(),
        "aio_write -P 0x21 8M 512k".to_string(),
        "aio_write -P 0x22 9M 512k".to_string(),
        "aio_flush".to_string(),
        "read -P 0x21 8M 512k".to_string(),
        "read -P 0x22 9M 512k".to_string(),
        format!("write -P 0xee {last} 1M"),
        format!("read -P 0xee {last} 1M"),
        "write -P 0x07 10497857 777".to_string(),
        "read -P 0x07 10497857 777".to_string(),
        "flush".to_string(),
    ];
    let mut args = vec!["-f", "raw", uri.as_str()];
    for c in &cmds {
        args.extend(["-c", c.as_str()]);
    }
    let out = sh("qemu-io", &args);
    assert!(!out.contains("Pattern verification failed"), "{out}");
    // Past the end: refused, and the daemon goes on.
    let (_, out, err) = run_cmd(
        "qemu-io",
        &["-f", "raw", &uri, "-c", &format!("write -P 1 {size} 4k")],
    );
    assert!(
        !out.contains("wrote 4096/4096 bytes"),
        "a write past the end must fail: {out}{err}"
    );
    sh(
        "qemu-io",
        &[
            "-f",
            "raw",
            &uri,
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            &format!("read -P 0xee {last} 1M"),
        ],
    );
    // And the disk itself holds the data (read back through the file).
    let disk = std::fs::read(node.path("data.img")).unwrap();
    assert!(disk[..MIB as usize].iter().all(|&b| b == 0xab));
    assert!(disk[last as usize..size as usize]
        .iter()
        .all(|&b| b == 0xee));
}

#[test]
fn fio_verifies_crc32c_with_several_jobs_and_connections() {
    require("fio");
    let (node, _d, size) = primary(160 * MIB, "");
    assert!(size >= 128 * MIB);
    let uri = node.uri(RES);
    let out = sh(
        "fio",
        &[
            "--name=verify",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=randwrite",
            "--bsrange=4k-64k",
            "--iodepth=32",
            "--numjobs=4",
            "--size=32M",
            "--offset_increment=32M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
            "--group_reporting",
        ],
    );
    assert!(out.contains("verify"), "{out}");
    assert!(!out.contains("verify: bad"), "{out}");
    // Sequential 1 MiB writes with FUA-free flushes every 16 writes, verified.
    sh(
        "fio",
        &[
            "--name=sequential",
            "--ioengine=nbd",
            &format!("--uri={uri}"),
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            "--numjobs=2",
            "--size=32M",
            "--offset=64M",
            "--offset_increment=32M",
            "--fsync=16",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--verify_state_save=0",
        ],
    );
    assert_eq!(node.resource_status(RES)["role"], "Primary");
}

/// 448 writes of 7 bytes, all in flight at once, tile the first 3,136
/// bytes: several land in each 512-byte sector, each needing a
/// read-modify-write. Every byte of every acknowledged write is there.
const SUB_SECTOR_WRITER: &str = r#"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n, w = 448, 7
bufs = []
for i in range(n):
    b = nbd.Buffer.from_bytearray(bytearray([i % 251 + 1] * w))
    bufs.append(b)
    h.aio_pwrite(b, i * w)
while h.aio_in_flight() > 0:
    h.poll(-1)
got = h.pread(n * w, 0)
want = b"".join(bytes([i % 251 + 1] * w) for i in range(n))
bad = [i for i in range(n) if got[i * w:(i + 1) * w] != want[i * w:(i + 1) * w]]
print("lost", len(bad), bad[:8])
"#;

#[test]
fn concurrent_sub_sector_writes_into_one_sector_all_land() {
    let (node, _d, _size) = primary(64 * MIB, "");
    let out = std::process::Command::new(LIBNBD_PYTHON)
        .args(["-c", SUB_SECTOR_WRITER, &node.uri(RES)])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "libnbd writer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "lost 0 []", "sub-sector writes were lost");
}
