//! The file and block-device backend.
//!
//! One `File`, opened once; every I/O is a positional `pread`/`pwrite` on it,
//! so I/Os from many threads run concurrently in the kernel — except
//! buffered writes to a regular file, which the file system serializes
//! anyway and which take turns on a mutex here (see `write_gate`).
//! The size is read at open (`fstat` for regular files, `BLKGETSIZE64` for
//! block devices) and never changes: a regular file is never grown.
//!
//! Block devices opened read-write are opened with `O_EXCL`, which the
//! kernel turns into an exclusive claim: opening a mounted device fails with
//! `EBUSY` instead of silently writing under a filesystem.
//!
//! Zeroing and discarding use the cheapest correct kernel primitive and fall
//! back to writing zeros when the file system or device does not support it:
//!
//! | kind          | discard                  | write_zeroes(may_trim)   | write_zeroes(!may_trim) |
//! |---------------|--------------------------|--------------------------|-------------------------|
//! | regular file  | punch hole               | punch hole               | `FALLOC_FL_ZERO_RANGE`  |
//! | block device  | `BLKDISCARD`             | `BLKZEROOUT`             | `BLKZEROOUT`            |

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hadisk_payload::PipeData;

use crate::{check_range, write_zeroes_by_writing, BlockDevice, StorageError, SECTOR_BYTES};

/// `BLKGETSIZE64` from `<linux/fs.h>`: `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: libc::Ioctl = libc::_IOR::<libc::size_t>(0x12, 114);
/// `BLKDISCARD` from `<linux/fs.h>`: `_IO(0x12, 119)`.
const BLKDISCARD: libc::Ioctl = libc::_IO(0x12, 119);
/// `BLKZEROOUT` from `<linux/fs.h>`: `_IO(0x12, 127)`.
const BLKZEROOUT: libc::Ioctl = libc::_IO(0x12, 127);

/// What kind of object a [`FileDevice`] was opened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    RegularFile,
    BlockDevice,
}

/// A regular file or block device used as a disk.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    path: PathBuf,
    kind: DeviceKind,
    size_bytes: u64,
    read_only: bool,
    /// Taken around buffered writes to a regular file. ext4 and XFS hold
    /// the inode lock across a buffered write anyway, so writes to one file
    /// never ran in parallel; but a writer waiting for that lock spins on
    /// the CPU while the holder copies (profiled: 10 % of a Secondary's
    /// write time under 1 MiB writes on 2 cores), where waiting here
    /// sleeps. Block devices take no such lock and go ungated.
    write_gate: Option<std::sync::Mutex<()>>,
}

