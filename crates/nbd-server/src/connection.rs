//! One client connection: negotiation, then the transmission phase
//! ([`crate::transmission`]).
//!
//! Invariants:
//! - negotiation must finish within [`HANDSHAKE_TIMEOUT_MS`], so idle or
//!   half-open connections do not pin tasks and descriptors forever;
//! - an option's declared length is checked before its data is buffered
//!   (`hadisk-nbd-proto`), so the negotiation buffer stays small;
//! - the client is counted for an export before the registry is asked to
//!   open it, and uncounted when the option does not enter transmission.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hadisk_nbd_proto::{
    transmission_flags, ExportDetails, ExportListing, Exports, Negotiation, NegotiationStep,
    ProtocolError, Refusal,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::debug;

use crate::server::Shared;
use crate::volume::Volume;

/// How much the negotiation asks the socket for, per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

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
    #[error(
        "client closed the connection in the middle of a request ({missing_bytes} bytes missing)"
    )]
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
        exports
            .into_iter()
            .map(|e| ExportListing {
                name: e.name,
                description: e.description,
            })
            .collect()
    }

    fn open(&self, name: &str) -> Result<(ExportDetails, Opened), Refusal> {
        if self.shared.is_shutting_down() {
            return Err(Refusal::Shutdown(
                "the NBD server is shutting down".to_owned(),
            ));
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
                    transmission_flags: transmission_flags(
                        volume.read_only(),
                        volume.can_multi_conn(),
                    ),
                };
                Ok((
                    details,
                    Opened {
                        volume,
                        name: name.to_owned(),
                    },
                ))
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
    R: crate::splice::SpliceRead,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let negotiation = negotiate(&mut reader, &mut writer, &mut buf, &shared, connection_id);
    let opened = match tokio::time::timeout(
        Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
        negotiation,
    )
    .await
    {
        Ok(result) => result?,
        Err(_) => return Err(ConnectionError::HandshakeTimeout),
    };
    let Some(opened) = opened else { return Ok(()) };
    debug!(export = %opened.name, "transmission");
    crate::transmission::run(reader, writer, buf, opened.volume, close).await
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
    let exports = RegistryExports {
        shared,
        connection_id,
    };
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
