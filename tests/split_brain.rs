//! Split brain with real daemons on loopback (issue 5, item 3): a split
//! brain made on purpose (both nodes `disconnect`, both Primary, different
//! blocks written on each through NBD with libnbd), then
//! * the default policy: detected, both StandAlone, `status` (text and
//!   JSON) and the log say "split brain" and what to run; manual recovery
//!   with `connect --discard-my-data` on the victim; the disks end
//!   identical and equal to the survivor's data; the victim's saved image
//!   and index hold exactly the blocks it discarded, byte for byte;
//! * each `after-sb-*` policy's outcome (table): which node's data wins,
//!   and the loser saved its blocks with the policy named in the index;
//! * a save that cannot be made (unwritable `split-brain-dir`): the victim
//!   stays StandAlone with the reason, its disk untouched;
//! * "unrelated data" (no UUID in common) is refused on both nodes.
//!
//! The disks start sparse and in sync (same generation written into both
//! metadata areas), so no initial full sync is needed: a block nobody wrote
//! reads as zeros on both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const RES: &str = "data";
const DISK_BYTES: u64 = 64 * MIB;
const BLOCK: u64 = 4096;

/// Writes 4 KiB blocks through libnbd: argv = uri, then `block:byte` pairs;
/// each block is filled with a pattern of its byte and its number.
const WRITER: &str = r#"
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for spec in sys.argv[2:]:
    block, byte = (int(x) for x in spec.split(":"))
    data = (bytes([byte]) + block.to_bytes(8, "little") + bytes(7)) * 256
    h.pwrite(data, block * 4096)
h.flush()
h.shutdown()
"#;

fn write_blocks(node: &Node, blocks: &[u64], byte: u8) {
    let mut args = vec!["-c".to_string(), WRITER.to_string(), node.uri(RES)];
    args.extend(blocks.iter().map(|b| format!("{b}:{byte}")));
    let out = Command::new(LIBNBD_PYTHON)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libnbd writer on {}: {}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pair whose disks are in sync from the start, with `net` options and
/// each node's `split-brain-dir` in its own directory.
fn pair(net: &str) -> Pair {
    pair_each(net, net)
}

/// As [`pair`], with different `net` options on each node.
fn pair_each(net_a: &str, net_b: &str) -> Pair {
    let mut pair = Pair::new(RES, DISK_BYTES, "");
    pair.write_res_each(net_a, net_b);
    let current = 0x5eed_0000_0000_0001;
    pair.a.md_as_synced(&pair.disk_a, current);
    pair.b.md_as_synced(&pair.disk_b, current);
    for n in [&pair.a, &pair.b] {
        set_split_brain_dir(n, &sb_dir(n).display().to_string());
    }
    pair
}

fn sb_dir(n: &Node) -> PathBuf {
    n.path("split-brain")
}

/// Puts `split-brain-dir VALUE;` into the node's resource section.
fn set_split_brain_dir(n: &Node, value: &str) {
    let text: String = std::fs::read_to_string(n.config())
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("split-brain-dir"))
        .map(|l| format!("{l}\n"))
        .collect();
    let head = format!("resource {RES} {{\n");
    assert!(text.starts_with(&head), "{text}");
    let text = text.replacen(&head, &format!("{head}  split-brain-dir {value};\n"), 1);
    std::fs::write(n.config(), text).unwrap();
}

fn wait_standalone(n: &Node) {
    wait_until(&format!("{} StandAlone", n.name), 30, || {
        n.resource_status(RES)["peer"]["connection"] == "StandAlone"
    });
}

/// Connected pair, alpha Primary; then both `disconnect`, beta promoted,
/// alpha writes `a_blocks`, beta `b_blocks` (different bytes).
fn make_split_brain(pair: &Pair, a_blocks: &[u64], b_blocks: &[u64]) {
    pair.up_connected();
    pair.wait_in_sync(30);
    pair.a.ok(&["primary", RES]);
    pair.a.ok(&["disconnect", RES]);
    pair.b.ok(&["disconnect", RES]);
    wait_standalone(&pair.a);
    wait_standalone(&pair.b);
    pair.b.ok(&["primary", RES]);
    write_blocks(&pair.a, a_blocks, 0xA1);
    write_blocks(&pair.b, b_blocks, 0xB2);
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset).unwrap();
    buf
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The one save in `dir`: (index, image path).
fn the_save(dir: &Path) -> (serde_json::Value, PathBuf) {
    let mut indexes: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(
        indexes.len(),
        1,
        "one index in {}: {indexes:?}",
        dir.display()
    );
    let index_path = indexes.remove(0);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let image = dir.join(index["image"].as_str().unwrap());
    (index, image)
}

