//! The transmission phase of one connection: one task that reads requests,
//! starts them, and writes replies, all at once.
//!
//! The task `select!`s over three things and never blocks on one of them
//! while another could progress:
//! - **read**: requests are decoded back to back from one buffer and started
//!   at once; each volume future is polled once in place, so an operation
//!   that completes immediately (page-cache I/O) puts its reply straight into
//!   the out-queue with no task, channel or wake-up; one still pending joins
//!   the connection's pending set;
//! - **complete**: the pending set is polled by this task (its waker is the
//!   connection's), and what completed joins the out-queue — no task is
//!   spawned per request and a completion (e.g. a peer's ack releasing a
//!   replicated write) wakes this task directly;
//! - **write**: the out-queue leaves in one vectored write (header and READ
//!   data from the volume's `Bytes`, never copied), in completion order, i.e.
//!   out of order with respect to the requests.
//!
//! Large WRITE payloads ([`SPLICE_MIN_BYTES`] to [`SPLICE_MAX_BYTES`]) are
//! not read into memory when the volume accepts pipes: once the request's
//! header is in, the rest of its payload is `splice`d from the socket into
//! a pipe and handed to the volume as [`Payload::Pipe`]; the next read then
//! takes one request header only, so that the next payload is not read
//! into memory either. A payload that does not fit its pipe falls back to
//! memory (see `hadisk_payload`).
//!
//! Because reading and writing progress independently, a client that sends
//! a long pipeline before reading any reply cannot deadlock the connection.
//!
//! Invariants:
//! - in-flight memory is bounded: a request is admitted only if its cost
//!   (payload or READ length) fits in [`MAX_IN_FLIGHT_BYTES`] together with
//!   the requests already admitted (one request is always admitted when none
//!   is in flight); its cost is released when its reply has been written.
//!   While a request waits for admission the socket is not read: backpressure
//!   reaches the client through TCP/Unix flow control;
//! - a protocol violation (bad magic, over-long WRITE, EOF inside a request)
//!   ends this connection only; the pending operations are dropped (the
//!   volume finishes what it already started; those replies are never
//!   sent);
//! - on `NBD_CMD_DISC`, EOF between requests, or a close request from the
//!   daemon, reading stops, every started operation completes and is replied
//!   to; after a close request the volume is also flushed.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use hadisk_nbd_proto::limits::MAX_PAYLOAD_BYTES;
use hadisk_nbd_proto::{encode_simple_reply, validate, wire, Errno, Request, ValidatedRequest};
use hadisk_storage::{Filled, Payload, PipeFill};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::connection::ConnectionError;
use crate::splice::{SpliceRead, SPLICE_MIN_BYTES};
use crate::volume::{Volume, VolumeError, VolumeFuture};

/// Bound on the payload bytes of the requests in flight on one connection
/// (WRITE payloads buffered plus READ data not yet sent). Twice the largest
/// request, so one maximal request never waits for itself, and a client
/// cannot make the server hold more than this per connection.
pub const MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// Requests in flight per connection at most, whatever their size: bounds
/// the out-queue and the spawned tasks of a client sending empty requests.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 4096;

/// Fixed cost charged per request on top of its data, so that zero-length
/// requests are not free.
const REQUEST_OVERHEAD_BYTES: usize = 64;

/// How much room the read buffer gets at least when it grows.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Below this much spare room the buffer grows before the next read, so
/// that reads are never tiny.
const MIN_READ_SPARE_BYTES: usize = 16 * 1024;

/// Most replies gathered into one vectored write (each takes up to two
/// iovecs; Linux's IOV_MAX is 1024).
const MAX_REPLIES_PER_WRITE: usize = 256;

/// Payloads above this are read into memory: one is held in a chain of at
/// most `hadisk_payload::MAX_SEGMENTS` pipes of 256 page slots each (an
/// unprivileged pipe's maximum), and a socket's fragments may be smaller
/// than a page.
pub const SPLICE_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Payloads that did not fit their pipe before a connection stops trying.
const SPLICE_FALLBACKS_MAX: u32 = 8;

/// A completed request, waiting to be written.
struct Reply {
    header: [u8; wire::SIMPLE_REPLY_HEADER_BYTES],
    data: Option<Bytes>,
    /// What [`Transmission::admit`] charged for it.
    cost_bytes: usize,
}

