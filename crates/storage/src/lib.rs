//! hadisk's storage backends: synchronous positional block I/O.
//!
//! [`BlockDevice`] is the one interface every layer above uses to reach a
//! disk: the replicator's data path, the metadata writer, the resync copier
//! and the simulator. Its methods take `&self` and every implementation is
//! `Send + Sync`, so many I/Os run at once from many threads; the file
//! backend holds no lock around the file descriptor (`pread`/`pwrite` are
//! positional and thread-safe).
//!
//! Invariants shared by every implementation:
//! - the size is fixed when the device is opened or created;
//! - `read_at` and `write_at` transfer the whole buffer or fail: a short
//!   transfer is never reported as success;
//! - an I/O whose range ends beyond the device size fails with
//!   [`io::ErrorKind::InvalidInput`] before anything is transferred
//!   (a regular file never grows);
//! - `sync_data` returns only once every write that completed before it was
//!   called is durable;
//! - after `write_zeroes`, the range reads as zeros; after `discard`, its
//!   contents are unspecified (the backends here happen to return zeros).
//!
//! Backends: [`FileDevice`] (regular files and block devices), [`MemDevice`]
//! (sparse, in memory, with I/O counters) and [`FaultyDevice`] (a wrapper
//! that injects errors and models crashes with live/durable images).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use hadisk_payload::{Filled, Payload, PipeCursor, PipeData, PipeFill, Source};

mod faulty;
mod file;
mod mem;

pub use faulty::{CrashLogError, FaultRule, FaultyDevice, OpKind, Unsynced};
pub use file::{DeviceKind, FileDevice};
pub use mem::{IoStats, MemDevice};

/// Size of the sectors a torn write is cut at and of the alignment the
/// kernel's discard/zero-out ioctls need.
pub const SECTOR_BYTES: u64 = 512;

/// Errors opening a device. I/O on an open device reports plain
/// [`io::Error`]s (the data path maps them to NBD errno values).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The path could not be opened.
    #[error("cannot open {path} ({mode}): {source}")]
    Open {
        path: PathBuf,
        mode: &'static str,
        source: io::Error,
    },
    /// The path is in use by someone who holds it exclusively.
    #[error(
        "{path} is in use (mounted, or opened exclusively by another program): {source}; \
         unmount it or stop the program holding it"
    )]
    Busy { path: PathBuf, source: io::Error },
    /// `fstat` on the opened path failed.
    #[error("cannot stat {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    /// The block device's size could not be read (BLKGETSIZE64).
    #[error("cannot read the size of block device {path}: {source}")]
    DeviceSize { path: PathBuf, source: io::Error },
    /// The path is neither a regular file nor a block device.
    #[error("{path} is a {kind}, expected a regular file or a block device")]
    UnsupportedKind { path: PathBuf, kind: &'static str },
}

