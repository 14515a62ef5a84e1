//! The resync rate controller: how many bytes of resync requests the
//! SyncTarget may issue now. Pure: time, the bytes in flight and the
//! application I/O seen are inputs; an [`Allowance`] (bytes now, and when to
//! ask again) is the output.
//!
//! Two modes, as DRBD's `c-plan-ahead` selects them:
//! * **Fixed** (`c-plan-ahead 0`): a token bucket refilled at `resync-rate`
//!   bytes per second, holding at most one [`STEP_MS`] worth (or one block).
//! * **Dynamic** (the default): with no application I/O seen for
//!   [`APP_QUIET_MS`], nothing but `c-max-rate` (hadisk's default: no
//!   limit) holds the resync back, so it runs at the speed of the link and
//!   the disks. While the application writes, the resync gets
//!   `max(c-min-rate, APP_SHARE_PERCENT % of the application's rate)` and
//!   at most `c-fill-target` bytes in flight, so application writes never
//!   queue behind megabytes of resync data; `c-min-rate` is the floor that
//!   keeps the resync moving under any load. `c-min-rate 0` turns the
//!   throttle off (as in DRBD).
//!
//! DRBD's controller plans the amount in flight from the measured delay
//! (`c-delay-target`) over `c-plan-ahead`; hadisk measures the application's
//! rate over `c-plan-ahead` instead, which needs no clock on the peer and is
//! what decides how much room to leave. `c-delay-target` is not used.
//!
//! Invariants:
//! * With no application I/O and no `c-max-rate`, the allowance is never
//!   limited (`u64::MAX`): the caller's pipeline bounds the resync.
//! * When the allowance is below one block the answer carries the time at
//!   which it will have grown to one block (or `None` when only a
//!   completion, which the caller sees anyway, can grow it).
//! * The measured application rate covers at most `c-plan-ahead` (bounded
//!   by [`MAX_WINDOW_STEPS`]); memory is bounded by that, never by input.

use hadisk_bitmap::BLOCK_BYTES;

/// The controller's step: the token bucket holds one step's worth, and the
/// application rate is counted in buckets of this length (DRBD's
/// `SLEEP_TIME`).
pub const STEP_MS: u64 = 100;
/// Application I/O seen within this long counts as an application at work:
/// the throttle applies. Short, so that a resync takes the whole link back
/// soon after the application stops.
pub const APP_QUIET_MS: u64 = 500;
/// While the application writes, the resync may go at this share of the
/// application's measured rate (or at `c-min-rate` if that is more). Below
/// 100 % so that an application competing for the same link and disks keeps
/// more than half of them: at equilibrium it gets 1/(1 + share).
pub const APP_SHARE_PERCENT: u64 = 50;
/// Longest rate window: DRBD's `c-plan-ahead` maximum, 30 s, in steps.
pub const MAX_WINDOW_STEPS: u64 = 300;
/// hadisk's default `c-fill-target`: resync bytes in flight while the
/// application writes (DRBD's default, 100 sectors).
pub const DEFAULT_FILL_TARGET_BYTES: u64 = 50 * 1024;
/// hadisk's default `c-min-rate` (DRBD's, 250 KiB/s).
pub const DEFAULT_MIN_RATE_BYTES_PER_S: u64 = 250 * 1024;
/// hadisk's default `c-plan-ahead` (DRBD's, 2 s).
pub const DEFAULT_PLAN_AHEAD_MS: u64 = 2_000;

/// The dynamic controller's settings (DRBD's `c-*` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DynamicRate {
    /// `c-plan-ahead`: the window over which the application's rate is
    /// measured (> 0).
    pub plan_ahead_ms: u64,
    /// `c-fill-target`: resync bytes in flight while the application writes.
    pub fill_target_bytes: u64,
    /// `c-min-rate`: the resync's floor while the application writes; 0
    /// turns the throttle off.
    pub min_rate_bytes_per_s: u64,
    /// `c-max-rate`: a cap at all times; 0 = none (hadisk's default).
    pub max_rate_bytes_per_s: u64,
}

impl Default for DynamicRate {
    fn default() -> Self {
        DynamicRate {
            plan_ahead_ms: DEFAULT_PLAN_AHEAD_MS,
            fill_target_bytes: DEFAULT_FILL_TARGET_BYTES,
            min_rate_bytes_per_s: DEFAULT_MIN_RATE_BYTES_PER_S,
            max_rate_bytes_per_s: 0,
        }
    }
}

/// Which controller runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateMode {
    /// `c-plan-ahead 0`: `resync-rate` bytes per second.
    Fixed {
        rate_bytes_per_s: u64,
    },
    Dynamic(DynamicRate),
}

