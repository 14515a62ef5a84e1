//! A fault-injecting wrapper with a crash model.
//!
//! Faults: [`FaultRule`]s make chosen operations (by kind, byte range and
//! how many matching operations pass first) fail with `EIO`, and
//! [`FaultyDevice::fail_all_after`] makes every operation after the first N
//! fail (the disk vanished). A failed operation changes nothing.
//!
//! Crash model (for `FaultyDevice<MemDevice>`, after
//! [`FaultyDevice::start_crash_log`]): the inner device is the *live* image,
//! what reads return. Each successful write, zeroing and sync is appended to
//! a log. The *durable* image at crash point `p` (after the first `p` logged
//! events) is the base snapshot plus every write followed by a sync within
//! those `p` events; the writes not yet synced at `p` are lost, except those
//! an [`Unsynced`] choice keeps: the first `kept_writes` of them in issue
//! order, then a prefix of the next one (a torn write: only its first sectors
//! reached the platter). Disks may also persist unsynced writes out of order;
//! the metadata writers never have more than one unsynced write per area
//! between syncs, so the prefix model covers every state they can see.

use std::io;
use std::sync::{Mutex, MutexGuard};

use crate::{check_range, BlockDevice, MemDevice, SECTOR_BYTES};

/// The operations a [`FaultRule`] can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Sync,
    Discard,
    WriteZeroes,
}

/// One injected fault: which operations fail, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    op: Option<OpKind>,
    range: Option<(u64, u64)>,
    skip_matches: u64,
    max_failures: Option<u64>,
    matched: u64,
    failed: u64,
}

impl FaultRule {
    /// Fails every operation of kind `op` (narrow it with the builders).
    pub fn on(op: OpKind) -> Self {
        Self {
            op: Some(op),
            range: None,
            skip_matches: 0,
            max_failures: None,
            matched: 0,
            failed: 0,
        }
    }

    /// Fails every operation of any kind.
    pub fn any_op() -> Self {
        Self {
            op: None,
            ..Self::on(OpKind::Read)
        }
    }

    /// Only operations overlapping `[offset_bytes, offset_bytes + len_bytes)`
    /// match (a sync, which has no range, then never matches).
    pub fn in_range(mut self, offset_bytes: u64, len_bytes: u64) -> Self {
        self.range = Some((offset_bytes, offset_bytes.saturating_add(len_bytes)));
        self
    }

    /// The first `matches` matching operations succeed.
    pub fn after(mut self, matches: u64) -> Self {
        self.skip_matches = matches;
        self
    }

    /// Fail at most `failures` times, then let everything pass.
    pub fn times(mut self, failures: u64) -> Self {
        self.max_failures = Some(failures);
        self
    }

    fn matches(&self, op: OpKind, range: Option<(u64, u64)>) -> bool {
        if self.op.is_some_and(|kind| kind != op) {
            return false;
        }
        match (self.range, range) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((start, end)), Some((offset, len))) => {
                let op_end = offset.saturating_add(len.max(1));
                offset < end && start < op_end
            }
        }
    }

    /// Counts a matching operation and says whether it must fail.
    fn fires(&mut self, op: OpKind, range: Option<(u64, u64)>) -> bool {
        if !self.matches(op, range) {
            return false;
        }
        self.matched += 1;
        let exhausted = self.max_failures.is_some_and(|max| self.failed >= max);
        if self.matched <= self.skip_matches || exhausted {
            return false;
        }
        self.failed += 1;
        true
    }
}

/// Which unsynced writes survive a crash; see the module header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsynced {
    /// How many of the unsynced writes survive whole, in issue order.
    pub kept_writes: usize,
    /// How many leading bytes of the next unsynced write survive.
    pub torn_prefix_bytes: u64,
}

impl Unsynced {
    /// Every unsynced write is lost.
    pub const DROP_ALL: Unsynced = Unsynced {
        kept_writes: 0,
        torn_prefix_bytes: 0,
    };

    /// Every unsynced write survives.
    pub const KEEP_ALL: Unsynced = Unsynced {
        kept_writes: usize::MAX,
        torn_prefix_bytes: 0,
    };

    /// The first `kept_writes` survive whole, then the first
    /// `torn_prefix_bytes` of the next.
    pub fn torn(kept_writes: usize, torn_prefix_bytes: u64) -> Self {
        Self {
            kept_writes,
            torn_prefix_bytes,
        }
    }
}

