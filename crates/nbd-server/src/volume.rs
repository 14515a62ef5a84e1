//! What the server serves: [`Volume`] (one export's data) and
//! [`ExportRegistry`] (name → volume, owned by the daemon).
//!
//! Invariants the server relies on:
//! - every request reaching a `Volume` method lies inside `[0, size_bytes)`
//!   (the server validates against [`Volume::size_bytes`] first), so an
//!   implementation never sees a range it would have to refuse for size;
//! - a completed `write`/`trim`/`write_zeroes` is visible to every later read
//!   on every connection, and a completed `flush` makes every write completed
//!   before it durable (that is what `CAN_MULTI_CONN` promises);
//! - with `fua`, the operation is durable before its future completes.
//!
//! Operations return boxed `'static` futures so that an implementation can
//! complete them however it likes: at once (page-cache I/O), on a thread pool,
//! or when a local write and a peer's acknowledgement have both arrived.
//! The server polls a fresh future once in place and spawns a task only when
//! it is still pending, so an immediately-ready future costs one allocation.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hadisk_nbd_proto::Errno;
use hadisk_storage::Payload;

/// A volume operation's future.
pub type VolumeFuture<T> = Pin<Box<dyn Future<Output = Result<T, VolumeError>> + Send + 'static>>;

/// Why a volume operation failed; [`VolumeError::errno`] is what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The backing storage failed.
    #[error("I/O error on the backing storage: {source}")]
    Io {
        /// The underlying error.
        #[from]
        source: io::Error,
    },
    /// The volume is read-only (e.g. a Secondary, or opened read-only).
    #[error("the volume is read-only")]
    ReadOnly,
    /// The volume is being shut down or detached.
    #[error("the volume is shutting down")]
    ShuttingDown,
    /// The operation is not supported by this volume.
    #[error("operation not supported by this volume")]
    Unsupported,
}

impl VolumeError {
    /// The NBD error value sent to the client (only values the spec defines).
    pub fn errno(&self) -> Errno {
        match self {
            VolumeError::Io { source } => match source.raw_os_error() {
                Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Errno::NoSpc,
                Some(libc::EPERM | libc::EROFS | libc::EACCES) => Errno::Perm,
                Some(libc::ENOMEM) => Errno::NoMem,
                _ => Errno::Io,
            },
            VolumeError::ReadOnly => Errno::Perm,
            VolumeError::ShuttingDown => Errno::Shutdown,
            VolumeError::Unsupported => Errno::NotSup,
        }
    }
}

/// The data of one export.
pub trait Volume: Send + Sync + 'static {
    /// The export size; fixed while a client is connected.
    fn size_bytes(&self) -> u64;
    /// Writes, trims and zeroing are refused (`EPERM`) and advertised as such.
    fn read_only(&self) -> bool;
    /// True when a flush on one connection covers writes completed on all.
    fn can_multi_conn(&self) -> bool;
    /// Reads `length_bytes` at `offset_bytes`.
    fn read(&self, offset_bytes: u64, length_bytes: u32) -> VolumeFuture<Bytes>;
    /// Writes `data` at `offset_bytes`; durable before completion when `fua`.
    fn write(&self, offset_bytes: u64, data: Payload, fua: bool) -> VolumeFuture<()>;
    /// The server may hand this large WRITE payload over in a pipe
    /// ([`Payload::Pipe`], `splice`d from the socket, never copied through
    /// memory). Asked per payload: a volume may want pipes only at times.
    /// A volume that only wants bytes in memory says no.
    fn accepts_pipes(&self) -> bool {
        false
    }
    /// Makes every completed write durable.
    fn flush(&self) -> VolumeFuture<()>;
    /// Discards a range (contents afterwards unspecified).
    fn trim(&self, offset_bytes: u64, length_bytes: u32, fua: bool) -> VolumeFuture<()>;
    /// Zeroes a range; with `no_hole` the range stays allocated.
    fn write_zeroes(
        &self,
        offset_bytes: u64,
        length_bytes: u32,
        no_hole: bool,
        fua: bool,
    ) -> VolumeFuture<()>;
    /// The server started every request it had received (one read's
    /// worth): a volume that holds back work to batch it (e.g. frames to a
    /// replication peer) sends it now. Called on the connection's task.
    fn batch_done(&self) {}
}

/// One export as listed to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export name (the resource name for hadisk).
    pub name: String,
    /// Human-readable description.
    pub description: String,
}

/// Looks up exports by name at handshake time; owned by the daemon, which changes roles at runtime.
pub trait ExportRegistry: Send + Sync + 'static {
    /// The exports to show in `NBD_OPT_LIST`.
    fn list(&self) -> Vec<ExportInfo>;
    /// `Ok(volume)` to serve, or `Err(reason)` sent to the client as
    /// `NBD_REP_ERR_UNKNOWN` with the text, e.g. "resource data is Secondary on
    /// node beta" (the client's handshake then fails with that message).
    /// The name `""` is the default export.
    ///
    /// The server counts the client for `name` before calling this, so a
    /// daemon that first makes `open` refuse and then reads
    /// [`crate::Server::client_count`] cannot miss a client. Do not call
    /// [`crate::Server`] methods from inside `open`.
    fn open(&self, name: &str) -> Result<Arc<dyn Volume>, String>;
}