impl Default for RateMode {
    fn default() -> Self {
        RateMode::Dynamic(DynamicRate::default())
    }
}

impl RateMode {
    /// The mode from DRBD's options: `c-plan-ahead 0` selects the fixed
    /// `resync-rate`.
    pub fn from_options(
        resync_rate_bytes_per_s: u64,
        plan_ahead_ms: u64,
        fill_target_bytes: u64,
        min_rate_bytes_per_s: u64,
        max_rate_bytes_per_s: u64,
    ) -> RateMode {
        if plan_ahead_ms == 0 {
            RateMode::Fixed {
                rate_bytes_per_s: resync_rate_bytes_per_s.max(1),
            }
        } else {
            RateMode::Dynamic(DynamicRate {
                plan_ahead_ms,
                // DRBD's 0 means "plan from c-delay-target", which hadisk
                // does not measure: the default amount then.
                fill_target_bytes: if fill_target_bytes == 0 {
                    DEFAULT_FILL_TARGET_BYTES
                } else {
                    fill_target_bytes
                },
                min_rate_bytes_per_s,
                max_rate_bytes_per_s,
            })
        }
    }

    /// `fixed` or `dynamic`, as `status --json` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            RateMode::Fixed { .. } => "fixed",
            RateMode::Dynamic(_) => "dynamic",
        }
    }
}

/// What the controller allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Bytes of resync requests that may be issued now (`u64::MAX`: no
    /// limit but the caller's pipeline).
    pub bytes: u64,
    /// Ask again at this time: the allowance will have grown to a block.
    pub wake_at_ms: Option<u64>,
}

/// The controller's view for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub mode: RateMode,
    /// The rate the resync may go at now; `None`: no limit.
    pub limit_bytes_per_s: Option<u64>,
    /// The application's measured write rate.
    pub app_bytes_per_s: u64,
    /// The throttle applies (application I/O seen lately).
    pub throttled: bool,
}

/// Application bytes per [`STEP_MS`] bucket over the window (a ring).
#[derive(Debug, Clone)]
struct Window {
    buckets: Vec<u64>,
    /// The step number of the newest bucket.
    newest_step: u64,
}

impl Window {
    fn new(window_ms: u64) -> Window {
        let steps = (window_ms / STEP_MS).clamp(1, MAX_WINDOW_STEPS);
        Window {
            buckets: vec![0; steps as usize],
            newest_step: 0,
        }
    }

    fn advance(&mut self, now_ms: u64) {
        let step = now_ms / STEP_MS;
        let n = self.buckets.len() as u64;
        if step <= self.newest_step {
            return;
        }
        let gap = (step - self.newest_step).min(n);
        for s in (step + 1 - gap)..=step {
            self.buckets[(s % n) as usize] = 0;
        }
        self.newest_step = step;
    }

    fn add(&mut self, now_ms: u64, bytes: u64) {
        self.advance(now_ms);
        let n = self.buckets.len() as u64;
        let b = &mut self.buckets[(self.newest_step % n) as usize];
        *b = b.saturating_add(bytes);
    }

    fn total(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }

    fn span_ms(&self) -> u64 {
        self.buckets.len() as u64 * STEP_MS
    }
}

/// The controller (see the module header).
#[derive(Debug, Clone)]
pub struct RateController {
    mode: RateMode,
    /// Bytes that may still be requested; below zero after a request
    /// larger than what was left (at most one block below).
    tokens: i64,
    refilled_ms: u64,
    /// Thousandths of a byte not yet added to `tokens`.
    refill_milli: u16,
    app: Window,
    last_app_ms: Option<u64>,
    /// Start of the current run of application activity.
    app_since_ms: u64,
}

impl RateController {
    pub fn new(mode: RateMode) -> RateController {
        let window_ms = match mode {
            RateMode::Fixed { .. } => STEP_MS,
            RateMode::Dynamic(d) => d.plan_ahead_ms,
        };
        RateController {
            mode,
            tokens: 0,
            refilled_ms: 0,
            refill_milli: 0,
            app: Window::new(window_ms),
            last_app_ms: None,
            app_since_ms: 0,
        }
    }

    pub fn mode(&self) -> RateMode {
        self.mode
    }

    /// A resync starts: the bucket starts with one step's worth.
    pub fn start(&mut self, now_ms: u64) {
        self.refilled_ms = now_ms;
        self.tokens = match self.limit(now_ms) {
            Some(rate) => burst(rate) as i64,
            None => 0,
        };
    }

