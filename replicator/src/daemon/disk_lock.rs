//! The exclusive lock a resource holds on its backing disk while it is up.

use std::path::Path;

use anyhow::{anyhow, bail};

/// An exclusive `flock` on the backing disk's path, for as long as the
/// resource is up. Block devices are also opened `O_EXCL` by the storage
/// layer; the lock covers regular files, which have no such guard, and
/// tells the operator which resource is in the way.
#[derive(Debug)]
pub struct DiskLock {
    _file: std::fs::File,
}

impl DiskLock {
    pub fn take(name: &str, disk: &Path) -> anyhow::Result<DiskLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(disk)
            .map_err(|e| anyhow!("{name}: cannot open the disk {}: {e}", disk.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "{name}: the disk {} is already attached by another hadisk resource or daemon; \
                     `hadisk down` it there first",
                    disk.display()
                );
            }
            bail!("{name}: cannot lock the disk {}: {e}", disk.display());
        }
        Ok(DiskLock { _file: file })
    }
}
