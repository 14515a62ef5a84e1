//! After-split-brain recovery policies (`after-sb-0pri`, `after-sb-1pri`,
//! `after-sb-2pri`), decided purely from inputs as DRBD's
//! `drbd_asb_recover_0p/1p/2p` do.
//!
//! Invariants:
//! * [`recover`] returns `Some((local_wins, policy_name))` only when the
//!   policy decides; `None` means "disconnect" (manual recovery).
//! * Evaluated on both nodes with the sides swapped and complementary
//!   tie-breakers, the two answers are complementary (one wins, one loses).
//! * A policy not valid for the number of Primaries (e.g. `consensus` for
//!   0pri) never decides — DRBD logs "Configuration error"; the config
//!   layer should reject it earlier with [`AfterSbPolicy::valid_for`].
//! * The node whose data a split brain discards (it becomes SyncTarget)
//!   first asks the driver to save its diverging blocks
//!   ([`crate::Action::SaveDiverging`] with a [`SaveRequest`]): no resync
//!   request and no mirrored write from the winner reaches its disk before
//!   the driver reported the save durable; a failed save leaves the node
//!   StandAlone with its data untouched.

use std::fmt;
use std::str::FromStr;

use hadisk_bitmap::{DirtyBitmap, BLOCK_BYTES};
use hadisk_peer_proto::Uuids;

use crate::event::Action;
use crate::resource::Resource;
use crate::states::Replication;
use crate::CoreError;

/// What the victim of a split brain must save before its disk is
/// overwritten: every block set in the merged bitmap (the blocks the resync
/// will write), with the facts the index file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveRequest {
    /// Byte ranges (offset, length) of the usable area, ascending and
    /// disjoint, whole 4 KiB blocks clipped to the device size.
    pub ranges: Vec<(u64, u64)>,
    /// The usable size: the sparse image has this size.
    pub size_bytes: u64,
    pub local_uuids: Uuids,
    pub peer_uuids: Uuids,
    /// How the split brain was resolved (a policy name or
    /// "discard-my-data").
    pub resolved_by: &'static str,
}

impl SaveRequest {
    /// The ranges of `bitmap`'s set blocks.
    pub fn ranges_of(bitmap: &DirtyBitmap) -> Vec<(u64, u64)> {
        let size = bitmap.size_bytes();
        bitmap
            .dirty_runs()
            .map(|run| {
                let offset = run.start * BLOCK_BYTES;
                let end = (run.end * BLOCK_BYTES).min(size);
                (offset, end.saturating_sub(offset))
            })
            .filter(|(_, len)| *len > 0)
            .collect()
    }

    /// Bytes to save.
    pub fn total_bytes(&self) -> u64 {
        self.ranges.iter().map(|(_, len)| len).sum()
    }
}

/// One `after-sb-*` policy value (DRBD's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSbPolicy {
    Disconnect,
    DiscardYoungerPrimary,
    DiscardOlderPrimary,
    DiscardZeroChanges,
    DiscardLeastChanges,
    DiscardLocal,
    DiscardRemote,
    DiscardSecondary,
    Consensus,
    CallPriLostAfterSb,
    ViolentlyAs0p,
}

const NAMES: [(AfterSbPolicy, &str); 11] = [
    (AfterSbPolicy::Disconnect, "disconnect"),
    (
        AfterSbPolicy::DiscardYoungerPrimary,
        "discard-younger-primary",
    ),
    (AfterSbPolicy::DiscardOlderPrimary, "discard-older-primary"),
    (AfterSbPolicy::DiscardZeroChanges, "discard-zero-changes"),
    (AfterSbPolicy::DiscardLeastChanges, "discard-least-changes"),
    (AfterSbPolicy::DiscardLocal, "discard-local"),
    (AfterSbPolicy::DiscardRemote, "discard-remote"),
    (AfterSbPolicy::DiscardSecondary, "discard-secondary"),
    (AfterSbPolicy::Consensus, "consensus"),
    (AfterSbPolicy::CallPriLostAfterSb, "call-pri-lost-after-sb"),
    (AfterSbPolicy::ViolentlyAs0p, "violently-as0p"),
];

