//! Recognising a filesystem at the start of a disk, so that create-md can
//! refuse to overwrite the tail of one (DRBD silently destroys it).
//!
//! Pure: the caller reads the first [`PROBE_BYTES`] of the disk. Only the
//! fields needed to name the filesystem and its size are read, each after
//! its magic and with checked arithmetic; a superblock with implausible
//! values is "not recognised", never a panic.
//!
//! - ext2/3/4: superblock at byte 1024; `s_magic` 0xEF53 (LE u16 at +0x38),
//!   `s_blocks_count_lo` (+0x04), `s_log_block_size` (+0x18, block size
//!   `1024 << n`, n <= 6), `s_feature_compat` (+0x5C: 0x4 has_journal),
//!   `s_feature_incompat` (+0x60: 0x40 extents, 0x80 64bit, 0x200
//!   flex_bg), `s_volume_name` (+0x78, 16 bytes), `s_blocks_count_hi`
//!   (+0x150, only with 64bit). Little-endian.
//! - xfs: superblock at byte 0; magic `"XFSB"`, `sb_blocksize` (BE u32 at
//!   4, a power of two in 512..=65536), `sb_dblocks` (BE u64 at 8),
//!   `sb_fname` (12 bytes at 108). Big-endian, as XFS is.

use std::fmt;

/// Bytes of the disk start the probe reads.
pub const PROBE_BYTES: usize = 4096;

const EXT_SB: usize = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
const EXT_INCOMPAT_EXT4: u32 = 0x40 | 0x80 | 0x200;
const EXT_INCOMPAT_64BIT: u32 = 0x80;
/// Largest `s_log_block_size` (64 KiB blocks).
const EXT_MAX_LOG_BLOCK: u32 = 6;

/// Filesystems the probe recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesystemKind {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
}

impl fmt::Display for FilesystemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilesystemKind::Ext2 => "ext2",
            FilesystemKind::Ext3 => "ext3",
            FilesystemKind::Ext4 => "ext4",
            FilesystemKind::Xfs => "xfs",
        })
    }
}

/// A recognised filesystem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FilesystemInfo {
    pub kind: FilesystemKind,
    /// The size the filesystem believes it has.
    pub size_bytes: u64,
    /// The volume label ("" when none).
    pub label: String,
}

/// Recognises a filesystem from the first bytes of a disk.
pub fn probe(start: &[u8]) -> Option<FilesystemInfo> {
    probe_xfs(start).or_else(|| probe_ext(start))
}

fn bytes<const N: usize>(data: &[u8], offset: usize) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    out.copy_from_slice(data.get(offset..offset.checked_add(N)?)?);
    Some(out)
}

fn label(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(raw.get(..end).unwrap_or_default()).into_owned()
}

fn probe_ext(data: &[u8]) -> Option<FilesystemInfo> {
    let le32 = |off: usize| bytes::<4>(data, EXT_SB + off).map(u32::from_le_bytes);
    let magic = bytes::<2>(data, EXT_SB + 0x38).map(u16::from_le_bytes)?;
    if magic != EXT_MAGIC {
        return None;
    }
    let log_block = le32(0x18)?;
    if log_block > EXT_MAX_LOG_BLOCK {
        return None;
    }
    let block_bytes = 1024u64 << log_block;
    let compat = le32(0x5C)?;
    let incompat = le32(0x60)?;
    let mut blocks = u64::from(le32(0x04)?);
    if incompat & EXT_INCOMPAT_64BIT != 0 {
        blocks |= u64::from(le32(0x150)?) << 32;
    }
    let kind = if incompat & EXT_INCOMPAT_EXT4 != 0 {
        FilesystemKind::Ext4
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
        FilesystemKind::Ext3
    } else {
        FilesystemKind::Ext2
    };
    Some(FilesystemInfo {
        kind,
        size_bytes: blocks.checked_mul(block_bytes)?,
        label: label(&bytes::<16>(data, EXT_SB + 0x78)?),
    })
}

fn probe_xfs(data: &[u8]) -> Option<FilesystemInfo> {
    if data.get(..4)? != b"XFSB" {
        return None;
    }
    let block_bytes = bytes::<4>(data, 4).map(u32::from_be_bytes)?;
    if !(512..=65536).contains(&block_bytes) || !block_bytes.is_power_of_two() {
        return None;
    }
    let blocks = bytes::<8>(data, 8).map(u64::from_be_bytes)?;
    Some(FilesystemInfo {
        kind: FilesystemKind::Xfs,
        size_bytes: blocks.checked_mul(u64::from(block_bytes))?,
        label: label(&bytes::<12>(data, 108)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ext(log_block: u32, blocks_lo: u32, compat: u32, incompat: u32, hi: u32) -> Vec<u8> {
        let mut d = vec![0u8; PROBE_BYTES];
        d[EXT_SB + 0x38..EXT_SB + 0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        d[EXT_SB + 0x18..EXT_SB + 0x1C].copy_from_slice(&log_block.to_le_bytes());
        d[EXT_SB + 0x04..EXT_SB + 0x08].copy_from_slice(&blocks_lo.to_le_bytes());
        d[EXT_SB + 0x5C..EXT_SB + 0x60].copy_from_slice(&compat.to_le_bytes());
        d[EXT_SB + 0x60..EXT_SB + 0x64].copy_from_slice(&incompat.to_le_bytes());
        d[EXT_SB + 0x150..EXT_SB + 0x154].copy_from_slice(&hi.to_le_bytes());
        d[EXT_SB + 0x78..EXT_SB + 0x7D].copy_from_slice(b"data\0");
        d
    }

    #[test]
    fn ext_kinds_and_sizes() {
        let info = probe(&ext(2, 262144, 0x4, 0x2c0, 0)).unwrap();
        assert_eq!(
            info,
            FilesystemInfo {
                kind: FilesystemKind::Ext4,
                size_bytes: 1 << 30,
                label: "data".into()
            }
        );
        assert_eq!(
            probe(&ext(0, 1000, 0x4, 0, 0)).unwrap().kind,
            FilesystemKind::Ext3
        );
        assert_eq!(
            probe(&ext(0, 1000, 0, 0, 0)).unwrap().kind,
            FilesystemKind::Ext2
        );
        // The high word counts only with the 64bit feature.
        assert_eq!(
            probe(&ext(2, 0, 0, 0x80, 1)).unwrap().size_bytes,
            4096 << 32
        );
        assert_eq!(probe(&ext(2, 0, 0, 0x40, 1)).unwrap().size_bytes, 0);
        assert_eq!(
            probe(&ext(7, 1000, 0, 0, 0)),
            None,
            "implausible block size"
        );
        assert_eq!(probe(&[0u8; 100]), None);
    }

    #[test]
    fn xfs() {
        let mut d = vec![0u8; PROBE_BYTES];
        d[..4].copy_from_slice(b"XFSB");
        d[4..8].copy_from_slice(&4096u32.to_be_bytes());
        d[8..16].copy_from_slice(&1000u64.to_be_bytes());
        d[108..112].copy_from_slice(b"nas\0");
        assert_eq!(
            probe(&d).unwrap(),
            FilesystemInfo {
                kind: FilesystemKind::Xfs,
                size_bytes: 4_096_000,
                label: "nas".into()
            }
        );
        d[4..8].copy_from_slice(&4095u32.to_be_bytes());
        assert_eq!(probe(&d), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..PROBE_BYTES), ext_magic: bool) {
            if ext_magic && data.len() > EXT_SB + 0x3A {
                data[EXT_SB + 0x38..EXT_SB + 0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
            }
            let _ = probe(&data);
        }
    }
}
