//! Hostile NBD clients and the real-client health check that follows each.
//!
//! Shared by `crates/nbd-server/tests/hostile_clients.rs` (an in-process
//! server) and `tests/nbd_hostile.rs` (the real `hadisk daemon`), which
//! include this file by path. It depends on nothing but std, so both packages
//! can compile it, and it encodes the wire format by hand from the spec
//! (NetworkBlockDevice/nbd `doc/proto.md`) rather than with the codec under
//! test.
//!
//! The hostile side uses raw sockets; every check that the server is still
//! healthy uses real clients: `nbdinfo` (size), `nbdsh` (libnbd: the data
//! reads back byte for byte) and `qemu-io` (a pattern write and verify).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;

/// Command types.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
/// Error values from the spec.
pub const EINVAL: u32 = 22;

/// How long a raw client waits for the server before the test fails.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);

/// Size of the pattern the health check reads back.
pub const PATTERN_BYTES: usize = 1 << 20;
/// Where the qemu-io pattern region starts (after the nbdsh pattern).
const QEMU_PATTERN_OFFSET: u64 = PATTERN_BYTES as u64;
const QEMU_PATTERN_BYTES: u64 = 64 * 1024;

/// One export under attack: where it listens and the files the checks use.
#[derive(Debug)]
pub struct Target {
    pub socket: PathBuf,
    pub export: String,
    pub size_bytes: u64,
    /// The pattern written at offset 0 by [`Target::seed`].
    pub pattern_file: PathBuf,
}

impl Target {
    pub fn uri(&self) -> String {
        format!(
            "nbd+unix:///{}?socket={}",
            self.export,
            self.socket.display()
        )
    }