    /// The application wrote `bytes` (a client write on a Primary, a
    /// mirrored write on a Secondary).
    pub fn app_io(&mut self, now_ms: u64, bytes: u64) {
        if !self.app_active(now_ms) {
            self.app_since_ms = now_ms;
        }
        self.last_app_ms = Some(now_ms);
        self.app.add(now_ms, bytes);
    }

    fn app_active(&self, now_ms: u64) -> bool {
        self.last_app_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < APP_QUIET_MS)
    }

    fn throttled(&self, now_ms: u64) -> bool {
        match self.mode {
            RateMode::Fixed { .. } => false,
            RateMode::Dynamic(d) => d.min_rate_bytes_per_s > 0 && self.app_active(now_ms),
        }
    }

    /// The application's rate over the window (or over its activity so
    /// far, when that is shorter: a fresh burst is not diluted by the quiet
    /// before it).
    fn app_rate(&mut self, now_ms: u64) -> u64 {
        self.app.advance(now_ms);
        if !self.app_active(now_ms) {
            return 0;
        }
        let active_ms = now_ms.saturating_sub(self.app_since_ms) + STEP_MS;
        let span = active_ms.clamp(STEP_MS, self.app.span_ms());
        self.app.total().saturating_mul(1000) / span
    }

    /// The rate the resync may go at now; `None`: no limit.
    fn limit(&mut self, now_ms: u64) -> Option<u64> {
        match self.mode {
            RateMode::Fixed { rate_bytes_per_s } => Some(rate_bytes_per_s.max(1)),
            RateMode::Dynamic(d) => {
                let cap = (d.max_rate_bytes_per_s > 0).then_some(d.max_rate_bytes_per_s);
                if !self.throttled(now_ms) {
                    return cap;
                }
                let share = self.app_rate(now_ms).saturating_mul(APP_SHARE_PERCENT) / 100;
                let rate = share.max(d.min_rate_bytes_per_s).max(1);
                Some(cap.map_or(rate, |c| rate.min(c)))
            }
        }
    }

    fn refill(&mut self, now_ms: u64, rate: u64) {
        let elapsed = now_ms.saturating_sub(self.refilled_ms);
        self.refilled_ms = self.refilled_ms.max(now_ms);
        // Milli-bytes carried over, so that frequent calls lose nothing.
        let milli = u128::from(rate) * u128::from(elapsed) + u128::from(self.refill_milli);
        self.refill_milli = (milli % 1000) as u16;
        let cap = burst(rate) as i128;
        self.tokens = (i128::from(self.tokens) + (milli / 1000) as i128).min(cap) as i64;
    }

    /// How many bytes of resync requests may be issued now, with
    /// `inflight_bytes` requested and not yet written.
    pub fn allowance(&mut self, now_ms: u64, inflight_bytes: u64) -> Allowance {
        let fill_cap = match self.mode {
            RateMode::Dynamic(d) if self.throttled(now_ms) => {
                Some(d.fill_target_bytes.max(BLOCK_BYTES))
            }
            _ => None,
        };
        let Some(rate) = self.limit(now_ms) else {
            self.refilled_ms = now_ms;
            self.tokens = 0;
            let bytes = fill_cap.map_or(u64::MAX, |f| f.saturating_sub(inflight_bytes));
            return Allowance {
                bytes,
                wake_at_ms: None,
            };
        };
        self.refill(now_ms, rate);
        let by_rate = self.tokens.max(0) as u64;
        let by_fill = fill_cap.map_or(u64::MAX, |f| f.saturating_sub(inflight_bytes));
        let bytes = by_rate.min(by_fill);
        let wake_at_ms = if by_rate < BLOCK_BYTES {
            let missing = (BLOCK_BYTES as i64 - self.tokens) as u64;
            let wait_ms = (u128::from(missing) * 1000).div_ceil(u128::from(rate));
            Some(now_ms + (wait_ms.min(u128::from(u32::MAX)) as u64).max(1))
        } else {
            None
        };
        Allowance { bytes, wake_at_ms }
    }

    /// `bytes` of resync requests were issued.
    pub fn issued(&mut self, bytes: u64) {
        let b = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_sub(b);
    }

    pub fn status(&mut self, now_ms: u64) -> RateStatus {
        RateStatus {
            mode: self.mode,
            limit_bytes_per_s: self.limit(now_ms),
            app_bytes_per_s: self.app_rate(now_ms),
            throttled: self.throttled(now_ms),
        }
    }
}