/// A fixed-size disk addressed by byte offsets. See the module header for
/// the contract every implementation keeps.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// The device size, fixed at open.
    fn size_bytes(&self) -> u64;
    /// Fills `buf` from `offset_bytes`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<()>;
    /// Like [`Self::read_at`], but only if it can complete without waiting
    /// for the disk (the data is in the page cache): `Ok(true)` when `buf`
    /// was filled, `Ok(false)` when it would have to wait (then `buf` holds
    /// nothing useful and the caller uses `read_at` where blocking is fine).
    ///
    /// Lets an event loop serve cached reads in place and send only misses
    /// to a thread pool. The default never reads (always `Ok(false)`).
    fn read_at_cached(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<bool> {
        let _ = (buf, offset_bytes);
        Ok(false)
    }
    /// Reads `len_bytes` at `offset_bytes` into a new buffer. The file
    /// device reads into the buffer's uninitialised capacity: a resync or
    /// NBD read of 1 MiB does not first zero the megabyte it overwrites.
    fn read_vec(&self, len_bytes: usize, offset_bytes: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len_bytes];
        self.read_at(&mut buf, offset_bytes)?;
        Ok(buf)
    }
    /// `read_vec` from the page cache only: `Ok(None)` when that would
    /// wait for the disk (as `read_at_cached` answers `false`).
    fn read_vec_cached(&self, len_bytes: usize, offset_bytes: u64) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; len_bytes];
        Ok(self.read_at_cached(&mut buf, offset_bytes)?.then_some(buf))
    }
    /// Writes all of `buf` at `offset_bytes`; a short write is an error.
    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()>;
    /// Writes a payload held in a pipe at `offset_bytes`. The file device
    /// `splice`s it into the page cache (no copy through memory); the
    /// default copies it out and calls `write_at`.
    fn write_pipe(&self, data: &PipeData, offset_bytes: u64) -> io::Result<()> {
        self.write_at(&data.to_vec()?, offset_bytes)
    }
    /// As [`BlockDevice::write_pipe`], for a payload no one else holds: the
    /// file device moves the pipes' own pages instead of a `tee` of them.
    fn write_pipe_owned(&self, data: PipeData, offset_bytes: u64) -> io::Result<()> {
        self.write_pipe(&data, offset_bytes)
    }
    /// Writes a payload, whichever way it is held.
    fn write_payload(&self, data: &Payload, offset_bytes: u64) -> io::Result<()> {
        match data {
            Payload::Bytes(b) => self.write_at(b, offset_bytes),
            Payload::Pipe(p) => self.write_pipe(p, offset_bytes),
        }
    }
    /// [`BlockDevice::write_payload`] for a caller that is done with the
    /// payload: if it was the last holder of a pipe payload, the pipes are
    /// written without a copy of their page references.
    fn write_payload_owned(&self, data: Payload, offset_bytes: u64) -> io::Result<()> {
        match data {
            Payload::Bytes(b) => self.write_at(&b, offset_bytes),
            Payload::Pipe(p) => match Arc::try_unwrap(p) {
                Ok(only) => self.write_pipe_owned(only, offset_bytes),
                Err(shared) => self.write_pipe(&shared, offset_bytes),
            },
        }
    }
    /// Makes every completed write durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Starts writing the range back to storage without waiting for it
    /// (write-behind), so that a later `sync_data` has less left to do. A
    /// hint: the default does nothing, and errors are the caller's to
    /// ignore (the later `sync_data` reports what matters).
    fn start_writeback(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        let _ = (offset_bytes, len_bytes);
        Ok(())
    }
    /// Writes all of `buf` at `offset_bytes` and makes that range durable
    /// before returning. Unlike `write_at` + `sync_data` it need not write
    /// back anything else: metadata updates (an AL transaction, a
    /// superblock) must not pay for the megabytes of data the page cache
    /// holds for the rest of the disk. The default is `write_at` +
    /// `sync_data`.
    fn write_at_durable(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        self.write_at(buf, offset_bytes)?;
        self.sync_data()
    }
    /// Tells the device the range is unused (punch hole / BLKDISCARD, else
    /// zeros are written). Contents afterwards are unspecified.
    fn discard(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()>;
    /// Makes the range read as zeros; with `may_trim` the device may
    /// deallocate it instead of writing (sparse files stay sparse).
    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64, may_trim: bool) -> io::Result<()>;
}

