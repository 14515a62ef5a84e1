//! Generation-UUID bookkeeping (DESIGN.md §4), pure functions on [`Uuids`].
//!
//! Invariants: a new generation never loses the UUID the peer may still
//! hold as its current one (it goes to `bitmap`, or `bitmap` is already
//! set and nothing changes); bit 0 of a generated UUID records whether this
//! node was Primary when its data split from the peer's (DRBD's
//! `UI_BITMAP & 1`, which `discard-younger-primary` / `-older-primary`
//! read): `true` for a Primary that lost its peer, `false` for a node
//! promoted while disconnected.

use hadisk_peer_proto::{Uuids, UUID_JUST_CREATED};

/// Starts a new data generation while disconnected (promotion, or a Primary
/// losing its peer), as DRBD's `drbd_uuid_new_current` under its callers'
/// `uuid[UI_BITMAP] == 0` condition: `current` moves to `bitmap` and `fresh`
/// becomes `current`. When `bitmap` is already set the node is still
/// tracking changes since that generation (its bitmap covers them all), so
/// nothing changes: pushing `current` into history instead would, after a
/// few link losses, rotate out the UUID the peer holds and turn a bitmap
/// resync into "unrelated data" (the simulator found that).
pub fn new_generation(u: &Uuids, fresh: u64, was_primary: bool) -> Uuids {
    if Uuids::id(u.bitmap) != 0 {
        return *u;
    }
    let flag = u64::from(was_primary);
    // Never collide with the reserved values 0 and "just created".
    let mut id = Uuids::id(fresh);
    if id == 0 || id == Uuids::id(UUID_JUST_CREATED) {
        id = 0x5EED_0000_0000_0000;
    }
    Uuids {
        current: id | flag,
        bitmap: Uuids::id(u.current) | flag,
        history: u.history,
    }
}

/// The source's UUIDs when a resync finished: `bitmap` rotates into history.
pub fn finish_sync_source(u: &Uuids) -> Uuids {
    if Uuids::id(u.bitmap) == 0 {
        return *u;
    }
    Uuids {
        current: u.current,
        bitmap: 0,
        history: [u.bitmap, u.history[0]],
    }
}

/// The target's UUIDs when a resync finished: it takes the source's current
/// and forgets its own bitmap generation.
pub fn finish_sync_target(u: &Uuids, source_current: u64) -> Uuids {
    let history = if Uuids::id(u.current) == Uuids::id(source_current) {
        u.history
    } else {
        [u.current, u.history[0]]
    };
    Uuids {
        current: source_current,
        bitmap: 0,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_generation_keeps_the_link_to_the_peer() {
        let u = Uuids {
            current: 0x10,
            bitmap: 0,
            history: [0x20, 0x30],
        };
        let a = new_generation(&u, 0x40, true);
        assert_eq!(
            a,
            Uuids {
                current: 0x41,
                bitmap: 0x11,
                history: [0x20, 0x30]
            }
        );
        // Already tracking changes since 0x10: nothing changes.
        assert_eq!(new_generation(&a, 0x50, false), a);
        let src = finish_sync_source(&a);
        assert_eq!(
            src,
            Uuids {
                current: 0x41,
                bitmap: 0,
                history: [0x11, 0x20]
            }
        );
        let tgt = finish_sync_target(&u, 0x41);
        assert_eq!(
            tgt,
            Uuids {
                current: 0x41,
                bitmap: 0,
                history: [0x10, 0x20]
            }
        );
        assert_eq!(new_generation(&u, 4, false).current, 0x5EED_0000_0000_0000);
    }
}
