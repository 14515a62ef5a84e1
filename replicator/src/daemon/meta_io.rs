//! The resource's metadata as the driver persists it: the core's
//! `WriteMeta` (bitmap pages, then the AL transaction, then the
//! superblock, each durable before the next) and the mapping between the
//! core's superblock fields and the on-disk flags.

use std::sync::Mutex;

use hadisk_bitmap::DirtyBitmap;
use hadisk_core::{MetaUpdate, SuperblockState};
use hadisk_metadata::{Flags, Metadata};

/// The on-disk metadata and the bitmap image as last written.
#[derive(Debug)]
pub struct MetaStore {
    pub md: Metadata,
    pub image: DirtyBitmap,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Metadata updates replace in-memory state only after a durable write:
    // a panic mid-update leaves the old state, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Persists one `WriteMeta`: bitmap pages, AL transaction, superblock.
pub fn write_meta(meta: &Mutex<MetaStore>, update: &MetaUpdate) -> Result<(), String> {
    let mut m = lock(meta);
    let m = &mut *m;
    if !update.bitmap_pages.is_empty() {
        for (page, bytes) in &update.bitmap_pages {
            m.image.load_page(*page, bytes).map_err(|e| e.to_string())?;
        }
        m.md.store_bitmap(&m.image).map_err(|e| e.to_string())?;
    }
    if !update.al.is_empty() {
        m.md.write_al_transaction(&update.al)
            .map_err(|e| e.to_string())?;
    }
    if let Some(sb) = update.superblock {
        m.md.update(|s| apply_superblock(s, &sb))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Maps the core's superblock fields onto the on-disk superblock.
pub fn apply_superblock(s: &mut hadisk_metadata::Superblock, sb: &SuperblockState) {
    s.uuids = hadisk_metadata::Uuids {
        current: sb.uuids.current,
        bitmap: sb.uuids.bitmap,
        history: sb.uuids.history,
    };
    s.flags.set(Flags::CONSISTENT, sb.consistent);
    s.flags.set(Flags::WAS_UP_TO_DATE, sb.was_up_to_date);
    s.flags.set(Flags::PRIMARY, sb.primary);
    s.flags.set(Flags::CRASHED_PRIMARY, sb.crashed_primary);
    s.flags.set(Flags::PEER_OUTDATED, sb.peer_outdated);
}

/// The core's view of an on-disk superblock at attach. `PRIMARY` is taken
/// as cleared: a crash was recorded as `CRASHED_PRIMARY` by
/// `Metadata::attach`, and a clean stop is not a crash.
pub fn superblock_state(s: &hadisk_metadata::Superblock) -> SuperblockState {
    let f = s.flags;
    SuperblockState {
        uuids: hadisk_peer_proto::Uuids {
            current: s.uuids.current,
            bitmap: s.uuids.bitmap,
            history: s.uuids.history,
        },
        consistent: f.contains(Flags::CONSISTENT),
        was_up_to_date: f.contains(Flags::WAS_UP_TO_DATE),
        primary: false,
        crashed_primary: f.contains(Flags::CRASHED_PRIMARY),
        peer_outdated: f.contains(Flags::PEER_OUTDATED),
    }
}
