//! Pipes as payload buffers: filled from a socket with `splice`, copied by
//! reference with `tee`, emptied into a file or a socket with `splice`.
//!
//! Every pipe is non-blocking and sized before it is filled, so no call
//! here ever waits on a pipe. A pipe's capacity counts page *slots*, not
//! bytes: one slot holds one page fragment of a socket buffer, which may be
//! a whole compound page (a Unix socket's 32 KiB) or a few bytes (TCP cuts
//! a spliced payload into single pages plus the pieces at segment edges).
//! An unprivileged pipe has at most `pipe-max-size` (1 MiB: 256 slots), so
//! a payload is held in a chain of pipes ([`Segment`]s): when one is full
//! the next is made. Only a payload needing more than [`MAX_SEGMENTS`]
//! pipes makes [`PipeFill::splice_from`] answer [`Filled::PipeFull`]; the
//! caller then takes the bytes out ([`PipeFill::into_vec`]) and goes on
//! copying, as it would without pipes.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use crate::pool;

/// Slots a pipe gets per 4 KiB of the payload it is made for: twice the
/// pages, as fragments are often smaller than a page.
const SLOTS_PER_PAGE: usize = 2;
const PAGE_BYTES: usize = 4096;
/// The smallest pipe worth making (the kernel's default size).
const MIN_PIPE_BYTES: usize = 64 * 1024;
/// Pipes one payload may take before it is read into memory instead.
pub const MAX_SEGMENTS: usize = 16;

/// A non-blocking pipe: its read and write ends and its capacity.
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    write: OwnedFd,
    pub(crate) capacity_bytes: usize,
}

/// The largest pipe an unprivileged process may make
/// (`/proc/sys/fs/pipe-max-size`, 1 MiB by default). Asking for more would
/// fail without `CAP_SYS_RESOURCE`.
fn max_pipe_bytes() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n >= MIN_PIPE_BYTES)
            .unwrap_or(1 << 20)
    })
}

impl Pipe {
    /// A pipe for `len_bytes` of payload (see [`SLOTS_PER_PAGE`]), as large
    /// as allowed.
    fn for_payload(len_bytes: usize) -> io::Result<Pipe> {
        let want = (len_bytes.div_ceil(PAGE_BYTES) * SLOTS_PER_PAGE * PAGE_BYTES)
            .max(MIN_PIPE_BYTES)
            .next_power_of_two()
            .min(max_pipe_bytes());
        Pipe::with_capacity(want)
    }

