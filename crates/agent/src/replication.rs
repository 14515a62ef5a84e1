//! What the agent needs to know about a replicated resource, as
//! `hadisk status --json` reports it (DESIGN.md §1.3), and the three
//! questions the failover rules ask of it.
//!
//! The state names are DRBD's, parsed from the JSON's strings with
//! [`std::str::FromStr`]. The agent keeps its own small enums rather than
//! the core crate's: the JSON strings are the contract between the daemon
//! and the agent, and the agent must not break when the core's internals
//! change.

use std::fmt;
use std::str::FromStr;

use hadisk_config::ha::{Group, HaResource};

/// Generates a DRBD state enum with `Display` and `FromStr` over its names.
macro_rules! drbd_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($name::$v => stringify!($v)),+ })
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $(stringify!($v) => Ok($name::$v),)+
                    _ => Err(UnknownState {
                        kind: stringify!($name),
                        value: s.to_owned(),
                        expected: [$(stringify!($v)),+].join(", "),
                    }),
                }
            }
        }
    };
}

/// A state name the agent does not know (a newer daemon, or a bug).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{value}' in hadisk status (expected one of: {expected})")]
pub struct UnknownState {
    /// Which field.
    pub kind: &'static str,
    /// What it said.
    pub value: String,
    /// The names known.
    pub expected: String,
}

drbd_enum! {
    /// A node's role (`Unknown` for a peer that is not connected).
    Role { Primary, Secondary, Unknown }
}

drbd_enum! {
    /// A disk's state (`DUnknown`: a peer's disk that is not known).
    DiskState { Diskless, Attaching, Inconsistent, Outdated, Consistent, UpToDate, Failed, DUnknown }
}

drbd_enum! {
    /// The replication link's connection state.
    Connection { StandAlone, Connecting, Connected }
}

drbd_enum! {
    /// The replication state of a connected pair.
    Replication { Off, Established, SyncSource, SyncTarget, PausedSyncS, PausedSyncT, VerifyS, VerifyT }
}

/// One resource's state from this node's daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView {
    /// This node's role.
    pub role: Role,
    /// This node's disk.
    pub disk: DiskState,
    /// The replication link.
    pub peer_connection: Connection,
    /// The peer's role as the link shows it.
    pub peer_role: Role,
    /// The peer's disk as the daemon knows it (it may say `Outdated` from
    /// the metadata's peer-outdated flag while disconnected).
    pub peer_disk: DiskState,
    /// Resync or verify in progress, or not.
    pub replication: Replication,
}

impl ReplicaView {
    /// Reads the six fields from `hadisk status --json`'s strings: the
    /// resource's `role` and `disk`, and its peer's `connection`, `role`,
    /// `disk` and `replication`.
    pub fn from_names(
        role: &str,
        disk: &str,
        peer_connection: &str,
        peer_role: &str,
        peer_disk: &str,
        replication: &str,
    ) -> Result<Self, UnknownState> {
        Ok(ReplicaView {
            role: role.parse()?,
            disk: disk.parse()?,
            peer_connection: peer_connection.parse()?,
            peer_role: peer_role.parse()?,
            peer_disk: peer_disk.parse()?,
            replication: replication.parse()?,
        })
    }

    /// Whether this node's data may be served: UpToDate, or Consistent
    /// with the peer known to be Outdated (DESIGN.md §6).
    pub fn disk_ready(&self) -> bool {
        match self.disk {
            DiskState::UpToDate => true,
            DiskState::Consistent => self.peer_disk == DiskState::Outdated,
            _ => false,
        }
    }

    /// Whether the replication link shows a live Primary on the other side:
    /// then the peer is alive whatever the heartbeats say, and promoting
    /// here must not even be tried.
    pub fn peer_is_live_primary(&self) -> bool {
        self.peer_connection == Connection::Connected && self.peer_role == Role::Primary
    }

    /// Whether the peer's disk, as the daemon knows it, may be served:
    /// UpToDate, or Consistent with this node Outdated.
    pub fn peer_disk_ready(&self) -> bool {
        match self.peer_disk {
            DiskState::UpToDate => true,
            DiskState::Consistent => self.disk == DiskState::Outdated,
            _ => false,
        }
    }

    /// Whether the group may be handed over to the peer now: connected,
    /// with the peer's disk ready. A resync to the peer keeps its disk
    /// Inconsistent until it finishes, so this is "the resync finished"; a
    /// peer not connected is unknown, hence not ready.
    pub fn peer_ready(&self) -> bool {
        self.peer_connection == Connection::Connected && self.peer_disk_ready()
    }

    /// Whether the peer is known, through the link, to be unable to serve
    /// (connected, disk not ready); a disconnected peer is not judged.
    pub fn peer_known_unready(&self) -> bool {
        self.peer_connection == Connection::Connected && !self.peer_disk_ready()
    }
}

/// The replicated resources (`hadisk::RES`, `drbddisk::RES`) of a group, in
/// order: the executor asks the daemon about each, and the policy gets one
/// [`crate::policy::DiskGate`] per name.
pub fn replicated_resources(group: &Group) -> Vec<&str> {
    group
        .resources
        .iter()
        .filter_map(|r| match r {
            HaResource::Hadisk { resource, .. } => Some(resource.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_an_error() {
        for d in [
            "Diskless",
            "Attaching",
            "Inconsistent",
            "Outdated",
            "Consistent",
            "UpToDate",
            "Failed",
            "DUnknown",
        ] {
            assert_eq!(d.parse::<DiskState>().unwrap().to_string(), d);
        }
        assert_eq!(
            "PausedSyncT".parse::<Replication>(),
            Ok(Replication::PausedSyncT)
        );
        assert_eq!(
            "uptodate".parse::<DiskState>().unwrap_err().to_string(),
            "unknown DiskState 'uptodate' in hadisk status (expected one of: Diskless, Attaching, Inconsistent, Outdated, Consistent, UpToDate, Failed, DUnknown)"
        );
        assert_eq!("Connected".parse::<Connection>(), Ok(Connection::Connected));
        assert_eq!("Unknown".parse::<Role>(), Ok(Role::Unknown));
        let seed = hadisk_config::ha::parse_haresources(
            "NAS1 drbddisk::data Filesystem::/dev/drbd0::/data::ext4 hadisk::logs nfs",
            std::path::Path::new("haresources"),
        )
        .unwrap();
        assert_eq!(replicated_resources(&seed.groups[0]), vec!["data", "logs"]);
        let v = ReplicaView::from_names(
            "Secondary",
            "UpToDate",
            "Connected",
            "Primary",
            "UpToDate",
            "Established",
        )
        .unwrap();
        assert!(v.disk_ready() && v.peer_is_live_primary() && v.peer_ready());
        assert_eq!(
            ReplicaView::from_names("Secondary", "UpToDate", "WFConnection", "Primary", "UpToDate", "Established")
                .unwrap_err()
                .to_string(),
            "unknown Connection 'WFConnection' in hadisk status (expected one of: StandAlone, Connecting, Connected)"
        );
    }
}