impl FileDevice {
    /// Opens `path` (a regular file or a block device) for positional I/O.
    /// Every error names the path.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        let kind = Self::kind_of(&path)?;
        let mut options = OpenOptions::new();
        options.read(true).write(!read_only);
        if kind == DeviceKind::BlockDevice && !read_only {
            options.custom_flags(libc::O_EXCL);
        }
        let mode = if read_only { "read-only" } else { "read-write" };
        let file = options.open(&path).map_err(|source| {
            if source.raw_os_error() == Some(libc::EBUSY) {
                StorageError::Busy {
                    path: path.clone(),
                    source,
                }
            } else {
                StorageError::Open {
                    path: path.clone(),
                    mode,
                    source,
                }
            }
        })?;
        let size_bytes = match kind {
            DeviceKind::RegularFile => file
                .metadata()
                .map_err(|source| StorageError::Stat {
                    path: path.clone(),
                    source,
                })?
                .len(),
            DeviceKind::BlockDevice => {
                block_device_size(&file).map_err(|source| StorageError::DeviceSize {
                    path: path.clone(),
                    source,
                })?
            }
        };
        Ok(Self {
            file,
            path,
            kind,
            size_bytes,
            read_only,
            write_gate: (kind == DeviceKind::RegularFile).then(|| std::sync::Mutex::new(())),
        })
    }

    /// Holds the write gate (if this device has one) for a buffered write.
    fn gated<T>(&self, write: impl FnOnce() -> T) -> T {
        // The gate guards no data: a poisoned one is as good as a clean one.
        let _held = self
            .write_gate
            .as_ref()
            .map(|g| g.lock().unwrap_or_else(|p| p.into_inner()));
        write()
    }

    /// Refuses directories, sockets and the like before opening them (opening
    /// a FIFO would block).
    fn kind_of(path: &Path) -> Result<DeviceKind, StorageError> {
        let metadata = std::fs::metadata(path).map_err(|source| StorageError::Open {
            path: path.to_path_buf(),
            mode: "stat",
            source,
        })?;
        let file_type = metadata.file_type();
        if file_type.is_file() {
            return Ok(DeviceKind::RegularFile);
        }
        if file_type.is_block_device() {
            return Ok(DeviceKind::BlockDevice);
        }
        let kind = if file_type.is_dir() {
            "directory"
        } else if file_type.is_char_device() {
            "character device"
        } else if file_type.is_fifo() {
            "FIFO"
        } else if file_type.is_socket() {
            "socket"
        } else {
            "special file"
        };
        Err(StorageError::UnsupportedKind {
            path: path.to_path_buf(),
            kind,
        })
    }

    /// The path the device was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Regular file or block device.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} was opened read-only", self.path.display()),
            ));
        }
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        let (offset, len) = (off_t(offset_bytes)?, off_t(len_bytes)?);
        // SAFETY: fallocate takes a valid open descriptor (owned by self.file
        // for the duration of the call) and plain integers; no memory is shared.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn block_ioctl_range(
        &self,
        request: libc::Ioctl,
        offset_bytes: u64,
        len_bytes: u64,
    ) -> io::Result<()> {
        let range: [u64; 2] = [offset_bytes, len_bytes];
        // SAFETY: BLKDISCARD and BLKZEROOUT read a `u64[2]` {start, length}
        // from the pointer; `range` lives on the stack for the whole call and
        // the descriptor is owned by self.file.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request, range.as_ptr()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Runs the kernel primitive and falls back to writing zeros when it is
    /// unsupported here (or the range is not sector-aligned for an ioctl).
    fn zero_with(
        &self,
        offset_bytes: u64,
        len_bytes: u64,
        primitive: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.size_bytes)?;
        self.check_writable()?;
        if len_bytes == 0 {
            return Ok(());
        }
        let aligned =
            offset_bytes.is_multiple_of(SECTOR_BYTES) && len_bytes.is_multiple_of(SECTOR_BYTES);
        if self.kind == DeviceKind::BlockDevice && !aligned {
            return write_zeroes_by_writing(self, offset_bytes, len_bytes);
        }
        match primitive() {
            Ok(()) => Ok(()),
            Err(err) if is_unsupported(&err) => {
                write_zeroes_by_writing(self, offset_bytes, len_bytes)
            }
            Err(err) => Err(err),
        }
    }
}

/// Errors meaning "this file system / device cannot do that", after which
/// writing zeros is the correct fallback.
fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::ENOSYS | libc::EINVAL)
    )
}

