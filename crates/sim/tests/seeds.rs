#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The simulator's seed sweep and replay.

use hadisk_sim::{run_seed, run_with, Options};

/// Seeds every `cargo test` runs (issue 5 asks for at least 1,000).
const SEEDS: std::ops::Range<u64> = 0..1000;

/// The seeds to sweep: [`SEEDS`], or `SIM_SEEDS=start..end` for a longer
/// search.
fn seeds() -> std::ops::Range<u64> {
    let Ok(spec) = std::env::var("SIM_SEEDS") else {
        return SEEDS;
    };
    let parsed = spec
        .split_once("..")
        .and_then(|(a, b)| Some(a.parse().ok()?..b.parse().ok()?));
    parsed.expect("SIM_SEEDS must look like 1000..5000")
}

#[test]
fn seed_sweep() {
    let seeds = seeds();
    let mut failures = Vec::new();
    let mut total = hadisk_sim::Stats::default();
    for seed in seeds.clone() {
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
    eprintln!("{} seeds: {total:?}", seeds.end - seeds.start);
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
