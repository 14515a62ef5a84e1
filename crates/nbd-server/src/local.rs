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
//! - `Blocking` (the default): on tokio's blocking thread pool, so a slow disk
//!   never stalls the reactor; several I/Os run at once (no lock around the
//!   file), bounded by the pool size. Costs a thread hand-off per write.
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
use std::sync::Arc;

use bytes::Bytes;
use hadisk_storage::BlockDevice;

use crate::volume::{Volume, VolumeError, VolumeFuture};

/// Where a [`LocalVolume`] runs its blocking I/O; see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// tokio's blocking pool (never stalls the reactor).
    #[default]
    Blocking,
    /// In the calling task (page-cache speed, may stall a worker on a slow disk).
    Inline,
}

/// A volume backed by a local block device.
#[derive(Debug)]
pub struct LocalVolume<D> {
    device: Arc<D>,
    size_bytes: u64,
    read_only: bool,
    mode: IoMode,
}

impl<D: BlockDevice + 'static> LocalVolume<D> {
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
        if self.mode == IoMode::Inline && !may_wait {
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

    fn read(&self, offset_bytes: u64, length_bytes: u32) -> VolumeFuture<Bytes> {
        // A page-cache hit is served in place in every mode: it cannot wait
        // for the disk, so it cannot stall the reactor either.
        let mut buf = vec![0u8; length_bytes as usize];
        match self.device.read_at_cached(&mut buf, offset_bytes) {
            Ok(true) => return Box::pin(std::future::ready(Ok(Bytes::from(buf)))),
            Ok(false) => {}
            Err(e) => return refused(VolumeError::from(e)),
        }
        // A miss waits for the disk: always on the pool.
        self.run(true, move |device| {
            device.read_at(&mut buf, offset_bytes)?;
            Ok(Bytes::from(buf))
        })
    }

    fn write(&self, offset_bytes: u64, data: Bytes, fua: bool) -> VolumeFuture<()> {
        if let Err(e) = self.writable() {
            return refused(e);
        }
        self.run(fua, move |device| {
            device.write_at(&data, offset_bytes)?;
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
