//! The generation-UUID sync decision (DESIGN.md §4), as DRBD 8.4's
//! `drbd_uuid_compare` + `drbd_sync_handshake` decide it, in one pure
//! function: [`decide_sync`].
//!
//! Invariants:
//! * UUIDs compare with bit 0 masked out (`Uuids::id`); bit 0 of the bitmap
//!   UUID records "was Primary when this generation started" and only feeds
//!   `discard-younger-primary` / `discard-older-primary`.
//! * The decision is symmetric: evaluated on both nodes with the inputs
//!   swapped (and complementary `local_yields_on_tie`), one side gets
//!   `Source` and the other `Target` with the same `full`, or both get the
//!   same non-sync outcome. A property test checks this.
//! * Rules are tried in DRBD's order; the first that matches names the
//!   outcome ([`Rule`], with DRBD's rule number in its `Display`).
//!
//! Not carried over from DRBD: rules 51/71 ("the last sync UUID did not get
//! through"), which undo DRBD's `UUID_NEW_BM_OFFSET` trick that hadisk does
//! not use. At the end of a resync hadisk's source rotates its bitmap UUID
//! first and the target adopts the source's current only after that (see
//! `resync.rs`): a message lost in between leaves an Inconsistent target
//! whose current is in the source's history (a full sync, rule 80), never
//! a source that looks newer than it is.

use std::fmt;

use hadisk_peer_proto::{DiskState, Role, Uuids, UUID_JUST_CREATED};

use crate::split_brain::{recover, AfterSbPolicies, SbSide};

/// Which rule decided (DRBD's names, numbers in `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// 10: both disks just created — nothing to sync (wait for `--force`).
    BothJustCreated,
    /// 20: this disk just created, the peer's has data — full sync from it.
    LocalJustCreated,
    /// 30: the peer's disk just created — full sync to it.
    PeerJustCreated,
    /// 34/36: equal current, only this side has a bitmap UUID: this side was
    /// SyncSource and missed the resync-finished exchange.
    ResyncFinishedMissedBySource,
    /// 35/37: the mirror image of 34/36.
    ResyncFinishedMissedByTarget,
    /// 40: equal current UUIDs: nothing beyond the bitmaps, except that a
    /// crashed Primary's activity-log extents are synced (from the peer,
    /// unless both crashed).
    CrashedPrimary,
    /// 50: the peer's bitmap UUID is this side's current: the peer moved on.
    BitmapPeer,
    /// 60: this side's current is in the peer's history.
    HistoryPeer,
    /// 70: this side's bitmap UUID is the peer's current: this side moved on.
    BitmapSelf,
    /// 80: the peer's current is in this side's history.
    HistorySelf,
    /// 90: both moved on from the same bitmap UUID.
    SplitBrain,
    /// 100: related only through history on both sides.
    SplitBrainHistory,
    /// -1000: no UUID in common.
    UnrelatedData,
}

impl Rule {
    /// DRBD's rule number, as in its "uuid_compare()=... by rule N" log.
    pub fn number(self) -> u32 {
        match self {
            Rule::BothJustCreated => 10,
            Rule::LocalJustCreated => 20,
            Rule::PeerJustCreated => 30,
            Rule::ResyncFinishedMissedBySource => 34,
            Rule::ResyncFinishedMissedByTarget => 35,
            Rule::CrashedPrimary => 40,
            Rule::BitmapPeer => 50,
            Rule::HistoryPeer => 60,
            Rule::BitmapSelf => 70,
            Rule::HistorySelf => 80,
            Rule::SplitBrain => 90,
            Rule::SplitBrainHistory => 100,
            Rule::UnrelatedData => 1000,
        }
    }

    /// The short name used in the decision table and logs.
    pub fn name(self) -> &'static str {
        match self {
            Rule::BothJustCreated => "both-just-created",
            Rule::LocalJustCreated => "just-created-self",
            Rule::PeerJustCreated => "just-created-peer",
            Rule::ResyncFinishedMissedBySource => "resync-finished-missed-self",
            Rule::ResyncFinishedMissedByTarget => "resync-finished-missed-peer",
            Rule::CrashedPrimary => "crashed-primary",
            Rule::BitmapPeer => "bitmap-peer",
            Rule::HistoryPeer => "history-peer",
            Rule::BitmapSelf => "bitmap-self",
            Rule::HistorySelf => "history-self",
            Rule::SplitBrain => "split-brain",
            Rule::SplitBrainHistory => "split-brain-history",
            Rule::UnrelatedData => "unrelated-data",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (rule {})", self.name(), self.number())
    }
}

