//! `ha.cf`: Heartbeat 3's main file, read into [`HaCf`].
//!
//! Directives hadisk uses: `keepalive`, `deadtime`, `warntime`, `initdead`,
//! `udpport`, `bcast` (old name `udp`), `ucast`, `auto_failback`, `node`,
//! `ping`, `logfile`, `debugfile`, `logfacility`. `mcast` is parsed (so a
//! typo in it is still an error) and reported as ignored, as are Heartbeat's
//! other directives ([`IGNORED`]). Anything else is an error with a
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

use super::values::{check_iface, did_you_mean, parse_bool, parse_time_ms};
use super::{logical_lines, Line};
use crate::error::{ConfigError, Result};

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

/// Heartbeat directives hadisk reads and reports as ignored, with why.
pub const IGNORED: &[(&str, &str)] = &[
    ("apiauth", "hadisk has no Heartbeat API clients"),
    ("autojoin", "hadisk's agent runs a fixed pair"),
    ("baud", "hadisk has no serial heartbeat"),
    ("compression", "heartbeats are small and never compressed"),
    (
        "compression_threshold",
        "heartbeats are small and never compressed",
    ),
    ("conn_logd_time", "hadisk logs through its own logger"),
    ("coredumps", "not used by hadisk"),
    (
        "crm",
        "hadisk runs its own resource manager (see ocf/hadisk for Pacemaker)",
    ),
    ("debug", "use RUST_LOG=debug"),
    ("deadping", "ping nodes are judged by deadtime"),
    ("hbgenmethod", "hadisk keeps its own generation counter"),
    ("hopfudge", "not used by hadisk"),
    ("max_rexmit_delay", "hadisk does not retransmit heartbeats"),
    ("mcast", "hadisk sends heartbeats by ucast or bcast only"),
    ("mcast6", "hadisk sends heartbeats by ucast or bcast only"),
    ("memreserve", "not used by hadisk"),
    ("msgfmt", "hadisk has its own heartbeat format"),
    (
        "nice_failback",
        "replaced by auto_failback (nice_failback on = auto_failback off)",
    ),
    (
        "pacemaker",
        "hadisk runs its own resource manager (see ocf/hadisk for Pacemaker)",
    ),
    ("ping_group", "use ping lines"),
    ("realtime", "not used by hadisk"),
    ("register_to_apphbd", "not used by hadisk"),
    ("respawn", "use systemd to restart processes"),
    ("rtprio", "not used by hadisk"),
    ("serial", "hadisk has no serial heartbeat"),
    (
        "stonith",
        "hadisk does no STONITH; ping nodes decide which side is isolated",
    ),
    (
        "stonith_host",
        "hadisk does no STONITH; ping nodes decide which side is isolated",
    ),
    (
        "traditional_compression",
        "heartbeats are small and never compressed",
    ),
    ("use_logd", "hadisk logs through its own logger"),
    ("uuidfrom", "nodes are known by name"),
    ("watchdog", "not used by hadisk"),
];

/// The directives hadisk uses (for suggestions and the duplicate check).
const USED: &[&str] = &[
    "keepalive",
    "deadtime",
    "warntime",
    "initdead",
    "udpport",
    "bcast",
    "udp",
    "ucast",
    "auto_failback",
    "node",
    "ping",
    "logfile",
    "debugfile",
    "logfacility",
];

/// syslog facility names `logfacility` accepts (`none` turns syslog off).
const FACILITIES: &[&str] = &[
    "auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr", "mail", "news", "syslog", "user",
    "uucp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7", "none",
];

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
    let mut b = Builder::default();
    for line in logical_lines(text) {
        b.directive(file, &line)?;
    }
    b.finish(file)
}

/// A scalar directive's value and the line it was given on.
type Given<T> = Option<(T, u32)>;

#[derive(Default)]
struct Builder {
    keepalive: Given<u64>,
    deadtime: Given<u64>,
    warntime: Given<u64>,
    initdead: Given<u64>,
    udpport: Given<u16>,
    auto_failback: Given<AutoFailback>,
    logfile: Given<PathBuf>,
    debugfile: Given<PathBuf>,
    logfacility: Given<String>,
    bcast: Vec<String>,
    ucast: Vec<Ucast>,
    mcast: Vec<Mcast>,
    nodes: Vec<(String, u32)>,
    ping: Vec<String>,
    ignored: Vec<HaIgnored>,
}

