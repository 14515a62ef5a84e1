//! The activity log: the set of extents in which writes may be in flight or
//! not yet known to the peer, persisted (by the driver) before a write into
//! a newly active extent lands, so that after a Primary crash every block
//! that may differ between the nodes is in a dirty-bitmap bit or in an
//! active extent.
//!
//! Invariants:
//! * At most `capacity` extents are active.
//! * A pinned extent (pending write, or a write the peer has acknowledged
//!   but not yet made durable) is never evicted.
//! * An extent is evicted only together with persisting its bitmap bits
//!   and a new AL transaction (the caller emits those actions), least
//!   recently used first.

use std::collections::BTreeMap;

/// Bytes covered by one activity-log extent (DRBD's 4 MiB): big enough that
/// sequential writes rarely change the AL, small enough that a crashed
/// Primary resyncs little.
pub const AL_EXTENT_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
struct Slot {
    last_use: u64,
    pins: u32,
}

/// The outcome of [`ActivityLog::activate`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlChange {
    /// Extents that became active (a transaction must be persisted).
    pub added: Vec<u64>,
    /// Extents evicted to make room (persist their bitmap bits first).
    pub evicted: Vec<u64>,
}

/// The in-memory activity log.
#[derive(Debug, Clone)]
pub struct ActivityLog {
    capacity: usize,
    slots: BTreeMap<u64, Slot>,
    clock: u64,
}

/// The extents covering a byte range.
pub fn extents_of(offset_bytes: u64, len_bytes: u64) -> std::ops::RangeInclusive<u64> {
    let first = offset_bytes / AL_EXTENT_BYTES;
    let last = offset_bytes.saturating_add(len_bytes.max(1) - 1) / AL_EXTENT_BYTES;
    first..=last
}

impl ActivityLog {
    pub fn new(capacity: usize, active: &[u64]) -> Self {
        let mut al = ActivityLog { capacity: capacity.max(1), slots: BTreeMap::new(), clock: 0 };
        for e in active.iter().take(al.capacity) {
            al.slots.insert(*e, Slot::default());
        }
        al
    }

    /// The active extents, ascending.
    pub fn active(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    /// Makes `extents` active and pins them once each; `None` (and no
    /// change) if room cannot be made because every other extent is pinned.
    pub fn activate(&mut self, extents: std::ops::RangeInclusive<u64>) -> Option<AlChange> {
        let wanted: Vec<u64> = extents.collect();
        let missing: Vec<u64> =
            wanted.iter().copied().filter(|e| !self.slots.contains_key(e)).collect();
        let room = self.capacity.saturating_sub(self.slots.len());
        let mut evicted = Vec::new();
        if missing.len() > room {
            let need = missing.len() - room;
            let mut victims: Vec<(u64, u64)> = self
                .slots
                .iter()
                .filter(|(e, s)| s.pins == 0 && !wanted.contains(e))
                .map(|(e, s)| (s.last_use, *e))
                .collect();
            if victims.len() < need {
                return None;
            }
            victims.sort_unstable();
            evicted = victims.into_iter().take(need).map(|(_, e)| e).collect();
            for e in &evicted {
                self.slots.remove(e);
            }
        }
        self.clock += 1;
        for e in &wanted {
            let slot = self.slots.entry(*e).or_default();
            slot.pins += 1;
            slot.last_use = self.clock;
        }
        Some(AlChange { added: missing, evicted })
    }

    /// Releases one pin on each extent.
    pub fn unpin(&mut self, extents: std::ops::RangeInclusive<u64>) {
        for e in extents {
            if let Some(slot) = self.slots.get_mut(&e) {
                slot.pins = slot.pins.saturating_sub(1);
            }
        }
    }

    /// Empties the log (clean demotion: the bitmap has been persisted).
    /// Pinned extents stay.
    pub fn clear_unpinned(&mut self) {
        self.slots.retain(|_, s| s.pins > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_unpinned() {
        let mut al = ActivityLog::new(2, &[]);
        assert_eq!(al.activate(0..=0).unwrap().added, vec![0]);
        assert_eq!(al.activate(1..=1).unwrap().added, vec![1]);
        // both pinned: no room
        assert_eq!(al.activate(2..=2), None);
        al.unpin(0..=0);
        al.unpin(1..=1);
        al.activate(0..=0).unwrap();
        al.unpin(0..=0);
        let ch = al.activate(2..=2).unwrap();
        assert_eq!(ch, AlChange { added: vec![2], evicted: vec![1] });
        assert_eq!(al.active(), vec![0, 2]);
        // already active: nothing to persist
        assert_eq!(al.activate(2..=2).unwrap(), AlChange::default());
    }

    #[test]
    fn extents_cover_the_range() {
        assert_eq!(extents_of(0, 4096), 0..=0);
        assert_eq!(extents_of(AL_EXTENT_BYTES - 512, 1024), 0..=1);
    }
}
