//! One start or stop of a group, carried out step by step in the order
//! [`hadisk_agent::plan::GroupRun`] gives (start left to right; a failed
//! start rolls back right to left from the failed resource; a stop goes
//! right to left and goes on past a failed stop).
//!
//! A run is a tokio task. It reports each resource's new state and, at the
//! end, the outcome to the runner over a channel; it changes no shared
//! state itself.

use hadisk_agent::plan::{GroupRun, Outcome, Step};
use hadisk_config::ha::HaResource;
use tokio::sync::mpsc;

use crate::resource::{self, Env};

/// A resource's state as `hadisk agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceState {
    /// Not started (or stopped).
    Stopped,
    /// Being started.
    Starting,
    /// Started.
    Started,
    /// Being stopped.
    Stopping,
    /// Its start failed (the message says why).
    StartFailed(String),
    /// Its stop failed: it may still be active.
    StopFailed(String),
}

/// What a run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// Resource `resource` of group `group` is now in `state`.
    Resource {
        /// The group's index.
        group: usize,
        /// The resource's index.
        resource: usize,
        /// Its new state.
        state: ResourceState,
    },
    /// The run ended.
    Done {
        /// The group's index.
        group: usize,
        /// How.
        outcome: Outcome,
    },
}

/// Whether a run starts or stops the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Start, left to right.
    Start,
    /// Stop, right to left.
    Stop,
}

/// Runs group `index` (its `resources`) in `direction`, reporting to `tx`.
pub async fn run(
    env: Env,
    index: usize,
    resources: Vec<HaResource>,
    direction: Direction,
    tx: mpsc::UnboundedSender<RunEvent>,
) {
    let mut plan = match direction {
        Direction::Start => GroupRun::start(resources.len()),
        Direction::Stop => GroupRun::stop(resources.len()),
    };
    let report = |resource: usize, state: ResourceState| {
        // The runner outlives every run; a closed channel means it is gone
        // and nobody is left to tell.
        let _ = tx.send(RunEvent::Resource {
            group: index,
            resource,
            state,
        });
    };
    let mut failed: Option<(usize, String)> = None;
    loop {
        match plan.next() {
            Step::Start(i) => {
                let Some(r) = resources.get(i) else { break };
                report(i, ResourceState::Starting);
                tracing::info!(group = index, resource = %r, "starting");
                let result = resource::start(&env, r).await;
                match &result {
                    Ok(()) => report(i, ResourceState::Started),
                    Err(e) => {
                        tracing::error!(group = index, resource = %r, "start failed: {e}");
                        report(i, ResourceState::StartFailed(e.clone()));
                        failed = Some((i, e.clone()));
                    }
                }
                plan.record(result);
            }
            Step::Stop(i) => {
                let Some(r) = resources.get(i) else { break };
                report(i, ResourceState::Stopping);
                tracing::info!(group = index, resource = %r, "stopping");
                let result = resource::stop(&env, r).await;
                match &result {
                    // The resource whose start failed keeps saying why once
                    // its leftovers are cleaned up.
                    Ok(()) => report(
                        i,
                        match failed.take_if(|(f, _)| *f == i) {
                            Some((_, why)) => ResourceState::StartFailed(why),
                            None => ResourceState::Stopped,
                        },
                    ),
                    Err(e) => {
                        tracing::error!(group = index, resource = %r, "stop failed: {e}");
                        report(i, ResourceState::StopFailed(e.clone()));
                    }
                }
                plan.record(result);
            }
            Step::Done(outcome) => {
                let _ = tx.send(RunEvent::Done {
                    group: index,
                    outcome,
                });
                return;
            }
        }
    }
}
