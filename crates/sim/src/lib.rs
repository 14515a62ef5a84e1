//! A deterministic simulator of two hadisk nodes running the real
//! replication core (`hadisk-core`) over a simulated disk, network and
//! clock, with the faults of `FAULTS.md` and checkers for the replication
//! guarantees. One seed fixes everything; [`run_seed`] returns the run's
//! counters or a failure report that names the seed.
//!
//! `cargo test -p hadisk-sim` runs a fixed range of seeds;
//! `SIM_SEED=n cargo test -p hadisk-sim replay` replays one.

mod disk;
mod model;
mod rng;
mod world;

pub use world::Stats;

use hadisk_core::{AfterSbPolicies, AfterSbPolicy};
use rng::Rng;
use world::World;

/// Settings of one run; [`Options::swarm`] draws them from the seed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Device size: 8 activity-log extents, one more than the AL holds, so
    /// extents get evicted.
    pub size_bytes: u64,
    pub al_extents: u32,
    pub resync_chunk_bytes: u32,
    pub max_unstable: usize,
    /// Simulated time with workload and faults, before quiescence.
    pub run_ms: u64,
    pub first_fault_ms: u64,
    /// Mean gap between fault ticks.
    pub fault_gap_ms: u64,
    /// Weights (percent of fault ticks) of each fault kind.
    pub reset_weight: u64,
    pub partition_weight: u64,
    pub crash_weight: u64,
    pub disk_error_weight: u64,
    pub spike_weight: u64,
    pub switchover_weight: u64,
    /// `hadisk disconnect` on one node, `connect` again 20–300 ms later.
    pub disconnect_weight: u64,
    /// `hadisk pause-sync` on one node, `resume-sync` 20–300 ms later.
    pub pause_weight: u64,
    /// The resync rate controller (fixed, or dynamic with drawn `c-*`).
    pub rate: hadisk_core::RateMode,
    /// A split brain on purpose (FAULTS.md): partition, promote the
    /// Secondary, write on both, heal, recover by policy or by hand.
    pub split_brain_weight: u64,
    /// The `after-sb-*` policies of both nodes.
    pub policies: AfterSbPolicies,
    pub flush_percent: u64,
    pub fua_percent: u64,
    /// Print every trace line as it happens (`SIM_TRACE=1` with replay).
    pub trace: bool,
    /// `csums-alg` of both nodes: resyncs by digest (a third of the seeds
    /// each: none, crc32c, sha256).
    pub csums_alg: Option<hadisk_peer_proto::DigestAlg>,
    /// Corrupt blocks of the Secondary once quiescent, `verify`, resync
    /// (world/verify.rs; a third of the seeds).
    pub verify_corrupt: bool,
}

impl Options {
    /// Swarm testing: each seed gets its own mix, some kinds switched off.
    pub fn swarm(seed: u64) -> Options {
        let mut r = Rng::new(seed ^ 0x5357_4152_4D00_0000);
        let mut w = |max: u64| if r.chance(25) { 0 } else { r.range(1, max) };
        let reset_weight = w(20);
        let partition_weight = w(15);
        let crash_weight = w(20);
        let disk_error_weight = w(8);
        let spike_weight = w(10);
        let switchover_weight = w(10);
        let disconnect_weight = w(8);
        let pause_weight = w(8);
        // Drawn from their own generators, so that the earlier settings
        // of every seed stay what they were.
        let split_brain_weight = {
            let mut r = Rng::new(seed ^ 0x5350_4C49_5442_5241);
            if r.chance(35) {
                0
            } else {
                r.range(4, 15)
            }
        };
        let policies = {
            use AfterSbPolicy::*;
            let mut r = Rng::new(seed ^ 0x4146_5445_5253_4221);
            let mut one_of = |v: &[AfterSbPolicy]| v[r.range(0, v.len() as u64 - 1) as usize];
            AfterSbPolicies {
                zero_primaries: one_of(&[
                    Disconnect,
                    DiscardYoungerPrimary,
                    DiscardOlderPrimary,
                    DiscardZeroChanges,
                    DiscardLeastChanges,
                ]),
                one_primary: one_of(&[
                    Disconnect,
                    Consensus,
                    DiscardSecondary,
                    ViolentlyAs0p,
                    CallPriLostAfterSb,
                ]),
                two_primaries: one_of(&[Disconnect, ViolentlyAs0p, CallPriLostAfterSb]),
            }
        };
        let mut r = Rng::new(seed ^ 0x4F50_5453);
        Options {
            size_bytes: 32 << 20,
            al_extents: 7,
            resync_chunk_bytes: [64 << 10, 256 << 10, 1 << 20][r.range(0, 2) as usize],
            max_unstable: [8, 64, 1024][r.range(0, 2) as usize],
            run_ms: r.range(300, 1500),
            first_fault_ms: r.range(0, 300),
            fault_gap_ms: r.range(20, 200),
            reset_weight,
            partition_weight,
            crash_weight,
            disk_error_weight,
            spike_weight,
            switchover_weight,
            disconnect_weight,
            pause_weight,
            split_brain_weight,
            policies,
            flush_percent: r.range(0, 10),
            fua_percent: r.range(0, 20),
            rate: swarm_rate(&mut r),
            trace: false,
            // A generator of its own, so the other settings of a seed
            // stay what they were before csums existed.
            csums_alg: [
                None,
                Some(hadisk_peer_proto::DigestAlg::Crc32c),
                Some(hadisk_peer_proto::DigestAlg::Sha256),
            ][Rng::new(seed ^ 0x4353_554D).range(0, 2) as usize],
            verify_corrupt: Rng::new(seed ^ 0x5645_5249).chance(33),
        }
    }
}

/// The rate controller of a swarm run: the default, a dynamic one with
/// small `c-*` values (throttling often, waking on ticks), or a fixed
/// rate fast enough to finish a 32 MiB full sync within the quiescence
/// limit.
fn swarm_rate(r: &mut Rng) -> hadisk_core::RateMode {
    use hadisk_core::{DynamicRate, RateMode};
    match r.range(0, 2) {
        0 => RateMode::default(),
        1 => RateMode::Dynamic(DynamicRate {
            plan_ahead_ms: r.range(1, 30) * 100,
            fill_target_bytes: r.range(1, 64) * 4096,
            min_rate_bytes_per_s: r.range(1, 8) << 20,
            max_rate_bytes_per_s: [0, 16 << 20, 64 << 20][r.range(0, 2) as usize],
        }),
        _ => RateMode::Fixed {
            rate_bytes_per_s: r.range(4, 64) << 20,
        },
    }
}

/// Runs one seed; `Err` is a report naming the seed, the broken guarantee
/// and the last events.
pub fn run_seed(seed: u64) -> Result<Stats, String> {
    run_with(seed, Options::swarm(seed))
}

/// Runs one seed with explicit options.
pub fn run_with(seed: u64, opts: Options) -> Result<Stats, String> {
    let mut world = World::new(opts, seed);
    match world.run() {
        Ok(()) => Ok(world.stats.clone()),
        Err(e) => Err(format!(
            "seed {seed} failed: {e}\nreplay: SIM_SEED={seed} cargo test -p hadisk-sim replay -- --nocapture\noptions: {:?}\n{}",
            Options::swarm(seed),
            world.dump()
        )),
    }
}
