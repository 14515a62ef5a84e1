//! The `dump-md` view of opened metadata: one serialisable value, printed
//! as JSON (`dump-md --json`) or as the human text below.
//!
//! JSON fields (all sizes in bytes, UUIDs as 16 upper-case hex digits):
//!
//! | field | meaning |
//! |---|---|
//! | `format_version` | superblock format version (1) |
//! | `disk_size_bytes` | the backing disk's size |
//! | `usable_size_bytes` | what the replicated device exports |
//! | `metadata_bytes` | disk size minus usable size |
//! | `bitmap_offset_bytes`, `bitmap_area_bytes` | the bitmap area |
//! | `bitmap_granularity_bytes` | bytes per bitmap bit (4096) |
//! | `al_offset_bytes`, `al_ring_slots`, `al_extents` | the AL ring and the AL size |
//! | `superblock_offset_bytes` | superblock slot 0 (slot 1 follows) |
//! | `active_slot`, `sequence` | the superblock slot in use and its sequence |
//! | `superblock_fallback` | why the other slot is not valid, or null |
//! | `flags` | names of the set flags (`consistent`, `was-up-to-date`, `primary`, `crashed-primary`, `peer-outdated`, `full-sync-needed`, `clean-shutdown`) |
//! | `flags_raw` | the flag bits |
//! | `uuids` | `current`, `bitmap`, `history` (two) |
//! | `node_name_hash` | FNV-1a of the node name that ran create-md |
//! | `dirty_blocks`, `dirty_bytes` | set bits of the bitmap and the bytes they cover |
//! | `al` | `last_transaction`, `active_extents` (extent numbers), `active_count`, `torn_slot` (ring slot of a discarded torn write, or null) |

use serde::Serialize;

use crate::superblock::SUPERBLOCK_VERSION;
use crate::{Metadata, MetadataError};

/// Generation UUIDs in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UuidsDump {
    pub current: String,
    pub bitmap: String,
    pub history: [String; 2],
}

/// The activity log as found at open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlDump {
    pub last_transaction: u64,
    pub active_count: usize,
    pub active_extents: Vec<u32>,
    pub torn_slot: Option<u32>,
}

/// Everything `dump-md` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetadataDump {
    pub format_version: u32,
    pub disk_size_bytes: u64,
    pub usable_size_bytes: u64,
    pub metadata_bytes: u64,
    pub bitmap_offset_bytes: u64,
    pub bitmap_area_bytes: u64,
    pub bitmap_granularity_bytes: u64,
    pub al_offset_bytes: u64,
    pub al_ring_slots: u32,
    pub al_extents: u32,
    pub superblock_offset_bytes: u64,
    pub active_slot: u8,
    pub sequence: u64,
    pub superblock_fallback: Option<String>,
    pub flags: Vec<&'static str>,
    pub flags_raw: u32,
    pub uuids: UuidsDump,
    pub node_name_hash: String,
    pub dirty_blocks: u64,
    pub dirty_bytes: u64,
    pub al: AlDump,
}

/// Most AL extents listed in the text view (all are in the JSON).
const TEXT_EXTENTS_SHOWN: usize = 16;

fn hex(value: u64) -> String {
    format!("{value:016X}")
}

impl MetadataDump {
    /// The dump of opened metadata (reads nothing more from the disk).
    pub fn of(md: &Metadata) -> Result<MetadataDump, MetadataError> {
        let sb = md.superblock();
        let l = md.layout();
        let bitmap = md.load_bitmap()?;
        let rec = md.al_recovery();
        let active_extents = rec.active_extents();
        Ok(MetadataDump {
            format_version: SUPERBLOCK_VERSION,
            disk_size_bytes: l.disk_size_bytes,
            usable_size_bytes: l.usable_size_bytes,
            metadata_bytes: l.metadata_bytes(),
            bitmap_offset_bytes: l.bitmap_offset_bytes,
            bitmap_area_bytes: l.bitmap_area_bytes,
            bitmap_granularity_bytes: hadisk_bitmap::BLOCK_BYTES,
            al_offset_bytes: l.al_offset_bytes,
            al_ring_slots: l.al_ring_slots,
            al_extents: l.al_extents,
            superblock_offset_bytes: l.superblock_offset_bytes,
            active_slot: md.active_slot(),
            sequence: sb.sequence,
            superblock_fallback: md.superblock_fallback().map(str::to_string),
            flags: sb.flags.names(),
            flags_raw: sb.flags.bits(),
            uuids: UuidsDump {
                current: hex(sb.uuids.current),
                bitmap: hex(sb.uuids.bitmap),
                history: [hex(sb.uuids.history[0]), hex(sb.uuids.history[1])],
            },
            node_name_hash: hex(sb.node_name_hash),
            dirty_blocks: bitmap.dirty_blocks(),
            dirty_bytes: bitmap.dirty_bytes(),
            al: AlDump {
                last_transaction: rec.last_transaction,
                active_count: active_extents.len(),
                active_extents,
                torn_slot: rec.torn_slot.as_ref().map(|(slot, _)| *slot),
            },
        })
    }

