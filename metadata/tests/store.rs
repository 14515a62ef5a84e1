//! The metadata store on in-memory and file devices: create/open round
//! trips, superblock updates and slot fallback, AL transactions and
//! recovery, bitmap stores, refusals with their exact messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use hadisk_bitmap::{ActivityLog, DirtyBitmap};
use hadisk_metadata::layout::Layout;
use hadisk_metadata::superblock::{Flags, UUID_JUST_CREATED};
use hadisk_metadata::{
    detect_filesystem, detect_metadata, FilesystemKind, Metadata, MetadataError,
};
use hadisk_storage::{BlockDevice, FileDevice, MemDevice};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn mem(size: u64) -> Arc<MemDevice> {
    Arc::new(MemDevice::new(size))
}

#[test]
fn create_then_open_round_trips() {
    let dev = mem(GIB);
    let md = Metadata::create(dev.clone(), 1237, 99).unwrap();
    assert_eq!(md.layout(), &Layout::compute(GIB, 1237).unwrap());
    assert_eq!(md.superblock().flags, Flags::CLEAN_SHUTDOWN);
    assert_eq!(md.superblock().uuids.current, UUID_JUST_CREATED);
    let opened = Metadata::open(dev.clone()).unwrap();
    assert_eq!(opened.superblock(), md.superblock());
    assert_eq!(opened.active_slot(), 1);
    assert_eq!(opened.al_recovery().active_extents(), Vec::<u32>::new());
    assert!(opened.load_bitmap().unwrap().is_clean());
    assert_eq!(detect_metadata(&*dev).unwrap(), Some(*md.superblock()));
    assert_eq!(detect_metadata(&*mem(GIB)).unwrap(), None);
    // Sparse: only the superblock slots are allocated.
    assert_eq!(dev.allocated_bytes(), 8192);
}

#[test]
fn update_alternates_slots_and_survives_reopen() {
    let dev = mem(GIB);
    let mut md = Metadata::create(dev.clone(), 1237, 0).unwrap();
    md.update(|sb| {
        sb.uuids.new_current(0xABCD).unwrap();
        sb.flags.insert(Flags::PRIMARY);
        sb.sequence = 999; // ignored: the store numbers updates
    })
    .unwrap();
    assert_eq!(md.active_slot(), 0);
    assert_eq!(md.superblock().sequence, 2);
    let reopened = Metadata::open(dev.clone()).unwrap();
    assert_eq!(reopened.superblock(), md.superblock());
    // The geometry is fixed.
    let err = md
        .update(|sb| sb.layout = Layout::compute(GIB, 7).unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the superblock update changes al-extents from 1237 to 7; geometry is fixed at create-md"
    );
}

#[test]
fn attach_detects_a_crashed_primary() {
    let dev = mem(GIB);
    let mut md = Metadata::create(dev.clone(), 1237, 0).unwrap();
    assert!(!md.attach().unwrap());
    md.update(|sb| sb.flags.insert(Flags::PRIMARY)).unwrap();
    // No detach_clean: the node dies as Primary.
    let mut md = Metadata::open(dev.clone()).unwrap();
    assert!(md.attach().unwrap());
    assert!(md.superblock().flags.contains(Flags::CRASHED_PRIMARY));
    assert!(!md.superblock().flags.contains(Flags::CLEAN_SHUTDOWN));
    md.detach_clean().unwrap();
    let md = Metadata::open(dev).unwrap();
    assert!(md.superblock().flags.contains(Flags::CLEAN_SHUTDOWN));
}

#[test]
fn damaged_slot_falls_back_to_the_other() {
    let dev = mem(GIB);
    let mut md = Metadata::create(dev.clone(), 1237, 0).unwrap();
    md.update(|sb| sb.uuids.new_current(0x1111).unwrap())
        .unwrap(); // slot 0, seq 2
    let slot0 = md.layout().superblock_slot_offset(0);
    dev.write_at(&[0x5a], slot0 + 100).unwrap();
    let opened = Metadata::open(dev.clone()).unwrap();
    assert_eq!(opened.active_slot(), 1);
    assert_eq!(opened.superblock().uuids.current, UUID_JUST_CREATED);
    let why = opened.superblock_fallback().unwrap();
    assert!(
        why.starts_with(&format!(
            "superblock slot 0 (byte {slot0}): checksum mismatch"
        )),
        "{why}"
    );
    // Both damaged: an error naming both.
    dev.write_at(&[0x5a], slot0 + 4096 + 100).unwrap();
    let err = Metadata::open(dev.clone()).unwrap_err().to_string();
    assert!(
        err.starts_with("no valid superblock: slot 0: superblock slot 0"),
        "{err}"
    );
    assert!(err.contains("; slot 1: superblock slot 1"), "{err}");
    assert!(matches!(
        detect_metadata(&*dev),
        Err(MetadataError::NoValidSuperblock { .. })
    ));
    assert_eq!(
        Metadata::open(mem(GIB)).unwrap_err().to_string(),
        "no hadisk metadata on this disk of 1073741824 bytes (run create-md first)"
    );
}

