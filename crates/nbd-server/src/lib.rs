//! hadisk-nbd-server: a pipelined NBD server over tokio, generic over what it serves.
//!
//! The daemon supplies an [`ExportRegistry`] (name → [`Volume`], consulted at
//! every handshake, so role changes take effect for the next client) and
//! drives a [`Server`]: Unix and TCP listeners, per-export client counts,
//! closing the clients of an export, graceful shutdown. [`LocalVolume`] serves
//! a local file or block device through `hadisk-storage`.
//!
//! The wire protocol is entirely in `hadisk-nbd-proto`; this crate only moves
//! bytes and runs volume operations, many at once per connection.

pub mod busy_poll;
mod connection;
mod local;
mod server;
mod splice;
mod transmission;
mod volume;

pub use connection::HANDSHAKE_TIMEOUT_MS;
pub use hadisk_storage::Payload;
pub use local::{IoMode, LocalVolume, WriteGate, WriteStart};
pub use server::{Server, ServerError, MAX_CONNECTIONS};
pub use splice::{SpliceRead, SPLICE_MIN_BYTES};
pub use transmission::{MAX_IN_FLIGHT_BYTES, MAX_IN_FLIGHT_REQUESTS, SPLICE_MAX_BYTES};
pub use volume::{ExportInfo, ExportRegistry, Volume, VolumeError, VolumeFuture};
