//! The daemon's own rules around the replication core (`hadisk-core`
//! decides roles, disk states and the link): the superblock flags at
//! attach and detach, the refusal of a demotion while NBD clients have the
//! export open, and the reason a Secondary's export gives its clients.
//! Flags in, decisions out, no I/O.
//!
//! Invariant: every decision that refuses says which resource, why, and
//! what to do.

use std::fmt;

use hadisk_metadata::Flags;

/// A node's role for one resource (DRBD's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "Primary",
            Role::Secondary => "Secondary",
        })
    }
}

/// The local disk's state (DRBD's names, as `status` prints them).
/// `Attaching`, `Consistent` and `Failed` are reached once the peer link and
/// disk-error handling (`on-io-error`) exist; they are kept so the names and
/// the rules that use them are complete.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskState {
    Diskless,
    Attaching,
    Inconsistent,
    Outdated,
    Consistent,
    UpToDate,
    Failed,
}

impl fmt::Display for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskState::Diskless => "Diskless",
            DiskState::Attaching => "Attaching",
            DiskState::Inconsistent => "Inconsistent",
            DiskState::Outdated => "Outdated",
            DiskState::Consistent => "Consistent",
            DiskState::UpToDate => "UpToDate",
            DiskState::Failed => "Failed",
        })
    }
}

/// The peer link's state (DRBD's names). Only `StandAlone` exists until the
/// peer link is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    StandAlone,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connection::StandAlone => "StandAlone",
        })
    }
}

/// One resource's state on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceState {
    pub role: Role,
    pub disk: DiskState,
    pub connection: Connection,
    /// The superblock said Primary without a clean shutdown at attach (or
    /// still carries CRASHED_PRIMARY): the activity-log extents must be
    /// resynced with the peer whichever way the next sync goes.
    pub crashed_primary: bool,
}

/// What attaching a disk finds, and the flags to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach {
    pub state: ResourceState,
    /// The superblock flags to store durably before anything else happens:
    /// CLEAN_SHUTDOWN cleared (a crash from now on is detectable), PRIMARY
    /// cleared (we attach as Secondary), CRASHED_PRIMARY set when found.
    pub flags: Flags,
}

/// The local disk state of a freshly attached disk with no peer, from its
/// superblock flags. DRBD 8.4 attaches a consistent disk as Consistent and,
/// with the default fencing `dont-care`, makes it UpToDate at once; a disk
/// marked outdated (consistent, no longer up to date) stays Outdated; a disk
/// that is not consistent (never synced, or an interrupted sync target) is
/// Inconsistent.
pub fn disk_state_at_attach(flags: Flags) -> DiskState {
    match (
        flags.contains(Flags::CONSISTENT),
        flags.contains(Flags::WAS_UP_TO_DATE),
    ) {
        (true, true) => DiskState::UpToDate,
        (true, false) => DiskState::Outdated,
        (false, _) => DiskState::Inconsistent,
    }
}

/// Attaching as Secondary with no peer.
pub fn attach(flags: Flags) -> Attach {
    let crashed_primary = flags.contains(Flags::CRASHED_PRIMARY)
        || (flags.contains(Flags::PRIMARY) && !flags.contains(Flags::CLEAN_SHUTDOWN));
    let mut stored = flags;
    stored.remove(Flags::CLEAN_SHUTDOWN);
    stored.remove(Flags::PRIMARY);
    stored.set(Flags::CRASHED_PRIMARY, crashed_primary);
    Attach {
        state: ResourceState {
            role: Role::Secondary,
            disk: disk_state_at_attach(flags),
            connection: Connection::StandAlone,
            crashed_primary,
        },
        flags: stored,
    }
}

/// The flags of an orderly detach: not Primary any more, the AL is clean.
pub fn detach_flags(flags: Flags) -> Flags {
    let mut stored = flags;
    stored.remove(Flags::PRIMARY);
    stored.insert(Flags::CLEAN_SHUTDOWN);
    stored
}