    /// An empty pipe of `capacity_bytes` (slots × page size): a kept one
    /// (see [`crate::pool`]) or a new one. Fails where the kernel refuses
    /// the size (an unprivileged user over its pipe-page quota).
    fn with_capacity(capacity_bytes: usize) -> io::Result<Pipe> {
        if let Some(pipe) = pool::take(capacity_bytes) {
            return Ok(pipe);
        }
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let want = libc::c_int::try_from(capacity_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pipe size too large"))?;
        // SAFETY: no pointers; the descriptor is owned by `write`.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe {
            read,
            write,
            capacity_bytes: got as usize,
        })
    }

    /// A new pipe holding the first `len_bytes` of this one's content (page
    /// references, no copy); this one keeps its content.
    fn tee(&self, len_bytes: usize) -> io::Result<Pipe> {
        // As many slots as this one: the content always fits.
        let copy = Pipe::with_capacity(self.capacity_bytes)?;
        if len_bytes == 0 {
            return Ok(copy);
        }
        // One call must do it: a second would duplicate the same bytes
        // again (tee starts at the source's front), so a short count is a
        // failure, not progress. Only an interrupted call is repeated.
        loop {
            // SAFETY: no pointers; both descriptors are owned pipes.
            let n = unsafe {
                libc::tee(
                    self.read.as_raw_fd(),
                    copy.write.as_raw_fd(),
                    len_bytes,
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            let Some(n) = transferred(n)? else {
                continue;
            };
            if n != len_bytes {
                return Err(io::Error::other(format!(
                    "tee duplicated {n} of {len_bytes} bytes of a payload pipe"
                )));
            }
            return Ok(copy);
        }
    }
}

/// One `splice` call; `Ok(0)` is end of input.
pub(crate) fn splice(
    from: RawFd,
    from_offset: Option<&mut libc::loff_t>,
    to: RawFd,
    to_offset: Option<&mut libc::loff_t>,
    len_bytes: usize,
    flags: libc::c_uint,
) -> io::Result<usize> {
    let from_off = from_offset.map_or(std::ptr::null_mut(), |o| o as *mut libc::loff_t);
    let to_off = to_offset.map_or(std::ptr::null_mut(), |o| o as *mut libc::loff_t);
    // SAFETY: the offsets are null or point to live, exclusively borrowed
    // integers; the descriptors are the caller's and open for the call.
    let n = unsafe { libc::splice(from, from_off, to, to_off, len_bytes, flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The result of a `read`/`write`-style call: the byte count, `Ok(None)`
/// when a signal interrupted it (call again), or the error.
fn transferred(n: isize) -> io::Result<Option<usize>> {
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Bytes waiting to be read on a socket or a pipe (`FIONREAD`).
pub(crate) fn readable_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`, which outlives the call.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One pipe of a payload's chain and the bytes it holds.
struct Segment {
    pipe: Pipe,
    len_bytes: usize,
}

/// What one [`PipeFill::splice_from`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// Moved this many bytes (more than zero).
    Moved(usize),
    /// The socket has data but the payload's pipes are all full: it does
    /// not fit this way (see the module header).
    PipeFull,
    /// The socket reached end of input.
    Eof,
}

/// A payload being received into pipes.
pub struct PipeFill {
    segments: Vec<Segment>,
    len_bytes: usize,
    filled_bytes: usize,
}

impl fmt::Debug for PipeFill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PipeFill({}/{} bytes in {} pipes)",
            self.filled_bytes,
            self.len_bytes,
            self.segments.len()
        )
    }
}

impl PipeFill {
    /// An empty pipe for a payload of `len_bytes`.
    pub fn new(len_bytes: usize) -> io::Result<PipeFill> {
        Ok(PipeFill {
            segments: vec![Segment {
                pipe: Pipe::for_payload(len_bytes)?,
                len_bytes: 0,
            }],
            len_bytes,
            filled_bytes: 0,
        })
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> usize {
        self.len_bytes - self.filled_bytes
    }

    /// Pipes used so far.
    pub fn pipes(&self) -> usize {
        self.segments.len()
    }

    /// Starts the next pipe of the chain, if the payload may have one.
    fn grow(&mut self) -> io::Result<bool> {
        if self.segments.len() >= MAX_SEGMENTS {
            return Ok(false);
        }
        self.segments.push(Segment {
            pipe: Pipe::for_payload(self.remaining())?,
            len_bytes: 0,
        });
        Ok(true)
    }

    fn last(&mut self) -> io::Result<&mut Segment> {
        self.segments
            .last_mut()
            .ok_or_else(|| io::Error::other("a payload with no pipe"))
    }

    /// Appends bytes already received into memory (the part of the payload
    /// that came in one read with its header). Copies them.
    pub fn push_bytes(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if bytes.len() > self.remaining() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "more bytes than the payload has",
            ));
        }
        while !bytes.is_empty() {
            let last = self.last()?;
            // SAFETY: `bytes` is a live slice of its length; the kernel only
            // reads it; the descriptor is owned by the segment's pipe.
            let n = unsafe {
                libc::write(
                    last.pipe.write.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock if self.grow()? => continue,
                    _ => return Err(e),
                }
            }
            last.len_bytes += n as usize;
            self.filled_bytes += n as usize;
            bytes = &bytes[n as usize..];
        }
        Ok(())
    }

    /// Moves what `socket` (non-blocking) has of the rest of the payload
    /// into the pipes. `Err(WouldBlock)` only when the socket has nothing
    /// to read (full pipes are [`Filled::PipeFull`], so that a caller
    /// clearing its readiness on `WouldBlock` never misses data already
    /// waiting).
    pub fn splice_from(&mut self, socket: RawFd) -> io::Result<Filled> {
        if self.remaining() == 0 {
            return Ok(Filled::Moved(0));
        }
        // EAGAIN means an empty socket or a full pipe. Data that arrives
        // after the first attempt stays in the socket (we are its only
        // reader), so a second attempt that also fails while the socket
        // has data means the pipe is full.
        let mut retried = false;
        loop {
            let remaining = self.remaining();
            let last = self.last()?;
            match splice(
                socket,
                None,
                last.pipe.write.as_raw_fd(),
                None,
                remaining,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            ) {
                Ok(0) => return Ok(Filled::Eof),
                Ok(n) => {
                    last.len_bytes += n;
                    self.filled_bytes += n;
                    return Ok(Filled::Moved(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if readable_bytes(socket)? == 0 {
                        return Err(e);
                    }
                    if retried {
                        if !self.grow()? {
                            return Ok(Filled::PipeFull);
                        }
                        retried = false;
                    } else {
                        retried = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The filled payload, or `self` back if bytes are still missing.
    pub fn finish(self) -> Result<PipeData, PipeFill> {
        if self.remaining() == 0 {
            Ok(PipeData::new(self.segments, self.len_bytes))
        } else {
            Err(self)
        }
    }

    /// What was filled so far, copied into memory (the fallback when the
    /// payload does not fit its pipes).
    pub fn into_vec(self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len_bytes);
        for seg in &self.segments {
            read_all(&seg.pipe, seg.len_bytes, &mut out)?;
        }
        Ok(out)
    }
}

/// Reads `len_bytes` (all there is) out of `pipe` into `out`.
fn read_all(pipe: &Pipe, len_bytes: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let start = out.len();
    out.reserve(len_bytes);
    while out.len() - start < len_bytes {
        let want = len_bytes - (out.len() - start);
        let spare = out.spare_capacity_mut();
        // SAFETY: the kernel writes at most `want` bytes into the vector's
        // spare capacity, which has at least `want` bytes (reserved above).
        let n = unsafe { libc::read(pipe.read.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        let Some(n) = transferred(n)? else {
            continue;
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a payload pipe held fewer bytes than recorded",
            ));
        }
        // SAFETY: the kernel initialised `n <= want` bytes of spare capacity.
        unsafe { out.set_len(out.len() + n) };
    }
    Ok(())
}

/// A filled payload. Never read directly: see [`PipeData::source`].
pub struct PipeData {
    /// The pipes; emptied into `memory` if a consumer could not `tee`
    /// them (out of descriptors or memory).
    segments: Mutex<Vec<Segment>>,
    memory: OnceLock<Bytes>,
    len_bytes: usize,
}

impl fmt::Debug for PipeData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PipeData({} bytes)", self.len_bytes)
    }
}

/// Where a consumer takes a payload's bytes from.
#[derive(Debug)]
pub enum Source {
    /// Its own copy of the pipes, to `splice` out.
    Pipe(PipeCursor),
    /// The bytes in memory (the pipes could not be copied).
    Memory(Bytes),
}

fn lock_segments(m: &Mutex<Vec<Segment>>) -> std::sync::MutexGuard<'_, Vec<Segment>> {
    // Segments are only swapped out whole: poisoning leaves them consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PipeData {
    fn new(segments: Vec<Segment>, len_bytes: usize) -> PipeData {
        PipeData {
            segments: Mutex::new(segments),
            memory: OnceLock::new(),
            len_bytes,
        }
    }

    /// A payload pipe holding a copy of `bytes` (for tests and tools; the
    /// data path fills pipes from sockets).
    pub fn from_bytes(bytes: &[u8]) -> io::Result<PipeData> {
        let mut fill = PipeFill::new(bytes.len())?;
        fill.push_bytes(bytes)?;
        fill.finish()
            .map_err(|_| io::Error::other("a payload pipe did not take all its bytes"))
    }

    pub fn len(&self) -> usize {
        self.len_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// Pipes the payload is held in (0 once moved into memory).
    pub fn pipes(&self) -> usize {
        lock_segments(&self.segments).len()
    }

    /// A private, consumable copy of the payload: a `tee` of the pipes
    /// (page references, not bytes). If the copy cannot be made (no
    /// descriptor or memory for new pipes), the pipes are emptied into
    /// memory once, for this and every later consumer: a payload is never
    /// lost for want of a pipe. Safe to call from several threads at once.
    pub fn source(&self) -> io::Result<Source> {
        if let Some(bytes) = self.memory.get() {
            return Ok(Source::Memory(bytes.clone()));
        }
        let mut segments = lock_segments(&self.segments);
        if let Some(bytes) = self.memory.get() {
            return Ok(Source::Memory(bytes.clone()));
        }
        let copies = segments
            .iter()
            .map(|seg| {
                Ok(Segment {
                    pipe: seg.pipe.tee(seg.len_bytes)?,
                    len_bytes: seg.len_bytes,
                })
            })
            .collect::<io::Result<VecDeque<Segment>>>();
        match copies {
            Ok(segments) => Ok(Source::Pipe(PipeCursor {
                segments,
                left_bytes: self.len_bytes,
            })),
            Err(_) => {
                // Reading a pipe takes no new descriptor.
                let mut out = Vec::with_capacity(self.len_bytes);
                for seg in segments.iter() {
                    read_all(&seg.pipe, seg.len_bytes, &mut out)?;
                }
                segments.clear();
                let bytes = self.memory.get_or_init(|| Bytes::from(out)).clone();
                Ok(Source::Memory(bytes))
            }
        }
    }

    /// Moves the payload into `file` at `offset_bytes` out of its own
    /// pipes, without the `tee` a shared payload needs (one system call and
    /// one pipe fewer per pipe of payload): for the payload's last holder.
    pub fn into_file(self, file: RawFd, offset_bytes: u64) -> io::Result<()> {
        match self.into_source() {
            Source::Pipe(cursor) => cursor.write_to_file(file, offset_bytes),
            Source::Memory(bytes) => pwrite_all(file, &bytes, offset_bytes),
        }
    }

    /// The payload's own pipes as a consumable cursor, without the `tee`
    /// [`PipeData::source`] makes for a shared payload: for its last holder.
    pub fn into_source(mut self) -> Source {
        if let Some(bytes) = self.memory.get() {
            return Source::Memory(bytes.clone());
        }
        let segments = std::mem::take(self.segments.get_mut().unwrap_or_else(|p| p.into_inner()));
        Source::Pipe(PipeCursor {
            segments: segments.into(),
            left_bytes: self.len_bytes,
        })
    }

    /// Writes the payload into `file` at `offset_bytes` (the page-cache copy
    /// is the only one made).
    pub fn write_to_file(&self, file: RawFd, offset_bytes: u64) -> io::Result<()> {
        match self.source()? {
            Source::Pipe(cursor) => cursor.write_to_file(file, offset_bytes),
            Source::Memory(bytes) => pwrite_all(file, &bytes, offset_bytes),
        }
    }

    /// The payload copied into memory.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match self.source()? {
            Source::Pipe(mut cursor) => {
                let mut out = Vec::with_capacity(self.len_bytes);
                while let Some(seg) = cursor.segments.pop_front() {
                    read_all(&seg.pipe, seg.len_bytes, &mut out)?;
                    let _ = pool::give(seg.pipe);
                }
                Ok(out)
            }
            Source::Memory(bytes) => Ok(bytes.to_vec()),
        }
    }
}

/// The last holder of a payload hands its pipes back emptied: consumers
/// only ever read their own `tee` copies, so these still hold everything.
impl Drop for PipeData {
    fn drop(&mut self) {
        let segments = std::mem::take(self.segments.get_mut().unwrap_or_else(|p| p.into_inner()));
        for seg in segments {
            pool::drain_and_give(seg.pipe, seg.len_bytes);
        }
    }
}

/// Writes all of `buf` into `file` at `offset_bytes`.
fn pwrite_all(file: RawFd, mut buf: &[u8], offset_bytes: u64) -> io::Result<()> {
    let mut offset = offset_bytes;
    while !buf.is_empty() {
        let at = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset exceeds off_t"))?;
        // SAFETY: `buf` is a live slice of its length; the kernel only reads it.
        let n = unsafe { libc::pwrite(file, buf.as_ptr().cast(), buf.len(), at) };
        let Some(n) = transferred(n)? else {
            continue;
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the disk took no bytes",
            ));
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// A consumable copy of a payload, emptied by `splice`.
pub struct PipeCursor {
    /// The pipes still holding bytes; `len_bytes` is what each has left.
    segments: VecDeque<Segment>,
    left_bytes: usize,
}

impl fmt::Debug for PipeCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PipeCursor({} bytes left)", self.left_bytes)
    }
}

impl PipeCursor {
    /// Bytes not yet moved out.
    pub fn left(&self) -> usize {
        self.left_bytes
    }

    /// Moves as much as `socket` (non-blocking) takes, in one `splice`;
    /// `Err(WouldBlock)` when it takes nothing.
    pub fn splice_to(&mut self, socket: RawFd) -> io::Result<usize> {
        while self.segments.front().is_some_and(|s| s.len_bytes == 0) {
            if let Some(done) = self.segments.pop_front() {
                let _ = pool::give(done.pipe);
            }
        }
        let Some(front) = self.segments.front_mut() else {
            return Ok(0);
        };
        let n = splice(
            front.pipe.read.as_raw_fd(),
            None,
            socket,
            None,
            front.len_bytes,
            // No SPLICE_F_MORE: the kernel sets MSG_MORE itself while the
            // pipe has more, and the payload's last bytes must not wait.
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "splice to a socket moved nothing",
            ));
        }
        front.len_bytes -= n;
        self.left_bytes -= n;
        Ok(n)
    }

    /// Moves everything into `file` at `offset_bytes`.
    pub fn write_to_file(mut self, file: RawFd, offset_bytes: u64) -> io::Result<()> {
        let mut offset = libc::loff_t::try_from(offset_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset exceeds loff_t"))?;
        while let Some(mut seg) = self.segments.pop_front() {
            while seg.len_bytes > 0 {
                match splice(
                    seg.pipe.read.as_raw_fd(),
                    None,
                    file,
                    Some(&mut offset),
                    seg.len_bytes,
                    libc::SPLICE_F_MOVE,
                ) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "splice into the disk wrote nothing",
                        ))
                    }
                    Ok(n) => seg.len_bytes -= n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            let _ = pool::give(seg.pipe);
        }
        Ok(())
    }
}

/// A cursor dropped before it was emptied (its link closed, its write
/// failed) hands its pipes back emptied.
impl Drop for PipeCursor {
    fn drop(&mut self) {
        for seg in self.segments.drain(..) {
            pool::drain_and_give(seg.pipe, seg.len_bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;
    use std::os::unix::net::UnixStream;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn from_bytes_round_trips_and_every_cursor_sees_everything() {
        let data = pattern(300_000, 7);
        let p = PipeData::from_bytes(&data).unwrap();
        assert_eq!(p.len(), data.len());
        assert_eq!(p.to_vec().unwrap(), data);
        // Reading a copy out does not consume the payload.
        assert_eq!(p.to_vec().unwrap(), data);
    }

    #[test]
    fn into_file_moves_the_pipes_own_pages_and_keeps_the_pipes() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        for round in 0..8u8 {
            let data = pattern(300_000, round);
            let p = PipeData::from_bytes(&data).unwrap();
            p.into_file(file.as_raw_fd(), 8192).unwrap();
            let mut back = vec![0u8; data.len()];
            file.read_exact_at(&mut back, 8192).unwrap();
            assert_eq!(back, data, "round {round}");
        }
        // A payload that had to fall back to memory is written from there.
        let data = pattern(4096, 1);
        in_memory(&data).into_file(file.as_raw_fd(), 0).unwrap();
        let mut back = vec![0u8; data.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
    }

    /// The last holder's cursor is the payload's own pipes: sent through a
    /// socket, every byte arrives; a payload held in memory comes back as
    /// its bytes.
    #[test]
    fn into_source_hands_over_the_pipes_and_they_carry_every_byte() {
        let data = pattern(700_000, 9);
        let p = PipeData::from_bytes(&data).unwrap();
        let pipes = p.pipes();
        let Source::Pipe(cursor) = p.into_source() else {
            panic!("not a pipe")
        };
        assert_eq!((cursor.left(), cursor.segments.len()), (data.len(), pipes));
        assert_eq!(send_through_a_socket(cursor), data);

        let small = pattern(4096, 2);
        let Source::Memory(bytes) = in_memory(&small).into_source() else {
            panic!("not memory")
        };
        assert_eq!(bytes, small);
    }

    #[test]
    fn write_to_file_lands_at_the_offset() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        let data = pattern(256 * 1024, 3);
        let p = PipeData::from_bytes(&data).unwrap();
        p.write_to_file(file.as_raw_fd(), 4096).unwrap();
        p.write_to_file(file.as_raw_fd(), 512 * 1024).unwrap();
        let mut back = vec![0u8; data.len()];
        file.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
        file.read_exact_at(&mut back, 512 * 1024).unwrap();
        assert_eq!(back, data);
        let mut head = vec![1u8; 4096];
        file.read_exact_at(&mut head, 0).unwrap();
        assert!(head.iter().all(|&b| b == 0));
    }

    #[test]
    fn fill_from_a_socket_with_a_prefix_then_send_to_another_socket() {
        let (mut client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let data = pattern(1 << 20, 11);
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || client.write_all(&data).unwrap())
        };
        let mut fill = PipeFill::new(data.len()).unwrap();
        fill.push_bytes(&data[..1000]).unwrap();
        // The prefix was "already received": skip it on the socket.
        let mut skip = vec![0u8; 1000];
        let mut s = &server;
        let mut got = 0;
        while got < skip.len() {
            match s.read(&mut skip[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        loop {
            match fill.splice_from(server.as_raw_fd()) {
                Ok(Filled::Moved(_)) if fill.remaining() == 0 => break,
                Ok(Filled::Moved(_)) => {}
                Ok(other) => panic!(
                    "unexpected {other:?} after {} bytes",
                    (1 << 20) - fill.remaining()
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        writer.join().unwrap();
        let payload = fill.finish().unwrap();
        assert_eq!(payload.to_vec().unwrap(), data);

        // Out through another socket pair, as the link sends it.
        let Source::Pipe(cursor) = payload.source().unwrap() else {
            panic!("not a pipe")
        };
        assert_eq!(send_through_a_socket(cursor), data);
    }

    /// Splices `cursor` into a non-blocking socket, as the link does, and
    /// returns what the other end read.
    fn send_through_a_socket(mut cursor: PipeCursor) -> Vec<u8> {
        let (tx, mut rx) = UnixStream::pair().unwrap();
        tx.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut back = Vec::new();
            rx.read_to_end(&mut back).unwrap();
            back
        });
        while cursor.left() > 0 {
            match cursor.splice_to(tx.as_raw_fd()) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        drop(tx);
        reader.join().unwrap()
    }

    /// A payload as it is after falling back to memory (no pipe for a copy).
    fn in_memory(data: &[u8]) -> PipeData {
        let p = PipeData::from_bytes(data).unwrap();
        let _ = p.memory.set(Bytes::from(data.to_vec()));
        p.segments.lock().unwrap().clear();
        p
    }

    /// A writer sending `data` in `chunk`-byte writes: one socket buffer,
    /// and so at least one pipe slot, per write.
    fn trickle(data: &[u8], chunk: usize) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (mut client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || {
            for c in data.chunks(chunk) {
                client.write_all(c).unwrap();
            }
        });
        (server, writer)
    }

    fn fill_from(server: &UnixStream, fill: &mut PipeFill) -> Filled {
        loop {
            match fill.splice_from(server.as_raw_fd()) {
                Ok(Filled::Moved(_)) if fill.remaining() > 0 => {}
                Ok(done) => return done,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_payload_in_more_fragments_than_one_pipe_has_slots_fills_a_chain() {
        let data = pattern(256 * 1024, 5);
        let (server, writer) = trickle(&data, 512);
        let mut fill = PipeFill::new(data.len()).unwrap();
        assert!(matches!(fill_from(&server, &mut fill), Filled::Moved(_)));
        writer.join().unwrap();
        assert!(
            fill.pipes() > 1,
            "one pipe took {} fragments",
            data.len() / 512
        );
        let payload = fill.finish().unwrap();
        assert_eq!(payload.to_vec().unwrap(), data);
        let file = tempfile::tempfile().unwrap();
        file.set_len(data.len() as u64).unwrap();
        payload.write_to_file(file.as_raw_fd(), 0).unwrap();
        let mut back = vec![0u8; data.len()];
        file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn a_payload_needing_too_many_pipes_reports_a_full_pipe() {
        let data = pattern(1 << 20, 9);
        let (server, writer) = trickle(&data, 64);
        let mut fill = PipeFill::new(data.len()).unwrap();
        assert_eq!(fill_from(&server, &mut fill), Filled::PipeFull);
        assert_eq!(fill.pipes(), MAX_SEGMENTS);
        // The fallback: what the pipes have, then the rest by reading.
        let mut got = fill.into_vec().unwrap();
        let mut rest = vec![0u8; data.len() - got.len()];
        server.set_nonblocking(false).unwrap();
        (&server).read_exact(&mut rest).unwrap();
        writer.join().unwrap();
        got.extend_from_slice(&rest);
        assert_eq!(got, data);
    }

    #[test]
    fn an_idle_socket_would_block_and_eof_is_reported() {
        let (client, server) = UnixStream::pair().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut fill = PipeFill::new(8192).unwrap();
        let e = fill.splice_from(server.as_raw_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(client);
        assert_eq!(fill.splice_from(server.as_raw_fd()).unwrap(), Filled::Eof);
        assert!(fill.finish().is_err());
    }

    #[test]
    fn into_vec_returns_what_was_filled() {
        let mut fill = PipeFill::new(10_000).unwrap();
        fill.push_bytes(b"hello").unwrap();
        assert_eq!(fill.remaining(), 9_995);
        assert_eq!(fill.into_vec().unwrap(), b"hello");
        let mut fill = PipeFill::new(4).unwrap();
        assert!(fill.push_bytes(b"hello").is_err());
    }

    #[test]
    fn reused_pipes_carry_only_their_new_payload() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(4 << 20).unwrap();
        for round in 0..40u8 {
            // Sizes that take each pipe size the payloads use.
            let len = [4096, 65536, 300_000, 1 << 20][usize::from(round) % 4];
            let data = pattern(len, round);
            let p = PipeData::from_bytes(&data).unwrap();
            // A cursor dropped half-way (a link that closed mid-payload)
            // hands its pipe back too: the next payload must not see its
            // leftovers.
            if let Source::Pipe(mut cursor) = p.source().unwrap() {
                let (a, b) = UnixStream::pair().unwrap();
                a.set_nonblocking(true).unwrap();
                let _ = cursor.splice_to(a.as_raw_fd());
                drop(cursor);
                drop(b);
            }
            let at = u64::from(round % 3) * (1 << 20);
            p.write_to_file(file.as_raw_fd(), at).unwrap();
            drop(p);
            let mut back = vec![0u8; len];
            file.read_exact_at(&mut back, at).unwrap();
            assert_eq!(back, data, "round {round}");
        }
    }

    #[test]
    fn a_pipe_still_holding_bytes_is_never_kept() {
        let mut fill = PipeFill::new(4096).unwrap();
        fill.push_bytes(&[7u8; 100]).unwrap();
        let seg = fill.segments.pop().unwrap();
        assert_eq!(seg.len_bytes, 100);
        assert!(!pool::give(seg.pipe));
        let empty = Pipe::for_payload(4096).unwrap();
        assert!(pool::give(empty));
    }

    #[test]
    fn a_dropped_payload_is_drained_before_its_pipes_are_kept() {
        let data = pattern(200_000, 9);
        let p = PipeData::from_bytes(&data).unwrap();
        drop(p);
        // Whatever pipe comes back out next is empty.
        for _ in 0..4 {
            let pipe = Pipe::for_payload(200_000).unwrap();
            assert_eq!(readable_bytes(pipe.read.as_raw_fd()).unwrap(), 0);
        }
    }
}