impl Reply {
    fn new(cookie: u64, result: Result<Option<Bytes>, Errno>, cost_bytes: usize) -> Reply {
        match result {
            Ok(data) => Reply {
                header: encode_simple_reply(cookie, None),
                data,
                cost_bytes,
            },
            Err(errno) => Reply {
                header: encode_simple_reply(cookie, Some(errno)),
                data: None,
                cost_bytes,
            },
        }
    }

    fn len(&self) -> usize {
        self.header.len() + self.data.as_ref().map_or(0, Bytes::len)
    }
}

/// An operation that did not complete at its first poll, with its reply.
type PendingOp = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Why reading stopped (the connection then drains and ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Open,
    /// EOF between requests, or `NBD_CMD_DISC`.
    ClientDone,
    /// The daemon or a shutdown asked to close (flush after draining).
    CloseRequested,
}

/// A WRITE whose payload is being spliced into a pipe.
struct Splicing {
    request: Request,
    cost_bytes: usize,
    fill: PipeFill,
}

/// What the socket gave: bytes into the buffer, or payload into the pipe.
enum Input {
    Read(io::Result<usize>),
    Spliced(io::Result<Filled>),
}

/// What one turn of the event loop produced.
enum Event {
    Input(Input),
    Completed(Vec<Reply>),
    Wrote(io::Result<usize>),
    Close,
}

/// The state of one connection in transmission.
struct Transmission {
    volume: Arc<dyn Volume>,
    buf: BytesMut,
    /// Replies ready to send; the front one may be partly written.
    out: VecDeque<Reply>,
    /// Bytes of `out.front()` already written.
    front_written: usize,
    in_flight_bytes: usize,
    in_flight_requests: usize,
    /// Operations started and not yet complete, polled by this task.
    pending: Vec<PendingOp>,
    reading: Reading,
    /// The next request's cost does not fit: wait for replies to go out.
    blocked: bool,
    /// The payload being spliced, if any.
    splicing: Option<Splicing>,
    /// The next read takes one request header only (a payload was just
    /// spliced: the next may be too).
    header_only: bool,
    /// Payloads may be spliced on this connection.
    splice_ok: bool,
    /// Payloads that did not fit their pipe.
    splice_fallbacks: u32,
}

/// Serves requests until the client leaves or a close is requested.
pub(crate) async fn run<R, W>(
    mut reader: R,
    mut writer: W,
    buf: BytesMut,
    volume: Arc<dyn Volume>,
    mut close: watch::Receiver<bool>,
) -> Result<(), ConnectionError>
where
    R: SpliceRead,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut t = Transmission {
        volume,
        buf,
        out: VecDeque::new(),
        front_written: 0,
        in_flight_bytes: 0,
        in_flight_requests: 0,
        pending: Vec::new(),
        reading: Reading::Open,
        blocked: false,
        splicing: None,
        header_only: false,
        splice_ok: true,
        splice_fallbacks: 0,
    };
    // Requests that arrived together with the end of the negotiation.
    t.process()?;
    loop {
        if *close.borrow() && t.reading == Reading::Open {
            t.reading = Reading::CloseRequested;
        }
        if t.reading != Reading::Open && t.pending.is_empty() && t.out.is_empty() {
            break;
        }
        let can_read = t.reading == Reading::Open && !t.blocked;
        if can_read && t.splicing.is_none() {
            t.reserve();
        }
        let may_complete = !t.pending.is_empty();
        let may_close = t.reading == Reading::Open;
        let event = {
            let iov = gather(&t.out, t.front_written);
            let has_output = !iov.is_empty();
            let input = input(&mut reader, &mut t.buf, &mut t.splicing, t.header_only);
            tokio::select! {
                biased;
                wrote = writer.write_vectored(&iov), if has_output => Event::Wrote(wrote),
                replies = completions(&mut t.pending), if may_complete => Event::Completed(replies),
                got = input, if can_read => Event::Input(got),
                _ = close.changed(), if may_close => Event::Close,
            }
        };
        match event {
            Event::Wrote(Ok(0)) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
            Event::Wrote(Ok(n)) => t.written(n)?,
            Event::Completed(replies) => t.out.extend(replies),
            Event::Input(Input::Read(Ok(0))) => t.end_of_input()?,
            Event::Input(Input::Read(Ok(_))) => {
                t.header_only = false;
                t.process()?
            }
            Event::Input(Input::Spliced(Ok(filled))) => t.spliced(filled)?,
            Event::Wrote(Err(e))
            | Event::Input(Input::Read(Err(e)))
            | Event::Input(Input::Spliced(Err(e))) => return client_gone(e),
            Event::Close => t.reading = Reading::CloseRequested,
        }
    }
    if t.reading == Reading::CloseRequested {
        if let Err(e) = t.volume.flush().await {
            warn!(error = %e, "flush at close failed");
        }
    }
    // Best effort: the client may already have closed its side.
    let _ = writer.shutdown().await;
    Ok(())
}

