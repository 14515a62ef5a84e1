//! Saving a split-brain victim's diverging blocks before the resync
//! overwrites them ([`hadisk_core::Action::SaveDiverging`]); DRBD throws
//! them away.
//!
//! Each save is two files in the split-brain directory, named
//! `RES-NODE-YYYYMMDDTHHMMSSZ[-N]`:
//! * `.img`: a sparse file of the device's usable size holding, at their
//!   own offsets, the blocks listed in the index (all-zero 4 KiB blocks are
//!   left as holes, which read back as the same zeros); every other byte is
//!   a hole;
//! * `.json`: the index ([`Index`]): resource, node, peer, time, both
//!   sides' generation UUIDs, how the split brain was resolved, and each
//!   saved range with the sha256 of its bytes.
//!
//! Invariants:
//! * the save is reported done only when the image, then the index, then
//!   the directory entry are durable (fsync): the index's presence means a
//!   complete image; a failed save removes what it wrote and is reported as
//!   a failure, so the core refuses to discard;
//! * an existing file is never overwritten (`create_new`, a numeric suffix
//!   when two saves fall in the same second).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use hadisk_core::{SaveRequest, Uuids};
use hadisk_storage::BlockDevice;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Bytes read from the disk per step of a range (bounds the buffer).
const COPY_CHUNK_BYTES: u64 = 1 << 20;
/// Holes are kept at this granularity (the bitmap's block).
const BLOCK_BYTES: usize = 4096;
/// Attempts at a unique file name within one second.
const MAX_NAME_ATTEMPTS: u32 = 1000;
/// Format tag of the index, for tools that read it.
const INDEX_FORMAT: &str = "hadisk-split-brain-save/1";

/// Where and for whom saves are made (from the resource file).
#[derive(Debug, Clone)]
pub struct SaveConfig {
    /// `None`: `split-brain-dir off;`, nothing is saved.
    pub dir: Option<PathBuf>,
    pub resource: String,
    pub node: String,
    pub peer: String,
}

/// The two files of a save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub image: PathBuf,
    pub index: PathBuf,
    pub bytes: u64,
}