/// Misuse of the crash log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrashLogError {
    /// `start_crash_log` was never called.
    #[error("the crash log was not started")]
    NotStarted,
    /// The crash point lies beyond the logged events.
    #[error("crash point {point} is beyond the {events} logged events")]
    PointOutOfRange { point: usize, events: usize },
}

#[derive(Debug, Clone)]
enum Event {
    Write { offset_bytes: u64, data: Vec<u8> },
    Zero { offset_bytes: u64, len_bytes: u64 },
    Sync,
}

#[derive(Debug)]
struct CrashLog {
    base: MemDevice,
    events: Vec<Event>,
}

#[derive(Debug, Default)]
struct FaultState {
    ops_done: u64,
    fail_after_ops: Option<u64>,
    rules: Vec<FaultRule>,
    log: Option<CrashLog>,
}

/// Wraps a device, injecting errors and (for a [`MemDevice`]) recording
/// what a crash would leave on disk.
#[derive(Debug)]
pub struct FaultyDevice<D> {
    inner: D,
    state: Mutex<FaultState>,
}

impl<D: BlockDevice> FaultyDevice<D> {
    /// A pass-through wrapper with no faults.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            state: Mutex::new(FaultState::default()),
        }
    }

    /// The wrapped device (the live image).
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.lock().rules.push(rule);
    }

    /// The first `ops` operations (of any kind, counted from now) succeed;
    /// every later one fails.
    pub fn fail_all_after(&self, ops: u64) {
        let mut state = self.lock();
        state.fail_after_ops = Some(state.ops_done + ops);
    }

    /// Removes every rule and the fail-after limit.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.fail_after_ops = None;
    }

    /// Operations attempted so far (failed ones included).
    pub fn ops_done(&self) -> u64 {
        self.lock().ops_done
    }

    // Poison only means a test thread panicked; the state is plain data.
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether the operation fails, runs it, and logs it. The lock
    /// is held across the I/O so the log order is the order applied.
    fn run(
        &self,
        op: OpKind,
        range: Option<(u64, u64)>,
        io_op: impl FnOnce(&D) -> io::Result<()>,
        event: impl FnOnce() -> Event,
    ) -> io::Result<()> {
        let mut state = self.lock();
        state.ops_done += 1;
        let past_limit = state.fail_after_ops.is_some_and(|max| state.ops_done > max);
        let mut rule_fired = false;
        for rule in &mut state.rules {
            rule_fired |= rule.fires(op, range);
        }
        if past_limit || rule_fired {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        io_op(&self.inner)?;
        if let Some(log) = state.log.as_mut() {
            log.events.push(event());
        }
        Ok(())
    }
}

impl FaultyDevice<MemDevice> {
    /// Snapshots the current image as durable and starts logging events.
    pub fn start_crash_log(&self) {
        let base = self.inner.snapshot();
        self.lock().log = Some(CrashLog {
            base,
            events: Vec::new(),
        });
    }

    /// How many events were logged: crash points run from 0 to this.
    pub fn crash_points(&self) -> Result<usize, CrashLogError> {
        let state = self.lock();
        let log = state.log.as_ref().ok_or(CrashLogError::NotStarted)?;
        Ok(log.events.len())
    }

    /// The unsynced writes at crash point `point`, each as its length.
    pub fn unsynced_at(&self, point: usize) -> Result<Vec<u64>, CrashLogError> {
        let state = self.lock();
        let log = state.log.as_ref().ok_or(CrashLogError::NotStarted)?;
        let events = log
            .events
            .get(..point)
            .ok_or(CrashLogError::PointOutOfRange {
                point,
                events: log.events.len(),
            })?;
        let mut pending = Vec::new();
        for event in events {
            match event {
                Event::Write { data, .. } => pending.push(data.len() as u64),
                Event::Zero { len_bytes, .. } => pending.push(*len_bytes),
                Event::Sync => pending.clear(),
            }
        }
        Ok(pending)
    }

