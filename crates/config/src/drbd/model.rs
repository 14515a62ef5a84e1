//! The typed model of DRBD resource files, and the lookups the daemon needs.
//!
//! Invariants established by the parser (so users of the model need not
//! check): every resource has exactly two hosts with distinct names, each
//! with an address and a backing disk; every numeric value is within DRBD's
//! limits (`drbd_limits.h`); defaults are DRBD 8.4's. Times are converted to
//! milliseconds except the `startup` waits, which DRBD gives in seconds.
//!
//! DRBD's units, per option (drbd.conf(5), drbd_limits.h):
//!
//! | option | DRBD unit | default | field |
//! |---|---|---|---|
//! | `wfc-timeout`, `degr-wfc-timeout`, `outdated-wfc-timeout` | seconds (0 = wait forever) | 0 | `*_s` |
//! | `timeout` | tenths of a second | 60 (6 s) | `timeout_ms` |
//! | `ping-timeout` | tenths of a second | 5 (0.5 s) | `ping_timeout_ms` |
//! | `ping-int` | seconds | 10 | `ping_int_ms` |
//! | `connect-int` | seconds | 10 | `connect_int_ms` |
//! | `c-plan-ahead` | tenths of a second | 20 (2 s) | `c_plan_ahead_ms` |
//! | `resync-rate` (8.3: `syncer { rate }`) | KiB/s without a suffix; `K`, `M`, `G` (powers of 1024) or `s` (512-byte sectors) | 250K | `resync_rate_bytes_per_s` |
//! | `c-fill-target` | 512-byte sectors without a suffix; `K`, `M`, `G`, `s` (0: hadisk's default, as hadisk does not plan from `c-delay-target`) | 100s (50 KiB) | `c_fill_target_bytes` |
//! | `c-min-rate` | KiB/s without a suffix (0 = never throttle for application I/O) | 250K | `c_min_rate_bytes_per_s` |
//! | `c-max-rate` | KiB/s without a suffix | **none** (DRBD: 100M) | `c_max_rate_bytes_per_s` (0 = none) |
//!
//! `c-max-rate` departs from DRBD on purpose: DRBD's 100 MiB/s cap holds a
//! resync back on any faster link; hadisk's resync takes the whole link when
//! there is no application I/O unless `c-max-rate` is set. `c-delay-target`
//! is parsed and reported as ignored (the controller measures the
//! application's rate, not the link's delay: see `hadisk-core`'s `rate`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::error::{ConfigError, Result};

/// Where a split-brain victim saves its discarded blocks when the resource
/// file names no `split-brain-dir`.
pub const DEFAULT_SPLIT_BRAIN_DIR: &str = "/var/lib/hadisk/split-brain";

/// A whole configuration: the `global` section and every resource.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// The `global { }` section.
    pub global: Global,
    /// The resources, in the order the files define them.
    pub resources: Vec<Resource>,
}

/// The `global { }` section. hadisk implements none of its options
/// (`usage-count`, `minor-count`, `dialog-refresh`, …); they are listed in
/// `ignored`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Global {
    /// Options parsed and not acted upon.
    pub ignored: Vec<Ignored>,
}

/// A DRBD option hadisk parses but does not act upon, and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The section it was in: `global`, `net`, `disk`, `startup`, `options`,
    /// `syncer`, `resource`, `on`.
    pub section: String,
    /// The option's name, e.g. `max-epoch-size`.
    pub option: String,
    /// The file that set it (the `common` section's file when inherited).
    pub file: PathBuf,
    /// Its 1-based line.
    pub line: u32,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} {{ {} }} is ignored by hadisk",
            self.file.display(),
            self.line,
            self.section,
            self.option
        )
    }
}

/// One `resource NAME { }`, with the `common` section folded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its name (`data`).
    pub name: String,
    /// The file that defines it.
    pub file: PathBuf,
    /// The line of its `resource` keyword.
    pub line: u32,
    /// `startup { }`.
    pub startup: Startup,
    /// `net { }` (and 8.3's resource-level `protocol`).
    pub net: Net,
    /// `disk { }` options (and 8.3's `syncer { }` ones).
    pub disk: Disk,
    /// `handlers { }`: handler name (`split-brain`) → shell command.
    pub handlers: BTreeMap<String, String>,
    /// The two nodes, in file order (`on NAME { }` and `floating ADDR { }`).
    pub hosts: Vec<Host>,
    /// hadisk's `nbd-listen ADDR:PORT;` at resource level: a TCP address for
    /// the NBD export (besides the Unix socket). A host's own `nbd-listen`
    /// wins; see [`Host::nbd_listen`].
    pub nbd_listen: Option<SocketAddr>,
    /// hadisk's `split-brain-dir PATH;` at resource level: where a node whose
    /// changes are discarded after a split brain saves the blocks it loses
    /// (DRBD throws them away). `None`: the daemon's default directory
    /// ([`DEFAULT_SPLIT_BRAIN_DIR`]), unless [`Self::split_brain_save_off`].
    pub split_brain_dir: Option<PathBuf>,
    /// `split-brain-dir off;`: discarded blocks are not saved (DRBD's
    /// behaviour).
    pub split_brain_save_off: bool,
    /// DRBD options set for this resource (or in `common`) that hadisk
    /// parses and does not act upon.
    pub ignored: Vec<Ignored>,
}

