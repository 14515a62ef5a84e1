#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The simulator's seed sweep and replay.

use hadisk_sim::{run_seed, run_with, Options};

/// Seeds every `cargo test` runs (issue 5 asks for at least 1,000).
const SEEDS: std::ops::Range<u64> = 0..1000;

#[test]
fn seed_sweep() {
    let mut failures = Vec::new();
    let mut total = hadisk_sim::Stats::default();
    for seed in SEEDS {
        match run_seed(seed) {
            Ok(s) => total.add(&s),
            Err(report) => {
                if failures.is_empty() {
                    eprintln!("{report}");
                }
                failures.push(seed);
            }
        }
    }
    eprintln!("{} seeds: {total:?}", SEEDS.end - SEEDS.start);
    assert!(failures.is_empty(), "failing seeds: {failures:?} (replay one with SIM_SEED=n cargo test -p hadisk-sim replay -- --nocapture)");
}

/// `SIM_SEED=n cargo test -p hadisk-sim replay -- --nocapture` (add
/// `SIM_TRACE=1` to print every event).
#[test]
fn replay() {
    let Ok(seed) = std::env::var("SIM_SEED") else {
        return;
    };
    let seed: u64 = seed.parse().expect("SIM_SEED must be a number");
    let mut opts = Options::swarm(seed);
    opts.trace = std::env::var("SIM_TRACE").is_ok();
    match run_with(seed, opts) {
        Ok(s) => eprintln!("seed {seed} passed: {s:?}"),
        Err(report) => panic!("{report}"),
    }
}
