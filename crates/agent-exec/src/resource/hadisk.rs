//! `hadisk::RES` (alias `drbddisk::RES`): promote on start, demote on stop,
//! through the daemon ([`super::Replicator`]).
//!
//! As drbddisk does, a refused promote or demote is retried a few times a
//! moment apart: just after a failover the daemon may still see the dead
//! peer as connected Primary until its link times out, and a demote may
//! race the last NBD client's close.

use std::sync::Arc;
use std::time::Duration;

use hadisk_agent::replication::Role;

use super::{Env, Replicator};

/// Tries of a promote or demote (drbddisk's `try=6`).
pub const TRIES: u32 = 6;
/// Pause between tries (drbddisk sleeps 1 s).
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

async fn blocking<T: Send + 'static>(
    r: &Arc<dyn Replicator>,
    f: impl FnOnce(&dyn Replicator) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let r = Arc::clone(r);
    tokio::task::spawn_blocking(move || f(r.as_ref()))
        .await
        .map_err(|e| format!("the daemon call did not complete: {e}"))?
}

async fn retried(
    env: &Env,
    resource: &str,
    what: &str,
    op: fn(&dyn Replicator, &str) -> Result<(), String>,
) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 1..=TRIES {
        let res = resource.to_owned();
        match blocking(&env.replicator, move |r| op(r, &res)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(resource, attempt, "{what} refused: {e}");
                last = e;
            }
        }
        if attempt < TRIES {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    Err(format!("{what} {resource} failed {TRIES} times: {last}"))
}

/// Promotes `resource` (`hadisk primary`), unless it is Primary already.
pub async fn promote(env: &Env, resource: &str) -> Result<(), String> {
    if is_primary(env, resource).await.unwrap_or(false) {
        return Ok(());
    }
    retried(env, resource, "promote", |r, res| r.promote(res)).await
}

/// Demotes `resource` (`hadisk secondary`), unless it is Secondary already.
pub async fn demote(env: &Env, resource: &str) -> Result<(), String> {
    if matches!(is_primary(env, resource).await, Ok(false)) {
        return Ok(());
    }
    retried(env, resource, "demote", |r, res| r.demote(res)).await
}

/// Whether `resource` is Primary here.
pub async fn is_primary(env: &Env, resource: &str) -> Result<bool, String> {
    let res = resource.to_owned();
    let view = blocking(&env.replicator, move |r| r.status(&res)).await?;
    Ok(view.role == Role::Primary)
}
