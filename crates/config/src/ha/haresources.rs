//! `haresources`: resource groups, read into [`Haresources`].
//!
//! One group per logical line: `NODE RESOURCE…`, where NODE is the group's
//! preferred node and each resource is `TYPE[::ARG…]`. A group starts left to
//! right and stops right to left. Typed resources:
//!
//! | written | meaning |
//! |---|---|
//! | `hadisk::RES`, `drbddisk::RES` | promote / demote the replicated resource |
//! | `Filesystem::DEV::DIR::FSTYPE[::OPTS]` | mount / unmount |
//! | `IPaddr::IP/PREFIX/IFACE[:LABEL][/BCAST]` (also `IPaddr2`; PREFIX may be a dotted netmask) | the virtual IP |
//! | a bare `IP/PREFIX/IFACE…` | Heartbeat's shorthand for `IPaddr::…` |
//! | `Delay::START[::STOP]` | wait (times as in ha.cf; STOP defaults to START) |
//! | anything else, `NAME[::ARG…]` | the script `resource.d/NAME`, else `/etc/init.d/NAME` |
//!
//! Invariants of a parsed [`Haresources`]: at least one group, each with at
//! least one resource and a valid node name; every argument non-empty; script
//! names are plain file names (no `/`, no leading `.`), so a script is always
//! looked up inside its directories; mount points are absolute. A script
//! name that differs from a built-in type only by case is refused (it is a
//! typo that would otherwise fail only at failover time).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::hacf::{check_node_name, HaCf};
use super::values::{check_iface, parse_time_ms, MAX_IFACE_CHARS};
use super::{logical_lines, Line};
use crate::error::{ConfigError, Result};

/// The most groups: hadisk's agent moves them as a pair's services, and a
/// handful is the norm.
pub const MAX_GROUPS: usize = 16;
/// The most resources in one group.
pub const MAX_GROUP_RESOURCES: usize = 64;

/// Which IP address agent a resource names (both behave the same in hadisk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpAddrKind {
    /// `IPaddr`.
    IPaddr,
    /// `IPaddr2`.
    IPaddr2,
}

/// One resource of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaResource {
    /// `hadisk::RES` / `drbddisk::RES`.
    Hadisk {
        /// The replicated resource's name.
        resource: String,
        /// Written as `drbddisk` (kept to print it back as written).
        drbddisk: bool,
    },
    /// `Filesystem::DEV::DIR::FSTYPE[::OPTS]`.
    Filesystem {
        /// What to mount (a path, `UUID=…` or `LABEL=…`).
        device: String,
        /// The mount point (absolute).
        directory: PathBuf,
        /// The filesystem type (`-t`).
        fstype: String,
        /// Mount options (`-o`).
        options: Option<String>,
    },
    /// `IPaddr::IP/PREFIX/IFACE[:LABEL][/BCAST]`.
    IpAddr {
        /// `IPaddr` or `IPaddr2`.
        kind: IpAddrKind,
        /// The virtual address.
        addr: Ipv4Addr,
        /// The prefix length, 0-32.
        prefix: u8,
        /// The interface (`eth0`).
        iface: String,
        /// The address label, the whole `eth0:0`.
        label: Option<String>,
        /// The broadcast address, when given.
        broadcast: Option<Ipv4Addr>,
    },
    /// `Delay::START[::STOP]`.
    Delay {
        /// Time the start waits.
        start_ms: u64,
        /// Time the stop waits.
        stop_ms: u64,
    },
    /// Any other `NAME[::ARG…]`: a script called with ARG… and
    /// `start|stop|status`.
    Script {
        /// The script's file name.
        name: String,
        /// Its arguments, before the action.
        args: Vec<String>,
    },
}

impl fmt::Display for HaResource {
    /// Heartbeat's spelling, as the resource would be written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HaResource::Hadisk { resource, drbddisk } => {
                let t = if *drbddisk { "drbddisk" } else { "hadisk" };
                write!(f, "{t}::{resource}")
            }
            HaResource::Filesystem {
                device,
                directory,
                fstype,
                options,
            } => {
                write!(f, "Filesystem::{device}::{}::{fstype}", directory.display())?;
                match options {
                    Some(o) => write!(f, "::{o}"),
                    None => Ok(()),
                }
            }
            HaResource::IpAddr {
                kind,
                addr,
                prefix,
                iface,
                label,
                broadcast,
            } => {
                let t = match kind {
                    IpAddrKind::IPaddr => "IPaddr",
                    IpAddrKind::IPaddr2 => "IPaddr2",
                };
                write!(
                    f,
                    "{t}::{addr}/{prefix}/{}",
                    label.as_deref().unwrap_or(iface)
                )?;
                match broadcast {
                    Some(b) => write!(f, "/{b}"),
                    None => Ok(()),
                }
            }
            HaResource::Delay { start_ms, stop_ms } => {
                write!(f, "Delay::{start_ms}ms::{stop_ms}ms")
            }
            HaResource::Script { name, args } => {
                f.write_str(name)?;
                args.iter().try_for_each(|a| write!(f, "::{a}"))
            }
        }
    }
}

