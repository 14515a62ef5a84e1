//! Connection and replication states with DRBD's names (`Display` prints
//! exactly the name `drbdadm status` shows). Roles and disk states travel
//! on the wire and live in `hadisk-peer-proto`.

use std::fmt;

/// The state of the link to the peer (DRBD 9's connection states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Not trying to connect (`disconnect`, or refused: split brain, …).
    StandAlone,
    /// Dialing / waiting for the peer, or the handshake is running.
    Connecting,
    /// Handshake done: writes are mirrored.
    Connected,
}

/// What replication does over a connected link (DRBD's replication states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    Off,
    Established,
    SyncSource,
    SyncTarget,
    PausedSyncS,
    PausedSyncT,
    VerifyS,
    VerifyT,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Display for Replication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_drbds() {
        assert_eq!(Connection::StandAlone.to_string(), "StandAlone");
        assert_eq!(Replication::PausedSyncT.to_string(), "PausedSyncT");
        assert_eq!(Replication::VerifyS.to_string(), "VerifyS");
    }
}