fn block_device_size(file: &File) -> io::Result<u64> {
    let mut size_bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points
    // at a live local; the descriptor is owned by `file`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size_bytes as *mut u64) };
    if rc == 0 {
        Ok(size_bytes)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl FileDevice {
    /// `preadv2` until `len_bytes` bytes are at `dst` (`flags` 0 or
    /// `RWF_NOWAIT`). `Ok(false)`: with `RWF_NOWAIT`, the range is not all
    /// cached, or the kernel cannot tell (old kernel, file system without
    /// support): the caller reads with a blocking read instead. A partial
    /// result continues from where it stopped.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len_bytes` bytes (initialised or
    /// not) and not aliased for the duration of the call.
    unsafe fn preadv2_all(
        &self,
        dst: *mut u8,
        len_bytes: usize,
        offset_bytes: u64,
        flags: libc::c_int,
    ) -> io::Result<bool> {
        let mut done = 0usize;
        while done < len_bytes {
            // SAFETY: `done < len_bytes`, so the result stays inside `dst`.
            let rest = unsafe { dst.add(done) };
            let iov = libc::iovec {
                iov_base: rest.cast(),
                iov_len: len_bytes - done,
            };
            // SAFETY: one iovec inside the caller's `dst` (see the
            // function's contract); the kernel only writes into it; the
            // descriptor is owned by self.file for the duration of the call.
            let n = unsafe {
                libc::preadv2(
                    self.file.as_raw_fd(),
                    &iov,
                    1,
                    off_t(offset_bytes + done as u64)?,
                    flags,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                // EOF inside the device size: the file shrank under us.
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                _ => {
                    let err = io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
                            if flags != 0 =>
                        {
                            return Ok(false)
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
        Ok(true)
    }

    /// `preadv2` of `len_bytes` into a new buffer's uninitialised capacity
    /// (`flags` 0 or `RWF_NOWAIT`); `Ok(None)` as `preadv2_all`'s `false`.
    fn read_uninit(
        &self,
        len_bytes: usize,
        offset_bytes: u64,
        flags: libc::c_int,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut buf: Vec<u8> = Vec::with_capacity(len_bytes);
        // SAFETY: the capacity is `len_bytes` bytes owned by `buf`, not
        // aliased; preadv2_all only writes into it.
        if !unsafe { self.preadv2_all(buf.as_mut_ptr(), len_bytes, offset_bytes, flags)? } {
            return Ok(None);
        }
        // SAFETY: preadv2_all returned true only once the kernel had
        // written all `len_bytes` bytes, so they are initialised.
        unsafe { buf.set_len(len_bytes) };
        Ok(Some(buf))
    }
}

/// An offset or length as the kernel's `off_t`.
fn off_t(v: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(v)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset exceeds off_t"))
}

impl BlockDevice for FileDevice {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.size_bytes)?;
        self.file.read_exact_at(buf, offset_bytes)
    }

    /// `preadv2(RWF_NOWAIT)`: the kernel copies from the page cache and
    /// returns `EAGAIN` instead of starting disk I/O. A partial result (part
    /// of the range cached) continues from where it stopped.
    fn read_at_cached(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<bool> {
        check_range(offset_bytes, buf.len() as u64, self.size_bytes)?;
        // SAFETY: `buf` is a live, exclusively borrowed buffer of its length.
        unsafe { self.preadv2_all(buf.as_mut_ptr(), buf.len(), offset_bytes, libc::RWF_NOWAIT) }
    }

    fn read_vec(&self, len_bytes: usize, offset_bytes: u64) -> io::Result<Vec<u8>> {
        check_range(offset_bytes, len_bytes as u64, self.size_bytes)?;
        match self.read_uninit(len_bytes, offset_bytes, 0)? {
            Some(buf) => Ok(buf),
            None => Err(io::Error::other("pread refused a blocking read")),
        }
    }

    fn read_vec_cached(&self, len_bytes: usize, offset_bytes: u64) -> io::Result<Option<Vec<u8>>> {
        check_range(offset_bytes, len_bytes as u64, self.size_bytes)?;
        self.read_uninit(len_bytes, offset_bytes, libc::RWF_NOWAIT)
    }

    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.size_bytes)?;
        self.check_writable()?;
        self.gated(|| self.file.write_all_at(buf, offset_bytes))
    }

    /// `splice` from a tee'd copy of the pipe: the page-cache copy is the
    /// only one made.
    fn write_pipe(&self, data: &PipeData, offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, data.len() as u64, self.size_bytes)?;
        self.check_writable()?;
        self.gated(|| data.write_to_file(self.file.as_raw_fd(), offset_bytes))
    }

    fn write_pipe_owned(&self, data: PipeData, offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, data.len() as u64, self.size_bytes)?;
        self.check_writable()?;
        self.gated(|| data.into_file(self.file.as_raw_fd(), offset_bytes))
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data()
    }

    /// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: queues the range's dirty
    /// pages for writeback and returns (works on files and block devices).
    fn start_writeback(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.size_bytes)?;
        if self.read_only || len_bytes == 0 {
            return Ok(());
        }
        let (offset, len) = (off_t(offset_bytes)?, off_t(len_bytes)?);
        // SAFETY: no pointers; the descriptor is owned by self.file.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `pwritev2(RWF_DSYNC)`: the kernel writes back and waits for this
    /// range only, then flushes the device cache (ext4, XFS and block
    /// devices all sync just the written range for an O_DSYNC write),
    /// where `fdatasync` would first write back every dirty page of the
    /// file. Without RWF_DSYNC here: `write_at` + `sync_data`.
    fn write_at_durable(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.size_bytes)?;
        self.check_writable()?;
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &buf[done..];
            let offset = off_t(offset_bytes + done as u64)?;
            let iov = libc::iovec {
                iov_base: rest.as_ptr().cast_mut().cast(),
                iov_len: rest.len(),
            };
            // SAFETY: one iovec describing `rest`, a live buffer of
            // `iov_len` bytes that the kernel only reads; the descriptor is
            // owned by self.file for the duration of the call.
            let n =
                unsafe { libc::pwritev2(self.file.as_raw_fd(), &iov, 1, offset, libc::RWF_DSYNC) };
            match n {
                n if n > 0 => done += n as usize,
                0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                _ => {
                    let err = io::Error::last_os_error();
                    match err.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => {
                            self.file.write_all_at(rest, offset_bytes + done as u64)?;
                            return self.file.sync_data();
                        }
                        _ => return Err(err),
                    }
                }
            }
        }
        Ok(())
    }

    fn discard(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        self.zero_with(offset_bytes, len_bytes, || match self.kind {
            DeviceKind::RegularFile => self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset_bytes,
                len_bytes,
            ),
            DeviceKind::BlockDevice => self.block_ioctl_range(BLKDISCARD, offset_bytes, len_bytes),
        })
    }

    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64, may_trim: bool) -> io::Result<()> {
        self.zero_with(offset_bytes, len_bytes, || match (self.kind, may_trim) {
            (DeviceKind::RegularFile, true) => self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset_bytes,
                len_bytes,
            ),
            (DeviceKind::RegularFile, false) => self.fallocate(
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                offset_bytes,
                len_bytes,
            ),
            (DeviceKind::BlockDevice, _) => {
                self.block_ioctl_range(BLKZEROOUT, offset_bytes, len_bytes)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    /// A payload's last holder writes it from the pipes themselves; a
    /// payload someone else still holds is written from a copy and stays
    /// whole for that holder. Either way the disk gets every byte.
    #[test]
    fn an_owned_pipe_payload_is_written_and_a_shared_one_stays_whole() {
        use hadisk_payload::Payload;
        let (_dir, path) = temp_image(4 << 20);
        let dev = FileDevice::open(&path, false).unwrap();
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + 3) as u8).collect();
        let only = Payload::Pipe(std::sync::Arc::new(PipeData::from_bytes(&data).unwrap()));
        dev.write_payload_owned(only, 0).unwrap();
        let shared = std::sync::Arc::new(PipeData::from_bytes(&data).unwrap());
        dev.write_payload_owned(Payload::Pipe(shared.clone()), 2 << 20)
            .unwrap();
        assert_eq!(shared.to_vec().unwrap(), data, "the other holder's copy");
        for at in [0u64, 2 << 20] {
            let mut back = vec![0u8; data.len()];
            dev.read_at(&mut back, at).unwrap();
            assert_eq!(back, data, "at {at}");
        }
        // Past the end: refused before anything is written.
        let late = PipeData::from_bytes(&data).unwrap();
        assert!(dev.write_pipe_owned(late, (4 << 20) - 4096).is_err());
    }

    fn temp_image(size_bytes: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let file = File::create(&path).unwrap();
        file.set_len(size_bytes).unwrap();
        (dir, path)
    }

    fn exercise(dev: &FileDevice) {
        let size = dev.size_bytes();
        let pattern: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        dev.write_at(&pattern, 4096).unwrap();
        dev.sync_data().unwrap();
        let mut back = vec![0u8; pattern.len()];
        dev.read_at(&mut back, 4096).unwrap();
        assert_eq!(back, pattern);

        dev.write_zeroes(8192, 8192, false).unwrap();
        dev.read_at(&mut back, 4096).unwrap();
        assert_eq!(&back[..4096], &pattern[..4096]);
        assert!(back[4096..12288].iter().all(|&b| b == 0));
        assert_eq!(&back[12288..], &pattern[12288..]);

        dev.write_zeroes(20480, 4096, true).unwrap();
        dev.read_at(&mut back, 4096).unwrap();
        assert!(back[16384..20480].iter().all(|&b| b == 0));
        // Unaligned zeroing falls back to writes on block devices.
        dev.write_zeroes(4096 + 100, 3, false).unwrap();
        dev.read_at(&mut back, 4096).unwrap();
        assert_eq!(&back[..100], &pattern[..100]);
        assert_eq!(&back[100..103], &[0, 0, 0]);
        assert_eq!(back[103], pattern[103]);
        dev.discard(0, 65536).unwrap();

        // Reads into fresh buffers see the same bytes as read_at.
        dev.write_at(&pattern, 4096).unwrap();
        dev.read_at(&mut back, 4096).unwrap();
        assert!(dev.read_vec(12288, 4096).unwrap() == back[..12288]);
        assert_eq!(dev.read_vec(1, size - 1).unwrap().len(), 1);
        assert!(dev.read_vec(2, size - 1).is_err());
        if let Some(cached) = dev.read_vec_cached(8192, 8192).unwrap() {
            assert!(cached == back[4096..12288]);
        }

        // Write-behind is a range-checked hint.
        dev.start_writeback(4096, 65536).unwrap();
        assert!(dev.start_writeback(size, 1).is_err());

        // A durable write lands like any other and is range-checked.
        dev.write_at_durable(&pattern[..4096], 40960).unwrap();
        let mut page = vec![0u8; 4096];
        dev.read_at(&mut page, 40960).unwrap();
        assert_eq!(page, &pattern[..4096]);
        let err = dev.write_at_durable(&[7, 7], size - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        // The last byte is reachable, one past it is refused.
        dev.write_at(&[7], size - 1).unwrap();
        let err = dev.write_at(&[7, 7], size - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut one = [0u8; 2];
        assert!(dev.read_at(&mut one, size - 1).is_err());
    }

    #[test]
    fn regular_file_round_trip_zeroes_and_bounds() {
        let (_dir, path) = temp_image(1 << 20);
        let dev = FileDevice::open(&path, false).unwrap();
        assert_eq!(dev.kind(), DeviceKind::RegularFile);
        assert_eq!(dev.size_bytes(), 1 << 20);
        exercise(&dev);
        // The file never grows.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
    }

    #[test]
    fn cached_reads_return_the_data_or_decline() {
        let (_dir, path) = temp_image(1 << 20);
        let dev = FileDevice::open(&path, false).unwrap();
        let pattern: Vec<u8> = (0..8192).map(|i| (i % 253) as u8).collect();
        dev.write_at(&pattern, 4096).unwrap();
        // Just written, so in the page cache: served without waiting.
        let mut back = vec![0u8; 8192];
        assert!(dev.read_at_cached(&mut back, 4096).unwrap());
        assert_eq!(back, pattern);
        // A read that is declined leaves the caller to read_at; either way
        // the range check comes first.
        let err = dev.read_at_cached(&mut back, (1 << 20) - 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut empty = [0u8; 0];
        assert!(dev.read_at_cached(&mut empty, 1 << 20).unwrap());
    }

    #[test]
    fn punching_a_hole_deallocates_space() {
        let (_dir, path) = temp_image(4 << 20);
        let dev = FileDevice::open(&path, false).unwrap();
        dev.write_at(&vec![1u8; 4 << 20], 0).unwrap();
        dev.sync_data().unwrap();
        let before = std::fs::metadata(&path).unwrap().blocks();
        dev.write_zeroes(0, 4 << 20, true).unwrap();
        let after = std::fs::metadata(&path).unwrap().blocks();
        // tmpfs and ext4 both punch holes; a file system that cannot falls
        // back to writing zeros, so only check it did not grow.
        assert!(after <= before, "blocks {before} -> {after}");
        let mut buf = vec![9u8; 4096];
        dev.read_at(&mut buf, 4 << 19).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn read_only_refuses_writes_with_the_path() {
        let (_dir, path) = temp_image(8192);
        let dev = FileDevice::open(&path, true).unwrap();
        assert!(dev.is_read_only());
        let err = dev.write_at(&[1], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            format!("{} was opened read-only", path.display())
        );
        assert!(dev.write_zeroes(0, 512, true).is_err());
        let err = dev.write_at_durable(&[1], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.img");
        let err = FileDevice::open(&missing, false).unwrap_err();
        assert!(matches!(err, StorageError::Open { .. }));
        assert!(err
            .to_string()
            .starts_with(&format!("cannot open {}", missing.display())));
        let err = FileDevice::open(dir.path(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a directory, expected a regular file or a block device",
                dir.path().display()
            )
        );
    }

    /// Detaches the loop device even when the test fails.
    struct LoopGuard(String);

    impl Drop for LoopGuard {
        fn drop(&mut self) {
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and touches no memory.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn loop_device_round_trip_size_and_exclusive_open() {
        if !is_root() {
            println!("note: skipping the loop-device test (needs root)");
            return;
        }
        let (_dir, path) = temp_image(8 << 20);
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&path)
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out,
            other => {
                println!("note: skipping the loop-device test (losetup failed: {other:?})");
                return;
            }
        };
        let loop_path = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let _guard = LoopGuard(loop_path.clone());
        let dev = FileDevice::open(&loop_path, false).unwrap();
        assert_eq!(dev.kind(), DeviceKind::BlockDevice);
        assert_eq!(dev.size_bytes(), 8 << 20);
        exercise(&dev);
        // A second read-write open is refused while we hold the claim.
        let err = FileDevice::open(&loop_path, false).unwrap_err();
        assert!(matches!(err, StorageError::Busy { .. }), "{err}");
        // Read-only opens are allowed (dump-md while the daemon runs).
        let ro = FileDevice::open(&loop_path, true).unwrap();
        let mut last = [0u8];
        ro.read_at(&mut last, (8 << 20) - 1).unwrap();
        assert_eq!(last, [7]);
    }
}