/// Reads into `buf` (one request header only when `header_only`), or, while
/// a payload is being spliced, moves the socket's data into its pipe.
async fn input<R: SpliceRead>(
    reader: &mut R,
    buf: &mut BytesMut,
    splicing: &mut Option<Splicing>,
    header_only: bool,
) -> Input {
    if let Some(s) = splicing {
        return Input::Spliced(
            std::future::poll_fn(|cx| reader.poll_splice(cx, &mut s.fill)).await,
        );
    }
    if header_only && buf.len() < wire::REQUEST_HEADER_BYTES {
        let want = (wire::REQUEST_HEADER_BYTES - buf.len()) as u64;
        return Input::Read(reader.take(want).read_buf(buf).await);
    }
    Input::Read(reader.read_buf(buf).await)
}

/// A client that leaves with replies pending is normal, not an error.
fn client_gone(e: io::Error) -> Result<(), ConnectionError> {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
            debug!(error = %e, "client left with replies pending");
            Ok(())
        }
        _ => Err(ConnectionError::Io(e)),
    }
}

/// Resolves when at least one pending operation completed, with the
/// replies of all that did; the others stay pending (woken through the
/// connection task's waker).
fn completions(pending: &mut Vec<PendingOp>) -> impl Future<Output = Vec<Reply>> + '_ {
    std::future::poll_fn(move |cx| {
        let mut done = Vec::new();
        pending.retain_mut(|op| match op.as_mut().poll(cx) {
            Poll::Ready(reply) => {
                done.push(reply);
                false
            }
            Poll::Pending => true,
        });
        if done.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(done)
        }
    })
}

/// The unwritten part of the out-queue as slices, at most
/// [`MAX_REPLIES_PER_WRITE`] replies; `front_written` bytes of the first
/// reply are already out.
fn gather(out: &VecDeque<Reply>, front_written: usize) -> Vec<IoSlice<'_>> {
    let mut iov = Vec::with_capacity(2 * out.len().min(MAX_REPLIES_PER_WRITE));
    let mut skip = front_written;
    for reply in out.iter().take(MAX_REPLIES_PER_WRITE) {
        let header = &reply.header[..];
        if skip < header.len() {
            iov.push(IoSlice::new(&header[skip..]));
            skip = 0;
        } else {
            skip -= header.len();
        }
        if let Some(data) = reply.data.as_deref() {
            if skip < data.len() {
                iov.push(IoSlice::new(&data[skip..]));
            }
            skip = 0;
        }
    }
    iov
}

impl Transmission {
    /// Makes room for the next read: the rest of a partial request, or a chunk.
    ///
    /// Growing a buffer whose earlier payloads are still in flight (shared
    /// `Bytes`) allocates anew and copies the partial request it holds, so
    /// grow rarely: only when the rest of the current request does not fit,
    /// and then to twice what is needed, so that the next requests land in
    /// place (profiled: one copy per request of the partial payload was
    /// ~6% of the CPU of 1 MiB writes).
    fn reserve(&mut self) {
        let needed = match Request::decode(&self.buf) {
            Ok(Some(request)) => wire::REQUEST_HEADER_BYTES + request.payload_bytes() as usize,
            _ => wire::REQUEST_HEADER_BYTES,
        };
        let remaining = needed.saturating_sub(self.buf.len());
        let spare = self.buf.capacity() - self.buf.len();
        if spare < remaining.max(MIN_READ_SPARE_BYTES) {
            self.buf.reserve(2 * remaining.max(READ_CHUNK_BYTES));
        }
    }

    /// Decodes and starts every complete request in the buffer, as far as
    /// the in-flight budget allows, then tells the volume the batch ended.
    fn process(&mut self) -> Result<(), ConnectionError> {
        let result = self.process_batch();
        self.volume.batch_done();
        result
    }

