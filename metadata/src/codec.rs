//! Little-endian field access on fixed-size blocks, and the checks every
//! decoder runs first. Callers pass offsets that are constants of the
//! format and lie inside the block whose length was checked, so the
//! slicing helpers below never see an out-of-range offset; they still
//! return zero rather than panic if a caller got a constant wrong.

use crate::{Area, MetadataError};

pub(crate) fn get_u32(block: &[u8], offset: usize) -> u32 {
    let mut le = [0u8; 4];
    if let Some(src) = block.get(offset..offset + 4) {
        le.copy_from_slice(src);
    }
    u32::from_le_bytes(le)
}

pub(crate) fn get_u64(block: &[u8], offset: usize) -> u64 {
    let mut le = [0u8; 8];
    if let Some(src) = block.get(offset..offset + 8) {
        le.copy_from_slice(src);
    }
    u64::from_le_bytes(le)
}

pub(crate) fn put(block: &mut [u8], offset: usize, bytes: &[u8]) {
    if let Some(dst) = block.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

pub(crate) fn put_u32(block: &mut [u8], offset: usize, value: u32) {
    put(block, offset, &value.to_le_bytes());
}

pub(crate) fn put_u64(block: &mut [u8], offset: usize, value: u64) {
    put(block, offset, &value.to_le_bytes());
}

/// Renders magic bytes for messages: ASCII when printable, else hex.
pub(crate) fn show_bytes(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        format!("\"{}\"", String::from_utf8_lossy(bytes))
    } else {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Length, magic, version and CRC32 (over everything but the trailing
/// 4-byte CRC field), in that order.
pub(crate) fn check_block(
    area: Area,
    block: &[u8],
    block_bytes: usize,
    magic: &[u8],
    version: u32,
    version_offset: usize,
) -> Result<(), MetadataError> {
    if block.len() != block_bytes {
        return Err(MetadataError::BadLength {
            area,
            expected: block_bytes,
            found: block.len(),
        });
    }
    let found_magic = block.get(..magic.len()).unwrap_or_default();
    if found_magic != magic {
        return Err(MetadataError::BadMagic {
            area,
            expected: show_bytes(magic),
            found: show_bytes(found_magic),
        });
    }
    let found_version = get_u32(block, version_offset);
    if found_version != version {
        return Err(MetadataError::UnsupportedVersion {
            area,
            expected: version,
            found: found_version,
        });
    }
    let crc_offset = block_bytes - 4;
    let stored = get_u32(block, crc_offset);
    let computed = crc32fast::hash(block.get(..crc_offset).unwrap_or_default());
    if stored != computed {
        return Err(MetadataError::Checksum {
            area,
            stored,
            computed,
        });
    }
    Ok(())
}

/// Seals a block: writes the CRC32 of everything before the trailing field.
pub(crate) fn seal(block: &mut [u8]) {
    let crc_offset = block.len().saturating_sub(4);
    let crc = crc32fast::hash(block.get(..crc_offset).unwrap_or_default());
    put_u32(block, crc_offset, crc);
}

/// Every byte of `block[range]` must be zero.
pub(crate) fn check_zero(
    area: Area,
    block: &[u8],
    range: std::ops::Range<usize>,
) -> Result<(), MetadataError> {
    let start = range.start;
    let bytes = block.get(range).unwrap_or_default();
    match bytes.iter().position(|&b| b != 0) {
        None => Ok(()),
        Some(i) => Err(MetadataError::ReservedNotZero {
            area,
            offset: start + i,
            value: bytes[i],
        }),
    }
}
