//! `ha.cf` line by line: each directive's value checked and recorded in a
//! [`Builder`], duplicates of single-valued directives refused, Heartbeat's
//! unused directives recorded as ignored, unknown ones refused with a
//! suggestion. Whole-file rules come after, in `checks`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{check_node_name, AutoFailback, HaIgnored, Mcast, Ucast, MAX_PING_NODES};
use crate::error::{ConfigError, Result};
use crate::ha::values::{check_iface, did_you_mean, parse_bool, parse_time_ms};
use crate::ha::Line;

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

/// The directives hadisk uses (for suggestions).
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

/// A scalar directive's value and the line it was given on.
pub(super) type Given<T> = Option<(T, u32)>;

/// What the lines said, with the line of each single-valued directive.
#[derive(Default)]
pub(super) struct Builder {
    pub(super) keepalive: Given<u64>,
    pub(super) deadtime: Given<u64>,
    pub(super) warntime: Given<u64>,
    pub(super) initdead: Given<u64>,
    pub(super) udpport: Given<u16>,
    pub(super) auto_failback: Given<AutoFailback>,
    pub(super) logfile: Given<PathBuf>,
    pub(super) debugfile: Given<PathBuf>,
    pub(super) logfacility: Given<String>,
    pub(super) bcast: Vec<String>,
    pub(super) ucast: Vec<Ucast>,
    pub(super) mcast: Vec<Mcast>,
    pub(super) nodes: Vec<(String, u32)>,
    pub(super) ping: Vec<String>,
    pub(super) ignored: Vec<HaIgnored>,
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
    /// Records one logical line.
    pub(super) fn directive(&mut self, file: &Path, line: &Line) -> Result<()> {
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
}