    fn process_batch(&mut self) -> Result<(), ConnectionError> {
        while self.reading == Reading::Open {
            let Some(request) = Request::decode(&self.buf)? else {
                return Ok(());
            };
            let payload_bytes = request.payload_bytes() as usize;
            let cost_bytes = cost(&request);
            if !self.admit(cost_bytes) {
                self.blocked = true;
                return Ok(());
            }
            if self.buf.len() < wire::REQUEST_HEADER_BYTES + payload_bytes {
                self.maybe_splice(request, cost_bytes);
                return Ok(());
            }
            self.buf.advance(wire::REQUEST_HEADER_BYTES);
            let payload = self.buf.split_to(payload_bytes).freeze();
            self.in_flight_bytes += cost_bytes;
            self.in_flight_requests += 1;
            self.dispatch(request, Payload::Bytes(payload), cost_bytes);
        }
        Ok(())
    }

    /// Starts splicing the rest of an admitted WRITE's payload into a pipe
    /// when that is worth it: a large payload of which less than half is
    /// buffered (the buffered part is copied into the pipe).
    fn maybe_splice(&mut self, request: Request, cost_bytes: usize) {
        let payload_bytes = request.payload_bytes() as usize;
        let buffered = self.buf.len().saturating_sub(wire::REQUEST_HEADER_BYTES);
        if !self.splice_ok
            || !(SPLICE_MIN_BYTES..=SPLICE_MAX_BYTES).contains(&payload_bytes)
            || buffered >= payload_bytes / 2
            || !self.volume.accepts_pipes()
        {
            return;
        }
        let mut fill = match PipeFill::new(payload_bytes) {
            Ok(fill) => fill,
            Err(e) => {
                debug!(error = %e, "no pipe for a payload: reading payloads into memory");
                self.splice_ok = false;
                return;
            }
        };
        if let Err(e) = fill.push_bytes(&self.buf[wire::REQUEST_HEADER_BYTES..]) {
            debug!(error = %e, "a payload's start did not fit its pipe");
            return;
        }
        self.buf.clear();
        self.in_flight_bytes += cost_bytes;
        self.in_flight_requests += 1;
        self.splicing = Some(Splicing {
            request,
            cost_bytes,
            fill,
        });
    }

    /// Accounts for a splice into the payload's pipe; a full payload is
    /// dispatched, one that does not fit goes back to the buffer.
    fn spliced(&mut self, filled: Filled) -> Result<(), ConnectionError> {
        let Some(s) = self.splicing.take() else {
            return Ok(());
        };
        match filled {
            Filled::Moved(_) => match s.fill.finish() {
                Ok(data) => {
                    self.dispatch(s.request, Payload::from(data), s.cost_bytes);
                    self.header_only = true;
                    // Nothing else is buffered; tell the volume the batch ended.
                    self.process()
                }
                Err(fill) => {
                    self.splicing = Some(Splicing { fill, ..s });
                    Ok(())
                }
            },
            Filled::PipeFull => {
                debug!(
                    len = s.request.payload_bytes(),
                    missing = s.fill.remaining(),
                    "a payload did not fit its pipe: reading the rest into memory"
                );
                // Back to the ordinary path: header and what the pipe has
                // into the buffer, the rest read as usual.
                self.splice_fallbacks += 1;
                if self.splice_fallbacks >= SPLICE_FALLBACKS_MAX {
                    debug!("payloads do not fit pipes here: reading them into memory");
                    self.splice_ok = false;
                }
                self.in_flight_bytes -= s.cost_bytes;
                self.in_flight_requests -= 1;
                let start = s.fill.into_vec()?;
                let mut buf = BytesMut::with_capacity(
                    wire::REQUEST_HEADER_BYTES + s.request.payload_bytes() as usize,
                );
                buf.extend_from_slice(&s.request.encode());
                buf.extend_from_slice(&start);
                self.buf = buf;
                self.process()
            }
            Filled::Eof => Err(ConnectionError::Truncated {
                missing_bytes: s.fill.remaining(),
            }),
        }
    }

    fn admit(&self, cost_bytes: usize) -> bool {
        self.in_flight_requests == 0
            || (self.in_flight_bytes + cost_bytes <= MAX_IN_FLIGHT_BYTES
                && self.in_flight_requests < MAX_IN_FLIGHT_REQUESTS)
    }

    fn end_of_input(&mut self) -> Result<(), ConnectionError> {
        if self.buf.is_empty() {
            self.reading = Reading::ClientDone;
            return Ok(());
        }
        let needed = match Request::decode(&self.buf) {
            Ok(Some(request)) => wire::REQUEST_HEADER_BYTES + request.payload_bytes() as usize,
            _ => wire::REQUEST_HEADER_BYTES,
        };
        Err(ConnectionError::Truncated {
            missing_bytes: needed.saturating_sub(self.buf.len()),
        })
    }

