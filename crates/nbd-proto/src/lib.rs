//! hadisk-nbd-proto: the NBD protocol without I/O.
//!
//! Bytes in, decisions and bytes out: the server feeds whatever it has read
//! into [`Negotiation`] (handshake) and [`Request::decode`] (transmission);
//! both "check then parse" and report `Ok(None)` when more bytes are needed,
//! which is not an error. Nothing here reads a socket, a file or a clock.
//!
//! Two error types, on purpose:
//! - [`ProtocolError`]: the peer broke the protocol (bad magic, a length we
//!   refuse to buffer, unknown client flags). The connection is closed.
//! - [`Errno`]: one request failed (out of range, read-only, I/O error). It is
//!   sent back in that request's reply and the connection goes on.
//!
//! Structured replies are declined (`NBD_REP_ERR_UNSUP`): every read reply is
//! a simple reply, which every client supports, so nothing is accepted and
//! then ignored.

mod error;
pub mod handshake;
pub mod limits;
pub mod transmission;
pub mod wire;

pub use error::{Errno, ProtocolError};
pub use handshake::{
    decode_option, ExportDetails, ExportListing, Exports, Negotiation, NegotiationStep,
    OptionRequest, Refusal,
};
pub use transmission::{
    decode_simple_reply, encode_simple_reply, transmission_flags, validate, Command, Request,
    ValidatedRequest,
};