fn no_save(dir: &Path) {
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n, 0, "nothing saved in {}", dir.display());
}

/// The saved blocks as a set of block numbers.
fn saved_blocks(index: &serde_json::Value) -> BTreeSet<u64> {
    let mut set = BTreeSet::new();
    for r in index["ranges"].as_array().unwrap() {
        let (off, len) = (
            r["offset_bytes"].as_u64().unwrap(),
            r["len_bytes"].as_u64().unwrap(),
        );
        set.extend(off / BLOCK..(off + len) / BLOCK);
    }
    set
}

#[test]
fn default_policy_stands_alone_and_discard_my_data_recovers_saving_the_victims_blocks() {
    let pair = pair("");
    let (da, db) = pair.daemons();
    let a_blocks = [10, 11, 12, 500];
    let b_blocks = [12, 13, 2000, 2001, 2002];
    make_split_brain(&pair, &a_blocks, &b_blocks);
    let usable = pair.usable_bytes();
    // Beta's pre-recovery disk: what its save must hold.
    let beta_before = pair.b.path("beta-before.img");
    std::fs::copy(&pair.disk_b, &beta_before).unwrap();
    let alpha_sha = sha256_prefix(&pair.disk_a, usable);

    pair.a.ok(&["connect", RES]);
    pair.b.ok(&["connect", RES]);
    let advice = "split brain detected: both nodes changed the data while disconnected [split-brain (rule 90)]; after-sb-2pri is disconnect, so the connection is refused (StandAlone). To recover, on the node whose changes are to be discarded run `hadisk secondary data` and `hadisk connect --discard-my-data data` (its diverging blocks are saved to the split-brain directory first), then `hadisk connect data` on the other node";
    for n in [&pair.a, &pair.b] {
        wait_until(&format!("{} to refuse the split brain", n.name), 30, || {
            let s = n.resource_status(RES);
            s["peer"]["connection"] == "StandAlone" && s["peer"]["last_error"] == advice
        });
        let s = n.resource_status(RES);
        assert_eq!(s["role"], "Primary", "{s}");
        assert_eq!(s["disk"], "UpToDate", "{s}");
        let text = n.ok(&["status", RES]);
        let peer = if n.name == "alpha" { "beta" } else { "alpha" };
        assert_eq!(
            text,
            format!("data role:Primary\n  disk:UpToDate\n  {peer} connection:StandAlone\n    last-error: {advice}\n\n")
        );
    }
    for d in [&da, &db] {
        let log = d.log_text();
        assert!(log.contains("split brain detected"), "{log}");
    }
    no_save(&sb_dir(&pair.a));
    no_save(&sb_dir(&pair.b));
    // Nothing was touched by the refusal.
    assert_eq!(sha256_prefix(&pair.disk_a, usable), alpha_sha);

    // DRBD's manual recovery: beta is the victim. Not while it is Primary.
    assert_eq!(
        pair.b.fails(&["connect", "--discard-my-data", RES]),
        "hadisk: data: this node is Primary: its data cannot be discarded while it is; demote it first (hadisk secondary RES), then connect --discard-my-data\n"
    );
    pair.b.ok(&["secondary", RES]);
    pair.b.ok(&["connect", "--discard-my-data", RES]);
    pair.a.ok(&["connect", RES]);
    pair.wait_in_sync(60);
    let (a, b) = pair.checksums(usable);
    assert_eq!(a, b, "identical disks after the recovery");
    assert_eq!(a, alpha_sha, "the survivor's data won");
    assert_eq!(pair.a.resource_status(RES)["role"], "Primary");
    no_save(&sb_dir(&pair.a));

    // The save: exactly the blocks the resync overwrote (written on either
    // side), with beta's bytes from before the recovery.
    let (index, image) = the_save(&sb_dir(&pair.b));
    assert_eq!(index["resource"], "data");
    assert_eq!(index["node"], "beta");
    assert_eq!(index["peer"], "alpha");
    assert_eq!(index["resolved_by"], "discard-my-data");
    assert_eq!(index["device_size_bytes"], usable);
    let want: BTreeSet<u64> = a_blocks.iter().chain(&b_blocks).copied().collect();
    assert_eq!(saved_blocks(&index), want);
    assert_eq!(index["saved_bytes"], want.len() as u64 * BLOCK);
    assert_eq!(std::fs::metadata(&image).unwrap().len(), usable);
    for r in index["ranges"].as_array().unwrap() {
        let (off, len) = (
            r["offset_bytes"].as_u64().unwrap(),
            r["len_bytes"].as_u64().unwrap(),
        );
        let saved = read_range(&image, off, len);
        assert!(
            saved == read_range(&beta_before, off, len),
            "range at {off}"
        );
        assert_eq!(r["sha256"], sha256_hex(&saved));
    }
    // Beta's own blocks really are in the image (not holes).
    let b0 = read_range(&image, 2000 * BLOCK, BLOCK);
    assert_eq!(b0[0], 0xB2);
    // Outside the ranges the image is a hole (zeros).
    assert_eq!(
        read_range(&image, 100 * BLOCK, BLOCK),
        vec![0u8; BLOCK as usize]
    );
    // The victim took the survivor's generation.
    let (ua, ub) = (pair.a.md_uuids(&pair.disk_a), pair.b.md_uuids(&pair.disk_b));
    assert_eq!(ua.current, ub.current);
    let log = db.log_text();
    assert!(log.contains("split brain: diverging blocks saved"), "{log}");
}

