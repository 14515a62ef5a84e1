//! One client connection: negotiation, then pipelined transmission.
//!
//! Transmission runs two tasks per connection:
//! - the reader (this task) decodes requests back to back from one buffer,
//!   validates them, and starts each volume operation; it polls the
//!   operation's future once in place and spawns a task only if it is still
//!   pending, so page-cache I/O needs no task and slow I/O never blocks the
//!   reading of the next request;
//! - the writer drains completed replies in batches, in completion order
//!   (out of order with respect to the requests), with one vectored write per
//!   batch; READ data is written from the volume's `Bytes`, never copied.
//!
//! Invariants:
//! - in-flight memory is bounded: a request takes permits worth its payload
//!   ([`MAX_IN_FLIGHT_BYTES`]) before its WRITE payload is read, and gives
//!   them back only once its reply has been written (or dropped);
//! - a protocol violation ends only this connection; operations already
//!   started still complete, their replies are discarded;
//! - on a close request (daemon or shutdown) or `NBD_CMD_DISC`, the reader
//!   stops, every started operation completes and is replied to, then the
//!   volume is flushed on a close request.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hadisk_nbd_proto::{
    encode_simple_reply, transmission_flags, validate, wire, Errno, ExportDetails, ExportListing,
    Exports, Negotiation, NegotiationStep, ProtocolError, Refusal, Request, ValidatedRequest,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::server::Shared;
use crate::volume::{Volume, VolumeError, VolumeFuture};

/// Bound on the payload bytes of the requests in flight on one connection
/// (WRITE payloads buffered plus READ data not yet sent). Twice the largest
/// request, so one maximal request never waits for itself, and a client
/// cannot make the server hold more than this per connection.
pub const MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// Unit in which in-flight bytes are counted (semaphore permits).
const PERMIT_UNIT_BYTES: usize = 4096;

/// Permits available per connection; every request costs at least one, so
/// this also caps the number of requests in flight.
const MAX_IN_FLIGHT_PERMITS: usize = MAX_IN_FLIGHT_BYTES / PERMIT_UNIT_BYTES;

/// How much the reader asks the socket for at least, per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Most replies gathered into one vectored write (each takes two iovecs;
/// Linux's IOV_MAX is 1024).
const MAX_REPLIES_PER_WRITE: usize = 256;

/// A client must finish negotiating within this time, so idle half-open
/// connections do not pin tasks and descriptors forever.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 30_000;

/// Why a connection ended early; logged, never propagated to other clients.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("client closed the connection in the middle of a request ({missing_bytes} bytes missing)")]
    Truncated { missing_bytes: usize },
    #[error("negotiation did not finish within {HANDSHAKE_TIMEOUT_MS} ms")]
    HandshakeTimeout,
}

/// A volume opened during negotiation, with the connection's export marked.
pub(crate) struct Opened {
    volume: Arc<dyn Volume>,
    name: String,
}

/// The registry as the negotiation state machine sees it.
struct RegistryExports<'a> {
    shared: &'a Shared,
    connection_id: u64,
}

impl Exports for RegistryExports<'_> {
    type Handle = Opened;

    fn list(&self) -> Vec<ExportListing> {
        let exports = self.shared.registry.list();
        exports.into_iter().map(|e| ExportListing { name: e.name, description: e.description }).collect()
    }

    fn open(&self, name: &str) -> Result<(ExportDetails, Opened), Refusal> {
        if self.shared.is_shutting_down() {
            return Err(Refusal::Shutdown("the NBD server is shutting down".to_owned()));
        }
        // Counted before asking the registry: see ExportRegistry::open.
        self.shared.mark_export(self.connection_id, Some(name));
        match self.shared.registry.open(name) {
            Ok(volume) => {
                let description = self
                    .shared
                    .registry
                    .list()
                    .into_iter()
                    .find(|e| e.name == name)
                    .map(|e| e.description)
                    .unwrap_or_default();
                let details = ExportDetails {
                    name: name.to_owned(),
                    description,
                    size_bytes: volume.size_bytes(),
                    transmission_flags: transmission_flags(volume.read_only(), volume.can_multi_conn()),
                };
                Ok((details, Opened { volume, name: name.to_owned() }))
            }
            Err(reason) => {
                self.shared.mark_export(self.connection_id, None);
                Err(Refusal::Unknown(reason))
            }
        }
    }
}

/// Serves one connection to its end.
pub(crate) async fn serve<R, W>(
    mut reader: R,
    mut writer: W,
    shared: Arc<Shared>,
    connection_id: u64,
    close: watch::Receiver<bool>,
) -> Result<(), ConnectionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let negotiation = negotiate(&mut reader, &mut writer, &mut buf, &shared, connection_id);
    let opened = match tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), negotiation).await {
        Ok(result) => result?,
        Err(_) => return Err(ConnectionError::HandshakeTimeout),
    };
    let Some(opened) = opened else { return Ok(()) };
    debug!(export = %opened.name, "transmission");
    transmission(reader, writer, buf, opened.volume, close).await
}

