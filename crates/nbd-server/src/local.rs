//! [`LocalVolume`]: a [`Volume`] over a local [`BlockDevice`] (file or disk).
//!
//! The export is the window `[0, size_bytes)` of the device, so a daemon can
//! export the usable size and keep the metadata at the end out of reach.
//!
//! Reads first try [`BlockDevice::read_at_cached`] (`preadv2(RWF_NOWAIT)` on
//! a file or device): a page-cache hit is copied in place, in the connection
//! task, and cannot wait for the disk. Only a miss goes to tokio's blocking
//! thread pool, in every mode.
//!
//! Where the blocking `pwrite` (and a read miss) runs is [`IoMode`]:
//! - `Blocking`: on tokio's blocking thread pool, so a slow disk
//!   never stalls the reactor; several I/Os run at once (no lock around the
//!   file), bounded by the pool size. Costs a thread hand-off per write.
//! - `Adaptive` (the default): writes inline, as `Inline`, for as long as
//!   they complete at page-cache speed; a write that took longer and slept
//!   (it waited for dirty-page throttling or the disk, not merely preempted:
//!   see `WriteGate`) sends writes to the pool for
//!   [`POOLED_PERIOD_MS`]. Sustained waiting moves writes off the worker
//!   threads within two writes (the slow one arms a probe, the probed one
//!   confirms), isolated slow writes stay inline, and a page-cache workload
//!   pays no thread hand-off.
//! - `Inline`: writes in the connection task itself. Cheapest when they land
//!   in the page cache (no hand-off), but a write that waits (dirty-page
//!   throttling, a slow disk) stalls that worker thread; for page-cache
//!   setups that want the lowest latency. (Buffered `RWF_NOWAIT` writes
//!   would make this safe, but ext4 refuses them with `EOPNOTSUPP` on the
//!   kernels measured.)
//!
//! Flushes and FUA always go to the blocking pool: `fdatasync` can take
//! milliseconds even on an idle disk.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hadisk_storage::{BlockDevice, Payload};

use crate::volume::{Volume, VolumeError, VolumeFuture};
use tracing::debug;

/// Where a [`LocalVolume`] runs its blocking I/O; see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// tokio's blocking pool (never stalls the reactor).
    Blocking,
    /// In the calling task (page-cache speed, may stall a worker on a slow disk).
    Inline,
    /// Inline while writes complete at page-cache speed; after one that
    /// waited, on the pool for [`POOLED_PERIOD_MS`], then inline again.
    #[default]
    Adaptive,
}

/// A write slower than this (plus [`SLOW_WRITE_US_PER_MIB`] per MiB) waited
/// for something other than a page-cache copy: dirty-page throttling or the
/// disk. A 4 KiB page-cache write takes about 10 µs, 1 MiB about 300 µs.
pub const SLOW_WRITE_BASE_US: u64 = 2_000;

/// Allowance per MiB written on top of [`SLOW_WRITE_BASE_US`] (a copy at
/// 1 GB/s, well below the memory bandwidth of any machine serving NBD).
pub const SLOW_WRITE_US_PER_MIB: u64 = 1_000;

/// How long [`IoMode::Adaptive`] keeps writes on the pool after a slow one.
/// Long enough that a disk that keeps writes waiting is probed rarely.
pub const POOLED_PERIOD_MS: u64 = 1_000;

/// The state of [`IoMode::Adaptive`]: until when writes go to the pool.
///
/// Wall time alone cannot tell a write that waited (throttling, the disk)
/// from one whose thread was preempted on a busy machine, which is harmless
/// and common. So a slow write only arms a probe: the next write counts the
/// thread's voluntary context switches (`getrusage(RUSAGE_THREAD)`, two
/// syscalls, paid only then) and the gate closes only if that write is slow
/// *and* slept. Preemption is involuntary and never closes it.
#[derive(Debug)]
pub struct WriteGate {
    epoch: Instant,
    /// Nanoseconds since `epoch` before which writes go to the pool.
    pooled_until_ns: AtomicU64,
    /// A write was slow: measure the next one precisely.
    probe_next: AtomicBool,
}

