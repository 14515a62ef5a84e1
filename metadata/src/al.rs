//! The activity-log ring: 4 KiB transaction slots that record which 4 MiB
//! extents may have writes in flight (DRBD's on-disk AL, redone).
//!
//! Transaction slot layout (little-endian):
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! |      0 |    8 | magic `"HADISKAL"`                                     |
//! |      8 |    4 | format version (1)                                     |
//! |     12 |    4 | al-extents (the slot-table size; must match the superblock) |
//! |     16 |    8 | transaction number (1 ..= 2^62; 0 never written)       |
//! |     24 |    4 | number of updates (<= 64)                              |
//! |     28 |    4 | context start slot (a multiple of 887, < al-extents)   |
//! |     32 |  512 | 64 updates: (slot u32, extent u32); unused entries zero |
//! |    544 | 3548 | context: 887 extents (u32, `0xFFFFFFFF` = empty slot) for slot-table entries start.. ; entries past al-extents zero |
//! |   4092 |    4 | CRC32 (IEEE) of bytes 0..4092                          |
//!
//! Transaction `n` lives in ring slot `n % ring_slots`. Its updates are the
//! slot-table changes it makes; its context is a window of the whole slot
//! table *after* those updates. Successive transactions move the window on
//! by 887 entries, wrapping at al-extents, so any `cycle =
//! ceil(al_extents / 887)` consecutive transactions restate every entry.
//!
//! Recovery replays the valid transactions in number order from an empty
//! table (updates, then context). The ring holds `cycle + 2` slots (at
//! least 8): the newest `cycle` transactions restate the table, one slot
//! may be the torn write a crash interrupted, one is spare. The result is
//! exact when the valid transactions form one consecutive run ending at the
//! newest that either starts at transaction 1 (the ring was empty at
//! create-md) or is at least `cycle` long, and at most one non-empty slot —
//! the one the next transaction would use — fails validation (a torn
//! write). Anything else is damage, reported with the slot and its error.

use hadisk_bitmap::SlotChange;

use crate::codec::{check_block, check_zero, get_u32, get_u64, put, put_u32, put_u64, seal};
use crate::{Area, MetadataError, MD_BLOCK_BYTES};

/// Transaction magic.
pub const AL_MAGIC: &[u8; 8] = b"HADISKAL";
/// AL transaction format version.
pub const AL_VERSION: u32 = 1;
/// Size of one transaction slot.
pub const AL_SLOT_BYTES: usize = MD_BLOCK_BYTES as usize;
/// Slot-table changes one transaction carries (DRBD's
/// AL_UPDATES_PER_TRANSACTION). A 32 MiB NBD write touches at most 9
/// extents, so one transaction almost always suffices; more are split.
pub const AL_UPDATES_PER_TR: usize = 64;
/// Slot-table entries one transaction restates: what fits in the rest of
/// the 4 KiB slot.
pub const AL_CONTEXT_PER_TR: usize = 887;
/// Fewest ring slots (32 KiB, DRBD's AL size).
pub const AL_RING_MIN_SLOTS: u32 = 8;
/// Largest transaction number accepted: far beyond any real count (one
/// transaction per microsecond lasts 146,000 years), and it keeps the
/// recovery arithmetic (`newest + 1`, run lengths) free of overflow on a
/// crafted slot.
pub const AL_TRANSACTION_MAX: u64 = 1 << 62;
/// The on-disk "empty slot" marker in the context.
pub const AL_EMPTY: u32 = u32::MAX;

const UPDATES_OFFSET: usize = 32;
const CONTEXT_OFFSET: usize = UPDATES_OFFSET + AL_UPDATES_PER_TR * 8;
const CRC_OFFSET: usize = AL_SLOT_BYTES - 4;
const _: () = assert!(CONTEXT_OFFSET + AL_CONTEXT_PER_TR * 4 == CRC_OFFSET);

/// One decoded, validated AL transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlTransaction {
    pub al_extents: u32,
    pub number: u64,
    /// (slot, extent) pairs, applied in order.
    pub updates: Vec<(u32, u32)>,
    pub context_start: u32,
    /// Entries `context_start ..` of the slot table after the updates.
    pub context: Vec<Option<u32>>,
}

