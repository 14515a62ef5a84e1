//! `Filesystem::DEV::DIR::FSTYPE[::OPTS]`: `mount -t FSTYPE [-o OPTS] DEV
//! DIR` on start, `umount DIR` on stop.
//!
//! Refusals, checked in `/proc/self/mountinfo` before mounting: DEV already
//! mounted on another directory (a second mount of the same filesystem is
//! how a dual mount begins), or DIR holding something else. A stop that
//! `umount` refuses (busy) fails with umount's reason: the agent never kills
//! the processes holding the filesystem; the operator decides.

use std::path::Path;
use std::time::Duration;

use crate::cmd;

/// How long `mount` or `umount` may take (a journal replay can be slow).
pub const MOUNT_LIMIT: Duration = Duration::from_secs(120);
/// The most of `/proc/self/mountinfo` read (a few thousand mounts).
pub const MAX_MOUNTINFO_BYTES: u64 = 4 * 1024 * 1024;

/// One line of mountinfo, the fields used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub target: String,
    /// What is mounted (the device).
    pub source: String,
}

/// Reads the mount table of the agent's mount namespace.
pub fn mounts() -> Result<Vec<Mount>, String> {
    use std::io::Read;
    let f = std::fs::File::open("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let mut text = String::new();
    f.take(MAX_MOUNTINFO_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    Ok(parse_mountinfo(&text))
}

/// Parses mountinfo: field 5 is the mount point; after the ` - ` separator
/// come the type and the source. Octal escapes (`\040`) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let target = left.split_whitespace().nth(4)?;
            let source = right.split_whitespace().nth(1)?;
            Some(Mount {
                target: unescape(target),
                source: unescape(source),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A path with symlinks resolved (`/dev/disk/by-label/x` → `/dev/loop3`),
/// or as written when it cannot be (`UUID=…`, a missing path).
fn canonical(p: &str) -> String {
    std::fs::canonicalize(p)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_owned())
}

/// How long `findfs` may take.
pub const FINDFS_LIMIT: Duration = Duration::from_secs(10);

/// The device node of `device`: `LABEL=…`, `UUID=…`, `PARTLABEL=…` and
/// `PARTUUID=…` are looked up with `findfs` (so the mount table, which
/// lists device nodes, can be checked), paths are canonicalised.
pub async fn resolve(device: &str) -> Result<String, String> {
    let tagged = ["LABEL=", "UUID=", "PARTLABEL=", "PARTUUID="]
        .iter()
        .any(|t| device.starts_with(t));
    if !tagged {
        return Ok(canonical(device));
    }
    let out = cmd::run("findfs", &[device], FINDFS_LIMIT)
        .await
        .map_err(|e| format!("no filesystem {device} found: {e}"))?;
    Ok(canonical(out.stdout.trim()))
}

/// What mounting `device` on `dir` would run into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCheck {
    /// Not mounted anywhere: mount it.
    Free,
    /// Already mounted there: nothing to do.
    AlreadyThere,
    /// Refused, with the reason.
    Refused(String),
}

/// Checks the mount table before mounting `device` (canonical) on `dir`
/// (canonical).
pub fn check(table: &[Mount], device: &str, dir: &str) -> MountCheck {
    let same_dev = |m: &&Mount| canonical(&m.source) == device;
    if let Some(m) = table.iter().rfind(|m| m.target == dir) {
        return if same_dev(&m) {
            MountCheck::AlreadyThere
        } else {
            MountCheck::Refused(format!(
                "{dir} already has {} mounted on it; unmount it first",
                m.source
            ))
        };
    }
    match table.iter().find(same_dev) {
        Some(m) => MountCheck::Refused(format!(
            "{device} is already mounted on {}; refusing to mount it twice (unmount it there first)",
            m.target
        )),
        None => MountCheck::Free,
    }
}

/// Mounts `device` on `dir` unless it is there already.
pub async fn mount(
    device: &str,
    dir: &Path,
    fstype: &str,
    options: Option<&str>,
) -> Result<(), String> {
    let dev = resolve(device).await?;
    let target = canonical(&dir.to_string_lossy());
    match check(&mounts()?, &dev, &target) {
        MountCheck::AlreadyThere => return Ok(()),
        MountCheck::Refused(why) => return Err(why),
        MountCheck::Free => {}
    }
    let mut args = vec!["-t".to_owned(), fstype.to_owned()];
    if let Some(o) = options {
        args.extend(["-o".to_owned(), o.to_owned()]);
    }
    args.extend([dev, target]);
    cmd::run("mount", &args, MOUNT_LIMIT).await.map(|_| ())
}

/// Unmounts `dir` if something is mounted there.
pub async fn unmount(dir: &Path) -> Result<(), String> {
    let target = canonical(&dir.to_string_lossy());
    if !mounts()?.iter().any(|m| m.target == target) {
        return Ok(());
    }
    cmd::run("umount", &[target.as_str()], MOUNT_LIMIT)
        .await
        .map(|_| ())
        .map_err(|e| {
            format!("{e}; the agent does not kill what holds it: see `fuser -vm {target}`")
        })
}

/// Whether `device` is mounted on `dir`.
pub async fn is_mounted(device: &str, dir: &Path) -> Result<bool, String> {
    let Ok(dev) = resolve(device).await else {
        return Ok(false);
    };
    let target = canonical(&dir.to_string_lossy());
    Ok(check(&mounts()?, &dev, &target) == MountCheck::AlreadyThere)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_refusals() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
                    90 22 7:3 / /srv/my\\040data rw - ext4 /dev/loop3 rw\n";
        let t = parse_mountinfo(text);
        assert_eq!(
            t[1],
            Mount {
                target: "/srv/my data".into(),
                source: "/dev/loop3".into()
            }
        );
        assert_eq!(
            check(&t, "/dev/loop3", "/srv/my data"),
            MountCheck::AlreadyThere
        );
        assert_eq!(check(&t, "/dev/loop4", "/mnt"), MountCheck::Free);
        assert_eq!(
            check(&t, "/dev/loop3", "/mnt"),
            MountCheck::Refused(
                "/dev/loop3 is already mounted on /srv/my data; refusing to mount it twice (unmount it there first)".into()
            )
        );
        assert_eq!(
            check(&t, "/dev/loop4", "/srv/my data"),
            MountCheck::Refused(
                "/srv/my data already has /dev/loop3 mounted on it; unmount it first".into()
            )
        );
    }
}