/// One saved range in the index.
#[derive(Debug, Serialize)]
struct RangeEntry {
    offset_bytes: u64,
    len_bytes: u64,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct UuidsEntry {
    current: String,
    bitmap: String,
    history: [String; 2],
}

/// The `.json` index.
#[derive(Debug, Serialize)]
struct Index {
    format: &'static str,
    resource: String,
    node: String,
    peer: String,
    time_utc: String,
    time_unix_s: u64,
    resolved_by: String,
    device_size_bytes: u64,
    image: String,
    saved_bytes: u64,
    local_uuids: UuidsEntry,
    peer_uuids: UuidsEntry,
    ranges: Vec<RangeEntry>,
}

fn uuids_entry(u: &Uuids) -> UuidsEntry {
    let hex = |v: u64| format!("{v:016X}");
    UuidsEntry {
        current: hex(u.current),
        bitmap: hex(u.bitmap),
        history: [hex(u.history[0]), hex(u.history[1])],
    }
}

/// Saves `req`'s ranges of `disk`; `Ok(None)` when saving is off.
pub fn save(
    disk: &dyn BlockDevice,
    cfg: &SaveConfig,
    req: &SaveRequest,
    now: SystemTime,
) -> Result<Option<Saved>, String> {
    let Some(dir) = &cfg.dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        format!(
            "cannot create the split-brain directory {}: {e}",
            dir.display()
        )
    })?;
    let unix_s = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stamp = utc_stamp(unix_s);
    let (image_path, image) =
        create_unique(dir, &format!("{}-{}-{stamp}", cfg.resource, cfg.node))?;
    let index_path = image_path.with_extension("json");
    let result = write_all(
        disk,
        cfg,
        req,
        &image,
        &image_path,
        &index_path,
        unix_s,
        &stamp,
    )
    .and_then(|bytes| {
        sync_dir(dir)?;
        Ok(bytes)
    });
    match result {
        Ok(bytes) => Ok(Some(Saved {
            image: image_path,
            index: index_path,
            bytes,
        })),
        Err(e) => {
            // Nothing half-written stays behind to be mistaken for a save.
            let _ = std::fs::remove_file(&index_path);
            let _ = std::fs::remove_file(&image_path);
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_all(
    disk: &dyn BlockDevice,
    cfg: &SaveConfig,
    req: &SaveRequest,
    image: &File,
    image_path: &Path,
    index_path: &Path,
    unix_s: u64,
    stamp: &str,
) -> Result<u64, String> {
    let img = image_path.display();
    image
        .set_len(req.size_bytes)
        .map_err(|e| format!("cannot size {img} to {} bytes: {e}", req.size_bytes))?;
    let mut ranges = Vec::with_capacity(req.ranges.len());
    for &(offset_bytes, len_bytes) in &req.ranges {
        let sha256 = copy_range(disk, image, offset_bytes, len_bytes).map_err(|e| {
            format!("saving {len_bytes} bytes at offset {offset_bytes} to {img}: {e}")
        })?;
        ranges.push(RangeEntry {
            offset_bytes,
            len_bytes,
            sha256,
        });
    }
    image
        .sync_all()
        .map_err(|e| format!("cannot make {img} durable (fsync): {e}"))?;
    let index = Index {
        format: INDEX_FORMAT,
        resource: cfg.resource.clone(),
        node: cfg.node.clone(),
        peer: cfg.peer.clone(),
        time_utc: stamp.to_string(),
        time_unix_s: unix_s,
        resolved_by: req.resolved_by.to_string(),
        device_size_bytes: req.size_bytes,
        image: image_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        saved_bytes: req.total_bytes(),
        local_uuids: uuids_entry(&req.local_uuids),
        peer_uuids: uuids_entry(&req.peer_uuids),
        ranges,
    };
    let text =
        serde_json::to_string_pretty(&index).map_err(|e| format!("encoding the index: {e}"))?;
    write_durable(index_path, text.as_bytes())?;
    Ok(req.total_bytes())
}

/// Copies one range, leaving all-zero blocks as holes; returns its sha256.
fn copy_range(
    disk: &dyn BlockDevice,
    image: &File,
    offset_bytes: u64,
    len_bytes: u64,
) -> std::io::Result<String> {
    let mut hash = Sha256::new();
    let mut done = 0u64;
    let mut buf = Vec::new();
    while done < len_bytes {
        let n = (len_bytes - done).min(COPY_CHUNK_BYTES);
        buf.resize(n as usize, 0);
        let at = offset_bytes + done;
        disk.read_at(&mut buf, at)?;
        hash.update(&buf);
        for (i, block) in buf.chunks(BLOCK_BYTES).enumerate() {
            if block.iter().any(|b| *b != 0) {
                image.write_all_at(block, at + (i * BLOCK_BYTES) as u64)?;
            }
        }
        done += n;
    }
    Ok(hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `BASE.img`, or `BASE-N.img` if taken.
fn create_unique(dir: &Path, base: &str) -> Result<(PathBuf, File), String> {
    for n in 0..MAX_NAME_ATTEMPTS {
        let name = if n == 0 {
            format!("{base}.img")
        } else {
            format!("{base}-{n}.img")
        };
        let path = dir.join(name);
        if path.with_extension("json").exists() {
            continue;
        }
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
    }
    Err(format!("no free file name for {base} in {}", dir.display()))
}

/// Writes `path` through a temporary name, fsyncs, renames.
fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write the index {}: {e}", path.display())
    })
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot make {} durable (fsync): {e}", dir.display()))
}

/// `YYYYMMDDTHHMMSSZ` of a Unix time (UTC; Howard Hinnant's civil-from-days).
fn utc_stamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadisk_storage::MemDevice;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_796_048_000), "20261130T141320Z");
    }

    fn request(ranges: Vec<(u64, u64)>, size: u64) -> SaveRequest {
        SaveRequest {
            ranges,
            size_bytes: size,
            local_uuids: Uuids {
                current: 0xAB,
                bitmap: 0xCD,
                history: [1, 0],
            },
            peer_uuids: Uuids::default(),
            resolved_by: "discard-my-data",
        }
    }

    #[test]
    fn saves_exactly_the_ranges_sparse_with_an_index() {
        let size = 1 << 20;
        let disk = MemDevice::new(size);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
        disk.write_at(&data, 0).unwrap();
        disk.write_at(&[0u8; 4096], 8192).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = SaveConfig {
            dir: Some(dir.path().join("sb")),
            resource: "data".into(),
            node: "alpha".into(),
            peer: "beta".into(),
        };
        let req = request(vec![(4096, 8192), (65536, 4096)], size);
        let saved = save(&disk, &cfg, &req, UNIX_EPOCH).unwrap().unwrap();
        assert_eq!(saved.bytes, 12288);
        assert!(saved.image.ends_with("sb/data-alpha-19700101T000000Z.img"));
        let img = std::fs::read(&saved.image).unwrap();
        assert_eq!(img.len() as u64, size);
        let mut want = vec![0u8; size as usize];
        want[4096..8192].copy_from_slice(&data[4096..8192]);
        want[65536..69632].copy_from_slice(&data[65536..69632]);
        assert!(img == want, "the image holds exactly the saved ranges");
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&saved.index).unwrap()).unwrap();
        assert_eq!(index["resource"], "data");
        assert_eq!(index["local_uuids"]["current"], "00000000000000AB");
        assert_eq!(index["ranges"][0]["len_bytes"], 8192);
        let mut zero_half = data[4096..8192].to_vec();
        zero_half.extend_from_slice(&[0u8; 4096]);
        assert_eq!(
            index["ranges"][0]["sha256"],
            hex(&Sha256::digest(&zero_half))
        );
        // A second save in the same second gets its own files.
        let again = save(&disk, &cfg, &req, UNIX_EPOCH).unwrap().unwrap();
        assert!(again.image.ends_with("data-alpha-19700101T000000Z-1.img"));
    }

    #[test]
    fn an_unwritable_directory_fails_and_leaves_nothing() {
        let disk = MemDevice::new(1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let cfg = SaveConfig {
            dir: Some(file.join("sb")),
            resource: "data".into(),
            node: "alpha".into(),
            peer: "beta".into(),
        };
        let err = save(&disk, &cfg, &request(vec![(0, 4096)], 1 << 20), UNIX_EPOCH).unwrap_err();
        assert!(
            err.starts_with("cannot create the split-brain directory"),
            "{err}"
        );
        let off = SaveConfig { dir: None, ..cfg };
        assert_eq!(
            save(&disk, &off, &request(vec![], 1 << 20), UNIX_EPOCH).unwrap(),
            None
        );
    }
}