/// What the geometry allows, for validating decoded transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlGeometry {
    pub al_extents: u32,
    pub ring_slots: u32,
    /// Extents covering the usable size: every stored extent is below it.
    pub device_extents: u64,
}

impl AlTransaction {
    /// Context entries a transaction starting at `start` carries.
    pub fn context_len(al_extents: u32, start: u32) -> usize {
        (al_extents.saturating_sub(start) as usize).min(AL_CONTEXT_PER_TR)
    }

    /// The 4 KiB image. Callers build transactions within the limits
    /// ([`AL_UPDATES_PER_TR`], context length); excess entries are dropped
    /// rather than overflow the slot, and the decoder would then refuse it.
    pub fn encode(&self) -> [u8; AL_SLOT_BYTES] {
        let mut b = [0u8; AL_SLOT_BYTES];
        put(&mut b, 0, AL_MAGIC);
        put_u32(&mut b, 8, AL_VERSION);
        put_u32(&mut b, 12, self.al_extents);
        put_u64(&mut b, 16, self.number);
        put_u32(&mut b, 24, self.updates.len() as u32);
        put_u32(&mut b, 28, self.context_start);
        for (i, (slot, extent)) in self.updates.iter().take(AL_UPDATES_PER_TR).enumerate() {
            put_u32(&mut b, UPDATES_OFFSET + i * 8, *slot);
            put_u32(&mut b, UPDATES_OFFSET + i * 8 + 4, *extent);
        }
        for (i, entry) in self.context.iter().take(AL_CONTEXT_PER_TR).enumerate() {
            put_u32(&mut b, CONTEXT_OFFSET + i * 4, entry.unwrap_or(AL_EMPTY));
        }
        seal(&mut b);
        b
    }

    /// Decodes and validates the image found in ring slot `index`.
    pub fn decode(
        area: Area,
        index: u32,
        geometry: AlGeometry,
        block: &[u8],
    ) -> Result<AlTransaction, MetadataError> {
        check_block(area, block, AL_SLOT_BYTES, AL_MAGIC, AL_VERSION, 8)?;
        let geo = |field, expected: u64, found: u64| MetadataError::Geometry {
            area,
            field,
            expected,
            found,
        };
        let al_extents = get_u32(block, 12);
        if al_extents != geometry.al_extents {
            return Err(geo(
                "al-extents",
                u64::from(geometry.al_extents),
                u64::from(al_extents),
            ));
        }
        let number = get_u64(block, 16);
        if number > AL_TRANSACTION_MAX {
            return Err(MetadataError::CountTooLarge {
                area,
                field: "transaction number",
                max: AL_TRANSACTION_MAX,
                found: number,
            });
        }
        let ring = u64::from(geometry.ring_slots.max(1));
        if number == 0 || number % ring != u64::from(index) {
            return Err(geo(
                "transaction number modulo the ring size",
                u64::from(index),
                number % ring,
            ));
        }
        let n_updates = get_u32(block, 24) as usize;
        if n_updates > AL_UPDATES_PER_TR {
            return Err(MetadataError::CountTooLarge {
                area,
                field: "update count",
                max: AL_UPDATES_PER_TR as u64,
                found: n_updates as u64,
            });
        }
        let context_start = get_u32(block, 28);
        if context_start >= al_extents
            || !(context_start as usize).is_multiple_of(AL_CONTEXT_PER_TR)
        {
            return Err(geo(
                "context start (a multiple of 887 below al-extents)",
                0,
                u64::from(context_start),
            ));
        }
        let updates_end = UPDATES_OFFSET + n_updates * 8;
        check_zero(area, block, updates_end..CONTEXT_OFFSET)?;
        let context_len = Self::context_len(al_extents, context_start);
        check_zero(area, block, CONTEXT_OFFSET + context_len * 4..CRC_OFFSET)?;
        let check_extent = |extent: u32| {
            if u64::from(extent) >= geometry.device_extents {
                return Err(MetadataError::CountTooLarge {
                    area,
                    field: "extent number",
                    max: geometry.device_extents.saturating_sub(1),
                    found: u64::from(extent),
                });
            }
            Ok(extent)
        };
        let mut updates = Vec::with_capacity(n_updates);
        for i in 0..n_updates {
            let slot = get_u32(block, UPDATES_OFFSET + i * 8);
            if slot >= al_extents {
                return Err(MetadataError::CountTooLarge {
                    area,
                    field: "update slot",
                    max: u64::from(al_extents) - 1,
                    found: u64::from(slot),
                });
            }
            let extent = check_extent(get_u32(block, UPDATES_OFFSET + i * 8 + 4))?;
            updates.push((slot, extent));
        }
        let mut context = Vec::with_capacity(context_len);
        for i in 0..context_len {
            let raw = get_u32(block, CONTEXT_OFFSET + i * 4);
            context.push(if raw == AL_EMPTY {
                None
            } else {
                Some(check_extent(raw)?)
            });
        }
        Ok(AlTransaction {
            al_extents,
            number,
            updates,
            context_start,
            context,
        })
    }