/// `startup { }`. DRBD's defaults: every wait 0 (forever), no
/// `become-primary-on`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Startup {
    /// `wfc-timeout`: how long `up` waits for the peer, seconds; 0 = forever.
    pub wfc_timeout_s: u32,
    /// `degr-wfc-timeout`: the wait when this node was degraded before it
    /// went down, seconds; 0 = forever.
    pub degr_wfc_timeout_s: u32,
    /// `outdated-wfc-timeout`: the wait when the peer was outdated, seconds;
    /// 0 = forever.
    pub outdated_wfc_timeout_s: u32,
    /// `become-primary-on HOST|both`: promote on startup.
    pub become_primary_on: Option<String>,
}

/// DRBD's replication protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Asynchronous: a write completes when it is on the local disk and in
    /// the local send buffer.
    A,
    /// Memory-synchronous: completes when the peer has received it.
    B,
    /// Synchronous: completes when both disks have it.
    #[default]
    C,
}

/// Defines an enum of DRBD's keyword values with `Display`, `ALL` and
/// lookup by name.
macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }
        impl $name {
            /// Every value with its DRBD name.
            pub const ALL: &'static [($name, &'static str)] = &[$(($name::$variant, $text),)+];
            /// The value DRBD spells `name`.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
            }
            /// DRBD's name of this value.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

keyword_enum! {
    /// `after-sb-0pri`: split brain detected, neither node Primary.
    AfterSb0Pri {
        /// Do not sync; disconnect and report.
        #[default]
        Disconnect = "disconnect",
        /// Discard the data of the node that became Primary last.
        DiscardYoungerPrimary = "discard-younger-primary",
        /// Discard the data of the node that became Primary first.
        DiscardOlderPrimary = "discard-older-primary",
        /// If one node wrote nothing, sync from the other.
        DiscardZeroChanges = "discard-zero-changes",
        /// Discard the node with fewer changed blocks.
        DiscardLeastChanges = "discard-least-changes",
        /// Discard this node's data.
        DiscardLocal = "discard-local",
        /// Discard the peer's data.
        DiscardRemote = "discard-remote",
    }
}

keyword_enum! {
    /// `after-sb-1pri`: split brain detected, one node Primary.
    AfterSb1Pri {
        /// Do not sync; disconnect and report.
        #[default]
        Disconnect = "disconnect",
        /// Apply the `after-sb-0pri` policy if its result agrees with the roles.
        Consensus = "consensus",
        /// Apply the `after-sb-0pri` policy even against the Primary.
        ViolentlyAs0p = "violently-as0p",
        /// Discard the Secondary's data.
        DiscardSecondary = "discard-secondary",
        /// Apply `after-sb-0pri`; the Primary losing runs `pri-lost-after-sb`.
        CallPriLostAfterSb = "call-pri-lost-after-sb",
    }
}

keyword_enum! {
    /// `after-sb-2pri`: split brain detected, both nodes Primary.
    AfterSb2Pri {
        /// Do not sync; disconnect and report.
        #[default]
        Disconnect = "disconnect",
        /// Apply the `after-sb-0pri` policy regardless of roles.
        ViolentlyAs0p = "violently-as0p",
        /// Apply `after-sb-0pri`; the Primary losing runs `pri-lost-after-sb`.
        CallPriLostAfterSb = "call-pri-lost-after-sb",
    }
}

keyword_enum! {
    /// `on-io-error`: what a local disk error does.
    OnIoError {
        /// Report the error to the upper layers (the NBD client).
        PassOn = "pass_on",
        /// Run the `local-io-error` handler.
        CallLocalIoError = "call-local-io-error",
        /// Detach the disk and go on diskless, serving from the peer.
        #[default]
        Detach = "detach",
    }
}

impl Protocol {
    /// The protocol DRBD spells `name` (case-insensitive, as drbdsetup).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "A" | "a" => Some(Protocol::A),
            "B" | "b" => Some(Protocol::B),
            "C" | "c" => Some(Protocol::C),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::A => "A",
            Protocol::B => "B",
            Protocol::C => "C",
        })
    }
}

