//! The superblock: one 4 KiB block, kept in two slots at the end of the
//! disk. Byte layout (little-endian):
//!
//! | offset | size | field                                   |
//! |-------:|-----:|-----------------------------------------|
//! |      0 |    8 | magic `"HADISKSB"`                      |
//! |      8 |    4 | format version (1)                      |
//! |     12 |    4 | flags ([`Flags`])                        |
//! |     16 |    8 | sequence number                         |
//! |     24 |    8 | disk size at creation, bytes            |
//! |     32 |    8 | usable size, bytes                      |
//! |     40 |    4 | bitmap granularity, bytes (4096)        |
//! |     44 |    4 | al-extents                              |
//! |     48 |    8 | bitmap area offset, bytes               |
//! |     56 |    8 | bitmap area length, bytes               |
//! |     64 |    8 | AL ring offset, bytes                   |
//! |     72 |    4 | AL ring slots                           |
//! |     76 |    4 | AL slot size, bytes (4096)              |
//! |     80 |    8 | superblock slot 0 offset, bytes         |
//! |     88 |    8 | UUID current                            |
//! |     96 |    8 | UUID bitmap                             |
//! |    104 |    8 | UUID history[0]                         |
//! |    112 |    8 | UUID history[1]                         |
//! |    120 |    8 | node name hash (0 = unset)              |
//! |    128 | 3964 | reserved, zero                          |
//! |   4092 |    4 | CRC32 (IEEE) of bytes 0..4092           |
//!
//! Decoding checks, in order: length, magic, version, CRC, reserved bytes,
//! flags, then every geometry field against [`Layout::compute`] of the
//! recorded disk size and al-extents. Only then are values used.

use std::fmt;

use hadisk_bitmap::BLOCK_BYTES;

use crate::codec::{check_block, check_zero, get_u32, get_u64, put, put_u32, put_u64, seal};
use crate::layout::Layout;
use crate::{Area, MetadataError, MD_BLOCK_BYTES};

/// Superblock magic.
pub const SUPERBLOCK_MAGIC: &[u8; 8] = b"HADISKSB";
/// Superblock format version this build reads and writes.
pub const SUPERBLOCK_VERSION: u32 = 1;
/// Size of one superblock slot.
pub const SUPERBLOCK_BYTES: usize = MD_BLOCK_BYTES as usize;
/// End of the defined fields; reserved bytes follow up to the CRC.
const RESERVED_START: usize = 128;
const CRC_OFFSET: usize = SUPERBLOCK_BYTES - 4;

/// DRBD's "just created" current UUID: both sides just created means
/// nobody's data is authoritative until `primary --force`.
pub const UUID_JUST_CREATED: u64 = 4;

/// Superblock flag bits (DRBD's MDF_* in spirit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u32);

impl Flags {
    /// The data is consistent (not in the middle of a resync as target).
    pub const CONSISTENT: Flags = Flags(1 << 0);
    /// The data was UpToDate when last known.
    pub const WAS_UP_TO_DATE: Flags = Flags(1 << 1);
    /// This node is Primary (set on promote, cleared on demote).
    pub const PRIMARY: Flags = Flags(1 << 2);
    /// Found PRIMARY without CLEAN_SHUTDOWN at attach: a crashed Primary,
    /// whose active AL extents must be resynced. Cleared after that resync.
    pub const CRASHED_PRIMARY: Flags = Flags(1 << 3);
    /// The peer's disk is known Outdated.
    pub const PEER_OUTDATED: Flags = Flags(1 << 4);
    /// A full sync is pending (e.g. after `invalidate`).
    pub const FULL_SYNC_NEEDED: Flags = Flags(1 << 5);
    /// The last detach was orderly: the AL is clean. Cleared at attach.
    pub const CLEAN_SHUTDOWN: Flags = Flags(1 << 6);
    /// Every bit this build knows.
    pub const ALL: Flags = Flags((1 << 7) - 1);