    /// Applies this transaction to a slot table of `al_extents` entries.
    pub fn apply(&self, table: &mut [Option<u32>]) {
        for &(slot, extent) in &self.updates {
            if let Some(entry) = table.get_mut(slot as usize) {
                *entry = Some(extent);
            }
        }
        let start = self.context_start as usize;
        for (i, value) in self.context.iter().enumerate() {
            if let Some(entry) = table.get_mut(start + i) {
                *entry = *value;
            }
        }
    }
}

/// The context start that follows `start` (wrapping at al-extents).
pub fn next_context_start(al_extents: u32, start: u32) -> u32 {
    let next = start.saturating_add(AL_CONTEXT_PER_TR as u32);
    if next >= al_extents {
        0
    } else {
        next
    }
}

/// Transactions needed to restate the whole slot table.
pub fn context_cycle(al_extents: u32) -> u64 {
    u64::from(al_extents.div_ceil(AL_CONTEXT_PER_TR as u32))
}

/// What one ring slot held at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingSlot {
    /// All zero: never written since create-md.
    Empty,
    Valid(AlTransaction),
    /// Failed validation: the message says why.
    Damaged(String),
}

/// The activity log as found at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlRecovery {
    /// The slot table: entry `i` is the extent in AL slot `i`.
    pub slots: Vec<Option<u32>>,
    /// Newest valid transaction number (0: none written yet).
    pub last_transaction: u64,
    /// Context start of the newest transaction (0 when none).
    pub last_context_start: u32,
    /// Transactions replayed.
    pub replayed: u32,
    /// The ring slot a torn write left damaged, discarded; its error.
    pub torn_slot: Option<(u32, String)>,
}

impl AlRecovery {
    /// An empty log (fresh metadata).
    pub fn empty(al_extents: u32) -> AlRecovery {
        AlRecovery {
            slots: vec![None; al_extents as usize],
            last_transaction: 0,
            last_context_start: 0,
            replayed: 0,
            torn_slot: None,
        }
    }

    /// The active extents, ascending: what a crashed Primary must resync.
    pub fn active_extents(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.slots.iter().flatten().copied().collect();
        out.sort_unstable();
        out
    }

    /// An [`hadisk_bitmap::ActivityLog`] holding the recovered table, all
    /// extents idle.
    pub fn activity_log(&self) -> Result<hadisk_bitmap::ActivityLog, MetadataError> {
        Ok(hadisk_bitmap::ActivityLog::from_slots(
            self.slots.len() as u32,
            &self.slots,
        )?)
    }
}

/// The error for damage found while recovering: which slot, what is wrong.
fn damaged(index: u32, offset_bytes: u64, reason: String) -> MetadataError {
    MetadataError::AlDamaged {
        area: Area::AlSlot {
            index,
            offset_bytes,
        },
        reason,
    }
}

