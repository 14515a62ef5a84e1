//! The order in which a group's resources are started and stopped, and what
//! to undo when a start fails.
//!
//! A group starts left to right and stops right to left. When the start of
//! resource k fails, the group is rolled back: resources k, k-1, …, 0 are
//! stopped, right to left. The failed one is included because a failed start
//! may leave part of it behind (an address added before its ARP failed, a
//! mount made before a check failed), and stopping a stopped resource
//! succeeds (the OCF rule every resource type here follows). A stop that
//! fails does not end the stop (or the roll-back): the resources to its left
//! are still stopped, best effort (the address goes away even if NFS would
//! not stop), and the group ends as [`Outcome::StopFailed`].
//!
//! Invariants: [`GroupRun::next`] yields every index at most once per
//! phase; a stop phase yields exactly the indices of resources that were
//! started (or attempted), in decreasing order; the run always ends in an
//! [`Outcome`].

/// A step to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Start resource i.
    Start(usize),
    /// Stop resource i.
    Stop(usize),
    /// Nothing more: the outcome.
    Done(Outcome),
}

/// A failure of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Its index in the group.
    pub resource: usize,
    /// What went wrong (the executor's message).
    pub message: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every resource started.
    Started,
    /// Every resource stopped.
    Stopped,
    /// A start failed and everything it had started was stopped again.
    StartFailed(Failure),
    /// A stop failed (during a stop, or during the roll-back of a failed
    /// start): some resources may still be active.
    StopFailed {
        /// The start failure that caused the roll-back, if any.
        start: Option<Failure>,
        /// Every stop that failed, in the order tried.
        stops: Vec<Failure>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Starting; the next index to start.
    Starting(usize),
    /// Stopping; indices below `next` remain, (`next` counts down).
    Stopping {
        next: usize,
        start_failure: Option<Failure>,
        stop_failures: Vec<Failure>,
    },
    Done(Outcome),
}

/// One start or stop of a group of `len` resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRun {
    len: usize,
    phase: Phase,
}

impl GroupRun {
    /// Starts a group of `len` resources.
    pub fn start(len: usize) -> Self {
        let phase = if len == 0 {
            Phase::Done(Outcome::Started)
        } else {
            Phase::Starting(0)
        };
        GroupRun { len, phase }
    }

    /// Stops a group of `len` resources (all of them, right to left).
    pub fn stop(len: usize) -> Self {
        let phase = if len == 0 {
            Phase::Done(Outcome::Stopped)
        } else {
            Phase::Stopping {
                next: len,
                start_failure: None,
                stop_failures: Vec::new(),
            }
        };
        GroupRun { len, phase }
    }

    /// The step to perform now.
    pub fn next(&self) -> Step {
        match &self.phase {
            Phase::Starting(i) => Step::Start(*i),
            Phase::Stopping { next, .. } => Step::Stop(next.saturating_sub(1)),
            Phase::Done(o) => Step::Done(o.clone()),
        }
    }

    /// Records the result of the step [`GroupRun::next`] returned. Calling
    /// it when the run is done changes nothing.
    pub fn record(&mut self, result: Result<(), String>) {
        let phase = std::mem::replace(&mut self.phase, Phase::Done(Outcome::Stopped));
        self.phase = match (phase, result) {
            (Phase::Starting(i), Ok(())) if i + 1 >= self.len => Phase::Done(Outcome::Started),
            (Phase::Starting(i), Ok(())) => Phase::Starting(i + 1),
            (Phase::Starting(i), Err(message)) => Phase::Stopping {
                next: i + 1,
                start_failure: Some(Failure {
                    resource: i,
                    message,
                }),
                stop_failures: Vec::new(),
            },
            (
                Phase::Stopping {
                    next,
                    start_failure,
                    mut stop_failures,
                },
                result,
            ) => {
                if let Err(message) = result {
                    stop_failures.push(Failure {
                        resource: next.saturating_sub(1),
                        message,
                    });
                }
                if next <= 1 {
                    Phase::Done(finish(start_failure, stop_failures))
                } else {
                    Phase::Stopping {
                        next: next - 1,
                        start_failure,
                        stop_failures,
                    }
                }
            }
            (done @ Phase::Done(_), _) => done,
        };
    }

    /// The outcome, once done.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }
}

fn finish(start: Option<Failure>, stops: Vec<Failure>) -> Outcome {
    match (start, stops.is_empty()) {
        (None, true) => Outcome::Stopped,
        (Some(f), true) => Outcome::StartFailed(f),
        (start, false) => Outcome::StopFailed { start, stops },
    }
}

/// The stop list after resource `failed` of a group failed to start: itself
/// and everything to its left, right to left.
pub fn rollback(failed: usize) -> Vec<usize> {
    (0..=failed).rev().collect()
}