    const NAMES: [(Flags, &'static str); 7] = [
        (Flags::CONSISTENT, "consistent"),
        (Flags::WAS_UP_TO_DATE, "was-up-to-date"),
        (Flags::PRIMARY, "primary"),
        (Flags::CRASHED_PRIMARY, "crashed-primary"),
        (Flags::PEER_OUTDATED, "peer-outdated"),
        (Flags::FULL_SYNC_NEEDED, "full-sync-needed"),
        (Flags::CLEAN_SHUTDOWN, "clean-shutdown"),
    ];

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; None if any bit is unknown.
    pub fn from_bits(bits: u32) -> Option<Flags> {
        (bits & !Flags::ALL.0 == 0).then_some(Flags(bits))
    }

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: Flags) {
        self.0 &= !other.0;
    }

    pub fn set(&mut self, other: Flags, on: bool) {
        if on {
            self.insert(other);
        } else {
            self.remove(other);
        }
    }

    /// Names of the set flags, in bit order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect()
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", names.join(","))
        }
    }
}

/// The generation UUIDs (DRBD's current / bitmap / history[2]); 0 = empty.
/// Only the storage-side rotations live here; comparing two nodes' UUIDs
/// to decide a sync belongs to the replication core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Uuids {
    pub current: u64,
    pub bitmap: u64,
    pub history: [u64; 2],
}

impl Uuids {
    /// Fresh metadata: current is [`UUID_JUST_CREATED`], the rest empty.
    pub fn just_created() -> Uuids {
        Uuids {
            current: UUID_JUST_CREATED,
            ..Uuids::default()
        }
    }

    /// Starts a new data generation (promote while disconnected, or
    /// `--force`): `current` moves into `bitmap` if `bitmap` is empty — if
    /// it is not, the bitmap already tracks changes since that older
    /// generation, which the peer still holds, so it stays — and `fresh`
    /// becomes `current`. `fresh` is drawn by the caller (this crate has no
    /// randomness) and must not be 0.
    pub fn new_current(&mut self, fresh: u64) -> Result<(), MetadataError> {
        if fresh == 0 {
            return Err(MetadataError::ZeroUuid);
        }
        if self.bitmap == 0 {
            self.bitmap = self.current;
        }
        self.current = fresh;
        Ok(())
    }

    /// After a finished resync as source (or on a clean connect): the
    /// bitmap generation is no longer needed, it becomes history[0] and
    /// history[0] moves to history[1]. Nothing happens when bitmap is empty.
    pub fn rotate_bitmap_into_history(&mut self) {
        if self.bitmap != 0 {
            self.history = [self.bitmap, self.history[0]];
            self.bitmap = 0;
        }
    }

    /// Sets `bitmap` (e.g. a sync target recording the generation it syncs
    /// from); a non-empty previous value moves into history first.
    pub fn set_bitmap(&mut self, value: u64) {
        if self.bitmap != 0 && self.bitmap != value {
            self.history = [self.bitmap, self.history[0]];
        }
        self.bitmap = value;
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

/// A decoded, validated superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub sequence: u64,
    pub flags: Flags,
    pub layout: Layout,
    pub uuids: Uuids,
    pub node_name_hash: u64,
}

impl Superblock {
    /// A fresh superblock (sequence 0) for `layout`.
    pub fn new(layout: Layout, node_name_hash: u64) -> Superblock {
        Superblock {
            sequence: 0,
            flags: Flags::default(),
            layout,
            uuids: Uuids::just_created(),
            node_name_hash,
        }
    }

