//! Generation-UUID bookkeeping (DESIGN.md §4), pure functions on [`Uuids`].
//!
//! Invariants: a new generation never loses the UUID the peer may still
//! hold as its current one (it goes to `bitmap`, or stays there, and the
//! superseded current goes to history); bit 0 of a generated UUID records
//! whether this node was Primary when it started that generation.

use hadisk_peer_proto::{Uuids, UUID_JUST_CREATED};

/// Starts a new data generation while disconnected (promotion, or a Primary
/// losing its peer): `current` moves to `bitmap` when that is empty (else
/// to history) and `fresh` becomes `current`.
pub fn new_generation(u: &Uuids, fresh: u64, primary: bool) -> Uuids {
    let mut next = *u;
    let flag = u64::from(primary);
    if Uuids::id(u.bitmap) == 0 {
        next.bitmap = Uuids::id(u.current) | flag;
    } else {
        next.history = [u.current, u.history[0]];
    }
    // Never collide with the reserved values 0 and "just created".
    let mut id = Uuids::id(fresh);
    if id == 0 || id == Uuids::id(UUID_JUST_CREATED) {
        id = 0x5EED_0000_0000_0000;
    }
    next.current = id | flag;
    next
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
        // Already tracking changes since 0x10: the bitmap generation stays.
        let b = new_generation(&a, 0x50, false);
        assert_eq!(
            b,
            Uuids {
                current: 0x50,
                bitmap: 0x11,
                history: [0x41, 0x20]
            }
        );
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