/// Decides `secondary` given how many NBD clients have the export open.
pub fn demote(name: &str, state: &ResourceState, clients: usize) -> Result<bool, String> {
    if state.role == Role::Secondary {
        return Ok(false);
    }
    if clients > 0 {
        let (n, are) = if clients == 1 {
            ("1 NBD client is", "it")
        } else {
            ("NBD clients are", "them")
        };
        let n = if clients == 1 {
            n.to_string()
        } else {
            format!("{clients} {n}")
        };
        return Err(format!(
            "{name}: refusing to become Secondary: {n} connected to the export; disconnect {are} \
             first (umount, `nbd-client -d`, stop qemu or nbdfuse)"
        ));
    }
    Ok(true)
}

/// The reason a client of a Secondary's export is refused.
pub fn secondary_refusal(name: &str, node: &str) -> String {
    format!("resource {name} is Secondary on node {node}; connect to the Primary's export")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[Flags]) -> Flags {
        list.iter().fold(Flags::default(), |acc, f| acc | *f)
    }

    #[test]
    fn disk_state_table() {
        let cases = [
            (flags(&[]), DiskState::Inconsistent),
            (flags(&[Flags::WAS_UP_TO_DATE]), DiskState::Inconsistent),
            (flags(&[Flags::CONSISTENT]), DiskState::Outdated),
            (
                flags(&[Flags::CONSISTENT, Flags::WAS_UP_TO_DATE]),
                DiskState::UpToDate,
            ),
            (
                flags(&[Flags::CONSISTENT, Flags::WAS_UP_TO_DATE, Flags::PRIMARY]),
                DiskState::UpToDate,
            ),
        ];
        for (f, want) in cases {
            assert_eq!(disk_state_at_attach(f), want, "flags {f}");
        }
    }

    #[test]
    fn attach_detects_a_crashed_primary_and_clears_clean_shutdown() {
        let good = flags(&[Flags::CONSISTENT, Flags::WAS_UP_TO_DATE]);
        let crashed = attach(good | Flags::PRIMARY);
        assert!(crashed.state.crashed_primary);
        assert_eq!(crashed.flags, good | Flags::CRASHED_PRIMARY);
        assert_eq!(crashed.state.role, Role::Secondary);

        let clean = attach(good | Flags::PRIMARY | Flags::CLEAN_SHUTDOWN);
        assert!(!clean.state.crashed_primary);
        assert_eq!(clean.flags, good);

        // The mark survives a second attach until a resync clears it.
        let again = attach(good | Flags::CRASHED_PRIMARY | Flags::CLEAN_SHUTDOWN);
        assert!(again.state.crashed_primary);
        assert_eq!(again.flags, good | Flags::CRASHED_PRIMARY);
    }

    #[test]
    fn detach_is_clean_and_not_primary() {
        let f = detach_flags(flags(&[Flags::CONSISTENT, Flags::PRIMARY]));
        assert_eq!(f, flags(&[Flags::CONSISTENT, Flags::CLEAN_SHUTDOWN]));
    }

    fn state(role: Role, disk: DiskState) -> ResourceState {
        ResourceState {
            role,
            disk,
            connection: Connection::StandAlone,
            crashed_primary: false,
        }
    }

    #[test]
    fn demote_is_refused_while_clients_are_connected() {
        let p = state(Role::Primary, DiskState::UpToDate);
        assert_eq!(demote("data", &p, 0), Ok(true));
        assert_eq!(
            demote("data", &state(Role::Secondary, DiskState::UpToDate), 3),
            Ok(false)
        );
        assert_eq!(
            demote("data", &p, 1),
            Err(
                "data: refusing to become Secondary: 1 NBD client is connected to the export; \
                 disconnect it first (umount, `nbd-client -d`, stop qemu or nbdfuse)"
                    .to_string()
            )
        );
        assert_eq!(
            demote("data", &p, 2),
            Err(
                "data: refusing to become Secondary: 2 NBD clients are connected to the export; \
                 disconnect them first (umount, `nbd-client -d`, stop qemu or nbdfuse)"
                    .to_string()
            )
        );
    }
}