impl AfterSbPolicy {
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, n)| *n)
            .unwrap_or("disconnect")
    }

    /// Whether DRBD accepts this value for the given number of Primaries
    /// (0, 1 or 2), i.e. for `after-sb-0pri`, `-1pri`, `-2pri`.
    pub fn valid_for(self, primaries: u8) -> bool {
        use AfterSbPolicy::*;
        match primaries {
            0 => matches!(
                self,
                Disconnect
                    | DiscardYoungerPrimary
                    | DiscardOlderPrimary
                    | DiscardZeroChanges
                    | DiscardLeastChanges
                    | DiscardLocal
                    | DiscardRemote
            ),
            1 => matches!(
                self,
                Disconnect | Consensus | ViolentlyAs0p | DiscardSecondary | CallPriLostAfterSb
            ),
            _ => matches!(self, Disconnect | ViolentlyAs0p | CallPriLostAfterSb),
        }
    }
}

impl fmt::Display for AfterSbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AfterSbPolicy {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(p, _)| *p)
            .ok_or_else(|| CoreError::UnknownAfterSbPolicy {
                value: s.to_string(),
            })
    }
}

/// The three policies, DRBD's defaults being `disconnect` for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterSbPolicies {
    pub zero_primaries: AfterSbPolicy,
    pub one_primary: AfterSbPolicy,
    pub two_primaries: AfterSbPolicy,
}

impl Default for AfterSbPolicies {
    fn default() -> Self {
        AfterSbPolicies {
            zero_primaries: AfterSbPolicy::Disconnect,
            one_primary: AfterSbPolicy::Disconnect,
            two_primaries: AfterSbPolicy::Disconnect,
        }
    }
}

/// What the policies look at for each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbSide {
    /// Primary now.
    pub primary: bool,
    /// Was Primary when the split happened (bit 0 of its bitmap UUID): the
    /// older Primary. The one that was not is the younger Primary.
    pub was_primary_at_split: bool,
    /// Blocks changed since the split (its dirty-bitmap count).
    pub changed_blocks: u64,
}

/// Decides a split brain. `Some((true, name))`: this side's data wins (it
/// becomes SyncSource); `Some((false, name))`: it is discarded.
pub fn recover(
    policies: &AfterSbPolicies,
    local: &SbSide,
    peer: &SbSide,
    local_yields_on_tie: bool,
) -> Option<(bool, &'static str)> {
    let primaries = u8::from(local.primary) + u8::from(peer.primary);
    match primaries {
        0 => recover_0p(policies.zero_primaries, local, peer, local_yields_on_tie),
        1 => recover_1p(policies, local, peer, local_yields_on_tie),
        _ => recover_2p(policies, local, peer, local_yields_on_tie),
    }
}

fn recover_0p(
    policy: AfterSbPolicy,
    local: &SbSide,
    peer: &SbSide,
    tie: bool,
) -> Option<(bool, &'static str)> {
    use AfterSbPolicy::*;
    let (ls, ps) = (local.was_primary_at_split, peer.was_primary_at_split);
    let by = policy.name();
    match policy {
        DiscardYoungerPrimary | DiscardOlderPrimary if ls != ps => {
            // The younger Primary is the one that was Secondary at the split.
            let local_younger = !ls;
            let local_wins = if policy == DiscardYoungerPrimary {
                !local_younger
            } else {
                local_younger
            };
            Some((local_wins, by))
        }
        // Undecided younger/older falls through to least-changes, as DRBD.
        DiscardYoungerPrimary | DiscardOlderPrimary => least_changes(local, peer, tie, by),
        DiscardZeroChanges => zero_changes(local, peer, tie, by),
        DiscardLeastChanges => least_changes(local, peer, tie, by),
        DiscardLocal => Some((false, by)),
        DiscardRemote => Some((true, by)),
        Disconnect | DiscardSecondary | Consensus | CallPriLostAfterSb | ViolentlyAs0p => None,
    }
}

fn zero_changes(
    local: &SbSide,
    peer: &SbSide,
    tie: bool,
    by: &'static str,
) -> Option<(bool, &'static str)> {
    match (local.changed_blocks, peer.changed_blocks) {
        (0, 0) => Some((!tie, by)),
        (_, 0) => Some((true, by)),
        (0, _) => Some((false, by)),
        _ => None,
    }
}

fn least_changes(
    local: &SbSide,
    peer: &SbSide,
    tie: bool,
    by: &'static str,
) -> Option<(bool, &'static str)> {
    use std::cmp::Ordering::*;
    match local.changed_blocks.cmp(&peer.changed_blocks) {
        Less => Some((false, by)),
        Greater => Some((true, by)),
        Equal => Some((!tie, by)),
    }
}