/// `net { }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    /// `protocol`.
    pub protocol: Protocol,
    /// `shared-secret`: authenticates the peer link (challenge-response).
    pub shared_secret: Option<String>,
    /// `cram-hmac-alg` (`sha1`, `sha256`, …): the challenge's HMAC.
    pub cram_hmac_alg: Option<String>,
    /// `after-sb-0pri`.
    pub after_sb_0pri: AfterSb0Pri,
    /// `after-sb-1pri`.
    pub after_sb_1pri: AfterSb1Pri,
    /// `after-sb-2pri`.
    pub after_sb_2pri: AfterSb2Pri,
    /// `csums-alg`: checksum-based resync (send only blocks that differ).
    pub csums_alg: Option<String>,
    /// `verify-alg`: the digest of online verify.
    pub verify_alg: Option<String>,
    /// `timeout` (DRBD: tenths of a second): the peer must answer a data
    /// packet within this.
    pub timeout_ms: u64,
    /// `ping-int` (DRBD: seconds): idle time before a keep-alive ping.
    pub ping_int_ms: u64,
    /// `ping-timeout` (DRBD: tenths of a second): the ping's answer deadline.
    pub ping_timeout_ms: u64,
    /// `connect-int` (DRBD: seconds): time between connection attempts.
    pub connect_int_ms: u64,
    /// `max-buffers`: in-flight pages per connection.
    pub max_buffers: u32,
    /// `allow-two-primaries`.
    pub allow_two_primaries: bool,
    /// hadisk's `tcp-congestion NAME;`: the TCP congestion control of the
    /// peer link's sockets; `None` (`tcp-congestion system;`) keeps the
    /// kernel's default. The default is `cubic`, not the system's: a pacing
    /// algorithm such as BBR spreads each replicated write's segments over
    /// time, and under protocol C every write waits for its last segment.
    pub tcp_congestion: Option<String>,
    /// `sndbuf-size` in bytes: the peer link's TCP send buffer; 0 (the
    /// default) lets the kernel autotune it, as in DRBD since 8.0.13.
    pub sndbuf_bytes: u64,
    /// `rcvbuf-size` in bytes: the receive buffer, 0 = autotune.
    pub rcvbuf_bytes: u64,
}

/// DRBD's limit on `sndbuf-size` and `rcvbuf-size` (drbd_limits.h: "a tcp
/// send buffer of more than 10M" is not useful).
pub const SOCKET_BUFFER_MAX_BYTES: u64 = 10 << 20;

/// The peer link's congestion control when the resource file names none.
pub const DEFAULT_TCP_CONGESTION: &str = "cubic";

impl Default for Net {
    fn default() -> Self {
        Net {
            protocol: Protocol::C,
            shared_secret: None,
            cram_hmac_alg: None,
            after_sb_0pri: AfterSb0Pri::Disconnect,
            after_sb_1pri: AfterSb1Pri::Disconnect,
            after_sb_2pri: AfterSb2Pri::Disconnect,
            csums_alg: None,
            verify_alg: None,
            timeout_ms: 6_000,
            ping_int_ms: 10_000,
            ping_timeout_ms: 500,
            connect_int_ms: 10_000,
            max_buffers: 2048,
            allow_two_primaries: false,
            tcp_congestion: Some(DEFAULT_TCP_CONGESTION.to_string()),
            sndbuf_bytes: 0,
            rcvbuf_bytes: 0,
        }
    }
}

/// `disk { }` (and the 8.3 `syncer { }` options that moved there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `on-io-error`.
    pub on_io_error: OnIoError,
    /// `resync-rate` (8.3: `syncer { rate }`), bytes per second.
    pub resync_rate_bytes_per_s: u64,
    /// `c-plan-ahead` (DRBD: tenths of a second): the resync controller's
    /// horizon; 0 turns the dynamic controller off (fixed `resync-rate`).
    pub c_plan_ahead_ms: u64,
    /// `c-fill-target`: resync bytes in flight while the application writes.
    pub c_fill_target_bytes: u64,
    /// `c-min-rate`: the resync's floor under application I/O; 0 = the
    /// resync is never throttled for application I/O.
    pub c_min_rate_bytes_per_s: u64,
    /// `c-max-rate`: a cap on the dynamic controller; 0 = none (hadisk's
    /// default, see the module header).
    pub c_max_rate_bytes_per_s: u64,
    /// `al-extents`: activity-log extents (4 MiB each) hot at once.
    pub al_extents: u32,
    /// `disk-flushes` (8.3: `no-disk-flushes` turns it off).
    pub disk_flushes: bool,
    /// `md-flushes` (8.3: `no-md-flushes` turns it off).
    pub md_flushes: bool,
}