/// The raw comparison result, DRBD's `hg` scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Nothing to sync beyond the bitmaps.
    Equal,
    /// This side is the source (`full`: every block).
    Source { full: bool },
    /// This side is the target.
    Target { full: bool },
    /// Split brain (rule 90): the after-sb policies may resolve it.
    SplitBrain,
    /// Split brain related only by history (rule 100): manual only.
    SplitBrainHistory,
    /// No relation: refuse to connect.
    Unrelated,
}

/// One side's view of itself, as reported in `Params`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideInfo {
    pub uuids: Uuids,
    pub role: Role,
    pub disk: DiskState,
    /// Was Primary and did not shut down cleanly.
    pub crashed_primary: bool,
    /// Blocks set in its dirty bitmap (changes since the split).
    pub dirty_blocks: u64,
    /// `connect --discard-my-data`.
    pub discard_my_data: bool,
}

/// Everything [`decide_sync`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncInputs {
    pub local: SideInfo,
    pub peer: SideInfo,
    pub policies: AfterSbPolicies,
    /// Tie-breaker when nothing else decides (DRBD's DISCARD_CONCURRENT):
    /// must be `true` on exactly one of the two nodes (e.g. the one with the
    /// greater node name).
    pub local_yields_on_tie: bool,
}

/// What to do after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Connected, no resync beyond what the (merged) bitmaps hold: if bits
    /// are set, they are synced from the side with the better disk.
    NoSync,
    /// Become SyncSource (`full`: set every bit first).
    Source { full: bool },
    /// Become SyncTarget.
    Target { full: bool },
    /// Refuse the connection (go StandAlone) with this reason.
    Refuse { reason: String },
}

/// The decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDecision {
    pub outcome: SyncOutcome,
    pub rule: Rule,
    /// Split brain was detected (resolved or not).
    pub split_brain: bool,
    /// How it was resolved, for the log ("discard-zero-changes", "manual").
    pub resolved_by: Option<&'static str>,
}

fn id(u: u64) -> u64 {
    Uuids::id(u)
}

/// DRBD's `drbd_uuid_compare`: the raw UUID comparison.
pub fn compare_uuids(
    local: &Uuids,
    peer: &Uuids,
    local_crashed_primary: bool,
    peer_crashed_primary: bool,
    local_yields_on_tie: bool,
) -> (Compare, Rule) {
    let jc = id(UUID_JUST_CREATED);
    // A current UUID of 0 (never written) counts as just created: DRBD's
    // rules 20/30 treat them alike one-sidedly, which made two zero UUIDs
    // both SyncTargets; normalising keeps the decision symmetric.
    let norm = |c: u64| if id(c) == 0 { jc } else { id(c) };
    let (lc, pc) = (norm(local.current), norm(peer.current));
    if lc == jc && pc == jc {
        return (Compare::Equal, Rule::BothJustCreated);
    }
    if lc == jc {
        return (Compare::Target { full: true }, Rule::LocalJustCreated);
    }
    if pc == jc {
        return (Compare::Source { full: true }, Rule::PeerJustCreated);
    }
    if lc == pc {
        return compare_equal_current(
            local,
            peer,
            local_crashed_primary,
            peer_crashed_primary,
            local_yields_on_tie,
        );
    }
    // Each side descending from the other is impossible in a real history;
    // DRBD's rule order would make both sides targets, so call it split
    // brain instead (symmetric, and manual).
    let bitmap_peer = lc == id(peer.bitmap);
    let bitmap_self = id(local.bitmap) == pc;
    let history_peer = peer.history.iter().any(|h| id(*h) == lc);
    let history_self = local.history.iter().any(|h| id(*h) == pc);
    if (bitmap_peer || history_peer) && (bitmap_self || history_self) {
        return (Compare::SplitBrainHistory, Rule::SplitBrainHistory);
    }
    if bitmap_peer {
        return (Compare::Target { full: false }, Rule::BitmapPeer);
    }
    if history_peer {
        return (Compare::Target { full: true }, Rule::HistoryPeer);
    }
    if bitmap_self {
        return (Compare::Source { full: false }, Rule::BitmapSelf);
    }
    if history_self {
        return (Compare::Source { full: true }, Rule::HistorySelf);
    }
    if id(local.bitmap) == id(peer.bitmap) && id(local.bitmap) != 0 {
        return (Compare::SplitBrain, Rule::SplitBrain);
    }
    let related = local
        .history
        .iter()
        .any(|l| id(*l) != 0 && peer.history.iter().any(|p| id(*p) == id(*l)));
    if related {
        return (Compare::SplitBrainHistory, Rule::SplitBrainHistory);
    }
    (Compare::Unrelated, Rule::UnrelatedData)
}