fn recover_1p(
    policies: &AfterSbPolicies,
    local: &SbSide,
    peer: &SbSide,
    tie: bool,
) -> Option<(bool, &'static str)> {
    use AfterSbPolicy::*;
    let policy = policies.one_primary;
    let as_0p = || recover_0p(policies.zero_primaries, local, peer, tie);
    match policy {
        DiscardSecondary => Some((local.primary, policy.name())),
        Consensus => {
            // Both policies must agree: 0pri's verdict must discard the Secondary.
            let (local_wins, _) = as_0p()?;
            (local_wins == local.primary).then_some((local_wins, policy.name()))
        }
        ViolentlyAs0p => as_0p().map(|(w, _)| (w, policy.name())),
        // DRBD demotes a losing Primary here; a losing Primary that cannot
        // demote (device in use) calls the pri-lost-after-sb handler. In
        // hadisk the core refuses to make a Primary SyncTarget, so a losing
        // Primary ends with the connection refused and a clear reason.
        CallPriLostAfterSb => as_0p().map(|(w, _)| (w, policy.name())),
        _ => None,
    }
}

fn recover_2p(
    policies: &AfterSbPolicies,
    local: &SbSide,
    peer: &SbSide,
    tie: bool,
) -> Option<(bool, &'static str)> {
    use AfterSbPolicy::*;
    let policy = policies.two_primaries;
    match policy {
        ViolentlyAs0p | CallPriLostAfterSb => {
            recover_0p(policies.zero_primaries, local, peer, tie).map(|(w, _)| (w, policy.name()))
        }
        _ => None,
    }
}

/// The refusal of an unresolved split brain, as `status` and the log show
/// it: what happened, which policy left it unresolved, and DRBD's manual
/// recovery with this resource's name.
pub fn unresolved_message(
    resource: &str,
    policies: &AfterSbPolicies,
    primaries: u8,
    rule: crate::uuid::Rule,
) -> String {
    let policy = match primaries {
        0 => policies.zero_primaries,
        1 => policies.one_primary,
        _ => policies.two_primaries,
    };
    let n = primaries.min(2);
    format!(
        "split brain detected: both nodes changed the data while disconnected [{rule}]; \
         after-sb-{n}pri is {policy}, so the connection is refused (StandAlone). To recover, \
         on the node whose changes are to be discarded run `hadisk secondary {resource}` and \
         `hadisk connect --discard-my-data {resource}` (its diverging blocks are saved to the \
         split-brain directory first), then `hadisk connect {resource}` on the other node"
    )
}

impl Resource {
    /// This node lost a split brain: before anything of the winner's is
    /// written here, the driver saves the blocks the resync will
    /// overwrite (the merged bitmap). Peer writes queue meanwhile and the
    /// resync starts only after [`Self::save_done`].
    pub(crate) fn save_before_discard(&mut self, peer_uuids: Uuids, resolved_by: &'static str) {
        self.set_repl(Replication::SyncTarget);
        let io = self.next_io();
        let save = SaveRequest {
            ranges: SaveRequest::ranges_of(&self.bitmap),
            size_bytes: self.cfg.size_bytes,
            local_uuids: self.sb.uuids,
            peer_uuids,
            resolved_by,
        };
        self.saving = Some((io, self.link_epoch));
        self.out.push(Action::SaveDiverging {
            io,
            save: Box::new(save),
        });
    }