impl Default for Disk {
    fn default() -> Self {
        Disk {
            on_io_error: OnIoError::Detach,
            resync_rate_bytes_per_s: 250 * 1024,
            c_plan_ahead_ms: 2_000,
            c_fill_target_bytes: 50 * 1024,
            c_min_rate_bytes_per_s: 250 * 1024,
            c_max_rate_bytes_per_s: 0,
            al_extents: 1237,
            disk_flushes: true,
            md_flushes: true,
        }
    }
}

/// Where a host keeps its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MetaDisk {
    /// At the end of the backing disk.
    #[default]
    Internal,
    /// On a separate device; `index` is DRBD's `[N]` slot (fixed 128 MiB
    /// areas) or `None` for `flexible-meta-disk` / `meta-disk PATH`.
    External {
        /// The metadata device.
        path: PathBuf,
        /// The slot index, when given.
        index: Option<u32>,
    },
}

/// One node of a resource: `on NAME { }` or `floating ADDR { }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The `on` name (matched against `--node`); for `floating`, the address
    /// as written.
    pub name: String,
    /// Declared with `floating` (matched by local address, not by name).
    pub floating: bool,
    /// `device /dev/nbdN [minor N];` — the kernel NBD device to attach, when
    /// given.
    pub device: Option<PathBuf>,
    /// `device … minor N;` or `device minor N;`.
    pub minor: Option<u32>,
    /// `disk`: the backing disk.
    pub disk: PathBuf,
    /// `address [ipv4|ipv6] IP:PORT`: the replication link's address.
    pub address: SocketAddr,
    /// `meta-disk` (`internal` when absent).
    pub meta_disk: MetaDisk,
    /// `node-id` (DRBD 9).
    pub node_id: Option<u32>,
    /// hadisk's `nbd-listen ADDR:PORT;`: this host's own, else the resource's.
    pub nbd_listen: Option<SocketAddr>,
    /// The line of the `on`/`floating` keyword.
    pub line: u32,
}

fn host_list(hosts: &[Host]) -> String {
    hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// DRBD compares the `on` name with the node name; hadisk also accepts a
/// case-insensitive match and a match of the short name (before the first
/// `.`), since host names are case-insensitive and the seed's `NAS1` is
/// often `nas1.example.com` in `uname -n`.
fn host_matches(on_name: &str, node: &str) -> bool {
    let short = |s: &str| s.split('.').next().unwrap_or(s).to_ascii_lowercase();
    on_name == node || on_name.eq_ignore_ascii_case(node) || short(on_name) == short(node)
}

impl Config {
    /// The resource called `name`, or an error listing the defined ones.
    pub fn resource(&self, name: &str) -> Result<&Resource> {
        self.resources
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                let defined = if self.resources.is_empty() {
                    "none".to_owned()
                } else {
                    self.resources
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                ConfigError::UnknownResource {
                    name: name.to_owned(),
                    defined,
                }
            })
    }

    /// Every ignored option: `global`'s, then each resource's.
    pub fn ignored(&self) -> impl Iterator<Item = &Ignored> {
        self.global
            .ignored
            .iter()
            .chain(self.resources.iter().flat_map(|r| r.ignored.iter()))
    }
}

impl Resource {
    /// This node's `on` section. Exact name first; then see `host_matches`.
    pub fn this_host(&self, node_name: &str) -> Result<&Host> {
        let on = || self.hosts.iter().filter(|h| !h.floating);
        on().find(|h| h.name == node_name)
            .or_else(|| on().find(|h| host_matches(&h.name, node_name)))
            .ok_or_else(|| ConfigError::HostNotDefined {
                resource: self.name.clone(),
                host: node_name.to_owned(),
                hosts: host_list(&self.hosts),
            })
    }

    /// The host that is not this node.
    pub fn peer_host(&self, node_name: &str) -> Result<&Host> {
        let me = self.this_host(node_name)?;
        self.hosts
            .iter()
            .find(|h| !std::ptr::eq(*h, me))
            .ok_or_else(|| ConfigError::NoPeer {
                resource: self.name.clone(),
                host: node_name.to_owned(),
                hosts: host_list(&self.hosts),
            })
    }

    /// The host (`on` or `floating`) whose address is one of `local_ips`
    /// (how drbdadm picks a `floating` section).
    pub fn host_by_address(&self, local_ips: &[IpAddr]) -> Option<&Host> {
        self.hosts
            .iter()
            .find(|h| local_ips.contains(&h.address.ip()))
    }
}