#[test]
fn al_transactions_are_recovered() {
    let dev = mem(GIB);
    let mut md = Metadata::create(dev.clone(), 7, 0).unwrap();
    let mut al = ActivityLog::new(7).unwrap();
    // Many evictions: the ring (8 slots) wraps several times.
    for i in 0..40u64 {
        let offset = (i * 37 % 200) * 4 * MIB;
        let update = al.begin_io(offset, 8 * MIB).unwrap();
        md.write_al_transaction(&update.changes).unwrap();
        al.end_io(offset, 8 * MIB).unwrap();
    }
    assert_eq!(md.al_slots(), al.slots());
    let opened = Metadata::open(dev.clone()).unwrap();
    assert_eq!(opened.al_recovery().slots, al.slots());
    assert_eq!(opened.al_recovery().active_extents(), al.active_extents());
    let recovered = opened.al_recovery().activity_log().unwrap();
    assert_eq!(recovered.active_extents(), al.active_extents());
    // Continuing after reopen keeps the ring consistent.
    let mut md = opened;
    let update = al.begin_io(250 * 4 * MIB, 1).unwrap();
    md.write_al_transaction(&update.changes).unwrap();
    assert_eq!(Metadata::open(dev).unwrap().al_recovery().slots, al.slots());
}

#[test]
fn invalid_al_changes_are_refused_before_writing() {
    let dev = mem(GIB);
    let mut md = Metadata::create(dev, 7, 0).unwrap();
    let change = |slot, new_extent| hadisk_bitmap::SlotChange {
        slot,
        old_extent: None,
        new_extent,
    };
    assert_eq!(
        md.write_al_transaction(&[change(7, 0)])
            .unwrap_err()
            .to_string(),
        "activity-log update refused: slot 7 is outside 0..7"
    );
    assert_eq!(
        md.write_al_transaction(&[change(0, 256)])
            .unwrap_err()
            .to_string(),
        "activity-log update refused: extent 256 is past the last extent (255) of the usable size"
    );
    assert_eq!(
        md.write_al_transaction(&[change(0, 5), change(1, 5)])
            .unwrap_err()
            .to_string(),
        "activity-log update refused: extent 5 would be in two slots"
    );
}

#[test]
fn bitmap_stores_only_changed_pages() {
    let dev = mem(GIB);
    let mut md = Metadata::create(dev.clone(), 1237, 0).unwrap();
    let mut bitmap = md.load_bitmap().unwrap();
    bitmap.set_bytes(0, 4096).unwrap();
    bitmap.set_bytes(700 * MIB, 3 * MIB).unwrap();
    let before = dev.stats();
    md.store_bitmap(&bitmap).unwrap();
    let after = dev.stats();
    // Pages 0 and 5 (128 MiB each): two page writes, one sync.
    assert_eq!(after.bytes_written - before.bytes_written, 2 * 4096);
    let opened = Metadata::open(dev.clone()).unwrap();
    assert_eq!(opened.load_bitmap().unwrap(), {
        let mut b = bitmap.clone();
        b.take_changed_pages();
        b
    });
    assert_eq!(opened.load_bitmap().unwrap().dirty_blocks(), 1 + 768);
    // Nothing changed: nothing written.
    let before = dev.stats();
    md.store_bitmap(&bitmap).unwrap();
    assert_eq!(dev.stats().bytes_written, before.bytes_written);
    // A bitmap of another size is refused.
    let other = DirtyBitmap::new(GIB).unwrap();
    assert!(md.store_bitmap(&other).is_err());
}

#[test]
fn damaged_bitmap_area_is_named() {
    let dev = mem(2 * MIB + 64 * 1024);
    let md = Metadata::create(dev.clone(), 7, 0).unwrap();
    let layout = *md.layout();
    // Bits past the last block of the usable size.
    dev.write_at(&[0xff; 4096], layout.bitmap_offset_bytes)
        .unwrap();
    let err = Metadata::open(dev).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "bitmap area (byte {}): bitmap image has bits set past its last block ({} blocks); \
             recreate the metadata (create-md --force) and resync from the peer",
            layout.bitmap_offset_bytes,
            layout.usable_size_bytes / 4096
        )
    );
}

#[test]
fn refusals_are_specific() {
    let err = Metadata::create(mem(MIB), 1237, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "disk of 1048576 bytes is too small: hadisk needs at least 1093632 bytes (metadata plus 1 MiB of data)"
    );
}