/// One line of `haresources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The line it starts on.
    pub line: u32,
    /// The preferred node (Heartbeat's rule: the node a group belongs to is
    /// the one named on its line; with `auto_failback` it returns there).
    pub node: String,
    /// The resources, in start order.
    pub resources: Vec<HaResource>,
}

/// A parsed `haresources` (see the module header for its invariants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Haresources {
    /// The groups, in file order.
    pub groups: Vec<Group>,
}

impl Haresources {
    /// Checks the groups against `ha.cf`: each group's node must be one of
    /// the pair. `file` is the haresources file, for the message.
    pub fn check_nodes(&self, hacf: &HaCf, file: &Path) -> Result<()> {
        for g in &self.groups {
            if !hacf.has_node(&g.node) {
                return Err(ConfigError::ha(
                    file,
                    g.line,
                    format!(
                        "node '{}' is not a `node` in ha.cf (nodes: {}); the first word of a group is its preferred node",
                        g.node,
                        hacf.nodes.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Reads and parses a `haresources` file.
pub fn load_haresources(path: &Path) -> Result<Haresources> {
    parse_haresources(&super::read(path)?, path)
}

/// Parses `haresources` text; `file` names it in errors.
pub fn parse_haresources(text: &str, file: &Path) -> Result<Haresources> {
    let mut groups = Vec::new();
    for line in logical_lines(text) {
        if groups.len() == MAX_GROUPS {
            return Err(ConfigError::ha(
                file,
                line.number,
                format!(
                    "more than {MAX_GROUPS} groups; hadisk's agent handles at most {MAX_GROUPS}"
                ),
            ));
        }
        groups.push(parse_group(&line).map_err(|m| ConfigError::ha(file, line.number, m))?);
    }
    if groups.is_empty() {
        return Err(ConfigError::ha_file(
            file,
            "defines no group; write one line `NODE RESOURCE…` (e.g. NAS1 drbddisk::data Filesystem::/dev/drbd0::/data::ext4)",
        ));
    }
    Ok(Haresources { groups })
}

fn parse_group(line: &Line) -> Result<Group, String> {
    let node = &line.words[0];
    if node.contains("::") {
        return Err(format!(
            "the line starts with the resource '{node}', not a node name: a group is `NODE RESOURCE…`; if it continues the line above, end that line with `\\` and remove any blank line between them"
        ));
    }
    check_node_name(node)?;
    let words = &line.words[1..];
    if words.is_empty() {
        return Err(format!(
            "the group of '{node}' has no resources; list them after the node name"
        ));
    }
    if words.len() > MAX_GROUP_RESOURCES {
        return Err(format!(
            "the group of '{node}' has more than {MAX_GROUP_RESOURCES} resources"
        ));
    }
    let resources = words
        .iter()
        .map(|w| parse_resource(w))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Group {
        line: line.number,
        node: node.clone(),
        resources,
    })
}

/// Names of the built-in types, for the case typo check.
const BUILTIN: &[&str] = &[
    "hadisk",
    "drbddisk",
    "Filesystem",
    "IPaddr",
    "IPaddr2",
    "Delay",
];

/// Parses one `TYPE[::ARG…]` word. Errors start with the word.
pub(crate) fn parse_resource(word: &str) -> Result<HaResource, String> {
    let mut parts = word.split("::");
    let name = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    if name.is_empty() || args.iter().any(|a| a.is_empty()) {
        return Err(format!(
            "'{word}': empty resource type or argument (write TYPE::ARG::ARG)"
        ));
    }
    match name {
        "hadisk" | "drbddisk" => hadisk(word, name == "drbddisk", &args),
        "Filesystem" => filesystem(word, &args),
        "IPaddr" | "IPaddr2" => {
            let kind = if name == "IPaddr" {
                IpAddrKind::IPaddr
            } else {
                IpAddrKind::IPaddr2
            };
            match args.as_slice() {
                [spec] => ip_addr(word, kind, spec),
                _ => Err(format!(
                    "'{word}': {name} takes one argument, IP/PREFIX/IFACE[:LABEL]"
                )),
            }
        }
        "Delay" => delay(word, &args),
        _ if args.is_empty() && looks_like_ipv4(name) => ip_addr(word, IpAddrKind::IPaddr, name),
        _ => script(word, name, &args),
    }
}

fn hadisk(word: &str, drbddisk: bool, args: &[&str]) -> Result<HaResource, String> {
    let t = if drbddisk { "drbddisk" } else { "hadisk" };
    match args {
        [res] if res.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) => {
            Ok(HaResource::Hadisk { resource: (*res).to_owned(), drbddisk })
        }
        [res] => Err(format!("'{word}': '{res}' is not a resource name")),
        [] => Err(format!(
            "'{word}': {t} needs the resource name ({t}::data); hadisk does not promote all resources at once"
        )),
        _ => Err(format!("'{word}': {t} takes one argument, the resource name")),
    }
}

fn filesystem(word: &str, args: &[&str]) -> Result<HaResource, String> {
    let (device, directory, fstype, options) = match args {
        [d, m, t] => (d, m, t, None),
        [d, m, t, o] => (d, m, t, Some((*o).to_owned())),
        [_, _] | [_] | [] => {
            return Err(format!(
                "'{word}': Filesystem needs a device, a mount point and a filesystem type: Filesystem::DEV::DIR::FSTYPE[::OPTS]"
            ))
        }
        _ => return Err(format!("'{word}': Filesystem takes at most 4 arguments, DEV::DIR::FSTYPE::OPTS")),
    };
    if !(device.starts_with('/') || device.starts_with("UUID=") || device.starts_with("LABEL=")) {
        return Err(format!(
            "'{word}': the device '{device}' is not a path, UUID=… or LABEL=…"
        ));
    }
    if !directory.starts_with('/') {
        return Err(format!(
            "'{word}': the mount point '{directory}' is not an absolute path"
        ));
    }
    if !fstype
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!("'{word}': '{fstype}' is not a filesystem type"));
    }
    Ok(HaResource::Filesystem {
        device: (*device).to_owned(),
        directory: PathBuf::from(directory),
        fstype: (*fstype).to_owned(),
        options,
    })
}

/// `IP/PREFIX/IFACE[:LABEL][/BCAST]`.
fn ip_addr(word: &str, kind: IpAddrKind, spec: &str) -> Result<HaResource, String> {
    let parts: Vec<&str> = spec.split('/').collect();
    let (ip, prefix, iface, bcast) = match parts.as_slice() {
        [ip, p, i] => (ip, p, i, None),
        [ip, p, i, b] => (ip, p, i, Some(b)),
        [_] | [_, _] => {
            return Err(format!(
                "'{word}': the address needs its prefix length and interface, IP/PREFIX/IFACE[:LABEL] (e.g. 192.168.0.225/27/eth0:0); hadisk does not guess them"
            ))
        }
        _ => return Err(format!("'{word}': too many '/' parts; write IP/PREFIX/IFACE[:LABEL][/BROADCAST]")),
    };
    let addr: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("'{word}': '{ip}' is not an IPv4 address"))?;
    let prefix = parse_prefix(prefix).ok_or_else(|| {
        format!("'{word}': '{prefix}' is not a prefix length (0-32) or a netmask (255.255.255.224)")
    })?;
    let (dev, label) = match iface.split_once(':') {
        Some((dev, l)) if !l.is_empty() => (dev, Some((*iface).to_owned())),
        Some(_) => return Err(format!("'{word}': the label after ':' is empty")),
        None => (*iface, None),
    };
    check_iface(dev).map_err(|m| format!("'{word}': {m}"))?;
    if iface.len() > MAX_IFACE_CHARS {
        return Err(format!(
            "'{word}': the label '{iface}' is longer than Linux's {MAX_IFACE_CHARS} characters"
        ));
    }
    let broadcast = match bcast {
        Some(b) => Some(
            b.parse()
                .map_err(|_| format!("'{word}': '{b}' is not a broadcast address"))?,
        ),
        None => None,
    };
    Ok(HaResource::IpAddr {
        kind,
        addr,
        prefix,
        iface: dev.to_owned(),
        label,
        broadcast,
    })
}

/// A prefix length, or a contiguous dotted netmask.
fn parse_prefix(s: &str) -> Option<u8> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u8>().ok().filter(|p| *p <= 32);
    }
    let mask = u32::from(s.parse::<Ipv4Addr>().ok()?);
    let ones = mask.leading_ones();
    (mask.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

fn looks_like_ipv4(s: &str) -> bool {
    s.split('/')
        .next()
        .is_some_and(|ip| ip.parse::<Ipv4Addr>().is_ok())
}

fn delay(word: &str, args: &[&str]) -> Result<HaResource, String> {
    let time = |a: &str| parse_time_ms(a).map_err(|m| format!("'{word}': {m}"));
    match args {
        [start] => {
            let start_ms = time(start)?;
            Ok(HaResource::Delay {
                start_ms,
                stop_ms: start_ms,
            })
        }
        [start, stop] => Ok(HaResource::Delay {
            start_ms: time(start)?,
            stop_ms: time(stop)?,
        }),
        _ => Err(format!(
            "'{word}': Delay takes START[::STOP] (seconds or ms)"
        )),
    }
}

fn script(word: &str, name: &str, args: &[&str]) -> Result<HaResource, String> {
    if let Some(b) = BUILTIN.iter().find(|b| b.eq_ignore_ascii_case(name)) {
        return Err(format!("'{word}': unknown resource type '{name}'; did you mean `{b}`? (types are case-sensitive)"));
    }
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '+'));
    if !plain || name.starts_with('.') {
        return Err(format!(
            "'{word}': '{name}' is not a script name (a file name in resource.d/ or /etc/init.d/, without '/')"
        ));
    }
    Ok(HaResource::Script {
        name: name.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    })
}
