//! Receiving large WRITE payloads into pipes (`splice`), so that the
//! payload never passes through the server's memory (see
//! `hadisk_payload` for why).
//!
//! Only the two socket types the server listens on can do it; the
//! transmission loop asks the volume ([`crate::Volume::accepts_pipes`]) and
//! falls back to reading into memory whenever a pipe cannot be had.

use std::io;
use std::os::fd::AsRawFd;
use std::task::{ready, Context, Poll};

use hadisk_storage::{Filled, PipeFill};
use tokio::io::{AsyncRead, Interest};

/// WRITE payloads from this size on are spliced: below it the extra
/// system calls (pipe, tee, splice) cost more than the copy they save.
pub const SPLICE_MIN_BYTES: usize = 128 * 1024;

/// The read side of a connection that can move bytes into a pipe.
pub trait SpliceRead: AsyncRead + Unpin + Send + Sync + 'static {
    /// Moves what the socket has of the rest of `fill`'s payload into it,
    /// waiting until the socket is readable.
    fn poll_splice(&self, cx: &mut Context<'_>, fill: &mut PipeFill) -> Poll<io::Result<Filled>>;
}

macro_rules! splice_read_for {
    ($($half:ty => $stream:ty),*) => {$(
        impl SpliceRead for $half {
            fn poll_splice(
                &self,
                cx: &mut Context<'_>,
                fill: &mut PipeFill,
            ) -> Poll<io::Result<Filled>> {
                let stream: &$stream = self.as_ref();
                loop {
                    ready!(stream.poll_read_ready(cx))?;
                    // `splice_from` answers WouldBlock only for an empty
                    // socket, so clearing the readiness then is right.
                    match stream.try_io(Interest::READABLE, || fill.splice_from(stream.as_raw_fd())) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        other => return Poll::Ready(other),
                    }
                }
            }
        }
    )*};
}

splice_read_for!(
    tokio::net::unix::OwnedReadHalf => tokio::net::UnixStream,
    tokio::net::tcp::OwnedReadHalf => tokio::net::TcpStream
);
