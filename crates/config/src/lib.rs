//! hadisk's configuration parsers: DRBD resource files ([`drbd`]) and
//! Heartbeat's `ha.cf`, `authkeys` and `haresources` ([`ha`]).
//!
//! Users of a DRBD + Heartbeat pair bring their files over unchanged: the
//! grammar, option names and units are DRBD's and Heartbeat's. Every error
//! names the file and the position in it (see [`ConfigError`]).

pub mod drbd;
mod error;
pub mod ha;

pub use drbd::{load, parse_str, Config, Host, Resource};
pub use error::{ConfigError, Result};