    /// The 4 KiB on-disk image, CRC included.
    pub fn encode(&self) -> [u8; SUPERBLOCK_BYTES] {
        let mut b = [0u8; SUPERBLOCK_BYTES];
        let l = &self.layout;
        put(&mut b, 0, SUPERBLOCK_MAGIC);
        put_u32(&mut b, 8, SUPERBLOCK_VERSION);
        put_u32(&mut b, 12, self.flags.bits());
        put_u64(&mut b, 16, self.sequence);
        put_u64(&mut b, 24, l.disk_size_bytes);
        put_u64(&mut b, 32, l.usable_size_bytes);
        put_u32(&mut b, 40, BLOCK_BYTES as u32);
        put_u32(&mut b, 44, l.al_extents);
        put_u64(&mut b, 48, l.bitmap_offset_bytes);
        put_u64(&mut b, 56, l.bitmap_area_bytes);
        put_u64(&mut b, 64, l.al_offset_bytes);
        put_u32(&mut b, 72, l.al_ring_slots);
        put_u32(&mut b, 76, MD_BLOCK_BYTES as u32);
        put_u64(&mut b, 80, l.superblock_offset_bytes);
        put_u64(&mut b, 88, self.uuids.current);
        put_u64(&mut b, 96, self.uuids.bitmap);
        put_u64(&mut b, 104, self.uuids.history[0]);
        put_u64(&mut b, 112, self.uuids.history[1]);
        put_u64(&mut b, 120, self.node_name_hash);
        seal(&mut b);
        b
    }