    /// Every (point, survivors) pair worth testing: at each point, every
    /// prefix of the unsynced writes, and every sector-granular tear of the
    /// next one.
    pub fn crash_scenarios(&self) -> Result<Vec<(usize, Unsynced)>, CrashLogError> {
        let mut out = Vec::new();
        for point in 0..=self.crash_points()? {
            let pending = self.unsynced_at(point)?;
            for kept in 0..=pending.len() {
                out.push((point, Unsynced::torn(kept, 0)));
                let Some(&next_len) = pending.get(kept) else {
                    continue;
                };
                let mut prefix = SECTOR_BYTES;
                while prefix < next_len {
                    out.push((point, Unsynced::torn(kept, prefix)));
                    prefix += SECTOR_BYTES;
                }
            }
        }
        Ok(out)
    }

    /// The durable image a crash at `point` leaves, with `unsynced` deciding
    /// which unsynced writes reached the disk anyway.
    pub fn crash_image(
        &self,
        point: usize,
        unsynced: Unsynced,
    ) -> Result<MemDevice, CrashLogError> {
        let state = self.lock();
        let log = state.log.as_ref().ok_or(CrashLogError::NotStarted)?;
        let events = log
            .events
            .get(..point)
            .ok_or(CrashLogError::PointOutOfRange {
                point,
                events: log.events.len(),
            })?;
        let image = log.base.snapshot();
        let mut pending: Vec<&Event> = Vec::new();
        for event in events {
            match event {
                Event::Sync => pending.drain(..).for_each(|e| apply(&image, e, None)),
                other => pending.push(other),
            }
        }
        let kept = unsynced.kept_writes.min(pending.len());
        for event in &pending[..kept] {
            apply(&image, event, None);
        }
        if let Some(next) = pending.get(kept) {
            if unsynced.torn_prefix_bytes > 0 {
                apply(&image, next, Some(unsynced.torn_prefix_bytes));
            }
        }
        Ok(image)
    }
}

/// Applies a logged event (cut to `prefix_bytes` for a torn write).
fn apply(image: &MemDevice, event: &Event, prefix_bytes: Option<u64>) {
    match event {
        Event::Write { offset_bytes, data } => {
            let len = prefix_bytes.map_or(data.len(), |p| (p as usize).min(data.len()));
            image.apply_write(&data[..len], *offset_bytes);
        }
        Event::Zero {
            offset_bytes,
            len_bytes,
        } => {
            let len = prefix_bytes.map_or(*len_bytes, |p| p.min(*len_bytes));
            image.apply_zeroes(*offset_bytes, len);
        }
        Event::Sync => {}
    }
}