fn compare_equal_current(
    local: &Uuids,
    peer: &Uuids,
    local_crashed_primary: bool,
    peer_crashed_primary: bool,
    local_yields_on_tie: bool,
) -> (Compare, Rule) {
    if id(peer.bitmap) == 0 && id(local.bitmap) != 0 {
        return (
            Compare::Source { full: false },
            Rule::ResyncFinishedMissedBySource,
        );
    }
    if id(local.bitmap) == 0 && id(peer.bitmap) != 0 {
        return (
            Compare::Target { full: false },
            Rule::ResyncFinishedMissedByTarget,
        );
    }
    // A crashed Primary's AL extents are out of sync with the peer. DRBD
    // makes the crashed Primary the source; hadisk makes it the target when
    // the peer did not crash too: the peer acknowledged every write the
    // Primary acknowledged, while the Primary may have lost unflushed ones
    // from its volatile cache (writes only the Primary has were never
    // acknowledged, so either copy is correct for them). The simulator
    // found the DRBD direction losing acknowledged writes.
    let outcome = match (local_crashed_primary, peer_crashed_primary) {
        (false, false) => Compare::Equal,
        (true, false) => Compare::Target { full: false },
        (false, true) => Compare::Source { full: false },
        (true, true) if local_yields_on_tie => Compare::Target { full: false },
        (true, true) => Compare::Source { full: false },
    };
    (outcome, Rule::CrashedPrimary)
}

/// DRBD's `drbd_sync_handshake`: the UUID comparison, then the disk-state
/// override, the after-split-brain policies, `--discard-my-data`, and the
/// refusals ("SyncSource but inconsistent", "SyncTarget but Primary").
pub fn decide_sync(inp: &SyncInputs) -> SyncDecision {
    let (l, p) = (&inp.local, &inp.peer);
    let (mut cmp, rule) = compare_uuids(
        &l.uuids,
        &p.uuids,
        l.crashed_primary,
        p.crashed_primary,
        inp.local_yields_on_tie,
    );
    let mut d = SyncDecision {
        outcome: SyncOutcome::NoSync,
        rule,
        split_brain: false,
        resolved_by: None,
    };
    if cmp == Compare::Unrelated {
        d.outcome = refuse("unrelated data: the nodes share no generation UUID; refusing to connect (recreate the metadata of the node to overwrite)");
        return d;
    }
    cmp = disk_state_override(cmp, l.disk, p.disk);
    if matches!(cmp, Compare::SplitBrain | Compare::SplitBrainHistory) {
        d.split_brain = true;
        cmp = resolve_split_brain(inp, cmp, &mut d);
    }
    d.outcome = match cmp {
        Compare::Equal => SyncOutcome::NoSync,
        Compare::Source { .. } if l.disk <= DiskState::Inconsistent => {
            refuse("this node should become SyncSource but its disk is not consistent")
        }
        Compare::Target { .. } if l.role == Role::Primary && l.disk >= DiskState::Consistent => {
            refuse("this node should become SyncTarget but it is Primary: demote it first (secondary) and reconnect")
        }
        Compare::Source { full } => SyncOutcome::Source { full },
        Compare::Target { full } => SyncOutcome::Target { full },
        Compare::SplitBrain | Compare::SplitBrainHistory => refuse(
            "split brain detected: both nodes changed the data while disconnected; on the node whose changes to discard run `hadisk connect RES --discard-my-data`, then `hadisk connect RES` on the other",
        ),
        Compare::Unrelated => refuse("unrelated data"),
    };
    d
}

fn refuse(reason: &str) -> SyncOutcome {
    SyncOutcome::Refuse {
        reason: reason.to_string(),
    }
}

