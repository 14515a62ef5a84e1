//! Crash-point sweeps (redb's live/durable images): every metadata writer
//! runs on a `FaultyDevice<MemDevice>` with the crash log on; at every
//! logged event, with every prefix of the unsynced writes surviving and
//! every 512-byte tear of the next one (torn 4 KiB writes), the durable
//! image must open and hold exactly the state before or after the
//! operation in progress — never a mix, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use hadisk_bitmap::{ActivityLog, DirtyBitmap};
use hadisk_metadata::superblock::{Flags, Uuids};
use hadisk_metadata::{Metadata, MetadataError};
use hadisk_storage::{FaultyDevice, MemDevice};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn faulty(size: u64) -> Arc<FaultyDevice<MemDevice>> {
    Arc::new(FaultyDevice::new(MemDevice::new(size)))
}

/// Runs `check` on the durable image of every crash scenario, with how
/// many of `done_points` (the crash-log length after each operation) the
/// scenario's point has passed.
fn sweep(
    dev: &FaultyDevice<MemDevice>,
    done_points: &[usize],
    mut check: impl FnMut(Arc<MemDevice>, usize, String),
) -> usize {
    let scenarios = dev.crash_scenarios().unwrap();
    for &(point, unsynced) in &scenarios {
        let image = Arc::new(dev.crash_image(point, unsynced).unwrap());
        let completed = done_points.iter().filter(|&&p| p <= point).count();
        check(image, completed, format!("point {point}, {unsynced:?}"));
    }
    scenarios.len()
}

#[test]
fn superblock_updates_are_atomic() {
    let dev = faulty(GIB);
    let mut md = Metadata::create(dev.clone(), 1237, 0).unwrap();
    let mut states: Vec<Uuids> = vec![md.superblock().uuids];
    let mut done = Vec::new();
    dev.start_crash_log();
    for fresh in [
        0x1111_2222_3333_4444u64,
        0x5555_6666_7777_8888,
        0x9999_AAAA_BBBB_CCCC,
    ] {
        md.update(|sb| {
            sb.uuids.new_current(fresh).unwrap();
            sb.uuids.rotate_bitmap_into_history();
            sb.flags.insert(Flags::CONSISTENT);
        })
        .unwrap();
        states.push(md.superblock().uuids);
        done.push(dev.crash_points().unwrap());
    }
    let mut torn_seen = 0;
    let n = sweep(&dev, &done, |image, completed, at| {
        let opened = Metadata::open(image).unwrap_or_else(|e| panic!("{at}: {e}"));
        let uuids = opened.superblock().uuids;
        // Synced updates are never lost; the one in progress is all or nothing.
        let allowed = &states[completed..(completed + 2).min(states.len())];
        assert!(allowed.contains(&uuids), "{at}: {uuids} not in {allowed:?}");
        if opened.superblock_fallback().is_some() {
            torn_seen += 1;
        }
    });
    assert!(n > 3 * 8, "the sweep covers tears: {n} scenarios");
    assert!(torn_seen > 0, "some scenario tore a slot and fell back");
}

#[test]
fn al_transactions_are_atomic() {
    for al_extents in [7u32, 2000] {
        let dev = faulty(GIB);
        let mut md = Metadata::create(dev.clone(), al_extents, 0).unwrap();
        let mut al = ActivityLog::new(al_extents).unwrap();
        let mut tables: Vec<Vec<Option<u32>>> = vec![al.slots().to_vec()];
        let mut done = Vec::new();
        dev.start_crash_log();
        // 30 writes over 60 extents: evictions with al-extents 7, and the
        // 8-slot ring wraps several times either way.
        for i in 0..30u64 {
            let offset = (i * 13 % 60) * 4 * MIB;
            let update = al.begin_io(offset, 4 * MIB + 1).unwrap();
            md.write_al_transaction(&update.changes).unwrap();
            al.end_io(offset, 4 * MIB + 1).unwrap();
            tables.push(al.slots().to_vec());
            done.push(dev.crash_points().unwrap());
        }
        sweep(&dev, &done, |image, completed, at| {
            let opened =
                Metadata::open(image).unwrap_or_else(|e| panic!("al {al_extents} {at}: {e}"));
            let slots = &opened.al_recovery().slots;
            let allowed = &tables[completed..(completed + 2).min(tables.len())];
            assert!(
                allowed.contains(slots),
                "al {al_extents} {at}: unexpected table"
            );
        });
    }
}

