//! The sending half of one peer link: a FIFO of encoded frames that any
//! thread appends to, written to the socket by whoever finds it idle.
//!
//! The driver appends the frames of its `Send` actions **while it holds the
//! core lock** ([`LinkOut::push`]), so the FIFO order is the core's emission
//! order; after releasing the core lock the same thread calls
//! [`LinkOut::flush`], which writes what is queued straight to the socket
//! (`try_write_vectored`, no task hop). Only when the socket would block
//! does the link's writer task ([`LinkOut::run_writer`]) take over: it waits
//! until the socket is writable (with the `timeout` deadline: a peer that
//! stops reading is declared dead, never waited for), drains the FIFO, and
//! hands the socket back to the callers when it is empty. It also sends the
//! keepalive pings.
//!
//! Invariants:
//! - bytes leave in FIFO order: every socket write happens under the
//!   `state` lock, and a caller never writes while the writer task owns the
//!   socket (`writer_active`);
//! - the lock is never held across an `.await` (socket writes are
//!   non-blocking `try_write`s);
//! - once the link is closed (an error, the writer gone) frames are dropped,
//!   never delivered on a later link (a new link has a new `LinkOut`).
//!
//! A payload held in a pipe ([`Payload::Pipe`]) is `splice`d into the
//! socket from a private `tee` of it, made when it reaches the front of the
//! FIFO: its bytes never pass through this process's memory.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hadisk_peer_proto::{Message, Payload};
use hadisk_storage::{PipeCursor, PipeData, Source};
use tokio::io::Interest;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// Most frame parts (header or payload) gathered into one vectored write
/// (Linux's IOV_MAX is 1024).
const MAX_PARTS_PER_WRITE: usize = 512;

/// Queued bytes from which [`LinkOut::flush_if_large`] writes at once: a
/// batch of acks may wait for the end of a read, resync data may not (the
/// peer's pipeline would drain).
const EAGER_FLUSH_BYTES: usize = 64 * 1024;

/// The outgoing FIFO of one link.
#[derive(Debug)]
pub struct LinkOut {
    write: OwnedWriteHalf,
    state: Mutex<OutState>,
    /// Wakes the writer task: the socket would block, or the link closed.
    wake: Notify,
}

/// One frame part: a header or a payload.
#[derive(Debug)]
enum Part {
    Bytes(Bytes),
    /// A payload in a pipe. At the front it becomes `cursor`, the bytes
    /// to splice: the payload's own pipes if the link holds its last
    /// reference by then (the local disk write finished first), else a
    /// `tee` of them; either way the link then lets go of `data`, so that
    /// a disk write still running holds the last reference and moves the
    /// pipes without a `tee` of its own.
    Pipe {
        len_bytes: usize,
        data: Option<Arc<PipeData>>,
        cursor: Option<PipeCursor>,
    },
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::Pipe { len_bytes, .. } => *len_bytes,
        }
    }
}

#[derive(Debug, Default)]
struct OutState {
    /// Frame parts (headers and payloads) not yet fully written.
    parts: VecDeque<Part>,
    /// Bytes of `parts.front()` already written.
    front_written: usize,
    /// Bytes in `parts` (including the written part of the front).
    queued_bytes: usize,
    /// The writer task owns the socket until the FIFO is empty.
    writer_active: bool,
    /// Why the link is closed; set once, frames are dropped from then on.
    closed: Option<String>,
}

/// What one attempt to write the FIFO achieved.
enum Drained {
    /// The FIFO is empty.
    Empty,
    /// The socket would block with bytes still queued.
    WouldBlock,
}