/// An Inconsistent disk facing a better one becomes the target whatever the
/// UUIDs say (keeping "full" when the UUIDs asked for a full sync).
fn disk_state_override(cmp: Compare, local: DiskState, peer: DiskState) -> Compare {
    let local_bad = local == DiskState::Inconsistent && peer > DiskState::Inconsistent;
    let peer_bad = peer == DiskState::Inconsistent && local > DiskState::Inconsistent;
    if !(local_bad || peer_bad) {
        return cmp;
    }
    let full = matches!(
        cmp,
        Compare::SplitBrainHistory
            | Compare::Source { full: true }
            | Compare::Target { full: true }
    );
    if local_bad {
        Compare::Target { full }
    } else {
        Compare::Source { full }
    }
}

fn resolve_split_brain(inp: &SyncInputs, cmp: Compare, d: &mut SyncDecision) -> Compare {
    let (l, p) = (&inp.local, &inp.peer);
    let history_only = cmp == Compare::SplitBrainHistory;
    if !history_only {
        let side = |s: &SideInfo| SbSide {
            primary: s.role == Role::Primary,
            was_primary_at_split: s.uuids.bitmap & 1 == 1,
            changed_blocks: s.dirty_blocks,
        };
        if let Some((local_wins, by)) =
            recover(&inp.policies, &side(l), &side(p), inp.local_yields_on_tie)
        {
            d.resolved_by = Some(by);
            return if local_wins {
                Compare::Source { full: false }
            } else {
                Compare::Target { full: false }
            };
        }
    }
    // Manual recovery: exactly one side volunteered to lose.
    let full = history_only;
    match (l.discard_my_data, p.discard_my_data) {
        (true, false) => {
            d.resolved_by = Some("discard-my-data");
            Compare::Target { full }
        }
        (false, true) => {
            d.resolved_by = Some("discard-my-data");
            Compare::Source { full }
        }
        _ => cmp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_brain::AfterSbPolicy;
    use proptest::prelude::*;

    const JC: u64 = UUID_JUST_CREATED;

    fn u(current: u64, bitmap: u64, h0: u64, h1: u64) -> Uuids {
        Uuids {
            current,
            bitmap,
            history: [h0, h1],
        }
    }

    fn side(uuids: Uuids, role: Role, disk: DiskState) -> SideInfo {
        SideInfo {
            uuids,
            role,
            disk,
            crashed_primary: false,
            dirty_blocks: 0,
            discard_my_data: false,
        }
    }

    use DiskState::{Consistent as C, Inconsistent as I, UpToDate as U};
    use Role::{Primary as P, Secondary as S};

    /// The decision table (DESIGN.md §4): local side, peer side, the
    /// expected outcome and rule, as `decide_sync` must give them.
    #[allow(clippy::type_complexity)]
    fn table() -> Vec<(
        &'static str,
        SideInfo,
        SideInfo,
        AfterSbPolicies,
        SyncOutcome,
        Rule,
    )> {
        let d = AfterSbPolicies::default();
        let src = |full| SyncOutcome::Source { full };
        let tgt = |full| SyncOutcome::Target { full };
        let crashed = |mut s: SideInfo| {
            s.crashed_primary = true;
            s
        };
        let changed = |mut s: SideInfo, n| {
            s.dirty_blocks = n;
            s
        };
        let discard = |mut s: SideInfo| {
            s.discard_my_data = true;
            s
        };
        let lc = AfterSbPolicies {
            zero_primaries: AfterSbPolicy::DiscardLeastChanges,
            ..d
        };
        vec![
            (
                "just-created both",
                side(u(JC, 0, 0, 0), S, I),
                side(u(JC, 0, 0, 0), S, I),
                d,
                SyncOutcome::NoSync,
                Rule::BothJustCreated,
            ),
            (
                "just-created self",
                side(u(JC, 0, 0, 0), S, I),
                side(u(0x11, 0x4, 0, 0), P, U),
                d,
                tgt(true),
                Rule::LocalJustCreated,
            ),
            (
                "just-created peer (initial sync after --force)",
                side(u(0x11, 0x4, 0, 0), P, U),
                side(u(JC, 0, 0, 0), S, I),
                d,
                src(true),
                Rule::PeerJustCreated,
            ),
            (
                "equal, clean",
                side(u(0x10, 0, 0, 0), S, C),
                side(u(0x10, 0, 0, 0), S, C),
                d,
                SyncOutcome::NoSync,
                Rule::CrashedPrimary,
            ),
            (
                "crashed-primary self: the peer has every acknowledged write",
                crashed(side(u(0x10, 0, 0, 0), S, C)),
                side(u(0x10, 0, 0, 0), S, U),
                d,
                tgt(false),
                Rule::CrashedPrimary,
            ),
            (
                "crashed-primary peer",
                side(u(0x10, 0, 0, 0), S, U),
                crashed(side(u(0x10, 0, 0, 0), S, C)),
                d,
                src(false),
                Rule::CrashedPrimary,
            ),
            (
                "crashed-primary both, local yields",
                crashed(side(u(0x10, 0, 0, 0), S, C)),
                crashed(side(u(0x10, 0, 0, 0), S, C)),
                d,
                tgt(false),
                Rule::CrashedPrimary,
            ),
            (
                "resync-finished missed by self",
                side(u(0x10, 0x20, 0, 0), S, U),
                side(u(0x10, 0, 0x20, 0), S, U),
                d,
                src(false),
                Rule::ResyncFinishedMissedBySource,
            ),
            (
                "resync-finished missed by peer",
                side(u(0x10, 0, 0x20, 0), S, U),
                side(u(0x10, 0x20, 0, 0), S, U),
                d,
                tgt(false),
                Rule::ResyncFinishedMissedByTarget,
            ),
            (
                "bitmap-self: peer was away",
                side(u(0x31, 0x21, 0, 0), P, U),
                side(u(0x20, 0, 0x10, 0), S, C),
                d,
                src(false),
                Rule::BitmapSelf,
            ),
            (
                "bitmap-peer: this node was away",
                side(u(0x20, 0, 0x10, 0), S, C),
                side(u(0x31, 0x21, 0, 0), P, U),
                d,
                tgt(false),
                Rule::BitmapPeer,
            ),
            (
                "bitmap-peer: failed-over Primary returns",
                side(u(0x20, 0, 0, 0), S, C),
                side(u(0x40, 0x20, 0, 0), P, U),
                d,
                tgt(false),
                Rule::BitmapPeer,
            ),
            (
                "history-self",
                side(u(0x50, 0, 0x40, 0x20), S, C),
                side(u(0x20, 0, 0x10, 0), S, C),
                d,
                src(true),
                Rule::HistorySelf,
            ),
            (
                "history-peer",
                side(u(0x20, 0, 0x10, 0), S, C),
                side(u(0x50, 0, 0x40, 0x20), S, C),
                d,
                tgt(true),
                Rule::HistoryPeer,
            ),
            (
                "split brain, default policy disconnects",
                side(u(0x30, 0x20, 0, 0), P, U),
                side(u(0x40, 0x20, 0, 0), S, U),
                d,
                SyncOutcome::Refuse {
                    reason: String::new(),
                },
                Rule::SplitBrain,
            ),
            (
                "split brain, discard-least-changes",
                changed(side(u(0x30, 0x20, 0, 0), S, U), 9),
                changed(side(u(0x40, 0x20, 0, 0), S, U), 3),
                lc,
                src(false),
                Rule::SplitBrain,
            ),
            (
                "split brain, --discard-my-data here",
                discard(side(u(0x30, 0x20, 0, 0), S, U)),
                side(u(0x40, 0x20, 0, 0), P, U),
                d,
                tgt(false),
                Rule::SplitBrain,
            ),
            (
                "split brain, --discard-my-data on the peer",
                side(u(0x30, 0x20, 0, 0), P, U),
                discard(side(u(0x40, 0x20, 0, 0), S, U)),
                d,
                src(false),
                Rule::SplitBrain,
            ),
            (
                "split brain by history only",
                side(u(0x30, 0x60, 0x20, 0), S, U),
                side(u(0x40, 0x70, 0x20, 0), S, U),
                d,
                SyncOutcome::Refuse {
                    reason: String::new(),
                },
                Rule::SplitBrainHistory,
            ),
            (
                "unrelated data",
                side(u(0x30, 0x60, 0x70, 0), S, U),
                side(u(0x40, 0x80, 0x90, 0), S, U),
                d,
                SyncOutcome::Refuse {
                    reason: String::new(),
                },
                Rule::UnrelatedData,
            ),
            (
                "inconsistent disk becomes target whatever the UUIDs",
                side(u(0x31, 0x21, 0, 0), S, I),
                side(u(0x20, 0, 0, 0), S, C),
                d,
                tgt(false),
                Rule::BitmapSelf,
            ),
            (
                "a Primary never becomes SyncTarget",
                side(u(0x20, 0, 0x10, 0), P, C),
                side(u(0x31, 0x21, 0, 0), S, U),
                d,
                SyncOutcome::Refuse {
                    reason: String::new(),
                },
                Rule::BitmapPeer,
            ),
        ]
    }

    fn strip(o: SyncOutcome) -> SyncOutcome {
        match o {
            SyncOutcome::Refuse { .. } => SyncOutcome::Refuse {
                reason: String::new(),
            },
            o => o,
        }
    }

    fn mirror(o: &SyncOutcome) -> SyncOutcome {
        match o {
            SyncOutcome::Source { full } => SyncOutcome::Target { full: *full },
            SyncOutcome::Target { full } => SyncOutcome::Source { full: *full },
            o => strip(o.clone()),
        }
    }

    #[test]
    fn decision_table() {
        for (name, local, peer, policies, want, rule) in table() {
            let inp = SyncInputs {
                local,
                peer,
                policies,
                local_yields_on_tie: true,
            };
            let d = decide_sync(&inp);
            assert_eq!(
                (strip(d.outcome.clone()), d.rule),
                (want.clone(), rule),
                "{name}"
            );
            // The peer, deciding from its side, reaches the mirror decision
            // (refusals excepted where only one side is refused, e.g. a
            // Primary that should become target refuses while the peer
            // would be source: both end disconnected anyway).
            let back = decide_sync(&SyncInputs {
                local: peer,
                peer: local,
                policies,
                local_yields_on_tie: false,
            });
            if !matches!(want, SyncOutcome::Refuse { .. }) {
                assert_eq!(strip(back.outcome), mirror(&want), "{name} (mirrored)");
            }
        }
    }

    #[test]
    fn refusal_reasons_say_what_to_do() {
        let d = AfterSbPolicies::default();
        let sb = decide_sync(&SyncInputs {
            local: side(u(0x30, 0x20, 0, 0), P, U),
            peer: side(u(0x40, 0x20, 0, 0), S, U),
            policies: d,
            local_yields_on_tie: true,
        });
        assert!(sb.split_brain);
        assert_eq!(
            sb.outcome,
            SyncOutcome::Refuse { reason: "split brain detected: both nodes changed the data while disconnected; on the node whose changes to discard run `hadisk connect RES --discard-my-data`, then `hadisk connect RES` on the other".into() }
        );
        let un = decide_sync(&SyncInputs {
            local: side(u(0x30, 0, 0, 0), S, U),
            peer: side(u(0x40, 0, 0, 0), S, U),
            policies: d,
            local_yields_on_tie: true,
        });
        assert_eq!(
            un.outcome,
            SyncOutcome::Refuse { reason: "unrelated data: the nodes share no generation UUID; refusing to connect (recreate the metadata of the node to overwrite)".into() }
        );
        assert_eq!(Rule::SplitBrain.to_string(), "split-brain (rule 90)");
    }

    fn arb_uuid() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(JC),
            (1u64..6).prop_map(|x| x << 4),
            (1u64..6).prop_map(|x| (x << 4) | 1)
        ]
    }

    fn arb_side() -> impl Strategy<Value = SideInfo> {
        (
            arb_uuid(),
            arb_uuid(),
            arb_uuid(),
            arb_uuid(),
            any::<bool>(),
            0u8..3,
            any::<bool>(),
            0u64..3,
        )
            .prop_map(|(c, b, h0, h1, p, disk, crashed, n)| SideInfo {
                uuids: u(c, b, h0, h1),
                role: if p { P } else { S },
                disk: [I, C, U][disk as usize],
                crashed_primary: crashed,
                dirty_blocks: n,
                discard_my_data: false,
            })
    }

    proptest! {
        /// Never both sources or both targets: evaluated on both nodes the
        /// decision is complementary, or at least one side refuses.
        #[test]
        fn decisions_are_complementary(a in arb_side(), b in arb_side()) {
            let p = AfterSbPolicies::default();
            let x = decide_sync(&SyncInputs { local: a, peer: b, policies: p, local_yields_on_tie: true }).outcome;
            let y = decide_sync(&SyncInputs { local: b, peer: a, policies: p, local_yields_on_tie: false }).outcome;
            let refused = matches!(x, SyncOutcome::Refuse { .. }) || matches!(y, SyncOutcome::Refuse { .. });
            if !refused {
                prop_assert_eq!(mirror(&x), strip(y));
            }
        }
    }
}