    /// The human view.
    pub fn render_text(&self) -> String {
        let flags = if self.flags.is_empty() {
            "none".to_string()
        } else {
            self.flags.join(",")
        };
        let mut extents: Vec<String> = self
            .al
            .active_extents
            .iter()
            .take(TEXT_EXTENTS_SHOWN)
            .map(u32::to_string)
            .collect();
        if self.al.active_count > TEXT_EXTENTS_SHOWN {
            extents.push(format!(
                "… ({} more)",
                self.al.active_count - TEXT_EXTENTS_SHOWN
            ));
        }
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<14} {v}\n"));
        line("version", format!("{}", self.format_version));
        line("disk-size", format!("{} bytes", self.disk_size_bytes));
        line("usable-size", format!("{} bytes", self.usable_size_bytes));
        line("metadata", format!("{} bytes", self.metadata_bytes));
        line(
            "bitmap",
            format!(
                "{} bytes at {} (1 bit per {} bytes)",
                self.bitmap_area_bytes, self.bitmap_offset_bytes, self.bitmap_granularity_bytes
            ),
        );
        line(
            "activity-log",
            format!(
                "{} slots at {}, al-extents {}",
                self.al_ring_slots, self.al_offset_bytes, self.al_extents
            ),
        );
        line(
            "superblock",
            format!(
                "slot {} of 2 at {}, sequence {}",
                self.active_slot, self.superblock_offset_bytes, self.sequence
            ),
        );
        if let Some(why) = &self.superblock_fallback {
            line("other-slot", format!("invalid: {why}"));
        }
        line("flags", format!("{flags} ({:#x})", self.flags_raw));
        let u = &self.uuids;
        line(
            "uuids",
            format!(
                "{}:{}:{}:{}",
                u.current, u.bitmap, u.history[0], u.history[1]
            ),
        );
        line("node-hash", self.node_name_hash.clone());
        line(
            "dirty",
            format!("{} blocks ({} bytes)", self.dirty_blocks, self.dirty_bytes),
        );
        let torn = self
            .al
            .torn_slot
            .map(|s| format!(", torn slot {s} discarded"))
            .unwrap_or_default();
        line(
            "al",
            format!(
                "{} active extents [{}], last transaction {}{torn}",
                self.al.active_count,
                extents.join(" "),
                self.al.last_transaction
            ),
        );
        out
    }
}

/// FNV-1a (64-bit) of a node name: recorded by create-md so that dump-md
/// can show which node's `on` section made the metadata.
pub fn node_name_hash(name: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    name.bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadisk_storage::MemDevice;
    use std::sync::Arc;

    /// The JSON keys are exactly the ones the module header documents.
    #[test]
    fn json_fields_are_the_documented_ones() {
        let md = Metadata::create(
            Arc::new(MemDevice::new(1 << 30)),
            1237,
            node_name_hash("NAS1"),
        )
        .unwrap();
        let value = serde_json::to_value(MetadataDump::of(&md).unwrap()).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let documented = [
            "active_slot",
            "al",
            "al_extents",
            "al_offset_bytes",
            "al_ring_slots",
            "bitmap_area_bytes",
            "bitmap_granularity_bytes",
            "bitmap_offset_bytes",
            "dirty_blocks",
            "dirty_bytes",
            "disk_size_bytes",
            "flags",
            "flags_raw",
            "format_version",
            "metadata_bytes",
            "node_name_hash",
            "sequence",
            "superblock_fallback",
            "superblock_offset_bytes",
            "usable_size_bytes",
            "uuids",
        ];
        assert_eq!(keys, documented);
        let header = include_str!("dump.rs");
        for key in documented {
            assert!(
                header.contains(&format!("`{key}`")),
                "{key} is not documented"
            );
        }
        let al: Vec<&str> = value["al"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            al,
            [
                "active_count",
                "active_extents",
                "last_transaction",
                "torn_slot"
            ]
        );
        assert_eq!(
            value["node_name_hash"],
            format!("{:016X}", node_name_hash("NAS1"))
        );
        assert_eq!(node_name_hash(""), 0xcbf2_9ce4_8422_2325);
    }
}