macro_rules! forward_block_device {
    ($($ty:ty),*) => {$(
        impl<T: BlockDevice + ?Sized> BlockDevice for $ty {
            fn size_bytes(&self) -> u64 {
                (**self).size_bytes()
            }
            fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<()> {
                (**self).read_at(buf, offset_bytes)
            }
            fn read_at_cached(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<bool> {
                (**self).read_at_cached(buf, offset_bytes)
            }
            fn read_vec(&self, len_bytes: usize, offset_bytes: u64) -> io::Result<Vec<u8>> {
                (**self).read_vec(len_bytes, offset_bytes)
            }
            fn read_vec_cached(
                &self,
                len_bytes: usize,
                offset_bytes: u64,
            ) -> io::Result<Option<Vec<u8>>> {
                (**self).read_vec_cached(len_bytes, offset_bytes)
            }
            fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
                (**self).write_at(buf, offset_bytes)
            }
            fn write_pipe(&self, data: &PipeData, offset_bytes: u64) -> io::Result<()> {
                (**self).write_pipe(data, offset_bytes)
            }
            fn write_pipe_owned(&self, data: PipeData, offset_bytes: u64) -> io::Result<()> {
                (**self).write_pipe_owned(data, offset_bytes)
            }
            fn sync_data(&self) -> io::Result<()> {
                (**self).sync_data()
            }
            fn write_at_durable(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
                (**self).write_at_durable(buf, offset_bytes)
            }
            fn start_writeback(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
                (**self).start_writeback(offset_bytes, len_bytes)
            }
            fn discard(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
                (**self).discard(offset_bytes, len_bytes)
            }
            fn write_zeroes(
                &self,
                offset_bytes: u64,
                len_bytes: u64,
                may_trim: bool,
            ) -> io::Result<()> {
                (**self).write_zeroes(offset_bytes, len_bytes, may_trim)
            }
        }
    )*};
}

forward_block_device!(&T, Box<T>, Arc<T>);

/// Checks that `[offset_bytes, offset_bytes + len_bytes)` lies inside a
/// device of `size_bytes`, without overflowing. Every backend calls it first.
pub fn check_range(offset_bytes: u64, len_bytes: u64, size_bytes: u64) -> io::Result<()> {
    match offset_bytes.checked_add(len_bytes) {
        Some(end) if end <= size_bytes => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "I/O of {len_bytes} bytes at offset {offset_bytes} ends beyond the device size \
                 of {size_bytes} bytes"
            ),
        )),
    }
}

/// Largest buffer of zeros written at once when a backend has to emulate
/// discard/write-zeroes by writing: bounds the memory used for it.
pub const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Emulates write-zeroes by writing zero-filled chunks of at most
/// [`ZERO_CHUNK_BYTES`].
pub fn write_zeroes_by_writing<D: BlockDevice + ?Sized>(
    device: &D,
    offset_bytes: u64,
    len_bytes: u64,
) -> io::Result<()> {
    check_range(offset_bytes, len_bytes, device.size_bytes())?;
    let chunk_bytes = len_bytes.min(ZERO_CHUNK_BYTES as u64) as usize;
    let zeros = vec![0u8; chunk_bytes];
    let mut done_bytes = 0u64;
    while done_bytes < len_bytes {
        let this_bytes = (len_bytes - done_bytes).min(chunk_bytes as u64) as usize;
        device.write_at(&zeros[..this_bytes], offset_bytes + done_bytes)?;
        done_bytes += this_bytes as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_range_accepts_the_exact_end_and_refuses_overflow() {
        assert!(check_range(0, 4096, 4096).is_ok());
        assert!(check_range(4096, 0, 4096).is_ok());
        let err = check_range(4095, 2, 4096).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            "I/O of 2 bytes at offset 4095 ends beyond the device size of 4096 bytes"
        );
        assert!(check_range(u64::MAX, 1, u64::MAX).is_err());
    }

    #[test]
    fn forwarding_impls_reach_the_device() {
        let dev = Arc::new(MemDevice::new(8192));
        let as_dyn: Arc<dyn BlockDevice> = dev.clone();
        as_dyn.write_at(b"abc", 100).unwrap();
        let mut buf = [0u8; 3];
        fn read_via<D: BlockDevice>(dev: D, buf: &mut [u8]) {
            dev.read_at(buf, 100).unwrap();
        }
        read_via(&*dev, &mut buf);
        assert_eq!(&buf, b"abc");
        assert_eq!(Box::new(MemDevice::new(512)).size_bytes(), 512);
    }
}
