//! The simulated disk: live and durable sector images (FAULTS.md).
//!
//! Each 512-byte sector holds a 64-bit tag in its first 8 bytes (the id of
//! the client write that wrote it; 0 = never written) and zeros elsewhere,
//! so an image is a dense vector of tags. Invariant: a write becomes
//! durable only through `flush` (for writes completed before the flush was
//! issued) or FUA.

use bytes::Bytes;

pub const SECTOR: u64 = 512;

#[derive(Debug, Clone)]
pub struct Disk {
    pub live: Vec<u64>,
    pub durable: Vec<u64>,
    /// Completed, not yet durable writes: (completion number, sector, tag).
    unsynced: Vec<(u64, u64, u64)>,
    completed: u64,
}

/// Encodes one tag per sector.
pub fn encode(tags: &[u64]) -> Bytes {
    let mut v = vec![0u8; tags.len() * SECTOR as usize];
    for (i, t) in tags.iter().enumerate() {
        let at = i * SECTOR as usize;
        v[at..at + 8].copy_from_slice(&t.to_le_bytes());
    }
    Bytes::from(v)
}

fn decode(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    data.chunks(SECTOR as usize).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&c[..8]);
        u64::from_le_bytes(b)
    })
}

impl Disk {
    pub fn new(size_bytes: u64) -> Disk {
        let n = (size_bytes / SECTOR) as usize;
        Disk {
            live: vec![0; n],
            durable: vec![0; n],
            unsynced: Vec::new(),
            completed: 0,
        }
    }

    /// Applies a completed write to the live image (and durable if FUA).
    pub fn write(&mut self, offset_bytes: u64, data: &[u8], fua: bool) {
        self.completed += 1;
        let first = (offset_bytes / SECTOR) as usize;
        let end = first + data.len() / SECTOR as usize;
        if fua {
            // Older unsynced writes of these sectors are superseded.
            self.unsynced
                .retain(|(_, s, _)| (*s as usize) < first || *s as usize >= end);
        }
        for (i, tag) in decode(data).enumerate() {
            let s = first + i;
            if fua {
                self.durable[s] = tag;
            } else if self.live[s] != tag || self.durable[s] != tag {
                self.unsynced.push((self.completed, s as u64, tag));
            }
            self.live[s] = tag;
        }
    }

    pub fn read(&self, offset_bytes: u64, len_bytes: u64) -> Bytes {
        let first = (offset_bytes / SECTOR) as usize;
        let n = (len_bytes / SECTOR) as usize;
        encode(&self.live[first..first + n])
    }

    /// The completion count a flush issued now covers.
    pub fn flush_point(&self) -> u64 {
        self.completed
    }

    /// A flush issued at `point` finished.
    pub fn flush(&mut self, point: u64) {
        let durable = &mut self.durable;
        self.unsynced.retain(|(c, s, t)| {
            if *c <= point {
                durable[*s as usize] = *t;
                false
            } else {
                true
            }
        });
    }

    /// Power loss: unsynced writes are gone.
    pub fn crash(&mut self) {
        self.live.copy_from_slice(&self.durable);
        self.unsynced.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_flushed_or_fua_writes_survive_a_crash() {
        let mut d = Disk::new(4096);
        d.write(0, &encode(&[1, 1]), false);
        let p = d.flush_point();
        d.write(1024, &encode(&[2]), false);
        d.write(512, &encode(&[3]), true);
        d.flush(p);
        d.crash();
        assert_eq!(d.live, vec![1, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.read(0, 2048), encode(&[1, 3, 0, 0]));
    }
}