/// Sets a scalar directive once; a second time is an error.
fn set_once<T>(slot: &mut Given<T>, value: T, file: &Path, line: u32, name: &str) -> Result<()> {
    if let Some((_, first)) = slot {
        return Err(ConfigError::ha(
            file,
            line,
            format!("{name} given twice (first on line {first}); keep one"),
        ));
    }
    *slot = Some((value, line));
    Ok(())
}

/// The single value of a directive that takes exactly one.
fn one<'a>(file: &Path, line: &'a Line, what: &str) -> Result<&'a str> {
    let name = &line.words[0];
    match &line.words[1..] {
        [v] => Ok(v),
        [] => Err(ConfigError::ha(
            file,
            line.number,
            format!("{name} takes one value ({what}), got none"),
        )),
        more => Err(ConfigError::ha(
            file,
            line.number,
            format!(
                "{name} takes one value ({what}), got {}: {}",
                more.len(),
                more.join(" ")
            ),
        )),
    }
}

impl Builder {
    fn directive(&mut self, file: &Path, line: &Line) -> Result<()> {
        let n = line.number;
        let err = |m: String| ConfigError::ha(file, n, m);
        let name = line.words[0].to_ascii_lowercase();
        let name = name.as_str();
        let time = |what: &str| -> Result<u64> {
            parse_time_ms(one(file, line, "a time")?).map_err(|m| err(format!("{what}: {m}")))
        };
        match name {
            "keepalive" => {
                let v = time(name)?;
                if v == 0 {
                    return Err(err("keepalive must be more than 0".into()));
                }
                set_once(&mut self.keepalive, v, file, n, name)
            }
            "deadtime" => {
                let v = time(name)?;
                set_once(&mut self.deadtime, v, file, n, name)
            }
            "warntime" => {
                let v = time(name)?;
                set_once(&mut self.warntime, v, file, n, name)
            }
            "initdead" => {
                let v = time(name)?;
                set_once(&mut self.initdead, v, file, n, name)
            }
            "udpport" => {
                let w = one(file, line, "a UDP port")?;
                let port =
                    w.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                        err(format!("udpport: '{w}' is not a UDP port (1-65535)"))
                    })?;
                set_once(&mut self.udpport, port, file, n, name)
            }
            "auto_failback" => {
                let w = one(file, line, "on, off or legacy")?;
                let v = if w.eq_ignore_ascii_case("legacy") {
                    AutoFailback::Legacy
                } else {
                    match parse_bool(w) {
                        Some(true) => AutoFailback::On,
                        Some(false) => AutoFailback::Off,
                        None => {
                            return Err(err(format!(
                                "auto_failback: '{w}' is not on, off or legacy"
                            )))
                        }
                    }
                };
                set_once(&mut self.auto_failback, v, file, n, name)
            }
            "logfile" | "debugfile" => {
                let w = one(file, line, "a file")?;
                let slot = if name == "logfile" {
                    &mut self.logfile
                } else {
                    &mut self.debugfile
                };
                set_once(slot, PathBuf::from(w), file, n, name)
            }
            "logfacility" => {
                let w = one(file, line, "a syslog facility")?.to_ascii_lowercase();
                if !FACILITIES.contains(&w.as_str()) {
                    return Err(err(format!(
                        "logfacility: '{w}' is not a syslog facility ({}){}",
                        FACILITIES.join(", "),
                        did_you_mean(&w, FACILITIES.iter().copied())
                    )));
                }
                set_once(&mut self.logfacility, w, file, n, name)
            }
            "bcast" | "udp" => self.bcast(file, line),
            "ucast" => self.ucast(file, line),
            "mcast" => self.mcast(file, line),
            "node" => self.node(file, line),
            "ping" => self.ping(file, line),
            _ => self.other(file, line, name),
        }
    }

    fn bcast(&mut self, file: &Path, line: &Line) -> Result<()> {
        let name = &line.words[0];
        if line.words.len() < 2 {
            return Err(ConfigError::ha(
                file,
                line.number,
                format!("{name} needs at least one interface (bcast eth0)"),
            ));
        }
        for iface in &line.words[1..] {
            check_iface(iface)
                .map_err(|m| ConfigError::ha(file, line.number, format!("{name}: {m}")))?;
            self.bcast.push(iface.clone());
        }
        Ok(())
    }

    fn ucast(&mut self, file: &Path, line: &Line) -> Result<()> {
        let err = |m: String| ConfigError::ha(file, line.number, m);
        let [_, iface, addr] = line.words.as_slice() else {
            return Err(err(format!(
                "ucast takes an interface and the peer's IP address (ucast eth0 192.168.0.227), got {} values",
                line.words.len() - 1
            )));
        };
        check_iface(iface).map_err(|m| err(format!("ucast: {m}")))?;
        let addr = addr.parse::<IpAddr>().map_err(|_| {
            err(format!(
                "ucast: '{addr}' is not an IP address (hadisk does not resolve host names here)"
            ))
        })?;
        self.ucast.push(Ucast {
            iface: iface.clone(),
            addr,
        });
        Ok(())
    }

    fn mcast(&mut self, file: &Path, line: &Line) -> Result<()> {
        let err = |m: String| ConfigError::ha(file, line.number, m);
        let [_, iface, group, port, ttl, looped] = line.words.as_slice() else {
            return Err(err(format!(
                "mcast takes an interface, a group, a port, a TTL and a loop flag (mcast eth0 225.0.0.1 694 1 0), got {} values",
                line.words.len() - 1
            )));
        };
        check_iface(iface).map_err(|m| err(format!("mcast: {m}")))?;
        let group = group
            .parse::<IpAddr>()
            .ok()
            .filter(IpAddr::is_multicast)
            .ok_or_else(|| err(format!("mcast: '{group}' is not a multicast address")))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err(format!("mcast: '{port}' is not a UDP port (1-65535)")))?;
        let ttl = ttl
            .parse::<u8>()
            .ok()
            .filter(|t| *t != 0)
            .ok_or_else(|| err(format!("mcast: '{ttl}' is not a TTL (1-255)")))?;
        let looped = match looped.as_str() {
            "0" => false,
            "1" => true,
            other => {
                return Err(err(format!(
                    "mcast: the loop flag is 0 or 1, not '{other}'"
                )))
            }
        };
        self.mcast.push(Mcast {
            iface: iface.clone(),
            group,
            port,
            ttl,
            looped,
        });
        self.ignore(line, "mcast");
        Ok(())
    }

    fn node(&mut self, file: &Path, line: &Line) -> Result<()> {
        if line.words.len() < 2 {
            return Err(ConfigError::ha(
                file,
                line.number,
                "node needs at least one name",
            ));
        }
        for name in &line.words[1..] {
            check_node_name(name).map_err(|m| ConfigError::ha(file, line.number, m))?;
            if let Some((_, first)) = self
                .nodes
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                return Err(ConfigError::ha(
                    file,
                    line.number,
                    format!("node '{name}' listed twice (first on line {first})"),
                ));
            }
            self.nodes.push((name.clone(), line.number));
        }
        Ok(())
    }

    fn ping(&mut self, file: &Path, line: &Line) -> Result<()> {
        if line.words.len() < 2 {
            return Err(ConfigError::ha(
                file,
                line.number,
                "ping needs at least one host (ping 192.168.0.1)",
            ));
        }
        for host in &line.words[1..] {
            if self.ping.len() == MAX_PING_NODES {
                return Err(ConfigError::ha(
                    file,
                    line.number,
                    format!("more than {MAX_PING_NODES} ping nodes; one to three are enough"),
                ));
            }
            self.ping.push(host.clone());
        }
        Ok(())
    }

    fn other(&mut self, file: &Path, line: &Line, name: &str) -> Result<()> {
        if let Some((_, _)) = IGNORED.iter().find(|(d, _)| *d == name) {
            self.ignore(line, name);
            return Ok(());
        }
        let known = USED.iter().copied().chain(IGNORED.iter().map(|(d, _)| *d));
        let hint = did_you_mean(name, known);
        let hint = if hint.is_empty() {
            " (hadisk reads Heartbeat 3's ha.cf directives)".to_owned()
        } else {
            hint
        };
        Err(ConfigError::ha(
            file,
            line.number,
            format!("unknown directive '{}'{hint}", line.words[0]),
        ))
    }

    fn ignore(&mut self, line: &Line, name: &str) {
        let reason = IGNORED
            .iter()
            .find(|(d, _)| *d == name)
            .map_or("not used by hadisk", |(_, r)| r);
        self.ignored.push(HaIgnored {
            line: line.number,
            directive: line.words[0].clone(),
            reason,
        });
    }

    fn finish(self, file: &Path) -> Result<HaCf> {
        let mut warnings = Vec::new();
        let nodes: Vec<String> = self.nodes.into_iter().map(|(n, _)| n).collect();
        if nodes.len() != 2 {
            let listed = if nodes.is_empty() {
                "no node".to_owned()
            } else {
                format!(
                    "{} node{} ({})",
                    nodes.len(),
                    if nodes.len() == 1 { "" } else { "s" },
                    nodes.join(", ")
                )
            };
            return Err(ConfigError::ha_file(
                file,
                format!("names {listed}; hadisk's agent runs a pair: list both nodes with `node NAME` lines"),
            ));
        }
        if self.bcast.is_empty() && self.ucast.is_empty() {
            return Err(ConfigError::ha_file(
                file,
                "has no heartbeat path; add `ucast IFACE PEER-IP` or `bcast IFACE` (mcast is not supported)",
            ));
        }
        if self.bcast.len() + self.ucast.len() > MAX_PATHS {
            return Err(ConfigError::ha_file(
                file,
                format!(
                    "has more than {MAX_PATHS} heartbeat paths (ucast lines and bcast interfaces)"
                ),
            ));
        }
        let keepalive_ms = self.keepalive.map_or(DEFAULT_KEEPALIVE_MS, |(v, _)| v);
        let deadtime_ms = self.deadtime.map_or(DEFAULT_DEADTIME_MS, |(v, _)| v);
        let at = |given: &[Option<u32>], m: String| match given.iter().flatten().next() {
            Some(line) => ConfigError::ha(file, *line, m),
            None => ConfigError::ha_file(file, m),
        };
        let line_of = |g: &Given<u64>| g.as_ref().map(|(_, l)| *l);
        if deadtime_ms <= 2 * keepalive_ms {
            return Err(at(
                &[line_of(&self.deadtime), line_of(&self.keepalive)],
                format!(
                    "deadtime ({deadtime_ms} ms) must be more than twice keepalive ({keepalive_ms} ms), or one lost heartbeat declares the peer dead"
                ),
            ));
        }
        let warntime_ms = self.warntime.map(|(v, _)| v);
        if let Some(w) = warntime_ms {
            if w >= deadtime_ms {
                return Err(at(
                    &[line_of(&self.warntime)],
                    format!("warntime ({w} ms) must be less than deadtime ({deadtime_ms} ms)"),
                ));
            }
            if w <= keepalive_ms {
                warnings.push(HaWarning {
                    file: file.to_path_buf(),
                    line: line_of(&self.warntime),
                    message: format!(
                        "warntime ({w} ms) is not more than keepalive ({keepalive_ms} ms): every heartbeat will look late"
                    ),
                });
            }
        }
        let initdead_ms = self.initdead.map_or(2 * deadtime_ms, |(v, _)| v);
        if initdead_ms < deadtime_ms {
            return Err(at(
                &[line_of(&self.initdead)],
                format!("initdead ({initdead_ms} ms) must be at least deadtime ({deadtime_ms} ms)"),
            ));
        }
        if initdead_ms < 2 * deadtime_ms {
            warnings.push(HaWarning {
                file: file.to_path_buf(),
                line: line_of(&self.initdead),
                message: format!(
                    "initdead ({initdead_ms} ms) is less than twice deadtime ({deadtime_ms} ms); Heartbeat recommends at least twice, for slow network start-up"
                ),
            });
        }
        let auto_failback = match self.auto_failback {
            Some((v, _)) => v,
            None => {
                warnings.push(HaWarning {
                    file: file.to_path_buf(),
                    line: None,
                    message: "auto_failback not set; defaulting to legacy (behaves as on)".into(),
                });
                AutoFailback::Legacy
            }
        };
        Ok(HaCf {
            keepalive_ms,
            deadtime_ms,
            warntime_ms,
            initdead_ms,
            udpport: self.udpport.map_or(DEFAULT_UDPPORT, |(v, _)| v),
            bcast: self.bcast,
            ucast: self.ucast,
            mcast: self.mcast,
            auto_failback,
            nodes,
            ping: self.ping,
            logfile: self.logfile.map(|(v, _)| v),
            debugfile: self.debugfile.map(|(v, _)| v),
            logfacility: self.logfacility.map(|(v, _)| v),
            ignored: self.ignored,
            warnings,
        })
    }
}

/// Checks a node name: it travels in heartbeats and names the node in
/// `haresources`, so it is bounded and printable.
pub(crate) fn check_node_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err(format!(
            "node name '{name}' is longer than {MAX_NODE_NAME_BYTES} bytes (Linux's host-name limit)"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "node name '{name}' may hold only letters, digits, '-', '_' and '.' (it is the host name, `uname -n`)"
        ));
    }
    Ok(())
}