    /// Writes the reference data through real clients: a pseudo-random 1 MiB
    /// at offset 0 (nbdsh) and a 64 KiB 0xa5 pattern after it (qemu-io).
    pub fn seed(&self, scratch: &Path) -> Target {
        let pattern_file = scratch.join("pattern.bin");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let pattern: Vec<u8> = (0..PATTERN_BYTES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(&pattern_file, &pattern).unwrap();
        let target = Target {
            socket: self.socket.clone(),
            export: self.export.clone(),
            size_bytes: self.size_bytes,
            pattern_file,
        };
        let code = format!(
            "h.pwrite(open({:?}, 'rb').read(), 0); h.flush(); print('seeded')",
            target.pattern_file.display().to_string()
        );
        assert_eq!(nbdsh(&target.uri(), &code).trim(), "seeded");
        let out = qemu_io(
            &target,
            &format!("write -P 0xa5 {QEMU_PATTERN_OFFSET} {QEMU_PATTERN_BYTES}"),
        );
        assert!(out.contains("wrote 65536/65536 bytes"), "qemu-io: {out}");
        target
    }

    /// The server answers real clients with the right size and the data
    /// written by [`Target::seed`], byte for byte.
    pub fn assert_healthy(&self, after: &str) {
        let size = run("nbdinfo", &["--size", &self.uri()]);
        assert_eq!(
            size.trim(),
            self.size_bytes.to_string(),
            "nbdinfo after {after}"
        );
        let code = format!(
            "print(h.pread({PATTERN_BYTES}, 0) == open({:?}, 'rb').read())",
            self.pattern_file.display().to_string()
        );
        assert_eq!(
            nbdsh(&self.uri(), &code).trim(),
            "True",
            "nbdsh data check after {after}"
        );
        let out = qemu_io(
            self,
            &format!("read -P 0xa5 {QEMU_PATTERN_OFFSET} {QEMU_PATTERN_BYTES}"),
        );
        assert!(
            out.contains("read 65536/65536 bytes") && !out.contains("failed"),
            "qemu-io pattern check after {after}: {out}"
        );
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// nbdsh (`python3 -m nbd`, what /usr/bin/nbdsh runs) through Debian's python,
/// the only one that sees python3-libnbd.
pub fn nbdsh(uri: &str, code: &str) -> String {
    run("/usr/bin/python3", &["-m", "nbd", "-u", uri, "-c", code])
}

fn qemu_io(target: &Target, command: &str) -> String {
    let image = format!(
        "driver=nbd,server.type=unix,server.path={},export={}",
        target.socket.display(),
        target.export
    );
    run("qemu-io", &["--image-opts", &image, "-c", command])
}

/// A raw client speaking the wire format by hand.
pub struct RawClient {
    stream: UnixStream,
}

impl RawClient {
    pub fn connect(socket: &Path) -> RawClient {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        stream.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(SOCKET_TIMEOUT)).unwrap();
        RawClient { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends, tolerating a server that has already closed (it may close as
    /// soon as it has seen enough to refuse).
    pub fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf).unwrap();
        buf
    }

    /// Reads the 18-byte greeting and checks its magic numbers.
    pub fn greeting(&mut self) {
        let g = self.read_exact(18);
        assert_eq!(be64(&g[0..8]), NBDMAGIC);
        assert_eq!(be64(&g[8..16]), IHAVEOPT);
    }

    pub fn option_header(option: u32, length: u32) -> Vec<u8> {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&option.to_be_bytes());
        v.extend_from_slice(&length.to_be_bytes());
        v
    }

    /// Fixed newstyle, no zeroes, `NBD_OPT_GO` on `export`; returns the
    /// export size from `NBD_INFO_EXPORT`.
    pub fn handshake(socket: &Path, export: &str) -> (RawClient, u64) {
        let mut client = RawClient::connect(socket);
        client.greeting();
        client.send(&3u32.to_be_bytes());
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut option = Self::option_header(OPT_GO, data.len() as u32);
        option.extend_from_slice(&data);
        client.send(&option);
        let mut size_bytes = None;
        loop {
            let header = client.read_exact(20);
            assert_eq!(be64(&header[0..8]), OPTION_REPLY_MAGIC);
            let reply_type = be32(&header[12..16]);
            let body = client.read_exact(be32(&header[16..20]) as usize);
            match reply_type {
                REP_INFO if be16(&body[0..2]) == 0 => size_bytes = Some(be64(&body[2..10])),
                REP_INFO => {}
                REP_ACK => break,
                other => panic!(
                    "GO refused ({other:#x}): {}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
        (client, size_bytes.expect("no NBD_INFO_EXPORT before ACK"))
    }

    pub fn request(command: u16, cookie: u64, offset: u64, length: u32) -> Vec<u8> {
        let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&0u16.to_be_bytes());
        v.extend_from_slice(&command.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&length.to_be_bytes());
        v
    }

    /// Reads one simple reply header: `(error, cookie)`.
    pub fn reply(&mut self) -> (u32, u64) {
        let r = self.read_exact(16);
        assert_eq!(be32(&r[0..4]), SIMPLE_REPLY_MAGIC, "reply magic");
        (be32(&r[4..8]), be64(&r[8..16]))
    }

    /// Sends a READ and returns its data (asserting success).
    pub fn read_ok(&mut self, cookie: u64, offset: u64, length: u32) -> Vec<u8> {
        self.send(&Self::request(CMD_READ, cookie, offset, length));
        assert_eq!(self.reply(), (0, cookie), "read at {offset}");
        self.read_exact(length as usize)
    }

    /// The server closes the connection without sending anything more
    /// (EOF or a reset), within the socket timeout.
    pub fn expect_closed(mut self, what: &str) {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => panic!("{what}: server sent {n} more bytes instead of closing"),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("{what}: server did not close the connection: {e}"),
            }
        }
    }

    /// A second handle on the socket, e.g. to send from another thread.
    pub fn try_clone_stream(&self) -> UnixStream {
        self.stream.try_clone().unwrap()
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b.try_into().unwrap())
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().unwrap())
}

/// Garbage instead of the client flags and options: the server closes.
pub fn garbage_handshake(target: &Target) {
    let mut client = RawClient::connect(&target.socket);
    client.greeting();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    client.send_lossy(&garbage);
    client.expect_closed("garbage handshake");
}

/// An option declaring 100 MB of data: refused from its header alone.
pub fn huge_option(target: &Target) {
    let mut client = RawClient::connect(&target.socket);
    client.greeting();
    client.send(&1u32.to_be_bytes());
    client.send(&RawClient::option_header(OPT_GO, 100_000_000));
    client.send_lossy(&[0u8; 64 * 1024]);
    client.expect_closed("option of 100 MB");
}

/// A request with a bad magic closes that connection, with no reply.
pub fn bad_request_magic(target: &Target) {
    let (mut client, _) = RawClient::handshake(&target.socket, &target.export);
    let mut request = RawClient::request(CMD_READ, 1, 0, 512);
    request[0] ^= 0xff;
    client.send(&request);
    client.expect_closed("bad request magic");
}

/// A WRITE whose payload is shorter than declared, then EOF: no reply, and
/// none of the partial payload reaches the disk.
pub fn short_write_payload(target: &Target) {
    let (mut client, _) = RawClient::handshake(&target.socket, &target.export);
    client.send(&RawClient::request(CMD_WRITE, 7, 0, 65536));
    client.send(&[0u8; 1000]);
    client.shutdown_write();
    client.expect_closed("short write payload");
}

/// A 1 MiB WRITE over the seeded pattern whose payload stops after 300 KiB,
/// then EOF: the server was splicing it into pipes; no reply, and none of
/// it reaches the disk (the health check reads the pattern back).
pub fn short_large_write_payload(target: &Target) {
    let (mut client, _) = RawClient::handshake(&target.socket, &target.export);
    client.send(&RawClient::request(CMD_WRITE, 8, 0, 1 << 20));
    client.send(&vec![0x5au8; 300 * 1024]);
    client.shutdown_write();
    client.expect_closed("short large write payload");
}

/// A 1 MiB WRITE whose payload trickles in 64-byte pieces (more fragments
/// than the server's pipes have slots: it falls back to memory), then one
/// sent whole (spliced): both are acknowledged and read back intact.
pub fn trickled_large_write(target: &Target) {
    let (mut client, _) = RawClient::handshake(&target.socket, &target.export);
    let at = 8u64 << 20;
    let data: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(7) >> 3) as u8)
        .collect();
    client.send(&RawClient::request(CMD_WRITE, 21, at, 1 << 20));
    for piece in data.chunks(64) {
        client.send(piece);
    }
    assert_eq!(client.reply(), (0, 21), "trickled write");
    assert!(
        client.read_ok(22, at, 1 << 20) == data,
        "trickled write read back"
    );
    let whole: Vec<u8> = data.iter().map(|b| b ^ 0xff).collect();
    let mut request = RawClient::request(CMD_WRITE, 23, at + (1 << 20), 1 << 20);
    request.extend_from_slice(&whole);
    client.send(&request);
    assert_eq!(client.reply(), (0, 23), "whole write");
    assert!(
        client.read_ok(24, at + (1 << 20), 1 << 20) == whole,
        "whole write read back"
    );
}

