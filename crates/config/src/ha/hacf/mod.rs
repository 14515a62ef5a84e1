//! `ha.cf`: Heartbeat 3's main file, read into [`HaCf`].
//!
//! Directives hadisk uses: `keepalive`, `deadtime`, `warntime`, `initdead`,
//! `udpport`, `bcast` (old name `udp`), `ucast`, `auto_failback`, `node`,
//! `ping`, `logfile`, `debugfile`, `logfacility`. `mcast` is parsed (so a
//! typo in it is still an error) and reported as ignored, as are Heartbeat's
//! other directives ([`IGNORED`]). Per-line parsing is in
//! `directives`, the whole-file rules in `checks`. Anything else is an error with a
//! suggestion.
//!
//! Invariants of a parsed [`HaCf`]: exactly two distinct nodes (hadisk's
//! agent runs a pair); at least one heartbeat path (`ucast` or `bcast`);
//! `keepalive > 0`; `deadtime > 2 × keepalive` (Heartbeat's own rule: with
//! less, one lost packet declares the peer dead); `warntime < deadtime`;
//! `initdead ≥ deadtime`. Softer problems (Heartbeat's warnings) are in
//! [`HaCf::warnings`] for the agent to log.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::logical_lines;
use crate::error::Result;

mod checks;
mod directives;

pub(crate) use checks::check_node_name;
pub use directives::IGNORED;

/// Heartbeat's default `udpport` (IANA's "ha-cluster").
pub const DEFAULT_UDPPORT: u16 = 694;
/// `keepalive` when absent (the seed's value and Heartbeat's sample).
pub const DEFAULT_KEEPALIVE_MS: u64 = 2_000;
/// `deadtime` when absent (the seed's value and Heartbeat's sample).
pub const DEFAULT_DEADTIME_MS: u64 = 30_000;
/// The longest node name: Linux's HOST_NAME_MAX. Names travel in every
/// heartbeat, so they are bounded.
pub const MAX_NODE_NAME_BYTES: usize = 64;
/// The most `ping` nodes: each one is probed every keepalive, and Heartbeat
/// setups use one to three.
pub const MAX_PING_NODES: usize = 16;
/// The most heartbeat paths (`ucast` lines plus `bcast` interfaces).
pub const MAX_PATHS: usize = 16;

/// `auto_failback`: whether the group goes back to its preferred node when
/// that node returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoFailback {
    /// Return to the preferred node (after its resync).
    On,
    /// Stay where it is.
    Off,
    /// Heartbeat's mixed-version mode; for a pair of hadisk nodes it behaves
    /// as `on`.
    Legacy,
}

impl AutoFailback {
    /// Whether the group returns to its preferred node.
    pub fn returns(self) -> bool {
        matches!(self, AutoFailback::On | AutoFailback::Legacy)
    }
}

impl fmt::Display for AutoFailback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AutoFailback::On => "on",
            AutoFailback::Off => "off",
            AutoFailback::Legacy => "legacy",
        })
    }
}

/// `ucast IFACE PEER-IP`: heartbeats sent to one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ucast {
    /// The interface to send on.
    pub iface: String,
    /// The peer's address (Heartbeat ignores a ucast to the node's own
    /// address, so both nodes can share one ha.cf; the agent does the same).
    pub addr: IpAddr,
}

/// `mcast IFACE GROUP PORT TTL LOOP`: parsed, and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mcast {
    /// The interface.
    pub iface: String,
    /// The multicast group.
    pub group: IpAddr,
    /// The UDP port.
    pub port: u16,
    /// The TTL (1-255).
    pub ttl: u8,
    /// Whether to loop back.
    pub looped: bool,
}

/// A directive that was read and is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaIgnored {
    /// 1-based line.
    pub line: u32,
    /// The directive, as written.
    pub directive: String,
    /// Why hadisk does not use it.
    pub reason: &'static str,
}

/// Something Heartbeat would warn about; the file is still usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaWarning {
    /// The file.
    pub file: PathBuf,
    /// The line, when the warning is about one.
    pub line: Option<u32>,
    /// What is odd and what to do.
    pub message: String,
}

impl fmt::Display for HaWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A parsed `ha.cf` (see the module header for its invariants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaCf {
    /// Time between heartbeats.
    pub keepalive_ms: u64,
    /// Silence after which the peer is declared dead.
    pub deadtime_ms: u64,
    /// Silence after which a late heartbeat is logged (none: never).
    pub warntime_ms: Option<u64>,
    /// `deadtime` for the first contact after start (default 2 × deadtime).
    pub initdead_ms: u64,
    /// The UDP port heartbeats use.
    pub udpport: u16,
    /// Interfaces to broadcast heartbeats on.
    pub bcast: Vec<String>,
    /// Unicast heartbeat paths.
    pub ucast: Vec<Ucast>,
    /// Multicast paths (ignored; see [`HaCf::ignored`]).
    pub mcast: Vec<Mcast>,
    /// Whether the group returns to its preferred node.
    pub auto_failback: AutoFailback,
    /// The pair, in file order.
    pub nodes: Vec<String>,
    /// Ping nodes: a node that reaches none of them is isolated.
    pub ping: Vec<String>,
    /// `logfile`.
    pub logfile: Option<PathBuf>,
    /// `debugfile`.
    pub debugfile: Option<PathBuf>,
    /// `logfacility` (`none` is kept as written).
    pub logfacility: Option<String>,
    /// Directives read and not used.
    pub ignored: Vec<HaIgnored>,
    /// Heartbeat's warnings.
    pub warnings: Vec<HaWarning>,
}

impl HaCf {
    /// Whether `name` is one of the pair (node names compare without case,
    /// as Heartbeat compares them).
    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// The other node of the pair, when `me` is one of them.
    pub fn peer_of(&self, me: &str) -> Option<&str> {
        if !self.has_node(me) {
            return None;
        }
        self.nodes
            .iter()
            .find(|n| !n.eq_ignore_ascii_case(me))
            .map(String::as_str)
    }
}

/// Reads and parses an `ha.cf` file.
pub fn load_hacf(path: &Path) -> Result<HaCf> {
    parse_hacf(&super::read(path)?, path)
}

/// Parses `ha.cf` text; `file` names it in errors.
pub fn parse_hacf(text: &str, file: &Path) -> Result<HaCf> {
    let mut b = directives::Builder::default();
    for line in logical_lines(text) {
        b.directive(file, &line)?;
    }
    b.finish(file)
}
