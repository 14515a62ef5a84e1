//! Who is alive: the peer (from the time of its last accepted heartbeat) and
//! the ping nodes (from the time of their last reply), judged against
//! `ha.cf`'s times.
//!
//! Times are milliseconds of one monotonic clock that the executor reads
//! (`now_ms`, `started_at_ms`, last-seen times); nothing here reads a clock.
//! Rules, as Heartbeat's: a peer silent for `deadtime` or more is dead; one
//! never heard since this agent started is waited for during `initdead`, and
//! dead after; silent for `warntime` or more, it is late (still alive). A
//! ping node answers if it replied within `deadtime`.

use hadisk_config::ha::HaCf;

/// `ha.cf`'s times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Between heartbeats.
    pub keepalive_ms: u64,
    /// Silence that makes the peer dead.
    pub deadtime_ms: u64,
    /// Silence that makes the peer late.
    pub warntime_ms: Option<u64>,
    /// Wait for the first heartbeat after start.
    pub initdead_ms: u64,
}

impl Timing {
    /// The times of a parsed `ha.cf`.
    pub fn from_hacf(c: &HaCf) -> Self {
        Timing {
            keepalive_ms: c.keepalive_ms,
            deadtime_ms: c.deadtime_ms,
            warntime_ms: c.warntime_ms,
            initdead_ms: c.initdead_ms,
        }
    }
}

/// The peer, as the heartbeats show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Never heard since we started; `initdead` not over.
    Waiting {
        /// Until `initdead` is over.
        remaining_ms: u64,
    },
    /// Heard within `warntime` (or `deadtime` without warntime).
    Alive,
    /// Silent for `warntime` or more, less than `deadtime`.
    Late {
        /// Silence so far.
        silent_ms: u64,
    },
    /// Silent for `deadtime` or more (or never heard within `initdead`).
    Dead {
        /// Silence so far (since our start when never heard).
        silent_ms: u64,
    },
}

impl Liveness {
    /// Alive or late.
    pub fn is_alive(self) -> bool {
        matches!(self, Liveness::Alive | Liveness::Late { .. })
    }
}

/// Judges the peer. `last_seen_ms` is when its last accepted heartbeat
/// arrived, if any since `started_at_ms`.
pub fn peer_liveness(
    t: &Timing,
    now_ms: u64,
    started_at_ms: u64,
    last_seen_ms: Option<u64>,
) -> Liveness {
    match last_seen_ms {
        Some(seen) => {
            let silent_ms = now_ms.saturating_sub(seen);
            if silent_ms >= t.deadtime_ms {
                Liveness::Dead { silent_ms }
            } else if t.warntime_ms.is_some_and(|w| silent_ms >= w) {
                Liveness::Late { silent_ms }
            } else {
                Liveness::Alive
            }
        }
        None => {
            let since = now_ms.saturating_sub(started_at_ms);
            if since >= t.initdead_ms {
                Liveness::Dead { silent_ms: since }
            } else {
                Liveness::Waiting {
                    remaining_ms: t.initdead_ms - since,
                }
            }
        }
    }
}

/// The ping nodes, together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingView {
    /// No `ping` line: reachability is not a criterion.
    NotConfigured,
    /// At least one answered within deadtime.
    Reachable,
    /// None has answered yet, and `initdead` is not over.
    Waiting,
    /// None answers: this node may be the isolated one.
    Unreachable,
}

/// Judges the ping nodes from the time of each one's last reply.
pub fn ping_view(
    t: &Timing,
    now_ms: u64,
    started_at_ms: u64,
    last_reply_ms: &[Option<u64>],
) -> PingView {
    if last_reply_ms.is_empty() {
        return PingView::NotConfigured;
    }
    let answers =
        |seen: &Option<u64>| seen.is_some_and(|s| now_ms.saturating_sub(s) < t.deadtime_ms);
    if last_reply_ms.iter().any(answers) {
        PingView::Reachable
    } else if last_reply_ms.iter().all(Option::is_none)
        && now_ms.saturating_sub(started_at_ms) < t.initdead_ms
    {
        PingView::Waiting
    } else {
        PingView::Unreachable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        keepalive_ms: 200,
        deadtime_ms: 1000,
        warntime_ms: Some(500),
        initdead_ms: 2000,
    };

    #[test]
    fn liveness_boundaries() {
        let cases: &[(u64, Option<u64>, Liveness)] = &[
            (100, None, Liveness::Waiting { remaining_ms: 2000 }),
            (2099, None, Liveness::Waiting { remaining_ms: 1 }),
            (2100, None, Liveness::Dead { silent_ms: 2000 }),
            (5000, Some(4501), Liveness::Alive),
            (5000, Some(4500), Liveness::Late { silent_ms: 500 }),
            (5000, Some(4001), Liveness::Late { silent_ms: 999 }),
            (5000, Some(4000), Liveness::Dead { silent_ms: 1000 }),
            // A clock that seems to go back counts as no silence.
            (5000, Some(6000), Liveness::Alive),
        ];
        for (now, seen, want) in cases {
            assert_eq!(
                peer_liveness(&T, *now, 100, *seen),
                *want,
                "now {now} seen {seen:?}"
            );
        }
        let no_warn = Timing {
            warntime_ms: None,
            ..T
        };
        assert_eq!(
            peer_liveness(&no_warn, 5000, 100, Some(4001)),
            Liveness::Alive
        );
    }

    #[test]
    fn ping_boundaries() {
        assert_eq!(ping_view(&T, 5000, 0, &[]), PingView::NotConfigured);
        assert_eq!(
            ping_view(&T, 5000, 0, &[None, Some(4001)]),
            PingView::Reachable
        );
        assert_eq!(
            ping_view(&T, 5000, 0, &[None, Some(4000)]),
            PingView::Unreachable
        );
        assert_eq!(ping_view(&T, 1999, 0, &[None, None]), PingView::Waiting);
        assert_eq!(ping_view(&T, 2000, 0, &[None, None]), PingView::Unreachable);
        // Once a ping node has answered, initdead no longer applies.
        assert_eq!(
            ping_view(&T, 1500, 0, &[Some(100), None]),
            PingView::Unreachable
        );
    }
}