/// How a policy case ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// This node's data is discarded (it saves it first); the other's wins.
    Loses(&'static str),
    /// Not resolved: this node refuses with this text (the other redials
    /// or is StandAlone too); nothing is saved, nothing changes.
    Refused(&'static str, &'static str),
}

/// One policy case: each node's `net` options, the blocks each side writes
/// while split, whether each is still Primary at the reconnect, and the
/// outcome.
struct Case {
    net_a: &'static str,
    net_b: &'static str,
    a_blocks: &'static [u64],
    b_blocks: &'static [u64],
    a_primary: bool,
    b_primary: bool,
    outcome: Outcome,
    resolved_by: &'static str,
}

const LEAST: &str = "after-sb-0pri discard-least-changes;";

const CASES: &[Case] = &[
    // beta was promoted while split: the younger Primary (it changed more,
    // so least-changes would have chosen the other way).
    Case {
        net_a: "after-sb-0pri discard-younger-primary;",
        net_b: "after-sb-0pri discard-younger-primary;",
        a_blocks: &[1, 2],
        b_blocks: &[3, 4, 5, 6, 7, 8],
        a_primary: false,
        b_primary: false,
        outcome: Outcome::Loses("beta"),
        resolved_by: "discard-younger-primary",
    },
    Case {
        net_a: "after-sb-0pri discard-older-primary;",
        net_b: "after-sb-0pri discard-older-primary;",
        a_blocks: &[3, 4, 5, 6, 7, 8],
        b_blocks: &[1, 2],
        a_primary: false,
        b_primary: false,
        outcome: Outcome::Loses("alpha"),
        resolved_by: "discard-older-primary",
    },
    Case {
        net_a: LEAST,
        net_b: LEAST,
        a_blocks: &[1, 2],
        b_blocks: &[3, 4, 5, 6, 7, 8],
        a_primary: false,
        b_primary: false,
        outcome: Outcome::Loses("alpha"),
        resolved_by: "discard-least-changes",
    },
    Case {
        net_a: "after-sb-0pri discard-zero-changes;",
        net_b: "after-sb-0pri discard-zero-changes;",
        a_blocks: &[1, 2],
        b_blocks: &[],
        a_primary: false,
        b_primary: false,
        outcome: Outcome::Loses("beta"),
        resolved_by: "discard-zero-changes",
    },
    // discard-local / discard-remote, configured as a pair.
    Case {
        net_a: "after-sb-0pri discard-remote;",
        net_b: "after-sb-0pri discard-local;",
        a_blocks: &[1],
        b_blocks: &[2, 3],
        a_primary: false,
        b_primary: false,
        outcome: Outcome::Loses("beta"),
        // The loser's index names its own setting.
        resolved_by: "discard-local",
    },
    Case {
        net_a: "after-sb-1pri discard-secondary;",
        net_b: "after-sb-1pri discard-secondary;",
        a_blocks: &[1, 2],
        b_blocks: &[3, 4, 5, 6, 7, 8],
        a_primary: false,
        b_primary: true,
        outcome: Outcome::Loses("alpha"),
        resolved_by: "discard-secondary",
    },
    // consensus: 0pri's verdict (beta changed less) agrees with discarding
    // the Secondary (beta).
    Case {
        net_a: "after-sb-0pri discard-least-changes; after-sb-1pri consensus;",
        net_b: "after-sb-0pri discard-least-changes; after-sb-1pri consensus;",
        a_blocks: &[1, 2, 3, 4, 5],
        b_blocks: &[6, 7],
        a_primary: true,
        b_primary: false,
        outcome: Outcome::Loses("beta"),
        resolved_by: "consensus",
    },
    // consensus disagreeing (0pri would discard the Primary): unresolved.
    Case {
        net_a: "after-sb-0pri discard-least-changes; after-sb-1pri consensus;",
        net_b: "after-sb-0pri discard-least-changes; after-sb-1pri consensus;",
        a_blocks: &[1],
        b_blocks: &[6, 7],
        a_primary: true,
        b_primary: false,
        outcome: Outcome::Refused(
            "alpha",
            "split brain detected: both nodes changed the data while disconnected [split-brain (rule 90)]; after-sb-1pri is consensus, so the connection is refused",
        ),
        resolved_by: "",
    },
    // violently-as0p against the Primary: it would have to become
    // SyncTarget while Primary, which hadisk refuses (DRBD's default
    // rr-conflict disconnect).
    Case {
        net_a: "after-sb-0pri discard-least-changes; after-sb-1pri violently-as0p;",
        net_b: "after-sb-0pri discard-least-changes; after-sb-1pri violently-as0p;",
        a_blocks: &[1],
        b_blocks: &[6, 7],
        a_primary: true,
        b_primary: false,
        outcome: Outcome::Refused(
            "alpha",
            "this node should become SyncTarget but it is Primary: demote it first (secondary) and reconnect [split-brain (rule 90)]",
        ),
        resolved_by: "",
    },
];