    /// Starts one request.
    fn dispatch(&mut self, request: Request, payload: Payload, cost_bytes: usize) {
        let cookie = request.cookie;
        let validated = match validate(&request, self.volume.size_bytes(), self.volume.read_only())
        {
            Ok(validated) => validated,
            Err(errno) => {
                debug!(?request, %errno, "request refused");
                self.out
                    .push_back(Reply::new(cookie, Err(errno), cost_bytes));
                return;
            }
        };
        let volume = Arc::clone(&self.volume);
        match validated {
            ValidatedRequest::Read {
                offset_bytes,
                length_bytes,
            } => {
                let expected = length_bytes as usize;
                let future = volume.read(offset_bytes, length_bytes);
                self.complete(cookie, cost_bytes, future, move |data: Bytes| {
                    // A volume returning the wrong length would desynchronise the stream.
                    if data.len() == expected {
                        Ok(Some(data))
                    } else {
                        Err(Errno::Io)
                    }
                });
            }
            ValidatedRequest::Write {
                offset_bytes, fua, ..
            } => {
                let future = volume.write(offset_bytes, payload, fua);
                self.complete(cookie, cost_bytes, future, no_data);
            }
            ValidatedRequest::Flush => self.complete(cookie, cost_bytes, volume.flush(), no_data),
            ValidatedRequest::Trim {
                offset_bytes,
                length_bytes,
                fua,
            } => {
                let future = volume.trim(offset_bytes, length_bytes, fua);
                self.complete(cookie, cost_bytes, future, no_data);
            }
            ValidatedRequest::WriteZeroes {
                offset_bytes,
                length_bytes,
                no_hole,
                fua,
            } => {
                let future = volume.write_zeroes(offset_bytes, length_bytes, no_hole, fua);
                self.complete(cookie, cost_bytes, future, no_data);
            }
            ValidatedRequest::Disconnect => {
                // No reply; what was admitted before it still completes.
                self.in_flight_bytes -= cost_bytes;
                self.in_flight_requests -= 1;
                self.reading = Reading::ClientDone;
            }
        }
    }

    /// Queues the reply at once if the operation is already done, else spawns it.
    fn complete<T, F>(
        &mut self,
        cookie: u64,
        cost_bytes: usize,
        mut future: VolumeFuture<T>,
        finish: F,
    ) where
        T: Send + 'static,
        F: FnOnce(T) -> Result<Option<Bytes>, Errno> + Send + 'static,
    {
        let finish = move |result: Result<T, VolumeError>| match result {
            Ok(value) => finish(value),
            Err(error) => {
                debug!(%error, "volume operation failed");
                Err(error.errno())
            }
        };
        let mut context = Context::from_waker(Waker::noop());
        match future.as_mut().poll(&mut context) {
            Poll::Ready(result) => {
                self.out
                    .push_back(Reply::new(cookie, finish(result), cost_bytes))
            }
            Poll::Pending => self.pending.push(Box::pin(async move {
                let result = future.await;
                Reply::new(cookie, finish(result), cost_bytes)
            })),
        }
    }

    /// Accounts for `n` bytes written: finished replies leave the queue and
    /// release their budget.
    fn written(&mut self, mut n: usize) -> Result<(), ConnectionError> {
        while n > 0 {
            let Some(front) = self.out.front() else {
                return Err(
                    io::Error::other("socket reported more bytes written than queued").into(),
                );
            };
            let left = front.len() - self.front_written;
            if n < left {
                self.front_written += n;
                return Ok(());
            }
            n -= left;
            self.front_written = 0;
            if let Some(done) = self.out.pop_front() {
                self.in_flight_bytes -= done.cost_bytes;
                self.in_flight_requests -= 1;
            }
        }
        if self.blocked {
            self.blocked = false;
            // The request that waited may now fit; it is already buffered.
            self.process()?;
        }
        Ok(())
    }
}

/// What a request is charged against the in-flight budget.
fn cost(request: &Request) -> usize {
    let data_bytes = match request.command {
        hadisk_nbd_proto::Command::Read | hadisk_nbd_proto::Command::Write => {
            request.length_bytes.min(MAX_PAYLOAD_BYTES) as usize
        }
        _ => 0,
    };
    REQUEST_OVERHEAD_BYTES + data_bytes
}

fn no_data(_: ()) -> Result<Option<Bytes>, Errno> {
    Ok(None)
}
