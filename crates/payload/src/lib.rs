//! A write's data: bytes in memory, or bytes held in a kernel pipe.
//!
//! Why pipes: a replicated 1 MiB write used to be copied six times on its
//! way — client → socket → daemon memory → page cache, daemon memory → TCP
//! → peer memory → peer page cache — and on a small machine those copies
//! were half of all CPU time. With `splice(2)` the daemon moves the client's
//! payload from its socket into a pipe without copying it; `tee(2)`
//! duplicates the pipe's page references for each consumer; `splice` moves
//! those references into the peer's socket and, on the peer, from its
//! socket into a pipe and from there into the page cache. What is left are
//! the copies into the two page caches (and the client's own).
//!
//! The core and the codecs treat a payload as opaque data with a length;
//! only the I/O edges (the NBD server, the peer link, the block device)
//! look inside. A [`Payload::Pipe`] is immutable once filled: consumers
//! never read its pipe, they `tee` a private copy of its page references
//! ([`PipeData::source`]), so every clone of the payload sees all of it.

mod pipe;
mod pool;

use std::fmt;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

pub use pipe::{Filled, PipeCursor, PipeData, PipeFill, Source, MAX_SEGMENTS};

/// The data of one write.
#[derive(Clone)]
pub enum Payload {
    Bytes(Bytes),
    Pipe(Arc<PipeData>),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Pipe(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when they are in memory.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Payload::Bytes(b) => Some(b),
            Payload::Pipe(_) => None,
        }
    }

    /// The bytes in memory, copying a pipe's content out (the pipe keeps
    /// it). For the rare consumer that must look at the data.
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        match self {
            Payload::Bytes(b) => Ok(b.clone()),
            Payload::Pipe(p) => p.to_vec().map(Bytes::from),
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Payload {
        Payload::Bytes(b)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload::Bytes(Bytes::from(v))
    }
}

impl From<PipeData> for Payload {
    fn from(p: PipeData) -> Payload {
        Payload::Pipe(Arc::new(p))
    }
}

/// Two payloads are equal when their bytes in memory are, or when they are
/// the same pipe (comparing pipes' contents would take I/O).
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        match (self, other) {
            (Payload::Bytes(a), Payload::Bytes(b)) => a == b,
            (Payload::Pipe(a), Payload::Pipe(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Payload::Pipe(p) => write!(f, "Pipe({} bytes)", p.len()),
        }
    }
}
