#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The group plan: start order, stop order, roll-back of a failed start,
//! stop failures; checked on the seed's group and by property against a
//! model.

use hadisk_agent::plan::{rollback, Failure, GroupRun, Outcome, Step};
use proptest::prelude::*;

/// Runs a plan to the end; `fail` says which steps fail. Returns the steps
/// taken and the outcome.
fn drive(mut run: GroupRun, fail: impl Fn(&Step) -> bool) -> (Vec<Step>, Outcome) {
    let mut steps = Vec::new();
    for _ in 0..1000 {
        match run.next() {
            Step::Done(o) => {
                assert_eq!(run.outcome(), Some(&o));
                return (steps, o);
            }
            step => {
                let failed = fail(&step);
                let msg = match &step {
                    Step::Start(i) => format!("start {i} failed"),
                    Step::Stop(i) => format!("stop {i} failed"),
                    Step::Done(_) => unreachable!(),
                };
                steps.push(step);
                run.record(if failed { Err(msg) } else { Ok(()) });
            }
        }
    }
    panic!("the plan did not end");
}

/// The seed's group: drbddisk::data Filesystem Delay IPaddr nfslock nfs.
const SEED_LEN: usize = 6;

#[test]
fn seed_group_starts_left_to_right_and_stops_right_to_left() {
    let (steps, o) = drive(GroupRun::start(SEED_LEN), |_| false);
    assert_eq!(steps, (0..6).map(Step::Start).collect::<Vec<_>>());
    assert_eq!(o, Outcome::Started);
    let (steps, o) = drive(GroupRun::stop(SEED_LEN), |_| false);
    assert_eq!(steps, (0..6).rev().map(Step::Stop).collect::<Vec<_>>());
    assert_eq!(o, Outcome::Stopped);
}

#[test]
fn failed_start_rolls_back_what_was_started() {
    // The IPaddr (index 3) fails: 3, 2, 1, 0 are stopped.
    let (steps, o) = drive(GroupRun::start(SEED_LEN), |s| *s == Step::Start(3));
    assert_eq!(
        steps,
        vec![
            Step::Start(0),
            Step::Start(1),
            Step::Start(2),
            Step::Start(3),
            Step::Stop(3),
            Step::Stop(2),
            Step::Stop(1),
            Step::Stop(0),
        ]
    );
    assert_eq!(
        o,
        Outcome::StartFailed(Failure {
            resource: 3,
            message: "start 3 failed".into()
        })
    );
    assert_eq!(rollback(3), vec![3, 2, 1, 0]);
    // The first resource fails: only it is cleaned up.
    let (steps, o) = drive(GroupRun::start(SEED_LEN), |s| *s == Step::Start(0));
    assert_eq!(steps, vec![Step::Start(0), Step::Stop(0)]);
    assert_eq!(
        o,
        Outcome::StartFailed(Failure {
            resource: 0,
            message: "start 0 failed".into()
        })
    );
}

#[test]
fn failed_stops_do_not_end_the_stop() {
    // nfs (5) will not stop: the rest still stops, and the group is StopFailed.
    let (steps, o) = drive(GroupRun::stop(SEED_LEN), |s| {
        *s == Step::Stop(5) || *s == Step::Stop(1)
    });
    assert_eq!(steps, (0..6).rev().map(Step::Stop).collect::<Vec<_>>());
    assert_eq!(
        o,
        Outcome::StopFailed {
            start: None,
            stops: vec![
                Failure {
                    resource: 5,
                    message: "stop 5 failed".into()
                },
                Failure {
                    resource: 1,
                    message: "stop 1 failed".into()
                },
            ],
        }
    );
    // A failed roll-back keeps the start failure too.
    let (_, o) = drive(GroupRun::start(3), |s| {
        *s == Step::Start(2) || *s == Step::Stop(0)
    });
    assert_eq!(
        o,
        Outcome::StopFailed {
            start: Some(Failure {
                resource: 2,
                message: "start 2 failed".into()
            }),
            stops: vec![Failure {
                resource: 0,
                message: "stop 0 failed".into()
            }],
        }
    );
}

#[test]
fn empty_groups_and_records_after_the_end() {
    assert_eq!(GroupRun::start(0).next(), Step::Done(Outcome::Started));
    assert_eq!(GroupRun::stop(0).next(), Step::Done(Outcome::Stopped));
    let mut r = GroupRun::start(1);
    r.record(Ok(()));
    r.record(Err("late".into()));
    assert_eq!(r.outcome(), Some(&Outcome::Started));
}

proptest! {
    /// Against a model: starts go 0..k where k is the first failing start;
    /// then stops go k..=0 (or, when nothing fails, none); the outcome names
    /// the first start failure and every stop failure.
    #[test]
    fn start_matches_the_model(len in 0usize..12, fail_start in proptest::option::of(0usize..12), fail_stops in proptest::collection::btree_set(0usize..12, 0..4)) {
        let (steps, o) = drive(GroupRun::start(len), |s| match s {
            Step::Start(i) => Some(*i) == fail_start,
            Step::Stop(i) => fail_stops.contains(i),
            Step::Done(_) => false,
        });
        let k = fail_start.filter(|k| *k < len);
        let mut want: Vec<Step> = (0..k.map_or(len, |k| k + 1)).map(Step::Start).collect();
        if let Some(k) = k {
            want.extend((0..=k).rev().map(Step::Stop));
        }
        prop_assert_eq!(&steps, &want);
        let stop_fails: Vec<Failure> = match k {
            Some(k) => (0..=k).rev().filter(|i| fail_stops.contains(i)).map(|i| Failure { resource: i, message: format!("stop {i} failed") }).collect(),
            None => Vec::new(),
        };
        let start_fail = k.map(|k| Failure { resource: k, message: format!("start {k} failed") });
        let want_o = match (start_fail, stop_fails.is_empty()) {
            (None, _) => Outcome::Started,
            (Some(f), true) => Outcome::StartFailed(f),
            (start, false) => Outcome::StopFailed { start, stops: stop_fails },
        };
        prop_assert_eq!(o, want_o);
    }
}