#[test]
fn works_on_a_sparse_file_and_probes_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    std::fs::File::create(&path).unwrap().set_len(GIB).unwrap();
    let dev: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&path, false).unwrap());
    assert_eq!(detect_filesystem(&*dev).unwrap(), None);
    let md = Metadata::create(dev.clone(), 1237, 0).unwrap();
    drop(md);
    let opened = Metadata::open(dev.clone()).unwrap();
    assert_eq!(opened.layout().usable_size_bytes, GIB - 73728);
    // An ext4 superblock magic at 1024+0x38 with a plausible size.
    let mut sb = vec![0u8; 4096];
    sb[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
    sb[1024 + 0x18] = 2;
    sb[1024 + 0x04..1024 + 0x08].copy_from_slice(&262144u32.to_le_bytes());
    sb[1024 + 0x60] = 0x40;
    dev.write_at(&sb, 0).unwrap();
    let fs = detect_filesystem(&*dev).unwrap().unwrap();
    assert_eq!((fs.kind, fs.size_bytes), (FilesystemKind::Ext4, GIB));
}

#[test]
fn any_corrupted_superblock_byte_falls_back_to_the_other_slot() {
    let dev = mem(4 * MIB);
    let mut md = Metadata::create(dev.clone(), 7, 0).unwrap();
    md.update(|sb| sb.uuids.new_current(0x77).unwrap()).unwrap();
    md.update(|sb| sb.uuids.new_current(0x88).unwrap()).unwrap(); // slot 1, seq 3
    let slot1 = md.layout().superblock_slot_offset(1);
    assert_eq!(
        Metadata::open(dev.clone())
            .unwrap()
            .superblock()
            .uuids
            .current,
        0x88
    );
    let mut pristine = [0u8; 4096];
    dev.read_at(&mut pristine, slot1).unwrap();
    for offset in 0..4096u64 {
        let mut bad = [pristine[offset as usize] ^ 0x10];
        dev.write_at(&bad, slot1 + offset).unwrap();
        let opened = Metadata::open(dev.clone()).unwrap();
        assert_eq!(opened.active_slot(), 0, "byte {offset}");
        assert_eq!(opened.superblock().sequence, 2, "byte {offset}");
        assert_eq!(opened.superblock().uuids.current, 0x77, "byte {offset}");
        let why = opened.superblock_fallback().unwrap();
        let specific = [
            "bad magic",
            "unsupported format version",
            "checksum mismatch",
        ];
        assert!(
            specific.iter().any(|s| why.contains(s)),
            "byte {offset}: {why}"
        );
        bad[0] = pristine[offset as usize];
        dev.write_at(&bad, slot1 + offset).unwrap();
    }
    assert_eq!(Metadata::open(dev).unwrap().active_slot(), 1);
}

proptest::proptest! {
    /// Arbitrary bytes in the bitmap area and the AL ring: open never
    /// panics; it succeeds or names the damaged area.
    #[test]
    fn arbitrary_metadata_areas_never_panic(
        bitmap_page in proptest::collection::vec(proptest::prelude::any::<u8>(), 4096),
        al_slot in proptest::collection::vec(proptest::prelude::any::<u8>(), 4096),
        slot_index in 0u32..8,
        keep_magic: bool,
    ) {
        let dev = mem(4 * MIB);
        let md = Metadata::create(dev.clone(), 7, 0).unwrap();
        let layout = *md.layout();
        dev.write_at(&bitmap_page, layout.bitmap_offset_bytes).unwrap();
        let mut al_slot = al_slot;
        if keep_magic {
            al_slot[..8].copy_from_slice(b"HADISKAL");
            al_slot[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        dev.write_at(&al_slot, layout.al_slot_offset(slot_index)).unwrap();
        match Metadata::open(dev) {
            Ok(_) => {}
            Err(MetadataError::BitmapArea { .. } | MetadataError::AlDamaged { .. }) => {}
            Err(other) => proptest::prop_assert!(false, "unexpected error: {}", other),
        }
    }
}

#[test]
fn a_failed_al_write_leaves_the_table_the_disk_holds() {
    use hadisk_storage::{FaultRule, FaultyDevice, OpKind};
    let dev = Arc::new(FaultyDevice::new(MemDevice::new(GIB)));
    let mut md = Metadata::create(dev.clone(), 200, 0).unwrap();
    let change = |slot: u32| hadisk_bitmap::SlotChange {
        slot,
        old_extent: None,
        new_extent: slot,
    };
    let changes: Vec<_> = (0..70).map(change).collect();
    // 70 changes = two transactions; the second one's write fails.
    dev.inject(FaultRule::on(OpKind::Write).after(1).times(1));
    let err = md.write_al_transaction(&changes).unwrap_err().to_string();
    assert!(err.starts_with("activity-log slot 2 (byte "), "{err}");
    assert!(err.contains(": write failed: "), "{err}");
    let mut expected = vec![None; 200];
    for (slot, entry) in expected.iter_mut().enumerate().take(64) {
        *entry = Some(slot as u32);
    }
    assert_eq!(md.al_slots(), &expected[..]);
    // The next transaction restates that table, not the one before.
    md.write_al_transaction(&[change(100)]).unwrap();
    expected[100] = Some(100);
    assert_eq!(Metadata::open(dev).unwrap().al_recovery().slots, expected);
}