impl<D: BlockDevice> BlockDevice for FaultyDevice<D> {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<()> {
        let range = Some((offset_bytes, buf.len() as u64));
        let mut state = self.lock();
        state.ops_done += 1;
        let past_limit = state.fail_after_ops.is_some_and(|max| state.ops_done > max);
        let mut rule_fired = false;
        for rule in &mut state.rules {
            rule_fired |= rule.fires(OpKind::Read, range);
        }
        drop(state);
        if past_limit || rule_fired {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.read_at(buf, offset_bytes)
    }

    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, buf.len() as u64, self.size_bytes())?;
        self.run(
            OpKind::Write,
            Some((offset_bytes, buf.len() as u64)),
            |inner| inner.write_at(buf, offset_bytes),
            || Event::Write {
                offset_bytes,
                data: buf.to_vec(),
            },
        )
    }

    fn sync_data(&self) -> io::Result<()> {
        self.run(
            OpKind::Sync,
            None,
            |inner| inner.sync_data(),
            || Event::Sync,
        )
    }

    fn discard(&self, offset_bytes: u64, len_bytes: u64) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.size_bytes())?;
        self.run(
            OpKind::Discard,
            Some((offset_bytes, len_bytes)),
            |inner| inner.discard(offset_bytes, len_bytes),
            || Event::Zero {
                offset_bytes,
                len_bytes,
            },
        )
    }

    fn write_zeroes(&self, offset_bytes: u64, len_bytes: u64, may_trim: bool) -> io::Result<()> {
        check_range(offset_bytes, len_bytes, self.size_bytes())?;
        self.run(
            OpKind::WriteZeroes,
            Some((offset_bytes, len_bytes)),
            |inner| inner.write_zeroes(offset_bytes, len_bytes, may_trim),
            || Event::Zero {
                offset_bytes,
                len_bytes,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eio(result: io::Result<()>) -> bool {
        result.is_err_and(|e| e.raw_os_error() == Some(libc::EIO))
    }

    #[test]
    fn rules_fail_the_chosen_range_after_n_matches_for_k_times() {
        let dev = FaultyDevice::new(MemDevice::new(1 << 20));
        dev.inject(
            FaultRule::on(OpKind::Write)
                .in_range(8192, 4096)
                .after(1)
                .times(2),
        );
        assert!(dev.write_at(&[1; 512], 0).is_ok(), "outside the range");
        assert!(dev.write_at(&[1; 512], 8192).is_ok(), "first match passes");
        assert!(eio(dev.write_at(&[2; 512], 12287 - 511)));
        assert!(eio(dev.write_at(&[2; 8192], 4096)), "overlap matches");
        assert!(dev.write_at(&[3; 512], 8192).is_ok(), "exhausted after 2");
        let mut buf = [0u8; 512];
        dev.read_at(&mut buf, 8192).unwrap();
        assert_eq!(buf, [3; 512], "failed writes changed nothing");
        assert!(dev.sync_data().is_ok(), "a ranged rule never matches sync");
    }

    #[test]
    fn fail_all_after_counts_every_kind() {
        let dev = FaultyDevice::new(MemDevice::new(4096));
        dev.inject(FaultRule::on(OpKind::Sync).times(1));
        assert!(eio(dev.sync_data()));
        dev.fail_all_after(2);
        let mut buf = [0u8; 1];
        assert!(dev.read_at(&mut buf, 0).is_ok());
        assert!(dev.sync_data().is_ok());
        assert!(eio(dev.read_at(&mut buf, 0)));
        assert!(eio(dev.write_zeroes(0, 1, false)));
        assert_eq!(dev.ops_done(), 5);
        dev.clear_faults();
        assert!(dev.discard(0, 4096).is_ok());
    }

    #[test]
    fn crash_images_keep_synced_writes_and_choose_unsynced_ones() {
        let dev = FaultyDevice::new(MemDevice::from_bytes(&[9u8; 4096]));
        assert_eq!(dev.crash_points(), Err(CrashLogError::NotStarted));
        dev.start_crash_log();
        dev.write_at(&[1u8; 1024], 0).unwrap();
        dev.sync_data().unwrap();
        dev.write_at(&[2u8; 1024], 0).unwrap();
        dev.write_zeroes(2048, 1024, true).unwrap();
        assert_eq!(dev.crash_points(), Ok(4));
        assert_eq!(dev.unsynced_at(4), Ok(vec![1024, 1024]));
        assert_eq!(dev.unsynced_at(2), Ok(vec![]));

        let at = |p, u| dev.crash_image(p, u).unwrap().to_vec();
        assert_eq!(at(0, Unsynced::KEEP_ALL), vec![9u8; 4096]);
        assert_eq!(at(1, Unsynced::DROP_ALL), vec![9u8; 4096]);
        assert_eq!(&at(1, Unsynced::KEEP_ALL)[..1024], &[1u8; 1024][..]);
        assert_eq!(&at(4, Unsynced::DROP_ALL)[..1024], &[1u8; 1024][..]);
        let torn = at(4, Unsynced::torn(0, 512));
        assert_eq!(&torn[..512], &[2u8; 512][..]);
        assert_eq!(&torn[512..1024], &[1u8; 512][..]);
        let all = at(4, Unsynced::KEEP_ALL);
        assert_eq!(&all[2048..3072], &[0u8; 1024][..]);
        assert_eq!(&all[3072..], &[9u8; 1024][..]);
        assert_eq!(
            dev.crash_image(5, Unsynced::DROP_ALL)
                .unwrap_err()
                .to_string(),
            "crash point 5 is beyond the 4 logged events"
        );
        // Live image unaffected by building crash images.
        assert_eq!(&dev.inner().to_vec()[..1024], &[2u8; 1024][..]);
    }

    #[test]
    fn scenarios_cover_every_prefix_and_sector_tear() {
        let dev = FaultyDevice::new(MemDevice::new(8192));
        dev.start_crash_log();
        dev.write_at(&[1u8; 1024], 0).unwrap();
        dev.sync_data().unwrap();
        let scenarios = dev.crash_scenarios().unwrap();
        assert_eq!(
            scenarios,
            vec![
                (0, Unsynced::torn(0, 0)),
                (1, Unsynced::torn(0, 0)),
                (1, Unsynced::torn(0, 512)),
                (1, Unsynced::torn(1, 0)),
                (2, Unsynced::torn(0, 0)),
            ]
        );
    }
}