async fn negotiate<R, W>(
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
    shared: &Shared,
    connection_id: u64,
) -> Result<Option<Opened>, ConnectionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&Negotiation::greeting()).await?;
    let mut negotiation = Negotiation::new();
    let exports = RegistryExports { shared, connection_id };
    let mut out = Vec::new();
    loop {
        out.clear();
        match negotiation.advance(buf, &exports, &mut out)? {
            None => {
                if reader.read_buf(buf).await? == 0 {
                    return Ok(None);
                }
            }
            Some((used, step)) => {
                buf.advance(used);
                writer.write_all(&out).await?;
                match step {
                    NegotiationStep::Continue => {
                        // INFO opens and drops; only GO/EXPORT_NAME keep the mark.
                        shared.mark_export(connection_id, None);
                    }
                    NegotiationStep::Close => return Ok(None),
                    NegotiationStep::Transmission { handle, .. } => return Ok(Some(handle)),
                }
            }
        }
    }
}

/// A completed request, waiting to be written.
struct Reply {
    header: [u8; wire::SIMPLE_REPLY_HEADER_BYTES],
    data: Option<Bytes>,
    _permit: OwnedSemaphorePermit,
}

impl Reply {
    fn new(cookie: u64, result: Result<Option<Bytes>, Errno>, permit: OwnedSemaphorePermit) -> Reply {
        match result {
            Ok(data) => Reply { header: encode_simple_reply(cookie, None), data, _permit: permit },
            Err(errno) => Reply { header: encode_simple_reply(cookie, Some(errno)), data: None, _permit: permit },
        }
    }
}

/// Why the reader stopped.
enum ReaderEnd {
    /// EOF between requests, or NBD_CMD_DISC.
    Client,
    /// The daemon or a shutdown asked to close (flush afterwards).
    Closed,
}

async fn transmission<R, W>(
    mut reader: R,
    writer: W,
    mut buf: BytesMut,
    volume: Arc<dyn Volume>,
    mut close: watch::Receiver<bool>,
) -> Result<(), ConnectionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (replies, replies_rx) = mpsc::unbounded_channel();
    let (writer_failed, writer_failed_rx) = watch::channel(false);
    let writer_task = tokio::spawn(write_replies(writer, replies_rx, writer_failed));
    let mut session = Session {
        volume,
        replies,
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT_PERMITS)),
        writer_failed: writer_failed_rx,
    };
    let end = session.read_requests(&mut reader, &mut buf, &mut close).await;
    let volume = Arc::clone(&session.volume);
    drop(session);
    // The writer ends once every started operation has replied.
    let written = writer_task.await.map_err(|e| io::Error::other(e.to_string()))?;
    if matches!(end, Ok(ReaderEnd::Closed)) {
        if let Err(e) = volume.flush().await {
            warn!(error = %e, "flush at close failed");
        }
    }
    end?;
    written.map_err(ConnectionError::from)
}

struct Session {
    volume: Arc<dyn Volume>,
    replies: mpsc::UnboundedSender<Reply>,
    permits: Arc<Semaphore>,
    writer_failed: watch::Receiver<bool>,
}