#[test]
fn bitmap_stores_leave_every_bit_old_or_new() {
    let dev = faulty(GIB);
    let mut md = Metadata::create(dev.clone(), 1237, 0).unwrap();
    let mut old = md.load_bitmap().unwrap();
    old.set_bytes(0, 64 * MIB).unwrap();
    md.store_bitmap(&old).unwrap();
    let mut new = old.clone();
    new.clear_bytes(0, 32 * MIB).unwrap();
    new.set_bytes(300 * MIB, 200 * MIB).unwrap();
    dev.start_crash_log();
    md.store_bitmap(&new).unwrap();
    let done = [dev.crash_points().unwrap()];
    sweep(&dev, &done, |image, completed, at| {
        let got = Metadata::open(image).unwrap().load_bitmap().unwrap();
        if completed == 1 {
            assert_eq!(got.to_bytes(), new.to_bytes(), "{at}");
        }
        for block in 0..got.blocks() {
            let bit = got.test_block(block);
            assert!(
                bit == old.test_block(block) || bit == new.test_block(block),
                "{at}: block {block}"
            );
        }
    });
}

#[test]
fn create_over_old_metadata_leaves_old_none_damaged_or_new() {
    let dev = faulty(GIB);
    let mut md = Metadata::create(dev.clone(), 7, 0).unwrap();
    md.update(|sb| sb.uuids.new_current(0xDEAD_BEEF).unwrap())
        .unwrap();
    let mut al = ActivityLog::new(7).unwrap();
    md.write_al_transaction(&al.begin_io(0, 20 * MIB).unwrap().changes)
        .unwrap();
    let mut bitmap = DirtyBitmap::new(md.layout().usable_size_bytes).unwrap();
    bitmap.set_bytes(MIB, MIB).unwrap();
    md.store_bitmap(&bitmap).unwrap();
    let old_uuids = md.superblock().uuids;
    dev.start_crash_log();
    Metadata::create(dev.clone(), 7, 0).unwrap();
    let done = [dev.crash_points().unwrap()];
    sweep(&dev, &done, |image, completed, at| {
        match Metadata::open(image) {
            Ok(opened) if opened.superblock().uuids == old_uuids => {
                assert_eq!(completed, 0, "{at}");
                // The old superblock comes with its old ring and bitmap.
                assert_eq!(opened.al_recovery().active_extents(), vec![0, 1, 2, 3, 4]);
                assert_eq!(opened.load_bitmap().unwrap().dirty_blocks(), 256);
            }
            Ok(opened) => {
                assert_eq!(opened.superblock().uuids, Uuids::just_created(), "{at}");
                assert!(opened.al_recovery().active_extents().is_empty(), "{at}");
                assert!(opened.load_bitmap().unwrap().is_clean(), "{at}");
            }
            Err(MetadataError::NoMetadata { .. }) => assert_eq!(completed, 0, "{at}"),
            // The first new superblock torn over a zeroed pair: reported as
            // damaged metadata (create-md then needs --force), never misread.
            Err(MetadataError::NoValidSuperblock { slot0, slot1 }) => {
                assert_eq!(completed, 0, "{at}");
                assert!(
                    matches!(*slot1, MetadataError::BadMagic { .. }),
                    "{at}: {slot1}"
                );
                assert!(
                    matches!(*slot0, MetadataError::Checksum { .. }),
                    "{at}: {slot0}"
                );
            }
            Err(e) => panic!("{at}: {e}"),
        }
    });
}