    /// Decodes and validates one slot image; `area` names it in errors.
    pub fn decode(area: Area, block: &[u8]) -> Result<Superblock, MetadataError> {
        check_block(
            area,
            block,
            SUPERBLOCK_BYTES,
            SUPERBLOCK_MAGIC,
            SUPERBLOCK_VERSION,
            8,
        )?;
        check_zero(area, block, RESERVED_START..CRC_OFFSET)?;
        let bits = get_u32(block, 12);
        let flags = Flags::from_bits(bits).ok_or(MetadataError::UnknownFlags {
            area,
            bits: bits & !Flags::ALL.bits(),
        })?;
        let layout = decode_layout(area, block)?;
        Ok(Superblock {
            sequence: get_u64(block, 16),
            flags,
            layout,
            uuids: Uuids {
                current: get_u64(block, 88),
                bitmap: get_u64(block, 96),
                history: [get_u64(block, 104), get_u64(block, 112)],
            },
            node_name_hash: get_u64(block, 120),
        })
    }
}

/// Recomputes the layout from the recorded disk size and al-extents and
/// requires every stored geometry field to match it.
fn decode_layout(area: Area, block: &[u8]) -> Result<Layout, MetadataError> {
    let fixed = [
        (
            "bitmap granularity",
            40,
            u64::from(get_u32(block, 40)),
            BLOCK_BYTES,
        ),
        (
            "AL slot size",
            76,
            u64::from(get_u32(block, 76)),
            MD_BLOCK_BYTES,
        ),
    ];
    for (field, _, found, expected) in fixed {
        if found != expected {
            return Err(MetadataError::Geometry {
                area,
                field,
                expected,
                found,
            });
        }
    }
    let layout = Layout::compute(get_u64(block, 24), get_u32(block, 44))?;
    let stored = [
        ("usable size", get_u64(block, 32), layout.usable_size_bytes),
        (
            "bitmap offset",
            get_u64(block, 48),
            layout.bitmap_offset_bytes,
        ),
        (
            "bitmap length",
            get_u64(block, 56),
            layout.bitmap_area_bytes,
        ),
        ("AL offset", get_u64(block, 64), layout.al_offset_bytes),
        (
            "AL ring slots",
            u64::from(get_u32(block, 72)),
            u64::from(layout.al_ring_slots),
        ),
        (
            "superblock offset",
            get_u64(block, 80),
            layout.superblock_offset_bytes,
        ),
    ];
    for (field, found, expected) in stored {
        if found != expected {
            return Err(MetadataError::Geometry {
                area,
                field,
                expected,
                found,
            });
        }
    }
    if let Area::Superblock { slot, offset_bytes } = area {
        let expected = layout.superblock_slot_offset(slot);
        if offset_bytes != expected {
            return Err(MetadataError::Geometry {
                area,
                field: "slot position",
                expected,
                found: offset_bytes,
            });
        }
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    fn sample() -> Superblock {
        let layout = Layout::compute(GIB + 123, 1237).unwrap();
        Superblock {
            sequence: 42,
            flags: Flags::CONSISTENT | Flags::PRIMARY,
            layout,
            uuids: Uuids {
                current: 0x1122_3344_5566_7788,
                bitmap: 0x99,
                history: [0xAA, 0xBB],
            },
            node_name_hash: 7,
        }
    }

    fn area_of(sb: &Superblock, slot: u8) -> Area {
        Area::Superblock {
            slot,
            offset_bytes: sb.layout.superblock_slot_offset(slot),
        }
    }

    #[test]
    fn round_trip_and_exact_bytes() {
        let sb = sample();
        let image = sb.encode();
        assert_eq!(&image[..8], b"HADISKSB");
        assert_eq!(&image[12..16], &[0x05, 0, 0, 0]);
        assert_eq!(
            &image[88..96],
            &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(Superblock::decode(area_of(&sb, 1), &image).unwrap(), sb);
        // An image is valid in either slot, but only at that slot's
        // position: a block read from elsewhere (a stale superblock of a
        // disk that was resized) is refused.
        assert_eq!(Superblock::decode(area_of(&sb, 0), &image).unwrap(), sb);
        let misplaced = Area::Superblock {
            slot: 0,
            offset_bytes: sb.layout.superblock_slot_offset(1),
        };
        assert!(matches!(
            Superblock::decode(misplaced, &image),
            Err(MetadataError::Geometry {
                field: "slot position",
                ..
            })
        ));
    }

    #[test]
    fn every_single_byte_corruption_is_a_specific_error() {
        let sb = sample();
        let image = sb.encode();
        let area = area_of(&sb, 1);
        for offset in 0..SUPERBLOCK_BYTES {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = image;
                bad[offset] ^= flip;
                let err = Superblock::decode(area, &bad).unwrap_err();
                let expected_kind = match offset {
                    0..=7 => matches!(err, MetadataError::BadMagic { .. }),
                    8..=11 => matches!(err, MetadataError::UnsupportedVersion { .. }),
                    _ => matches!(err, MetadataError::Checksum { .. }),
                };
                assert!(expected_kind, "byte {offset} ^ {flip:#x}: {err}");
                assert!(
                    err.to_string().starts_with("superblock slot 1 (byte "),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn validated_fields_after_a_good_crc() {
        let sb = sample();
        let area = area_of(&sb, 1);
        let reseal = |edit: &dyn Fn(&mut [u8; SUPERBLOCK_BYTES])| {
            let mut image = sb.encode();
            edit(&mut image);
            seal(&mut image);
            Superblock::decode(area, &image).unwrap_err().to_string()
        };
        let prefix = format!(
            "superblock slot 1 (byte {})",
            sb.layout.superblock_slot_offset(1)
        );
        assert_eq!(
            reseal(&|b| b[200] = 1),
            format!("{prefix}: reserved byte 200 is 0x01, expected 0")
        );
        assert_eq!(
            reseal(&|b| b[15] = 0x80),
            format!("{prefix}: unknown flag bits 0x80000000")
        );
        assert_eq!(
            reseal(&|b| put_u64(b, 56, 4096)),
            format!("{prefix}: bitmap length is 4096, expected 32768")
        );
        assert_eq!(
            reseal(&|b| put_u32(b, 40, 512)),
            format!("{prefix}: bitmap granularity is 512, expected 4096")
        );
        assert_eq!(
            reseal(&|b| put_u32(b, 44, 3)),
            "al-extents 3 is outside 7..=65534"
        );
        assert!(reseal(&|b| put_u64(b, 24, 100)).starts_with("disk of 100 bytes is too small"));
        assert_eq!(
            Superblock::decode(area, &[0u8; 10])
                .unwrap_err()
                .to_string(),
            format!("{prefix}: expected 4096 bytes, found 10")
        );
        assert_eq!(
            Superblock::decode(area, &[0u8; 4096])
                .unwrap_err()
                .to_string(),
            format!("{prefix}: bad magic: expected \"HADISKSB\", found 00 00 00 00 00 00 00 00")
        );
    }

    #[test]
    fn uuid_rotations() {
        let mut uuids = Uuids::just_created();
        uuids.new_current(0xA).unwrap();
        assert_eq!(
            uuids,
            Uuids {
                current: 0xA,
                bitmap: 4,
                history: [0, 0]
            }
        );
        // Bitmap already set: it keeps tracking the older generation.
        uuids.new_current(0xB).unwrap();
        assert_eq!(
            uuids,
            Uuids {
                current: 0xB,
                bitmap: 4,
                history: [0, 0]
            }
        );
        uuids.rotate_bitmap_into_history();
        assert_eq!(
            uuids,
            Uuids {
                current: 0xB,
                bitmap: 0,
                history: [4, 0]
            }
        );
        uuids.rotate_bitmap_into_history();
        assert_eq!(uuids.history, [4, 0], "empty bitmap rotates nothing");
        uuids.new_current(0xC).unwrap();
        uuids.rotate_bitmap_into_history();
        assert_eq!(
            uuids,
            Uuids {
                current: 0xC,
                bitmap: 0,
                history: [0xB, 4]
            }
        );
        uuids.set_bitmap(0xD);
        uuids.set_bitmap(0xE);
        assert_eq!(
            uuids,
            Uuids {
                current: 0xC,
                bitmap: 0xE,
                history: [0xD, 0xB]
            }
        );
        assert!(matches!(uuids.new_current(0), Err(MetadataError::ZeroUuid)));
        assert_eq!(
            uuids.to_string(),
            "000000000000000C:000000000000000E:000000000000000D:000000000000000B"
        );
    }

    #[test]
    fn flag_names() {
        let flags = Flags::CONSISTENT | Flags::CRASHED_PRIMARY | Flags::CLEAN_SHUTDOWN;
        assert_eq!(
            flags.to_string(),
            "consistent,crashed-primary,clean-shutdown"
        );
        assert_eq!(Flags::default().to_string(), "none");
        assert_eq!(Flags::from_bits(1 << 7), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let area = Area::Superblock { slot: 0, offset_bytes: 0 };
            let _ = Superblock::decode(area, &bytes);
        }

        /// Sealed blocks with random field values (magic and version kept)
        /// exercise the post-CRC validation without panicking.
        #[test]
        fn sealed_random_fields_never_panic(fields in proptest::collection::vec(any::<u8>(), 116)) {
            let mut image = [0u8; SUPERBLOCK_BYTES];
            image[..8].copy_from_slice(SUPERBLOCK_MAGIC);
            put_u32(&mut image, 8, SUPERBLOCK_VERSION);
            image[12..128].copy_from_slice(&fields);
            seal(&mut image);
            let area = Area::Superblock { slot: 0, offset_bytes: 0 };
            let _ = Superblock::decode(area, &image);
        }

        #[test]
        fn round_trip(seq: u64, bits in 0u32..128, disk in (2u64 << 20)..(1 << 42), al in 7u32..65535,
                      c: u64, bm: u64, h0: u64, h1: u64, node: u64) {
            let Ok(layout) = Layout::compute(disk, al) else { return Ok(()); };
            let sb = Superblock {
                sequence: seq,
                flags: Flags::from_bits(bits).unwrap(),
                layout,
                uuids: Uuids { current: c, bitmap: bm, history: [h0, h1] },
                node_name_hash: node,
            };
            let area = Area::Superblock { slot: 0, offset_bytes: layout.superblock_slot_offset(0) };
            prop_assert_eq!(Superblock::decode(area, &sb.encode()).unwrap(), sb);
        }
    }
}