#[test]
fn after_sb_policies_pick_the_loser_which_saves_its_blocks() {
    for case in CASES {
        eprintln!("case: {} / {}", case.net_a, case.net_b);
        let what = format!("{} / {}", case.net_a, case.net_b);
        let pair = pair_each(case.net_a, case.net_b);
        let (_da, _db) = pair.daemons();
        make_split_brain(&pair, case.a_blocks, case.b_blocks);
        if !case.a_primary {
            pair.a.ok(&["secondary", RES]);
        }
        if !case.b_primary {
            pair.b.ok(&["secondary", RES]);
        }
        let usable = pair.usable_bytes();
        let before = pair.checksums(usable);
        pair.a.ok(&["connect", RES]);
        pair.b.ok(&["connect", RES]);
        let node = |name: &str| {
            if name == "alpha" {
                (&pair.a, &pair.b)
            } else {
                (&pair.b, &pair.a)
            }
        };
        match case.outcome {
            Outcome::Loses(loser) => {
                let (loser, winner) = node(loser);
                pair.wait_in_sync(60);
                let (a, b) = pair.checksums(usable);
                assert_eq!(a, b, "{what}: identical disks");
                let winner_before = if winner.name == "alpha" {
                    &before.0
                } else {
                    &before.1
                };
                assert_eq!(&a, winner_before, "{what}: {} won", winner.name);
                no_save(&sb_dir(winner));
                let (index, _) = the_save(&sb_dir(loser));
                assert_eq!(index["resolved_by"], case.resolved_by, "{what}");
                assert_eq!(index["node"], loser.name.as_str());
                let want: BTreeSet<u64> =
                    case.a_blocks.iter().chain(case.b_blocks).copied().collect();
                assert_eq!(saved_blocks(&index), want, "{what}");
            }
            Outcome::Refused(refuser, text) => {
                let (refuser, _) = node(refuser);
                wait_until(&format!("{what}: {} refuses", refuser.name), 30, || {
                    let s = refuser.resource_status(RES);
                    s["peer"]["connection"] == "StandAlone"
                        && s["peer"]["last_error"]
                            .as_str()
                            .is_some_and(|e| e.starts_with(text))
                });
                for n in [&pair.a, &pair.b] {
                    // The other side may have decided before the refusal
                    // reached it: it leaves Connected when it does.
                    wait_until(&format!("{what}: {} not Connected", n.name), 30, || {
                        n.resource_status(RES)["peer"]["connection"] != "Connected"
                    });
                    no_save(&sb_dir(n));
                }
                assert_eq!(pair.checksums(usable), before, "{what}: nothing changed");
            }
        }
    }
}

