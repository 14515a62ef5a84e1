//! Hostile clients against an in-process server over a real file, each
//! followed by real clients (nbdinfo, nbdsh, qemu-io) reading correct data.
//! The same scenarios run against the `hadisk daemon` in `tests/nbd_hostile.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/hostile.rs"]
mod hostile;

use std::sync::Arc;

use hadisk_nbd_server::{ExportInfo, ExportRegistry, IoMode, LocalVolume, Server, Volume};
use hadisk_storage::FileDevice;
use hostile::Target;

const SIZE_BYTES: u64 = 64 << 20;

struct OneExport(Arc<dyn Volume>);

impl ExportRegistry for OneExport {
    fn list(&self) -> Vec<ExportInfo> {
        vec![ExportInfo {
            name: "data".into(),
            description: "test".into(),
        }]
    }
    fn open(&self, name: &str) -> Result<Arc<dyn Volume>, String> {
        match name {
            "data" | "" => Ok(Arc::clone(&self.0)),
            _ => Err(format!("no export {name}")),
        }
    }
}

/// A server on its own runtime thread; shut down (and joined) on drop.
struct Harness {
    dir: tempfile::TempDir,
    target: Target,
    runtime: Option<tokio::runtime::Runtime>,
    server: Server,
}

impl Harness {
    fn start(mode: IoMode) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(SIZE_BYTES)
            .unwrap();
        let socket = dir.path().join("data.nbd");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let device = FileDevice::open(&image, false).unwrap();
        // Pipes on: the large-write scenarios exercise the spliced path.
        let volume: Arc<dyn Volume> =
            Arc::new(LocalVolume::whole(Arc::new(device), false, mode).with_pipes(true));
        let server = Server::new(Arc::new(OneExport(volume)));
        runtime
            .block_on(async { server.listen_unix(&socket) })
            .unwrap();
        let unseeded = Target {
            socket,
            export: "data".into(),
            size_bytes: SIZE_BYTES,
            pattern_file: dir.path().join("unused"),
        };
        let target = unseeded.seed(dir.path());
        Harness {
            dir,
            target,
            runtime: Some(runtime),
            server,
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let server = self.server.clone();
            runtime.block_on(async move {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), server.shutdown())
                    .await;
            });
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        }
        let _ = self.dir.path();
    }
}

fn scenario(name: &str, attack: fn(&Target)) {
    for mode in [IoMode::Blocking, IoMode::Inline, IoMode::Adaptive] {
        let harness = Harness::start(mode);
        harness.target.assert_healthy("seeding");
        attack(&harness.target);
        harness.target.assert_healthy(&format!("{name} ({mode:?})"));
        // The checking clients have just left; their connections end shortly after.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while harness.server.client_count("data") != 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(
            harness.server.client_count("data"),
            0,
            "{name}: clients left behind"
        );
    }
}

#[test]
fn garbage_instead_of_a_handshake() {
    scenario("garbage handshake", hostile::garbage_handshake);
}

#[test]
fn option_declaring_100_mb() {
    scenario("option of 100 MB", hostile::huge_option);
}

#[test]
fn bad_request_magic() {
    scenario("bad request magic", hostile::bad_request_magic);
}

#[test]
fn write_payload_shorter_than_declared() {
    scenario("short write payload", hostile::short_write_payload);
}

#[test]
fn large_write_payload_shorter_than_declared() {
    scenario(
        "short large write payload",
        hostile::short_large_write_payload,
    );
}

#[test]
fn large_write_trickling_in_64_byte_pieces() {
    scenario("trickled large write", hostile::trickled_large_write);
}

#[test]
fn per_request_errors_keep_the_connection() {
    scenario("per-request errors", hostile::per_request_errors);
}

#[test]
fn disconnect_with_64_reads_in_flight() {
    scenario(
        "disconnect with 64 reads in flight",
        hostile::disconnect_with_reads_in_flight,
    );
}

#[test]
fn thousand_connections_opened_and_dropped() {
    scenario("1,000 connections", hostile::thousand_connections);
}