/// Per-request errors (read past the end, read over the maximum, unknown
/// command) are replied with EINVAL and the connection goes on.
pub fn per_request_errors(target: &Target) {
    let (mut client, size) = RawClient::handshake(&target.socket, &target.export);
    assert_eq!(size, target.size_bytes);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "read past the end",
            RawClient::request(CMD_READ, 11, size - 512, 4096),
        ),
        (
            "read starting at the end",
            RawClient::request(CMD_READ, 12, size, 1),
        ),
        (
            "read over the maximum (64 MiB)",
            RawClient::request(CMD_READ, 13, 0, 64 << 20),
        ),
        ("unknown command 99", RawClient::request(99, 14, 0, 512)),
    ];
    let pattern = std::fs::read(&target.pattern_file).unwrap();
    for (i, (what, request)) in cases.iter().enumerate() {
        client.send(request);
        assert_eq!(client.reply(), (EINVAL, 11 + i as u64), "{what}");
        // The connection goes on and serves correct data.
        let data = client.read_ok(100 + i as u64, 4096, 4096);
        assert_eq!(&data[..], &pattern[4096..8192], "read after {what}");
    }
    // The last byte of the export is reachable.
    assert_eq!(client.read_ok(200, size - 1, 1).len(), 1);
    client.send(&RawClient::request(CMD_DISC, 201, 0, 0));
    client.expect_closed("after NBD_CMD_DISC");
}

/// 64 reads of 1 MiB in flight, then the client vanishes without reading.
pub fn disconnect_with_reads_in_flight(target: &Target) {
    let (mut client, _) = RawClient::handshake(&target.socket, &target.export);
    let mut burst = Vec::new();
    for cookie in 0..64u64 {
        let offset = (cookie * (1 << 20)) % (target.size_bytes - (1 << 20));
        burst.extend_from_slice(&RawClient::request(CMD_READ, cookie, offset, 1 << 20));
    }
    client.send(&burst);
    drop(client);
}

/// 1,000 connections opened (all at once) and dropped at various points of
/// the handshake.
pub fn thousand_connections(target: &Target) {
    let mut open = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        let mut client = RawClient::connect(&target.socket);
        match i % 4 {
            0 => {}
            1 => client.greeting(),
            2 => {
                client.greeting();
                client.send(&1u32.to_be_bytes());
                client.send(&RawClient::option_header(OPT_GO, 40)[..10]);
            }
            _ => {
                client.greeting();
                client.send_lossy(&[1, 2, 3]);
            }
        }
        open.push(client);
    }
    drop(open);
}