impl Session {
    async fn read_requests<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buf: &mut BytesMut,
        close: &mut watch::Receiver<bool>,
    ) -> Result<ReaderEnd, ConnectionError> {
        loop {
            if *close.borrow() {
                return Ok(ReaderEnd::Closed);
            }
            let Some(request) = Request::decode(buf)? else {
                if !self.fill(reader, buf, close, wire::REQUEST_HEADER_BYTES).await? {
                    return if buf.is_empty() {
                        Ok(ReaderEnd::Client)
                    } else {
                        Err(ConnectionError::Truncated { missing_bytes: wire::REQUEST_HEADER_BYTES - buf.len() })
                    };
                }
                continue;
            };
            let payload_bytes = request.payload_bytes() as usize;
            let units = 1 + request.length_bytes.min(hadisk_nbd_proto::limits::MAX_PAYLOAD_BYTES) as usize
                / PERMIT_UNIT_BYTES;
            let permit = tokio::select! {
                permit = Arc::clone(&self.permits).acquire_many_owned(units as u32) => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ok(ReaderEnd::Closed),
                },
                _ = close.changed() => return Ok(ReaderEnd::Closed),
                _ = self.writer_failed.changed() => return Ok(ReaderEnd::Client),
            };
            let needed = wire::REQUEST_HEADER_BYTES + payload_bytes;
            if !self.fill(reader, buf, close, needed).await? {
                return Err(ConnectionError::Truncated { missing_bytes: needed - buf.len() });
            }
            buf.advance(wire::REQUEST_HEADER_BYTES);
            let payload = buf.split_to(payload_bytes).freeze();
            if self.dispatch(request, payload, permit) {
                return Ok(ReaderEnd::Client);
            }
        }
    }

    /// Reads until `buf` holds `needed` bytes; false on EOF (or close while waiting).
    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        buf: &mut BytesMut,
        close: &mut watch::Receiver<bool>,
        needed: usize,
    ) -> Result<bool, ConnectionError> {
        while buf.len() < needed {
            buf.reserve((needed - buf.len()).max(READ_CHUNK_BYTES));
            let read = tokio::select! {
                read = reader.read_buf(buf) => read?,
                _ = close.changed() => return Ok(false),
                _ = self.writer_failed.changed() => return Ok(false),
            };
            if read == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Starts one request; true when the client asked to disconnect.
    fn dispatch(&self, request: Request, payload: Bytes, permit: OwnedSemaphorePermit) -> bool {
        let cookie = request.cookie;
        let validated = match validate(&request, self.volume.size_bytes(), self.volume.read_only()) {
            Ok(validated) => validated,
            Err(errno) => {
                debug!(?request, %errno, "request refused");
                self.send(Reply::new(cookie, Err(errno), permit));
                return false;
            }
        };
        let volume = &self.volume;
        match validated {
            ValidatedRequest::Read { offset_bytes, length_bytes } => {
                let expected = length_bytes as usize;
                self.complete(cookie, permit, volume.read(offset_bytes, length_bytes), move |data: Bytes| {
                    // A volume returning the wrong length would desynchronise the stream.
                    if data.len() == expected {
                        Ok(Some(data))
                    } else {
                        Err(Errno::Io)
                    }
                });
            }
            ValidatedRequest::Write { offset_bytes, fua, .. } => {
                self.complete(cookie, permit, volume.write(offset_bytes, payload, fua), no_data);
            }
            ValidatedRequest::Flush => self.complete(cookie, permit, volume.flush(), no_data),
            ValidatedRequest::Trim { offset_bytes, length_bytes, fua } => {
                self.complete(cookie, permit, volume.trim(offset_bytes, length_bytes, fua), no_data);
            }
            ValidatedRequest::WriteZeroes { offset_bytes, length_bytes, no_hole, fua } => {
                let future = volume.write_zeroes(offset_bytes, length_bytes, no_hole, fua);
                self.complete(cookie, permit, future, no_data);
            }
            ValidatedRequest::Disconnect => return true,
        }
        false
    }

    /// Replies at once if the operation is already done, else from a task.
    fn complete<T, F>(&self, cookie: u64, permit: OwnedSemaphorePermit, mut future: VolumeFuture<T>, finish: F)
    where
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
            Poll::Ready(result) => self.send(Reply::new(cookie, finish(result), permit)),
            Poll::Pending => {
                let replies = self.replies.clone();
                tokio::spawn(async move {
                    let result = future.await;
                    // The writer may be gone (client left): the reply is dropped.
                    let _ = replies.send(Reply::new(cookie, finish(result), permit));
                });
            }
        }
    }

    fn send(&self, reply: Reply) {
        // Fails only when the writer has stopped; the client is gone then.
        let _ = self.replies.send(reply);
    }
}

fn no_data(_: ()) -> Result<Option<Bytes>, Errno> {
    Ok(None)
}

/// Writes replies as they complete; on a socket error keeps draining (so that
/// permits return) and tells the reader to stop.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut replies: mpsc::UnboundedReceiver<Reply>,
    failed: watch::Sender<bool>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(MAX_REPLIES_PER_WRITE);
    let mut outcome = Ok(());
    while let Some(first) = replies.recv().await {
        batch.push(first);
        while batch.len() < MAX_REPLIES_PER_WRITE {
            match replies.try_recv() {
                Ok(reply) => batch.push(reply),
                Err(_) => break,
            }
        }
        if outcome.is_ok() {
            if let Err(e) = write_batch(&mut writer, &batch).await {
                debug!(error = %e, "reply write failed; discarding further replies");
                failed.send_replace(true);
                outcome = Err(e);
            }
        }
        batch.clear();
    }
    if outcome.is_ok() {
        // Best effort: the client may already have closed its side.
        let _ = writer.shutdown().await;
    }
    match outcome {
        // A client that leaves with replies pending is normal.
        Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => Ok(()),
        other => other,
    }
}

async fn write_batch<W: AsyncWrite + Unpin>(writer: &mut W, batch: &[Reply]) -> io::Result<()> {
    let mut slices = Vec::with_capacity(batch.len() * 2);
    for reply in batch {
        slices.push(IoSlice::new(&reply.header));
        if let Some(data) = &reply.data {
            if !data.is_empty() {
                slices.push(IoSlice::new(data));
            }
        }
    }
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let written = writer.write_vectored(remaining).await?;
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no reply bytes"));
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}
