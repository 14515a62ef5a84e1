//! The transmission loop's promises, observed from a raw client against a
//! volume whose operations the test completes by hand: requests are read
//! while earlier ones are pending, replies leave in completion order (out of
//! order), and the in-flight budget stops reading once it is spent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/hostile.rs"]
mod hostile;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hadisk_nbd_server::{
    ExportInfo, ExportRegistry, Server, Volume, VolumeError, VolumeFuture, MAX_IN_FLIGHT_BYTES,
};
use hostile::{RawClient, CMD_READ, CMD_WRITE};
use tokio::sync::{watch, Semaphore};

const SIZE_BYTES: u64 = 1 << 30;

/// Reads complete only when `turn` reaches their block number (the test
/// counts it down, so they complete in reverse); writes wait for a permit.
struct GatedVolume {
    turn: watch::Sender<u64>,
    write_permits: Arc<Semaphore>,
    writes_started: AtomicUsize,
}

impl Volume for GatedVolume {
    fn size_bytes(&self) -> u64 {
        SIZE_BYTES
    }
    fn read_only(&self) -> bool {
        false
    }
    fn can_multi_conn(&self) -> bool {
        false
    }
    fn read(&self, offset_bytes: u64, length_bytes: u32) -> VolumeFuture<Bytes> {
        let block = offset_bytes / 4096;
        let mut turn = self.turn.subscribe();
        let next = self.turn.clone();
        Box::pin(async move {
            let _ = turn.wait_for(|t| *t == block).await;
            next.send_replace(block.wrapping_sub(1));
            Ok(Bytes::from(vec![block as u8; length_bytes as usize]))
        })
    }
    fn write(
        &self,
        _offset_bytes: u64,
        _data: hadisk_nbd_server::Payload,
        _fua: bool,
    ) -> VolumeFuture<()> {
        self.writes_started.fetch_add(1, Ordering::SeqCst);
        let permits = Arc::clone(&self.write_permits);
        Box::pin(async move {
            let permit = permits
                .acquire()
                .await
                .map_err(|_| VolumeError::ShuttingDown)?;
            permit.forget();
            Ok(())
        })
    }
    fn flush(&self) -> VolumeFuture<()> {
        Box::pin(async { Ok(()) })
    }
    fn trim(&self, _: u64, _: u32, _: bool) -> VolumeFuture<()> {
        Box::pin(async { Err(VolumeError::Unsupported) })
    }
    fn write_zeroes(&self, _: u64, _: u32, _: bool, _: bool) -> VolumeFuture<()> {
        Box::pin(async { Err(VolumeError::Unsupported) })
    }
}

struct One(Arc<GatedVolume>);

impl ExportRegistry for One {
    fn list(&self) -> Vec<ExportInfo> {
        Vec::new()
    }
    fn open(&self, _name: &str) -> Result<Arc<dyn Volume>, String> {
        Ok(Arc::clone(&self.0) as Arc<dyn Volume>)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    volume: Arc<GatedVolume>,
    runtime: tokio::runtime::Runtime,
}

fn start(first_turn: u64) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gated.nbd");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let volume = Arc::new(GatedVolume {
        turn: watch::channel(first_turn).0,
        write_permits: Arc::new(Semaphore::new(0)),
        writes_started: AtomicUsize::new(0),
    });
    let server = Server::new(Arc::new(One(Arc::clone(&volume))));
    runtime
        .block_on(async { server.listen_unix(&socket) })
        .unwrap();
    Harness {
        _dir: dir,
        socket,
        volume,
        runtime,
    }
}

#[test]
fn replies_leave_in_completion_order_while_later_requests_are_read() {
    const READS: u64 = 16;
    let harness = start(READS - 1);
    let (mut client, size) = RawClient::handshake(&harness.socket, "gated");
    assert_eq!(size, SIZE_BYTES);
    // All requests in one burst: the last one's completion releases the
    // others, so the server must have read all of them while the first
    // fifteen were still pending.
    let mut burst = Vec::new();
    for block in 0..READS {
        burst.extend_from_slice(&RawClient::request(
            CMD_READ,
            1000 + block,
            block * 4096,
            512,
        ));
    }
    client.send(&burst);
    for expected in (0..READS).rev() {
        let (error, cookie) = client.reply();
        assert_eq!((error, cookie), (0, 1000 + expected), "completion order");
        assert_eq!(client.read_exact(512), vec![expected as u8; 512]);
    }
    drop(harness.runtime);
}

#[test]
fn reading_stops_when_the_in_flight_budget_is_spent() {
    const WRITES: usize = 100;
    const PAYLOAD: usize = 1 << 20;
    let harness = start(0);
    let (client, _) = RawClient::handshake(&harness.socket, "gated");
    let client = Arc::new(std::sync::Mutex::new(client));
    let sender = {
        let client = Arc::clone(&client);
        std::thread::spawn(move || {
            let payload = vec![0x5au8; PAYLOAD];
            let mut stream = client.lock().unwrap().try_clone_stream();
            for i in 0..WRITES as u64 {
                use std::io::Write;
                stream
                    .write_all(&RawClient::request(
                        CMD_WRITE,
                        i,
                        i * PAYLOAD as u64,
                        PAYLOAD as u32,
                    ))
                    .unwrap();
                stream.write_all(&payload).unwrap();
            }
        })
    };
    // Each 1 MiB write is charged its payload plus a little: the server
    // admits as many as fit in MAX_IN_FLIGHT_BYTES and then stops reading.
    let admitted = MAX_IN_FLIGHT_BYTES / PAYLOAD - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness.volume.writes_started.load(Ordering::SeqCst) < admitted {
        assert!(
            Instant::now() < deadline,
            "the server did not start {admitted} writes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whatever the client keeps sending stays in the socket, not in memory.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        harness.volume.writes_started.load(Ordering::SeqCst),
        admitted
    );
    assert!(!sender.is_finished(), "the client could send everything");

    harness.volume.write_permits.add_permits(WRITES);
    sender.join().unwrap();
    let mut client = client.lock().unwrap();
    let mut cookies: Vec<u64> = (0..WRITES)
        .map(|_| client.reply())
        .map(|(e, c)| {
            assert_eq!(e, 0);
            c
        })
        .collect();
    cookies.sort_unstable();
    assert_eq!(cookies, (0..WRITES as u64).collect::<Vec<_>>());
    assert_eq!(harness.volume.writes_started.load(Ordering::SeqCst), WRITES);
}
