//! The usable area of a backing disk: the first `usable_bytes` of it, below
//! the internal metadata.
//!
//! Invariant: nothing served through this view can reach the metadata at the
//! end of the disk — every range is checked against the usable size before
//! it is passed down, so a client request past the end is an error here even
//! if the NBD layer's own check were wrong.

use std::io;
use std::sync::Arc;

use hadisk_storage::{check_range, BlockDevice, PipeData};

#[derive(Debug, Clone)]
pub struct UsableArea {
    disk: Arc<dyn BlockDevice>,
    usable_bytes: u64,
}

impl UsableArea {
    pub fn new(disk: Arc<dyn BlockDevice>, usable_bytes: u64) -> io::Result<Self> {
        check_range(0, usable_bytes, disk.size_bytes())?;
        Ok(Self { disk, usable_bytes })
    }
}

impl BlockDevice for UsableArea {
    fn size_bytes(&self) -> u64 {
        self.usable_bytes
    }
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.usable_bytes)?;
        self.disk.read_at(buf, offset_bytes)
    }
    fn read_at_cached(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<bool> {
        check_range(offset_bytes, buf.len() as u64, self.usable_bytes)?;
        self.disk.read_at_cached(buf, offset_bytes)
    }
    fn read_vec(&self, len_bytes: usize, offset_bytes: u64) -> io::Result<Vec<u8>> {
        check_range(offset_bytes, len_bytes as u64, self.usable_bytes)?;
        self.disk.read_vec(len_bytes, offset_bytes)
    }
    fn read_vec_cached(&self, len_bytes: usize, offset_bytes: u64) -> io::Result<Option<Vec<u8>>> {
        check_range(offset_bytes, len_bytes as u64, self.usable_bytes)?;
        self.disk.read_vec_cached(len_bytes, offset_bytes)
    }
    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.usable_bytes)?;
        self.disk.write_at(buf, offset_bytes)
    }
    fn write_pipe(&self, data: &PipeData, offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, data.len() as u64, self.usable_bytes)?;
        self.disk.write_pipe(data, offset_bytes)
    }
    fn write_pipe_owned(&self, data: PipeData, offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, data.len() as u64, self.usable_bytes)?;
        self.disk.write_pipe_owned(data, offset_bytes)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.disk.sync_data()
    }
    fn start_writeback(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.usable_bytes)?;
        self.disk.start_writeback(offset_bytes, len_bytes)
    }
    fn write_at_durable(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.usable_bytes)?;
        self.disk.write_at_durable(buf, offset_bytes)
    }
    fn discard(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.usable_bytes)?;
        self.disk.discard(offset_bytes, len_bytes)
    }
    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64, may_trim: bool) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.usable_bytes)?;
        self.disk.write_zeroes(offset_bytes, len_bytes, may_trim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hadisk_storage::MemDevice;

    #[test]
    fn nothing_past_the_usable_size_reaches_the_disk() {
        let disk: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(1 << 20));
        let area = UsableArea::new(disk.clone(), 512 << 10).unwrap();
        assert_eq!(area.size_bytes(), 512 << 10);
        area.write_at(&[7u8; 4096], (512 << 10) - 4096).unwrap();
        assert!(area.write_at(&[7u8; 4096], (512 << 10) - 4095).is_err());
        assert!(area.write_zeroes(512 << 10, 1, false).is_err());
        assert!(area.read_at(&mut [0u8; 1], u64::MAX).is_err());
        let payload = PipeData::from_bytes(&[7u8; 8192]).unwrap();
        assert!(area.write_pipe_owned(payload, (512 << 10) - 4096).is_err());
        let mut tail = vec![1u8; 4096];
        disk.read_at(&mut tail, 512 << 10).unwrap();
        assert!(tail.iter().all(|&b| b == 0));
    }

    #[test]
    fn usable_size_larger_than_disk_is_refused() {
        let disk: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(4096));
        assert!(UsableArea::new(disk, 8192).is_err());
    }
}