/// What a write measured before it started.
#[derive(Debug, Clone, Copy)]
pub struct WriteStart {
    started_ns: u64,
    /// Voluntary context switches of this thread, when probing.
    voluntary_switches: Option<i64>,
}

impl WriteGate {
    /// A gate that lets writes run inline.
    pub fn new() -> Self {
        WriteGate {
            epoch: Instant::now(),
            pooled_until_ns: AtomicU64::new(0),
            probe_next: AtomicBool::new(false),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Writes should go to the blocking pool now.
    pub fn pooled(&self) -> bool {
        // Zero until the gate first closes: no clock read per write then
        // (a `clock_gettime` is ~1 % of the daemon's CPU at 90k writes/s).
        let until = self.pooled_until_ns.load(Ordering::Relaxed);
        until != 0 && self.now_ns() < until
    }

    /// Call right before a write.
    pub fn start(&self) -> WriteStart {
        let probe = self.probe_next.swap(false, Ordering::Relaxed);
        WriteStart {
            voluntary_switches: if probe { voluntary_switches() } else { None },
            started_ns: self.now_ns(),
        }
    }

    /// Call right after a write of `len_bytes` started at `start`.
    pub fn finish(&self, start: WriteStart, len_bytes: usize) {
        let now_ns = self.now_ns();
        let mib = (len_bytes as u64).div_ceil(1 << 20);
        let limit_ns = (SLOW_WRITE_BASE_US + mib * SLOW_WRITE_US_PER_MIB) * 1_000;
        let took_ns = now_ns.saturating_sub(start.started_ns);
        if took_ns <= limit_ns {
            return;
        }
        let slept = match (start.voluntary_switches, voluntary_switches()) {
            (Some(before), Some(after)) => after > before,
            // Not probed (or getrusage failed): probe the next write.
            _ => {
                self.probe_next.store(true, Ordering::Relaxed);
                return;
            }
        };
        if slept {
            let until = now_ns.saturating_add(POOLED_PERIOD_MS * 1_000_000);
            self.pooled_until_ns.store(until, Ordering::Relaxed);
            debug!(
                took_us = took_ns / 1_000,
                len_bytes, "a write waited: writes go to the blocking pool for a while"
            );
        }
    }
}

impl Default for WriteGate {
    fn default() -> Self {
        Self::new()
    }
}

/// The calling thread's voluntary context switches so far.
fn voluntary_switches() -> Option<i64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes one `rusage` through the pointer, which
    // points at a live, properly aligned local; RUSAGE_THREAD has no other
    // preconditions.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it initialised the whole struct.
    let usage = unsafe { usage.assume_init() };
    Some(usage.ru_nvcsw)
}

/// A volume backed by a local block device.
#[derive(Debug)]
pub struct LocalVolume<D> {
    device: Arc<D>,
    size_bytes: u64,
    read_only: bool,
    mode: IoMode,
    gate: Arc<WriteGate>,
    pipes: bool,
}

impl<D: BlockDevice + 'static> LocalVolume<D> {
    /// Takes large WRITE payloads in pipes ([`Volume::accepts_pipes`]).
    /// Off by default: for a single disk, reading a payload into memory and
    /// `pwrite`-ing it measured faster here than splicing it (the pipes pay
    /// when a payload also goes to a socket, as in replication).
    pub fn with_pipes(mut self, pipes: bool) -> Self {
        self.pipes = pipes;
        self
    }