#[test]
fn a_save_that_fails_discards_nothing_and_stays_standalone() {
    let pair = pair("");
    // Beta's split-brain directory is under a regular file: cannot exist.
    let blocker = pair.b.path("blocker");
    std::fs::write(&blocker, b"not a directory").unwrap();
    set_split_brain_dir(&pair.b, &blocker.join("sb").display().to_string());
    let (_da, db) = pair.daemons();
    make_split_brain(&pair, &[1], &[2, 3]);
    let usable = pair.usable_bytes();
    let beta_sha = sha256_prefix(&pair.disk_b, usable);
    pair.b.ok(&["secondary", RES]);
    pair.b.ok(&["connect", "--discard-my-data", RES]);
    pair.a.ok(&["connect", RES]);
    let reason = "split brain: this node's changes were to be discarded, but its diverging blocks could not be saved to the split-brain directory (see the log); nothing was discarded and the connection is refused (StandAlone). Fix the directory (space, permissions: `split-brain-dir` in the resource file), then run `hadisk connect --discard-my-data data` again";
    wait_until("beta to refuse after the failed save", 30, || {
        let s = pair.b.resource_status(RES);
        s["peer"]["connection"] == "StandAlone" && s["peer"]["last_error"] == reason
    });
    let s = pair.b.resource_status(RES);
    assert_eq!(
        s["disk"], "UpToDate",
        "beta's data is intact and still its own: {s}"
    );
    assert_eq!(sha256_prefix(&pair.disk_b, usable), beta_sha);
    let log = db.log_text();
    assert!(
        log.contains("split brain: saving the diverging blocks failed; nothing is discarded"),
        "{log}"
    );
    assert!(
        log.contains("cannot create the split-brain directory"),
        "{log}"
    );
}

#[test]
fn unrelated_data_is_refused() {
    let pair = Pair::new(RES, DISK_BYTES, "");
    pair.a.md_as_synced(&pair.disk_a, 0x1111_0000_0000_0000);
    pair.b.md_as_synced(&pair.disk_b, 0x2222_0000_0000_0000);
    for (n, disk) in [(&pair.a, &pair.disk_a), (&pair.b, &pair.disk_b)] {
        let dev = hadisk_storage::FileDevice::open(disk, false).unwrap();
        let mut md = hadisk_metadata::Metadata::open(std::sync::Arc::new(dev)).unwrap();
        md.update(|sb| sb.uuids.history = [0, 0]).unwrap();
        let _ = n;
    }
    let (_da, _db) = pair.daemons();
    pair.a.ok(&["up", RES]);
    pair.b.ok(&["up", RES]);
    let reason = "unrelated data: the nodes share no generation UUID; refusing to connect (recreate the metadata of the node to overwrite) [unrelated-data (rule 1000)]";
    for n in [&pair.a, &pair.b] {
        wait_until(&format!("{} to refuse unrelated data", n.name), 30, || {
            let s = n.resource_status(RES);
            s["peer"]["connection"] == "StandAlone" && s["peer"]["last_error"] == reason
        });
    }
}
