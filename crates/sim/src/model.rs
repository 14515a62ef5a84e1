//! The reference model of what clients were told, and the data checker.
//!
//! Per sector: the last acknowledged write. Besides, the writes whose
//! outcome the client does not know (in flight at a crash, or failed with
//! an I/O error). Overlapping writes are applied in issue order (the core
//! serialises them) and write ids grow in issue order, so a sector may
//! legally hold its last acknowledged write or an unknown-outcome write
//! issued after it that covers the sector, nothing else.

use std::collections::BTreeMap;

use crate::disk::SECTOR;

#[derive(Debug, Clone)]
pub struct Model {
    acked: Vec<u64>,
    /// Issued, not yet answered: id -> (first sector, sectors).
    pending: BTreeMap<u64, (u64, u64)>,
    /// Answered with an error or never (crash): id -> (first sector, sectors).
    unknown: BTreeMap<u64, (u64, u64)>,
    pub acked_writes: u64,
    pub unknown_writes: u64,
}

impl Model {
    pub fn new(size_bytes: u64) -> Model {
        Model {
            acked: vec![0; (size_bytes / SECTOR) as usize],
            pending: BTreeMap::new(),
            unknown: BTreeMap::new(),
            acked_writes: 0,
            unknown_writes: 0,
        }
    }

    pub fn issue(&mut self, id: u64, offset_bytes: u64, len_bytes: u64) {
        self.pending
            .insert(id, (offset_bytes / SECTOR, len_bytes / SECTOR));
    }

    /// The client got a success for write `id`.
    pub fn acked(&mut self, id: u64) {
        let Some((first, n)) = self.pending.remove(&id) else {
            return;
        };
        self.acked_writes += 1;
        for a in &mut self.acked[first as usize..(first + n) as usize] {
            *a = (*a).max(id);
        }
    }

    /// The client got an error, or never will get an answer (crash).
    pub fn unknown(&mut self, id: u64) {
        if let Some(range) = self.pending.remove(&id) {
            self.unknown_writes += 1;
            self.unknown.insert(id, range);
        }
    }

    /// The model of a node that splits off (split brain): writes still in
    /// flight on the other node may or may not have reached it, so their
    /// outcome is unknown here.
    pub fn fork(&self) -> Model {
        let mut m = self.clone();
        let pending: Vec<u64> = m.pending.keys().copied().collect();
        for id in pending {
            m.unknown(id);
        }
        m
    }

    /// Whether sector `s` is covered by a write still in flight.
    pub fn pending_covers(&self, s: u64) -> bool {
        self.pending.values().any(|(f, n)| (*f..f + n).contains(&s))
    }

    /// Checks one node's image against what clients were told.
    pub fn check(&self, node: &str, image: &[u64]) -> Result<(), String> {
        for (s, (&v, &acked)) in image.iter().zip(&self.acked).enumerate() {
            let s = s as u64;
            let later_unknown = v > acked
                && self
                    .unknown
                    .get(&v)
                    .is_some_and(|(f, n)| (*f..f + n).contains(&s));
            if v != acked && !later_unknown {
                return Err(format!(
                    "node {node} sector {s} (byte {}) holds write {v}, but the last acknowledged write there is {acked}",
                    s * SECTOR
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_or_later_unknown_only() {
        let mut m = Model::new(2048);
        m.issue(1, 0, 1024);
        m.acked(1);
        m.issue(2, 512, 512);
        m.unknown(2);
        assert!(m.check("a", &[1, 1, 0, 0]).is_ok());
        assert!(m.check("a", &[1, 2, 0, 0]).is_ok());
        assert_eq!(
            m.check("a", &[1, 0, 0, 0]).unwrap_err(),
            "node a sector 1 (byte 512) holds write 0, but the last acknowledged write there is 1"
        );
        assert!(
            m.check("a", &[2, 1, 0, 0]).is_err(),
            "write 2 never covered sector 0"
        );
        assert!(m.check("a", &[1, 1, 0, 3]).is_err());
    }
}