    /// Exports the first `size_bytes` of `device` (at most its size).
    pub fn new(
        device: Arc<D>,
        size_bytes: u64,
        read_only: bool,
        mode: IoMode,
    ) -> Result<Self, VolumeError> {
        if size_bytes > device.size_bytes() {
            return Err(VolumeError::Io {
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "export of {size_bytes} bytes is larger than the device ({} bytes)",
                        device.size_bytes()
                    ),
                ),
            });
        }
        Ok(LocalVolume {
            device,
            size_bytes,
            read_only,
            mode,
            gate: Arc::new(WriteGate::new()),
            pipes: false,
        })
    }

    /// Exports the whole device.
    pub fn whole(device: Arc<D>, read_only: bool, mode: IoMode) -> Self {
        let size_bytes = device.size_bytes();
        LocalVolume {
            device,
            size_bytes,
            read_only,
            mode,
            gate: Arc::new(WriteGate::new()),
            pipes: false,
        }
    }

    /// Runs `op` according to the mode; `may_wait` (fdatasync, a read that
    /// missed the cache) forces the blocking pool.
    fn run<T, F>(&self, may_wait: bool, op: F) -> VolumeFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&D) -> io::Result<T> + Send + 'static,
    {
        let device = Arc::clone(&self.device);
        let inline = match self.mode {
            IoMode::Blocking => false,
            IoMode::Inline => !may_wait,
            IoMode::Adaptive => !may_wait && !self.gate.pooled(),
        };
        if inline {
            let result = op(&device).map_err(VolumeError::from);
            return Box::pin(std::future::ready(result));
        }
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || op(&device)).await {
                Ok(result) => result.map_err(VolumeError::from),
                Err(join) => Err(VolumeError::Io {
                    source: io::Error::other(join.to_string()),
                }),
            }
        })
    }

    fn writable(&self) -> Result<(), VolumeError> {
        if self.read_only {
            Err(VolumeError::ReadOnly)
        } else {
            Ok(())
        }
    }
}

fn refused<T: Send + 'static>(error: VolumeError) -> VolumeFuture<T> {
    Box::pin(std::future::ready(Err(error)))
}

