//! DRBD's option names per section (drbd-utils `config_flags.c`, drbd.conf(5)
//! for 8.3, 8.4 and 9), split into the ones hadisk acts upon and the ones it
//! parses and reports as ignored. A keyword in neither list is an error, with
//! a suggestion from both.

/// `global { }`: all ignored.
pub const GLOBAL_IGNORED: &[&str] = &[
    "usage-count",
    "minor-count",
    "dialog-refresh",
    "disable-ip-verification",
    "cmd-timeout-short",
    "cmd-timeout-medium",
    "cmd-timeout-long",
    "udev-always-use-vnr",
    "hostname",
];

/// `startup { }` options hadisk implements.
pub const STARTUP_IMPLEMENTED: &[&str] = &[
    "wfc-timeout",
    "degr-wfc-timeout",
    "outdated-wfc-timeout",
    "become-primary-on",
];
/// `startup { }` options parsed and ignored.
pub const STARTUP_IGNORED: &[&str] = &["wait-after-sb", "stacked-timeouts"];

/// `net { }` options hadisk implements.
pub const NET_IMPLEMENTED: &[&str] = &[
    "protocol",
    "shared-secret",
    "cram-hmac-alg",
    "after-sb-0pri",
    "after-sb-1pri",
    "after-sb-2pri",
    "csums-alg",
    "verify-alg",
    "timeout",
    "ping-int",
    "ping-timeout",
    "connect-int",
    "max-buffers",
    "allow-two-primaries",
    "sndbuf-size",
    "rcvbuf-size",
    // hadisk's addition: the peer link's TCP congestion control.
    "tcp-congestion",
];
/// `net { }` options parsed and ignored.
pub const NET_IGNORED: &[&str] = &[
    "max-epoch-size",
    "unplug-watermark",
    "ko-count",
    "always-asbp",
    "rr-conflict",
    "data-integrity-alg",
    "tcp-cork",
    "no-tcp-cork",
    "on-congestion",
    "congestion-fill",
    "congestion-extents",
    "csums-after-crash-only",
    "use-rle",
    "socket-check-timeout",
    "discard-my-data",
    "fencing",
    "transport",
    "allow-remote-read",
    "load-balance-paths",
    "tls",
    "rdma-ctrl-rcvbuf-size",
    "rdma-ctrl-sndbuf-size",
];

/// `disk { }` options hadisk implements (`no-*` are 8.3's spellings).
pub const DISK_IMPLEMENTED: &[&str] = &[
    "on-io-error",
    "resync-rate",
    "c-plan-ahead",
    "c-fill-target",
    "c-min-rate",
    "c-max-rate",
    "al-extents",
    "disk-flushes",
    "md-flushes",
    "no-disk-flushes",
    "no-md-flushes",
];
/// `disk { }` options parsed and ignored.
pub const DISK_IGNORED: &[&str] = &[
    "fencing",
    "disk-barrier",
    "disk-drain",
    "no-disk-barrier",
    "no-disk-drain",
    "use-bmbv",
    "resync-after",
    "al-updates",
    "discard-zeroes-if-aligned",
    "disable-write-same",
    "c-delay-target",
    "disk-timeout",
    "read-balancing",
    "rs-discard-granularity",
    "size",
    "max-bio-bvecs",
    "bitmap",
];

/// 8.3's `syncer { }` options hadisk implements (they moved to `disk` and
/// `net` in 8.4).
pub const SYNCER_IMPLEMENTED: &[&str] = &[
    "rate",
    "al-extents",
    "verify-alg",
    "csums-alg",
    "c-plan-ahead",
    "c-fill-target",
    "c-min-rate",
    "c-max-rate",
];
/// `syncer { }` options parsed and ignored.
pub const SYNCER_IGNORED: &[&str] = &[
    "after",
    "use-rle",
    "cpu-mask",
    "delay-probe-volume",
    "delay-probe-interval",
    "throttle-threshold",
    "hold-off-threshold",
    "c-delay-target",
    "on-no-data-accessible",
];

/// `options { }` (resource options, 8.4 and 9): all ignored.
pub const OPTIONS_IGNORED: &[&str] = &[
    "cpu-mask",
    "on-no-data-accessible",
    "auto-promote",
    "auto-promote-timeout",
    "max-io-depth",
    "quorum",
    "on-no-quorum",
    "quorum-minimum-redundancy",
    "peer-ack-window",
    "peer-ack-delay",
    "twopc-timeout",
    "twopc-retry-timeout",
    "on-suspended-primary-outdated",
];

/// `handlers { }` names; their commands are kept in `Resource::handlers`.
pub const HANDLERS: &[&str] = &[
    "pri-on-incon-degr",
    "pri-lost-after-sb",
    "pri-lost",
    "fence-peer",
    "unfence-peer",
    "local-io-error",
    "split-brain",
    "initial-split-brain",
    "before-resync-target",
    "after-resync-target",
    "before-resync-source",
    "out-of-sync",
    "quorum-lost",
    "disconnected",
];

/// Keywords at the top of a file.
pub const TOP_LEVEL: &[&str] = &["global", "common", "resource", "include", "skip"];

/// Keywords inside `resource NAME { }`; `common { }` allows the sections
/// and `protocol` only.
pub const RESOURCE_KEYWORDS: &[&str] = &[
    "startup",
    "net",
    "disk",
    "handlers",
    "options",
    "syncer",
    "on",
    "floating",
    "volume",
    "device",
    "meta-disk",
    "flexible-meta-disk",
    "protocol",
    "node-id",
    "nbd-listen",
    "split-brain-dir",
    "connection",
    "connection-mesh",
    "stacked-on-top-of",
    "skip",
];

/// Resource-level keywords parsed and ignored (DRBD 9 multi-node sections).
pub const RESOURCE_IGNORED: &[&str] = &["connection", "connection-mesh"];

/// Keywords inside `on HOST { }` and `floating ADDR { }`.
pub const HOST_KEYWORDS: &[&str] = &[
    "device",
    "disk",
    "address",
    "meta-disk",
    "flexible-meta-disk",
    "node-id",
    "volume",
    "nbd-listen",
    "proxy",
];

/// Keywords inside `volume N { }`.
pub const VOLUME_KEYWORDS: &[&str] = &["device", "disk", "meta-disk", "flexible-meta-disk"];