    /// The save finished: start the resync, or, if it failed, refuse the
    /// connection with nothing discarded. A save of a link that is gone
    /// only unblocks (the next handshake decides again).
    pub(crate) fn save_done(&mut self, ok: bool) {
        let Some((_, epoch)) = self.saving.take() else {
            return;
        };
        if epoch != self.link_epoch || !self.link_is_up() {
            self.pump();
            return;
        }
        if !ok {
            let reason = format!(
                "split brain: this node's changes were to be discarded, but its diverging blocks \
                 could not be saved to the split-brain directory (see the log); nothing was \
                 discarded and the connection is refused (StandAlone). Fix the directory \
                 (space, permissions: `split-brain-dir` in the resource file), then run \
                 `hadisk connect --discard-my-data {}` again",
                self.cfg.resource
            );
            self.refuse(reason);
            return;
        }
        self.start_target();
        self.pump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AfterSbPolicy::*;

    fn side(primary: bool, was: bool, changed: u64) -> SbSide {
        SbSide {
            primary,
            was_primary_at_split: was,
            changed_blocks: changed,
        }
    }

    fn pol(p0: AfterSbPolicy, p1: AfterSbPolicy, p2: AfterSbPolicy) -> AfterSbPolicies {
        AfterSbPolicies {
            zero_primaries: p0,
            one_primary: p1,
            two_primaries: p2,
        }
    }

    /// (policies, local, peer, tie, expected local verdict)
    #[test]
    #[allow(clippy::type_complexity)]
    fn policy_table() {
        let d = Disconnect;
        let rows: Vec<(AfterSbPolicies, SbSide, SbSide, bool, Option<(bool, &str)>)> = vec![
            (
                pol(d, d, d),
                side(false, true, 5),
                side(false, false, 9),
                false,
                None,
            ),
            (
                pol(DiscardYoungerPrimary, d, d),
                side(false, true, 5),
                side(false, false, 9),
                false,
                Some((true, "discard-younger-primary")),
            ),
            (
                pol(DiscardYoungerPrimary, d, d),
                side(false, false, 5),
                side(false, true, 9),
                false,
                Some((false, "discard-younger-primary")),
            ),
            (
                pol(DiscardOlderPrimary, d, d),
                side(false, true, 5),
                side(false, false, 9),
                false,
                Some((false, "discard-older-primary")),
            ),
            // younger/older undecidable -> least changes
            (
                pol(DiscardYoungerPrimary, d, d),
                side(false, false, 5),
                side(false, false, 9),
                false,
                Some((false, "discard-younger-primary")),
            ),
            (
                pol(DiscardZeroChanges, d, d),
                side(false, false, 0),
                side(false, false, 9),
                false,
                Some((false, "discard-zero-changes")),
            ),
            (
                pol(DiscardZeroChanges, d, d),
                side(false, false, 3),
                side(false, false, 0),
                false,
                Some((true, "discard-zero-changes")),
            ),
            (
                pol(DiscardZeroChanges, d, d),
                side(false, false, 3),
                side(false, false, 4),
                false,
                None,
            ),
            (
                pol(DiscardZeroChanges, d, d),
                side(false, false, 0),
                side(false, false, 0),
                true,
                Some((false, "discard-zero-changes")),
            ),
            (
                pol(DiscardLeastChanges, d, d),
                side(false, false, 7),
                side(false, false, 4),
                false,
                Some((true, "discard-least-changes")),
            ),
            (
                pol(DiscardLeastChanges, d, d),
                side(false, false, 4),
                side(false, false, 4),
                false,
                Some((true, "discard-least-changes")),
            ),
            (
                pol(DiscardLocal, d, d),
                side(false, false, 7),
                side(false, false, 4),
                false,
                Some((false, "discard-local")),
            ),
            (
                pol(DiscardRemote, d, d),
                side(false, false, 1),
                side(false, false, 4),
                false,
                Some((true, "discard-remote")),
            ),
            // 1 primary
            (
                pol(d, DiscardSecondary, d),
                side(true, false, 1),
                side(false, false, 4),
                false,
                Some((true, "discard-secondary")),
            ),
            (
                pol(d, DiscardSecondary, d),
                side(false, false, 9),
                side(true, false, 4),
                false,
                Some((false, "discard-secondary")),
            ),
            (
                pol(DiscardLeastChanges, Consensus, d),
                side(true, false, 9),
                side(false, false, 4),
                false,
                Some((true, "consensus")),
            ),
            (
                pol(DiscardLeastChanges, Consensus, d),
                side(true, false, 1),
                side(false, false, 4),
                false,
                None,
            ),
            (
                pol(DiscardLeastChanges, ViolentlyAs0p, d),
                side(true, false, 1),
                side(false, false, 4),
                false,
                Some((false, "violently-as0p")),
            ),
            (
                pol(DiscardZeroChanges, CallPriLostAfterSb, d),
                side(true, false, 1),
                side(false, false, 0),
                false,
                Some((true, "call-pri-lost-after-sb")),
            ),
            (
                pol(DiscardLeastChanges, Disconnect, d),
                side(true, false, 9),
                side(false, false, 4),
                false,
                None,
            ),
            // 2 primaries
            (
                pol(DiscardLeastChanges, d, d),
                side(true, false, 9),
                side(true, false, 4),
                false,
                None,
            ),
            (
                pol(DiscardLeastChanges, d, ViolentlyAs0p),
                side(true, false, 9),
                side(true, false, 4),
                false,
                Some((true, "violently-as0p")),
            ),
            (
                pol(DiscardLeastChanges, d, Consensus),
                side(true, false, 9),
                side(true, false, 4),
                false,
                None,
            ),
            // invalid for 0pri: never decides
            (
                pol(Consensus, d, d),
                side(false, false, 9),
                side(false, false, 4),
                false,
                None,
            ),
        ];
        for (i, (p, l, r, tie, want)) in rows.into_iter().enumerate() {
            let got = recover(&p, &l, &r, tie);
            assert_eq!(got, want, "row {i}");
            // symmetry: the peer reaches the complementary verdict (discard-local
            // and discard-remote are configured as a complementary pair instead)
            if matches!(p.zero_primaries, DiscardLocal | DiscardRemote) {
                continue;
            }
            let mirror = recover(&p, &r, &l, !tie);
            assert_eq!(mirror.map(|(w, n)| (!w, n)), want, "row {i} mirrored");
        }
    }

    /// Every combination of the three policies and of both sides (role,
    /// role at the split, changes 0/1/2) with both tie-breakers: the two
    /// nodes' verdicts are complementary (one wins, one loses) or both
    /// undecided, and a policy not valid for the number of Primaries
    /// never decides. `discard-local`/`-remote` are one-sided by design
    /// (configured as a complementary pair) and are left out.
    #[test]
    fn exhaustive_verdicts_are_complementary() {
        let policies: Vec<AfterSbPolicy> = NAMES.iter().map(|(p, _)| *p).collect();
        let mut sides = Vec::new();
        for primary in [false, true] {
            for was in [false, true] {
                for changed in 0..3 {
                    sides.push(side(primary, was, changed));
                }
            }
        }
        let mut decided = 0u64;
        for &p0 in &policies {
            if matches!(p0, DiscardLocal | DiscardRemote) {
                continue;
            }
            for &p1 in &policies {
                for &p2 in &policies {
                    let pols = pol(p0, p1, p2);
                    for l in &sides {
                        for r in &sides {
                            for tie in [false, true] {
                                let mine = recover(&pols, l, r, tie);
                                let theirs = recover(&pols, r, l, !tie);
                                assert_eq!(
                                    mine.map(|(w, n)| (!w, n)),
                                    theirs,
                                    "{pols:?} {l:?} {r:?} tie {tie}"
                                );
                                let n = u8::from(l.primary) + u8::from(r.primary);
                                let policy = [p0, p1, p2][n as usize];
                                if let Some((_, name)) = mine {
                                    decided += 1;
                                    assert!(policy.valid_for(n), "{policy} decided for {n}pri");
                                    assert_eq!(name, policy.name());
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(decided > 10_000, "{decided}");
    }

    #[test]
    fn unresolved_message_names_the_policy_and_the_commands() {
        let p = pol(DiscardZeroChanges, DiscardSecondary, Disconnect);
        assert_eq!(
            unresolved_message("r0", &p, 0, crate::uuid::Rule::SplitBrain),
            "split brain detected: both nodes changed the data while disconnected [split-brain (rule 90)]; after-sb-0pri is discard-zero-changes, so the connection is refused (StandAlone). To recover, on the node whose changes are to be discarded run `hadisk secondary r0` and `hadisk connect --discard-my-data r0` (its diverging blocks are saved to the split-brain directory first), then `hadisk connect r0` on the other node"
        );
        assert!(
            unresolved_message("r0", &p, 2, crate::uuid::Rule::SplitBrainHistory)
                .contains("[split-brain-history (rule 100)]; after-sb-2pri is disconnect")
        );
    }

    #[test]
    fn save_ranges_are_the_set_blocks_clipped_to_the_device() {
        let size = 10 * BLOCK_BYTES + 512;
        let mut b = DirtyBitmap::new(size).unwrap();
        assert_eq!(SaveRequest::ranges_of(&b), vec![]);
        b.set_blocks(0..2).unwrap();
        b.set_blocks(5..6).unwrap();
        b.set_blocks(9..11).unwrap();
        assert_eq!(
            SaveRequest::ranges_of(&b),
            vec![
                (0, 2 * BLOCK_BYTES),
                (5 * BLOCK_BYTES, BLOCK_BYTES),
                (9 * BLOCK_BYTES, BLOCK_BYTES + 512)
            ]
        );
    }

    #[test]
    fn names_round_trip_and_validity() {
        for (p, n) in NAMES {
            assert_eq!(n.parse::<AfterSbPolicy>().unwrap(), p);
            assert_eq!(p.to_string(), n);
        }
        assert_eq!(
            "discard-newest".parse::<AfterSbPolicy>().unwrap_err().to_string(),
            "unknown after-sb policy \"discard-newest\" (expected one of disconnect, discard-younger-primary, discard-older-primary, discard-zero-changes, discard-least-changes, discard-local, discard-remote, discard-secondary, consensus, call-pri-lost-after-sb, violently-as0p)"
        );
        assert!(DiscardLeastChanges.valid_for(0));
        assert!(!DiscardLeastChanges.valid_for(1));
        assert!(Consensus.valid_for(1));
        assert!(!Consensus.valid_for(2));
    }
}