/// What the bucket holds at most: one step's worth, at least one block.
fn burst(rate_bytes_per_s: u64) -> u64 {
    (rate_bytes_per_s.saturating_mul(STEP_MS) / 1000).max(BLOCK_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;

    fn fixed(rate: u64) -> RateController {
        let mut c = RateController::new(RateMode::Fixed {
            rate_bytes_per_s: rate,
        });
        c.start(0);
        c
    }

    fn dynamic(d: DynamicRate) -> RateController {
        let mut c = RateController::new(RateMode::Dynamic(d));
        c.start(0);
        c
    }

    /// Issues whole blocks as a target would, as long as the allowance
    /// lets it, at each millisecond up to `until_ms`; returns the bytes.
    fn drive(c: &mut RateController, until_ms: u64, inflight: u64) -> u64 {
        let mut total = 0;
        for now in 0..=until_ms {
            let a = c.allowance(now, inflight);
            let blocks = (a.bytes / BLOCK_BYTES).min(256);
            if blocks > 0 {
                c.issued(blocks * BLOCK_BYTES);
                total += blocks * BLOCK_BYTES;
            }
        }
        total
    }

    #[test]
    fn fixed_rate_table() {
        // (rate, ms driven, expected bytes: one step's burst plus rate×time,
        // within a block).
        let table = [
            (250 * KIB, 10_000, 250 * KIB * 10 + 25 * KIB),
            (MIB, 5_000, 5 * MIB + MIB / 10),
            (100 * MIB, 1_000, 100 * MIB + 10 * MIB),
            (4 * KIB, 3_000, 12 * KIB + 4 * KIB),
        ];
        for (rate, ms, want) in table {
            let got = drive(&mut fixed(rate), ms, 0);
            let diff = got.abs_diff(want);
            assert!(
                diff <= 2 * BLOCK_BYTES,
                "rate {rate}: {got} bytes in {ms} ms, want {want}"
            );
        }
    }

    #[test]
    fn fixed_rate_wakes_when_a_block_is_due() {
        let mut c = fixed(40 * KIB); // a block every 100 ms
        let a = c.allowance(0, 0);
        assert_eq!(a.bytes, 4 * KIB); // the one-block burst
        c.issued(a.bytes);
        let a = c.allowance(0, 0);
        assert_eq!(
            a,
            Allowance {
                bytes: 0,
                wake_at_ms: Some(100)
            }
        );
        assert!(c.allowance(99, 0).bytes < BLOCK_BYTES);
        assert_eq!(c.allowance(100, 0).bytes, 4 * KIB);
    }

    #[test]
    fn fixed_rate_ignores_application_io() {
        let mut c = fixed(MIB);
        c.app_io(0, 100 * MIB);
        assert_eq!(c.allowance(0, 10 * MIB).bytes, MIB / 10);
    }

    #[test]
    fn dynamic_without_application_io_is_unlimited() {
        let mut c = dynamic(DynamicRate::default());
        for now in [0, 1, 1_000, 1_000_000] {
            assert_eq!(
                c.allowance(now, 512 * MIB),
                Allowance {
                    bytes: u64::MAX,
                    wake_at_ms: None
                }
            );
        }
    }

    #[test]
    fn dynamic_max_rate_caps_even_when_idle() {
        let mut c = dynamic(DynamicRate {
            max_rate_bytes_per_s: 10 * MIB,
            ..DynamicRate::default()
        });
        let got = drive(&mut c, 2_000, 0);
        assert!(got.abs_diff(21 * MIB) <= 2 * BLOCK_BYTES, "{got}");
    }

    #[test]
    fn application_io_throttles_to_a_share_and_the_fill_target() {
        let mut c = dynamic(DynamicRate::default());
        // 100 MB/s of application writes for 2 s (1 MB every 10 ms).
        for t in (0..2_000).step_by(10) {
            c.app_io(t, 1_000_000);
        }
        let s = c.status(2_000);
        assert!(s.throttled);
        // 19 full 100 ms buckets of the 2 s window (the newest is empty).
        assert_eq!(s.app_bytes_per_s, 95_000_000, "{s:?}");
        assert_eq!(
            s.limit_bytes_per_s,
            Some(s.app_bytes_per_s * APP_SHARE_PERCENT / 100)
        );
        // The fill target bounds what is in flight.
        let a = c.allowance(2_000, 0);
        assert_eq!(a.bytes, DEFAULT_FILL_TARGET_BYTES);
        assert_eq!(c.allowance(2_000, 40 * KIB).bytes, 10 * KIB);
        assert_eq!(c.allowance(2_000, 60 * KIB).bytes, 0);
    }

    #[test]
    fn throttle_never_goes_below_c_min_rate() {
        let mut c = dynamic(DynamicRate {
            min_rate_bytes_per_s: 4 * MIB,
            fill_target_bytes: 64 * MIB,
            ..DynamicRate::default()
        });
        // A trickle of application I/O, 4 KiB every 50 ms.
        let mut total = 0;
        for now in 0..=3_000 {
            if now % 50 == 0 {
                c.app_io(now, 4 * KIB);
            }
            let a = c.allowance(now, 0);
            let blocks = (a.bytes / BLOCK_BYTES).min(256);
            c.issued(blocks * BLOCK_BYTES);
            total += blocks * BLOCK_BYTES;
        }
        // 3 s at 4 MiB/s (the bucket started empty: no application I/O
        // had been seen when the resync started).
        assert!(total.abs_diff(12 * MIB) <= 4 * BLOCK_BYTES, "{total}");
    }

    #[test]
    fn c_min_rate_zero_turns_the_throttle_off() {
        let mut c = dynamic(DynamicRate {
            min_rate_bytes_per_s: 0,
            ..DynamicRate::default()
        });
        c.app_io(0, 100 * MIB);
        assert!(!c.status(1).throttled);
        assert_eq!(c.allowance(1, 100 * MIB).bytes, u64::MAX);
    }

    #[test]
    fn the_resync_takes_the_link_back_after_the_application_stops() {
        let mut c = dynamic(DynamicRate::default());
        c.app_io(1_000, MIB);
        assert!(c.allowance(1_000, 0).bytes <= DEFAULT_FILL_TARGET_BYTES);
        assert!(c.allowance(1_000 + APP_QUIET_MS - 1, 0).bytes <= DEFAULT_FILL_TARGET_BYTES);
        assert_eq!(c.allowance(1_000 + APP_QUIET_MS, 0).bytes, u64::MAX);
    }

    #[test]
    fn a_throttled_controller_with_nothing_in_flight_always_wakes() {
        let mut c = dynamic(DynamicRate::default());
        c.app_io(0, 4 * KIB);
        let a = c.allowance(0, 0);
        c.issued(a.bytes.max(BLOCK_BYTES));
        let a = c.allowance(0, 0);
        assert_eq!(a.bytes, 0);
        let wake = a.wake_at_ms.unwrap();
        assert!(wake > 0 && wake <= STEP_MS, "{wake}");
    }

    #[test]
    fn window_forgets_old_buckets() {
        let mut w = Window::new(1_000);
        w.add(0, 5);
        w.add(950, 7);
        assert_eq!(w.total(), 12);
        w.advance(1_000);
        assert_eq!(w.total(), 7);
        w.advance(1_000_000);
        assert_eq!(w.total(), 0);
        w.add(5, 3); // the past: counted in the newest bucket
        assert_eq!(w.total(), 3);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the inputs, a fixed rate never issues more than its
            /// rate allows (plus the burst and one block of rounding), and
            /// never stalls without a wake time.
            #[test]
            fn fixed_rate_is_an_upper_bound_and_never_stalls(
                rate in 1u64..(1 << 30),
                steps in proptest::collection::vec((0u64..500, 0u64..(4 << 20)), 1..50),
            ) {
                let mut c = fixed(rate);
                let mut now = 0;
                let mut total: u128 = 0;
                for (dt, want) in steps {
                    now += dt;
                    let a = c.allowance(now, 0);
                    let take = a.bytes.min(want) / BLOCK_BYTES * BLOCK_BYTES;
                    if take == 0 && a.bytes < BLOCK_BYTES {
                        prop_assert!(a.wake_at_ms.is_some_and(|w| w > now));
                    }
                    c.issued(take);
                    total += u128::from(take);
                }
                let bound = u128::from(rate) * u128::from(now) / 1000
                    + u128::from(burst(rate)) + u128::from(BLOCK_BYTES);
                prop_assert!(total <= bound, "{} > {}", total, bound);
            }

            /// The dynamic controller with application I/O stays within
            /// the fill target and wakes or waits for a completion.
            #[test]
            fn dynamic_respects_fill_target(
                fill in 4096u64..(8 << 20),
                events in proptest::collection::vec((0u64..300, 0u64..(1 << 20), 0u64..(16 << 20)), 1..60),
            ) {
                let mut c = dynamic(DynamicRate { fill_target_bytes: fill, ..DynamicRate::default() });
                let mut now = 0;
                for (dt, app, inflight) in events {
                    now += dt;
                    if app > 0 {
                        c.app_io(now, app);
                    }
                    let a = c.allowance(now, inflight);
                    if c.status(now).throttled {
                        prop_assert!(a.bytes <= fill.max(BLOCK_BYTES).saturating_sub(inflight));
                    }
                    c.issued(a.bytes.min(1 << 40) / BLOCK_BYTES * BLOCK_BYTES);
                }
            }
        }
    }
}
