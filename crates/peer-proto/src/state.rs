//! The replication states and generation UUIDs that travel on the wire.
//!
//! Names and `Display` strings are DRBD's, so that `status` output and logs
//! read the same as `drbdadm status` for a DRBD user. Each enum has a stable
//! one-byte wire code (`to_wire`/`from_wire`); an unknown code is a protocol
//! error, never a default.
//!
//! Generation UUIDs follow DRBD's convention: bit 0 of a UUID is a flag, not
//! identity. For the bitmap UUID it records "this node was Primary when this
//! generation started" (used by `discard-younger-primary` /
//! `discard-older-primary`); comparisons always mask it out (`Uuids::id`).

use std::fmt;

/// `current` of a disk that `create-md` has just written and that never
/// held data: both sides "just created" means nothing to sync (DRBD's value).
pub const UUID_JUST_CREATED: u64 = 4;

/// Bit 0 of a UUID is a flag, not part of its identity.
pub const UUID_FLAG_MASK: u64 = 1;

/// A node's role, as DRBD names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Exports the device and originates writes.
    Primary,
    /// Receives the Primary's writes; exports nothing.
    Secondary,
    /// The peer's role when we are not connected.
    Unknown,
}

/// A disk's state, as DRBD names it (ordered from worst to best, like DRBD's
/// `enum drbd_disk_state`, so `>=` comparisons read as in DRBD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiskState {
    /// No backing disk attached.
    Diskless,
    /// The backing disk is being attached (metadata being read).
    Attaching,
    /// The disk failed an I/O and was detached.
    Failed,
    /// Being (or to be) synced: its contents are not usable.
    Inconsistent,
    /// Consistent but known to miss writes the peer has.
    Outdated,
    /// Consistent; whether it is up to date is unknown (peer not seen).
    Consistent,
    /// Consistent and known to hold the newest data.
    UpToDate,
}

macro_rules! wire_enum {
    ($ty:ident, $($variant:ident = $code:expr),+ $(,)?) => {
        impl $ty {
            /// The one-byte wire code.
            pub fn to_wire(self) -> u8 {
                match self { $($ty::$variant => $code),+ }
            }
            /// Parses a wire code; `None` for an unknown one.
            pub fn from_wire(code: u8) -> Option<Self> {
                match code { $($code => Some($ty::$variant),)+ _ => None }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($ty::$variant => stringify!($variant)),+ })
            }
        }
    };
}

wire_enum!(Role, Primary = 1, Secondary = 2, Unknown = 3);
wire_enum!(
    DiskState,
    Diskless = 1,
    Attaching = 2,
    Failed = 3,
    Inconsistent = 4,
    Outdated = 5,
    Consistent = 6,
    UpToDate = 7,
);

/// The generation identifiers of one disk (DESIGN.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuids {
    /// The generation the data on this disk belongs to.
    pub current: u64,
    /// The generation at which the dirty bitmap started (0: no bitmap
    /// generation, i.e. not tracking changes for a peer).
    pub bitmap: u64,
    /// The two previous generations, newest first.
    pub history: [u64; 2],
}

impl Uuids {
    /// A freshly created disk.
    pub fn just_created() -> Self {
        Uuids {
            current: UUID_JUST_CREATED,
            bitmap: 0,
            history: [0, 0],
        }
    }

    /// A UUID with its flag bit masked out: what comparisons use.
    pub fn id(uuid: u64) -> u64 {
        uuid & !UUID_FLAG_MASK
    }
}

impl fmt::Display for Uuids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:016X}:{:016X}:{:016X}:{:016X}",
            self.current, self.bitmap, self.history[0], self.history[1]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_drbd_names() {
        assert_eq!(DiskState::UpToDate.to_string(), "UpToDate");
        assert_eq!(Role::Primary.to_string(), "Primary");
        assert_eq!(Role::Unknown.to_string(), "Unknown");
    }

    #[test]
    fn wire_codes_round_trip_and_unknown_is_none() {
        for code in 0..=255u8 {
            if let Some(d) = DiskState::from_wire(code) {
                assert_eq!(d.to_wire(), code);
            }
            if let Some(r) = Role::from_wire(code) {
                assert_eq!(r.to_wire(), code);
            }
        }
        assert_eq!(DiskState::from_wire(0), None);
        assert_eq!(Role::from_wire(9), None);
    }

    #[test]
    fn disk_states_order_like_drbd() {
        assert!(DiskState::UpToDate > DiskState::Consistent);
        assert!(DiskState::Outdated > DiskState::Inconsistent);
        assert!(DiskState::Inconsistent > DiskState::Diskless);
    }
}