/// Replays the ring. `slots[i]` is what ring slot `i` held, `offsets[i]`
/// its byte offset (for messages).
pub fn recover(
    geometry: AlGeometry,
    slots: &[RingSlot],
    offsets: &[u64],
) -> Result<AlRecovery, MetadataError> {
    let offset_of = |i: u32| offsets.get(i as usize).copied().unwrap_or(0);
    let mut valid: Vec<&AlTransaction> = slots
        .iter()
        .filter_map(|s| match s {
            RingSlot::Valid(tr) => Some(tr),
            _ => None,
        })
        .collect();
    valid.sort_by_key(|tr| tr.number);
    let ring = u64::from(geometry.ring_slots.max(1));
    let newest = valid.last().map_or(0, |tr| tr.number);
    let head = ((newest + 1) % ring) as u32;
    let mut torn_slot = None;
    for (i, slot) in slots.iter().enumerate() {
        if let RingSlot::Damaged(reason) = slot {
            let i = i as u32;
            if i == head && torn_slot.is_none() {
                torn_slot = Some((i, reason.clone()));
            } else {
                return Err(damaged(i, offset_of(i), reason.clone()));
            }
        }
    }
    // One consecutive run ending at the newest.
    for (k, tr) in valid.iter().enumerate() {
        let expected = newest + 1 + k as u64 - valid.len() as u64;
        if tr.number != expected {
            let index = (tr.number % ring) as u32;
            return Err(damaged(
                index,
                offset_of(index),
                format!(
                    "transaction {} is out of sequence (expected {expected}, the newest is {newest})",
                    tr.number
                ),
            ));
        }
    }
    let oldest = valid.first().map_or(1, |tr| tr.number);
    let cycle = context_cycle(geometry.al_extents);
    if oldest != 1 && (valid.len() as u64) < cycle {
        return Err(damaged(
            (oldest % ring) as u32,
            offset_of((oldest % ring) as u32),
            format!(
                "only {} transactions survive, fewer than the {cycle} that restate the slot table",
                valid.len()
            ),
        ));
    }
    let mut table = vec![None; geometry.al_extents as usize];
    for tr in &valid {
        tr.apply(&mut table);
    }
    check_unique(&table).map_err(|reason| damaged(head, offset_of(head), reason))?;
    Ok(AlRecovery {
        slots: table,
        last_transaction: newest,
        last_context_start: valid.last().map_or(0, |tr| tr.context_start),
        replayed: valid.len() as u32,
        torn_slot,
    })
}

/// Every extent at most once in the table.
fn check_unique(table: &[Option<u32>]) -> Result<(), String> {
    let mut seen: Vec<(u32, usize)> = table
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.map(|e| (e, i)))
        .collect();
    seen.sort_unstable();
    for pair in seen.windows(2) {
        if let [(a, i), (b, j)] = pair {
            if a == b {
                return Err(format!(
                    "the replayed slot table names extent {a} in slots {i} and {j}"
                ));
            }
        }
    }
    Ok(())
}