fn lock(m: &Mutex<OutState>) -> std::sync::MutexGuard<'_, OutState> {
    // The state is consistent between statements: poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LinkOut {
    pub fn new(write: OwnedWriteHalf) -> LinkOut {
        LinkOut {
            write,
            state: Mutex::new(OutState::default()),
            wake: Notify::new(),
        }
    }

    /// Appends `msg` to the FIFO (the payload is shared, not copied). An
    /// unencodable message closes the link: the peer would miss it.
    pub fn push(&self, msg: &Message) {
        let mut st = lock(&self.state);
        if st.closed.is_some() {
            return;
        }
        match msg.encode() {
            Ok(frame) => {
                st.queued_bytes += frame.len_bytes();
                st.parts
                    .push_back(Part::Bytes(Bytes::copy_from_slice(&frame.header)));
                match frame.payload {
                    Payload::Bytes(b) if b.is_empty() => {}
                    Payload::Bytes(b) => st.parts.push_back(Part::Bytes(b)),
                    Payload::Pipe(data) => st.parts.push_back(Part::Pipe {
                        len_bytes: data.len(),
                        data: Some(data),
                        cursor: None,
                    }),
                }
            }
            Err(e) => {
                st.closed = Some(format!("cannot encode a message for the peer: {e}"));
                st.parts.clear();
                st.queued_bytes = 0;
                self.wake.notify_one();
            }
        }
    }

    /// [`LinkOut::flush`] once at least [`EAGER_FLUSH_BYTES`] are queued.
    pub fn flush_if_large(&self) {
        if lock(&self.state).queued_bytes >= EAGER_FLUSH_BYTES {
            self.flush();
        }
    }

    /// Writes what is queued when the writer task is idle; hands over to
    /// it when the socket would block.
    pub fn flush(&self) {
        let mut st = lock(&self.state);
        if st.writer_active || st.closed.is_some() || st.parts.is_empty() {
            return;
        }
        match self.drain(&mut st) {
            Ok(Drained::Empty) => {}
            Ok(Drained::WouldBlock) => {
                st.writer_active = true;
                self.wake.notify_one();
            }
            Err(reason) => {
                st.closed = Some(reason);
                st.parts.clear();
                st.queued_bytes = 0;
                self.wake.notify_one();
            }
        }
    }

    /// Writes the FIFO until it is empty or the socket would block.
    fn drain(&self, st: &mut OutState) -> Result<Drained, String> {
        loop {
            let front_written = st.front_written;
            let n = match st.parts.front_mut() {
                None => return Ok(Drained::Empty),
                Some(Part::Pipe { data, cursor, .. }) => {
                    if let Some(data) = data.take() {
                        let source = match Arc::try_unwrap(data) {
                            Ok(only) => only.into_source(),
                            Err(shared) => shared
                                .source()
                                .map_err(|e| format!("sending to the peer: {e}"))?,
                        };
                        match source {
                            Source::Pipe(c) => *cursor = Some(c),
                            // No pipe for a copy: the payload went to memory.
                            Source::Memory(bytes) => {
                                if let Some(front) = st.parts.front_mut() {
                                    *front = Part::Bytes(bytes);
                                }
                                continue;
                            }
                        }
                    }
                    let Some(cursor) = cursor.as_mut() else {
                        // Unreachable: the payload became a cursor or bytes
                        // above; never spin on a front that cannot move.
                        return Err("sending to the peer: a payload was lost".into());
                    };
                    let socket = self.write.as_ref();
                    // Through try_io, so that a full socket clears the
                    // readiness the writer task then waits on.
                    match socket.try_io(Interest::WRITABLE, || cursor.splice_to(socket.as_raw_fd()))
                    {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            return Ok(Drained::WouldBlock)
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("sending to the peer: {e}")),
                    }
                }
                Some(Part::Bytes(_)) => {
                    let mut iov = Vec::with_capacity(st.parts.len().min(MAX_PARTS_PER_WRITE));
                    let mut skip = front_written;
                    for part in st.parts.iter().take(MAX_PARTS_PER_WRITE) {
                        // Bytes up to the next pipe payload.
                        let Part::Bytes(b) = part else { break };
                        iov.push(IoSlice::new(&b[skip..]));
                        skip = 0;
                    }
                    match self.write.try_write_vectored(&iov) {
                        Ok(0) => {
                            return Err("sending to the peer: the socket accepts no data".into())
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            return Ok(Drained::WouldBlock)
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(format!("sending to the peer: {e}")),
                    }
                }
            };
            advance(st, n);
        }
    }

    /// Marks the link closed (frames queued or pushed later are dropped)
    /// and ends the writer task.
    pub fn close(&self, reason: &str) {
        let mut st = lock(&self.state);
        if st.closed.is_none() {
            st.closed = Some(reason.to_string());
        }
        st.parts.clear();
        st.queued_bytes = 0;
        self.wake.notify_one();
    }

    /// The writer task: drains the FIFO whenever a caller found the socket
    /// blocking, sends a ping every `ping_int`, and returns why the link
    /// ended (an I/O error, or no progress within `timeout`).
    pub async fn run_writer(&self, ping_int: Duration, timeout: Duration) -> String {
        let mut ping_seq = 0u64;
        let mut ping = tokio::time::interval(ping_int);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = ping.tick() => {
                    ping_seq += 1;
                    self.push(&Message::Ping { seq: ping_seq });
                    // Take the socket only if no caller is writing.
                    lock(&self.state).writer_active = true;
                }
            }
            if let Err(reason) = self.drain_owned(timeout).await {
                return reason;
            }
        }
    }

    /// Drains the FIFO as its owner (`writer_active`), waiting for the
    /// socket as needed; gives the socket back when the FIFO is empty.
    async fn drain_owned(&self, timeout: Duration) -> Result<(), String> {
        loop {
            {
                let mut st = lock(&self.state);
                if let Some(reason) = &st.closed {
                    return Err(reason.clone());
                }
                if !st.writer_active {
                    return Ok(());
                }
                match self.drain(&mut st) {
                    Ok(Drained::Empty) => {
                        st.writer_active = false;
                        return Ok(());
                    }
                    Ok(Drained::WouldBlock) => {}
                    Err(reason) => {
                        st.closed = Some(reason.clone());
                        st.parts.clear();
                        st.queued_bytes = 0;
                        return Err(reason);
                    }
                }
            }
            match tokio::time::timeout(timeout, self.write.writable()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("sending to the peer: {e}")),
                Err(_) => {
                    let reason = format!(
                        "the peer stopped reading: a send made no progress within timeout ({} ms)",
                        timeout.as_millis()
                    );
                    self.close(&reason);
                    return Err(reason);
                }
            }
        }
    }
}

/// Drops the `n` bytes just written from the front of the FIFO.
fn advance(st: &mut OutState, mut n: usize) {
    while n > 0 {
        let Some(front) = st.parts.front() else {
            return;
        };
        let left = front.len() - st.front_written;
        if n < left {
            st.front_written += n;
            return;
        }
        n -= left;
        st.front_written = 0;
        if let Some(done) = st.parts.pop_front() {
            st.queued_bytes -= done.len();
        }
    }
}