impl<D: BlockDevice + 'static> Volume for LocalVolume<D> {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn can_multi_conn(&self) -> bool {
        // One device, no per-connection caches: fdatasync covers every write.
        true
    }

    fn accepts_pipes(&self) -> bool {
        self.pipes
    }

    fn read(&self, offset_bytes: u64, length_bytes: u32) -> VolumeFuture<Bytes> {
        // A page-cache hit is served in place in every mode: it cannot wait
        // for the disk, so it cannot stall the reactor either.
        match self
            .device
            .read_vec_cached(length_bytes as usize, offset_bytes)
        {
            Ok(Some(buf)) => return Box::pin(std::future::ready(Ok(Bytes::from(buf)))),
            Ok(None) => {}
            Err(e) => return refused(VolumeError::from(e)),
        }
        // A miss waits for the disk: always on the pool.
        self.run(true, move |device| {
            Ok(Bytes::from(
                device.read_vec(length_bytes as usize, offset_bytes)?,
            ))
        })
    }

    fn write(&self, offset_bytes: u64, data: Payload, fua: bool) -> VolumeFuture<()> {
        if let Err(e) = self.writable() {
            return refused(e);
        }
        let gate = Arc::clone(&self.gate);
        self.run(fua, move |device| {
            let start = gate.start();
            device.write_payload(&data, offset_bytes)?;
            gate.finish(start, data.len());
            if fua {
                device.sync_data()?;
            }
            Ok(())
        })
    }

    fn flush(&self) -> VolumeFuture<()> {
        self.run(true, |device| device.sync_data())
    }

    fn trim(&self, offset_bytes: u64, length_bytes: u32, fua: bool) -> VolumeFuture<()> {
        if let Err(e) = self.writable() {
            return refused(e);
        }
        self.run(true, move |device| {
            device.discard(offset_bytes, u64::from(length_bytes))?;
            if fua {
                device.sync_data()?;
            }
            Ok(())
        })
    }

    fn write_zeroes(
        &self,
        offset_bytes: u64,
        length_bytes: u32,
        no_hole: bool,
        fua: bool,
    ) -> VolumeFuture<()> {
        if let Err(e) = self.writable() {
            return refused(e);
        }
        self.run(true, move |device| {
            device.write_zeroes(offset_bytes, u64::from(length_bytes), !no_hole)?;
            if fua {
                device.sync_data()?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadisk_storage::MemDevice;

    #[test]
    fn only_a_probed_slow_write_that_slept_sends_writes_to_the_pool() {
        let gate = WriteGate::new();
        assert!(!gate.pooled());
        // Fast: nothing happens.
        gate.finish(gate.start(), 4096);
        assert!(!gate.pooled() && !gate.probe_next.load(Ordering::Relaxed));
        // Slow but not probed (could be preemption): arms the probe only.
        let slow = WriteStart {
            started_ns: 0,
            voluntary_switches: None,
        };
        std::thread::sleep(std::time::Duration::from_millis(5));
        gate.finish(slow, 4096);
        assert!(!gate.pooled());
        // The probed write is slow and slept (a sleep is a voluntary switch).
        let probed = gate.start();
        assert!(probed.voluntary_switches.is_some());
        std::thread::sleep(std::time::Duration::from_millis(5));
        gate.finish(probed, 4096);
        assert!(gate.pooled());
        let until = gate.pooled_until_ns.load(Ordering::Relaxed);
        assert!(until >= POOLED_PERIOD_MS * 1_000_000);
    }

    #[test]
    fn a_probed_slow_write_that_did_not_sleep_keeps_writes_inline() {
        let gate = WriteGate::new();
        gate.probe_next.store(true, Ordering::Relaxed);
        let probed = gate.start();
        // Busy for 5 ms without sleeping (what preemption looks like to the thread).
        let begun = Instant::now();
        while begun.elapsed() < std::time::Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        let start = WriteStart {
            voluntary_switches: probed.voluntary_switches,
            ..probed
        };
        gate.finish(start, 4096);
        // A preempted (not sleeping) write cannot be told apart from a busy
        // one; either way it did not wait for the disk.
        let slept_anyway = voluntary_switches() > probed.voluntary_switches;
        assert_eq!(gate.pooled(), slept_anyway);
    }

    #[tokio::test]
    async fn a_payload_in_a_pipe_is_spliced_into_a_file_device_in_every_mode() {
        for mode in [IoMode::Blocking, IoMode::Inline, IoMode::Adaptive] {
            let file = tempfile::NamedTempFile::new().unwrap();
            file.as_file().set_len(1 << 20).unwrap();
            let device = Arc::new(hadisk_storage::FileDevice::open(file.path(), false).unwrap());
            let volume = LocalVolume::whole(device, false, mode);
            let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 253) as u8).collect();
            let pipe = hadisk_storage::PipeData::from_bytes(&data).unwrap();
            volume.write(65536, pipe.into(), true).await.unwrap();
            assert_eq!(volume.read(65536, data.len() as u32).await.unwrap(), data);
            assert!(volume.read(0, 65536).await.unwrap().iter().all(|&b| b == 0));
        }
    }

    #[tokio::test]
    async fn every_mode_writes_reads_zeroes_and_refuses_when_read_only() {
        for mode in [IoMode::Blocking, IoMode::Inline, IoMode::Adaptive] {
            let device = Arc::new(MemDevice::new(1 << 20));
            let volume = LocalVolume::new(Arc::clone(&device), 1 << 19, false, mode).unwrap();
            assert_eq!(volume.size_bytes(), 1 << 19);
            let data = Bytes::from(vec![7u8; 8192]);
            volume.write(4096, data.clone().into(), true).await.unwrap();
            assert_eq!(volume.read(4096, 8192).await.unwrap(), data);
            volume.write_zeroes(4096, 4096, true, false).await.unwrap();
            let back = volume.read(4096, 8192).await.unwrap();
            assert!(back[..4096].iter().all(|&b| b == 0));
            assert!(back[4096..].iter().all(|&b| b == 7));
            volume.flush().await.unwrap();
            let read_only = LocalVolume::whole(Arc::clone(&device), true, mode);
            let err = read_only
                .write(0, data.clone().into(), false)
                .await
                .unwrap_err();
            assert_eq!(err.errno(), hadisk_nbd_proto::Errno::Perm);
        }
        let too_big = LocalVolume::new(Arc::new(MemDevice::new(4096)), 8192, false, IoMode::Inline);
        assert_eq!(
            too_big.unwrap_err().to_string(),
            "I/O error on the backing storage: export of 8192 bytes is larger than the device (4096 bytes)"
        );
    }
}
