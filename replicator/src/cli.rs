//! The command line (DESIGN.md §1.1): global options, each also read from an
//! environment variable, and one subcommand per administrative action.
//!
//! The names and flags are a contract that tests and users' scripts depend
//! on: change them only together with DESIGN.md.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// hadisk: a userspace, DRBD-style replicated block device.
#[derive(Debug, Parser)]
#[command(name = "hadisk", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand understands.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// A `.res` file, or a directory whose `*.res` files are read.
    #[arg(
        long,
        global = true,
        env = "HADISK_CONFIG",
        default_value = "/etc/hadisk"
    )]
    pub config: PathBuf,
    /// Which `on NAME { }` section is this node (default: the host name).
    #[arg(long, global = true, env = "HADISK_NODE")]
    pub node: Option<String>,
    /// Holds the control socket `hadisk.sock` and the NBD sockets `RES.nbd`.
    #[arg(
        long,
        global = true,
        env = "HADISK_RUN_DIR",
        default_value = "/run/hadisk"
    )]
    pub run_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write fresh internal metadata at the end of this node's disk.
    CreateMd {
        resource: String,
        /// Overwrite existing metadata, or a filesystem whose tail it would cover.
        #[arg(long)]
        force: bool,
        /// Do not ask; used with --force by scripts.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Print the metadata: sizes, flags, generation UUIDs, dirty-bitmap count.
    DumpMd {
        resource: String,
        #[arg(long)]
        json: bool,
    },
    /// Run this node's daemon in the foreground (what a systemd unit runs).
    Daemon,
    /// Attach the disk and start the peer link, as Secondary.
    Up {
        resource: String,
        /// Wait for the peer as DRBD's init script does (wfc-timeout / degr-wfc-timeout).
        #[arg(long)]
        wait: bool,
    },
    /// Tear the resource down: disconnect, detach.
    Down { resource: String },
    /// Promote; `--force` declares this node's data the good copy.
    Primary {
        resource: String,
        #[arg(long)]
        force: bool,
    },
    /// Demote; refused while NBD clients have the device open.
    Secondary { resource: String },
    /// Connect to the peer.
    Connect {
        resource: String,
        /// Split-brain recovery: this node's changes are discarded.
        #[arg(long)]
        discard_my_data: bool,
    },
    /// Disconnect from the peer and stay StandAlone.
    Disconnect { resource: String },
    /// Discard this node's data: full resync from the peer (this node SyncTarget).
    Invalidate { resource: String },
    /// Discard the peer's data: full resync to it (the peer SyncTarget).
    InvalidateRemote { resource: String },
    /// Online verify: compare every block with the peer by digest (verify-alg),
    /// mark differences out of sync; the next connect resyncs them.
    Verify { resource: String },
    /// Pause a resync (PausedSyncS/PausedSyncT on both nodes) until `resume-sync`.
    PauseSync { resource: String },
    /// Resume a resync paused with `pause-sync` on this node.
    ResumeSync { resource: String },
    /// State as `drbdadm status` shows it.
    Status {
        resource: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One line per resource as `drbd-overview` shows it.
    Overview,
    /// The failover agent (Heartbeat-compatible `ha.cf`, `authkeys`, `haresources`).
    Agent {
        /// Directory holding `ha.cf`, `authkeys` and `haresources`.
        #[arg(long, default_value = "/etc/hadisk/ha.d")]
        ha_dir: PathBuf,
        /// Without one: run the agent in the foreground.
        #[command(subcommand)]
        action: Option<AgentAction>,
    },
    /// A complete two-node pair on this machine, in a temporary directory.
    Demo,
}

/// `hadisk agent ACTION`: talk to the running agent (its `agent.sock` in the
/// run directory).
#[derive(Debug, Clone, Subcommand)]
pub enum AgentAction {
    /// Who holds each group, the peer's last heartbeat age, each resource's state.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Hand the groups to the peer while it is alive (as hb_standby).
    Standby,
    /// Take the groups to this node (as hb_takeover); also retries a failed start.
    Takeover,
    /// Back to the automatic policy after standby or takeover.
    Auto,
}