/// Splits slot changes into transactions of at most [`AL_UPDATES_PER_TR`]
/// updates each, numbered from `next_number`, with contexts restating the
/// table as it is after each one. `table` is the table on disk and is
/// advanced; `context_start` is the start the next transaction uses.
pub fn plan_transactions(
    al_extents: u32,
    table: &mut [Option<u32>],
    changes: &[SlotChange],
    next_number: u64,
    mut context_start: u32,
) -> Vec<AlTransaction> {
    let mut out = Vec::new();
    let mut chunks: Vec<&[SlotChange]> = changes.chunks(AL_UPDATES_PER_TR).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for (k, chunk) in chunks.into_iter().enumerate() {
        let updates: Vec<(u32, u32)> = chunk.iter().map(|c| (c.slot, c.new_extent)).collect();
        for &(slot, extent) in &updates {
            if let Some(entry) = table.get_mut(slot as usize) {
                *entry = Some(extent);
            }
        }
        let len = AlTransaction::context_len(al_extents, context_start);
        let start = context_start as usize;
        let context = table.get(start..start + len).unwrap_or_default().to_vec();
        out.push(AlTransaction {
            al_extents,
            number: next_number + k as u64,
            updates,
            context_start,
            context,
        });
        context_start = next_context_start(al_extents, context_start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GEO: AlGeometry = AlGeometry {
        al_extents: 1237,
        ring_slots: 8,
        device_extents: 256,
    };

    fn area(index: u32) -> Area {
        Area::AlSlot {
            index,
            offset_bytes: 4096 * u64::from(index),
        }
    }

    fn sample() -> AlTransaction {
        let mut context = vec![None; 887];
        context[3] = Some(17);
        context[886] = Some(0);
        AlTransaction {
            al_extents: 1237,
            number: 9,
            updates: vec![(3, 17), (886, 0)],
            context_start: 0,
            context,
        }
    }

    #[test]
    fn round_trip_and_exact_bytes() {
        let tr = sample();
        let image = tr.encode();
        assert_eq!(&image[..8], b"HADISKAL");
        assert_eq!(&image[16..24], &9u64.to_le_bytes());
        assert_eq!(&image[32..40], &[3, 0, 0, 0, 17, 0, 0, 0]);
        assert_eq!(&image[544..548], &[0xff; 4]);
        assert_eq!(AlTransaction::decode(area(1), 1, GEO, &image).unwrap(), tr);
    }

    #[test]
    fn validation_errors_name_the_slot_and_field() {
        let tr = sample();
        let decode = |t: &AlTransaction, index| {
            AlTransaction::decode(area(index), index, GEO, &t.encode())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            decode(&tr, 2),
            "activity-log slot 2 (byte 8192): transaction number modulo the ring size is 1, expected 2"
        );
        let mut bad = tr.clone();
        bad.updates[0].1 = 256;
        assert_eq!(
            decode(&bad, 1),
            "activity-log slot 1 (byte 4096): extent number is 256, at most 255 allowed"
        );
        let mut bad = tr.clone();
        bad.updates[0].0 = 1237;
        assert_eq!(
            decode(&bad, 1),
            "activity-log slot 1 (byte 4096): update slot is 1237, at most 1236 allowed"
        );
        let mut bad = tr.clone();
        bad.al_extents = 7;
        assert_eq!(
            decode(&bad, 1),
            "activity-log slot 1 (byte 4096): al-extents is 7, expected 1237"
        );
        let mut huge = tr.clone();
        huge.number = u64::MAX - 6; // u64::MAX - 6 is 1 modulo the ring of 8
        assert_eq!(
            decode(&huge, 1),
            "activity-log slot 1 (byte 4096): transaction number is 18446744073709551609, \
             at most 4611686018427387904 allowed"
        );
        let mut image = tr.encode();
        image[100] ^= 1;
        assert!(
            decode_err(&image).starts_with("activity-log slot 1 (byte 4096): checksum mismatch")
        );
    }

    fn decode_err(image: &[u8]) -> String {
        AlTransaction::decode(area(1), 1, GEO, image)
            .unwrap_err()
            .to_string()
    }

    fn ring_of(trs: &[AlTransaction], ring: u32) -> Vec<RingSlot> {
        let mut slots = vec![RingSlot::Empty; ring as usize];
        for tr in trs {
            slots[(tr.number % u64::from(ring)) as usize] = RingSlot::Valid(tr.clone());
        }
        slots
    }

    #[test]
    fn recovery_replays_and_refuses_damage() {
        let geo = AlGeometry {
            al_extents: 2000,
            ring_slots: 5,
            device_extents: 1 << 20,
        };
        let mut table = vec![None; 2000];
        let mut trs = Vec::new();
        let mut start = 0;
        for n in 1..=12u64 {
            let change = SlotChange {
                slot: (n * 150) as u32 % 2000,
                old_extent: None,
                new_extent: n as u32,
            };
            let planned = plan_transactions(2000, &mut table, &[change], n, start);
            start = next_context_start(2000, start);
            trs.extend(planned);
        }
        // The ring keeps the newest 5.
        let ring = ring_of(&trs[7..], 5);
        let offsets: Vec<u64> = (0..5).map(|i| i * 4096).collect();
        let rec = recover(geo, &ring, &offsets).unwrap();
        assert_eq!(rec.slots, table);
        assert_eq!(rec.last_transaction, 12);
        // A torn write at the head (slot 13 % 5 = 3) is discarded.
        let mut torn = ring.clone();
        torn[3] = RingSlot::Damaged("checksum mismatch".into());
        let rec = recover(geo, &torn, &offsets).unwrap();
        assert_eq!(rec.slots, table);
        assert_eq!(rec.torn_slot, Some((3, "checksum mismatch".into())));
        // Damage anywhere else is an error naming the slot.
        let mut bad = ring.clone();
        bad[0] = RingSlot::Damaged("checksum mismatch".into());
        assert_eq!(
            recover(geo, &bad, &offsets).unwrap_err().to_string(),
            "activity-log slot 0 (byte 0): the activity log is damaged: checksum mismatch; \
             recreate the metadata (create-md --force) and resync from the peer"
        );
        // Too few survivors to restate the table.
        let few = ring_of(&trs[10..], 5);
        assert!(recover(geo, &few, &offsets)
            .unwrap_err()
            .to_string()
            .contains("only 2 transactions survive, fewer than the 3"));
        assert_eq!(
            recover(geo, &ring_of(&[], 5), &offsets).unwrap(),
            AlRecovery::empty(2000)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4200), index in 0u32..10) {
            let _ = AlTransaction::decode(area(index), index, GEO, &bytes);
        }

        #[test]
        fn sealed_random_fields_never_panic(fields in proptest::collection::vec(any::<u8>(), 4084)) {
            let mut image = [0u8; AL_SLOT_BYTES];
            image[..8].copy_from_slice(AL_MAGIC);
            put_u32(&mut image, 8, AL_VERSION);
            image[8 + 4..].copy_from_slice(&fields[..AL_SLOT_BYTES - 12]);
            put_u32(&mut image, 12, 1237);
            seal(&mut image);
            let _ = AlTransaction::decode(area(1), 1, GEO, &image);
        }

        #[test]
        fn round_trip(number in 1u64..1000, updates in proptest::collection::vec((0u32..1237, 0u32..256), 0..=64),
                      start_k in 0u32..2, entries in proptest::collection::vec(proptest::option::of(0u32..256), 887)) {
            let number = number * 8 + 5;
            let start = start_k * 887;
            let len = AlTransaction::context_len(1237, start);
            let tr = AlTransaction { al_extents: 1237, number, updates, context_start: start, context: entries[..len].to_vec() };
            prop_assert_eq!(AlTransaction::decode(area(5), 5, GEO, &tr.encode()).unwrap(), tr);
        }

        /// Any mix of empty, damaged and valid slots with arbitrary numbers
        /// and contents: recovery returns a table or a damage error, never
        /// panics.
        #[test]
        fn recovery_of_arbitrary_rings_never_panics(
            slots in proptest::collection::vec(
                (0u8..3, 0u64..=AL_TRANSACTION_MAX / 8, proptest::collection::vec((0u32..20, 0u32..100), 0..4),
                 proptest::collection::vec(proptest::option::of(0u32..100), 20)),
                8,
            ),
        ) {
            let geo = AlGeometry { al_extents: 20, ring_slots: 8, device_extents: 100 };
            let ring: Vec<RingSlot> = slots
                .into_iter()
                .enumerate()
                .map(|(i, (kind, k, updates, context))| match kind {
                    0 => RingSlot::Empty,
                    1 => RingSlot::Damaged("x".into()),
                    _ => RingSlot::Valid(AlTransaction {
                        al_extents: 20,
                        number: (k * 8 + i as u64).max(1),
                        updates,
                        context_start: 0,
                        context,
                    }),
                })
                .collect();
            match recover(geo, &ring, &[0; 8]) {
                Ok(rec) => prop_assert_eq!(rec.slots.len(), 20),
                Err(MetadataError::AlDamaged { .. }) => {}
                Err(other) => prop_assert!(false, "{}", other),
            }
        }

        /// Replaying any window of the newest transactions that the ring
        /// keeps gives the planner's table.
        #[test]
        fn replay_matches_the_planner(changes in proptest::collection::vec((0u32..20, 0u32..100), 1..60), ring in 3u32..8) {
            let al_extents = 20;
            let geo = AlGeometry { al_extents, ring_slots: ring, device_extents: 100 };
            let mut table = vec![None; 20];
            let mut trs = Vec::new();
            let mut start = 0;
            for (n, (slot, extent)) in changes.into_iter().enumerate() {
                // Keep extents unique, as the ActivityLog does.
                if table.contains(&Some(extent)) { continue; }
                let change = SlotChange { slot, old_extent: table[slot as usize], new_extent: extent };
                trs.extend(plan_transactions(al_extents, &mut table, &[change], trs.len() as u64 + 1, start));
                start = next_context_start(al_extents, start);
                let _ = n;
            }
            let keep = trs.len().saturating_sub(ring as usize);
            let slots = ring_of(&trs[keep..], ring);
            let offsets = vec![0; ring as usize];
            let rec = recover(geo, &slots, &offsets).unwrap();
            prop_assert_eq!(rec.slots, table);
        }
    }
}
