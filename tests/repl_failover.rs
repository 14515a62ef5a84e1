//! `kill -9` of the Primary daemon while a libnbd client keeps 32 writes
//! in flight; the Secondary is promoted and every write the client saw
//! acknowledged is there (each block's last acknowledged content). Then the
//! crashed node comes back: it attaches as Secondary with its activity-log
//! extents (and only those) out of sync, resyncs from the new Primary, and
//! the disks end identical, holding the new Primary's later writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::*;

const RES: &str = "data";
/// Blocks the writer spreads its writes over (16 MiB).
const BLOCKS: u64 = 4096;
/// The activity log's extent: what a crashed Primary marks out of sync.
const AL_EXTENT: u64 = 4 * MIB;
/// Where the new Primary writes after the failover (outside the writer's
/// 16 MiB, so only the bitmap of the new Primary can bring it over).
const LATER_AT: u64 = 40 * MIB;

/// Writes 4 KiB blocks at random, 32 in flight, each filled with
/// "block:seq" repeated; prints "block seq" for every acknowledged write.
const WRITER: &str = r#"
import nbd, random, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
blocks = int(sys.argv[2])
out = open(sys.argv[3], "w", buffering=1)
rng = random.Random(7)
seq = 0
live = []
def done(block, seq, buf):
    def cb(err):
        if err.value == 0:
            out.write("%d %d\n" % (block, seq))
        return 1
    return cb
while True:
    while h.aio_in_flight() < 32:
        seq += 1
        block = rng.randrange(blocks)
        pat = ("%d:%d;" % (block, seq)).encode()
        data = (pat * (4096 // len(pat) + 1))[:4096]
        buf = nbd.Buffer.from_bytearray(bytearray(data))
        live.append(buf)
        h.aio_pwrite(buf, block * 4096, completion=done(block, seq, buf))
    h.poll(-1)
    if len(live) > 4096:
        live = live[-1024:]
"#;

#[test]
fn kill_9_of_the_primary_loses_no_acknowledged_write_and_it_returns_as_sync_target() {
    let pair = Pair::new(RES, 64 * MIB, "");
    let (mut da, db) = pair.daemons();
    pair.up_connected();
    pair.first_sync();
    let acked = pair.a.path("acked.txt");
    let mut writer = ChildGuard::spawn(
        Command::new(LIBNBD_PYTHON)
            .args([
                "-c",
                WRITER,
                &pair.a.uri(RES),
                &BLOCKS.to_string(),
                acked.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        "libnbd writer",
    );
    wait_until("2,000 acknowledged writes", 60, || {
        std::fs::read_to_string(&acked)
            .map(|t| t.lines().count() >= 2000)
            .unwrap_or(false)
    });
    da.crash();
    writer.stop();
    // The writer's record: each block's last acknowledged sequence number.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(&acked).unwrap().lines() {
        let mut it = line.split(' ');
        let (Some(b), Some(s)) = (it.next(), it.next()) else {
            continue; // a line cut by the kill
        };
        let (Ok(b), Ok(s)) = (b.parse::<u64>(), s.trim().parse::<u64>()) else {
            continue;
        };
        let e = last.entry(b).or_insert(0);
        *e = (*e).max(s);
    }
    assert!(last.len() > 500, "only {} blocks acknowledged", last.len());

    // The Secondary notices, goes on alone, and is promoted without
    // --force (its disk is UpToDate, the peer is gone).
    wait_until("beta to lose the link", 30, || {
        pair.b.resource_status(RES)["peer"]["connection"] != "Connected"
    });
    pair.b.ok(&["primary", RES]);
    let copy = pair.b.path("after.bin");
    sh("nbdcopy", &[&pair.b.uri(RES), copy.to_str().unwrap()]);
    let data = std::fs::read(&copy).unwrap();
    let mut checked = 0;
    for (block, acked_seq) in &last {
        let at = (*block * 4096) as usize;
        let chunk = &data[at..at + 4096];
        let text = String::from_utf8_lossy(&chunk[..32]);
        let field = text.split(';').next().unwrap();
        let (b, s) = field.split_once(':').unwrap_or_else(|| {
            panic!("block {block}: no write of ours there ({text:?}), acknowledged seq {acked_seq}")
        });
        assert_eq!(b.parse::<u64>().unwrap(), *block);
        let seq: u64 = s.parse().unwrap();
        assert!(
            seq >= *acked_seq,
            "block {block}: seq {seq} on the promoted Secondary, but seq {acked_seq} was acknowledged"
        );
        checked += 1;
    }
    assert_eq!(checked, last.len());
    old_primary_returns_as_sync_target(&pair, &copy, db);
}

/// The crashed alpha returns: it must come up Secondary, with exactly its
/// activity-log extents out of sync, and take beta's data.
fn old_primary_returns_as_sync_target(pair: &Pair, before: &std::path::Path, mut db: DaemonGuard) {
    // beta, now Primary alone, writes 1 MiB alpha never saw.
    let out = sh(
        "qemu-io",
        &[
            "-f",
            "raw",
            &pair.b.uri(RES),
            "-c",
            &format!("write -P 0x5a {LATER_AT} 1M"),
        ],
    );
    assert!(
        out.contains("wrote 1048576/1048576 bytes"),
        "qemu-io: {out}"
    );
    // Keep beta from connecting until alpha's own state has been read.
    pair.b.ok(&["disconnect", RES]);
    let _da = pair.a.daemon();
    pair.a.ok(&["up", RES]);
    let a = pair.a.resource_status(RES);
    assert_eq!(
        a["role"], "Secondary",
        "a crashed Primary comes back Secondary: {a}"
    );
    let oos = a["peer"]["out_of_sync_bytes"].as_u64().unwrap();
    assert!(
        oos > 0 && oos <= BLOCKS * 4096 && oos.is_multiple_of(AL_EXTENT),
        "alpha marks its activity-log extents (within the writer's 16 MiB) out of sync, not {oos} bytes: {a}"
    );
    eprintln!("alpha returns with {oos} bytes out of sync (its activity log)");
    pair.b.ok(&["connect", RES]);
    pair.wait_in_sync(60);
    let a = pair.a.resource_status(RES);
    assert_eq!(a["role"], "Secondary", "{a}");
    assert_eq!(pair.b.resource_status(RES)["role"], "Primary");
    let usable = pair.usable_bytes();
    let (sa, sb) = pair.checksums(usable);
    assert_eq!(sa, sb, "the disks differ after the old Primary resynced");
    // beta's data won: its later write is on alpha, and everything beta
    // had at promotion (every acknowledged write) is unchanged outside it.
    let disk_a = std::fs::read(&pair.disk_a).unwrap();
    let at = LATER_AT as usize;
    assert!(
        disk_a[at..at + MIB as usize].iter().all(|&b| b == 0x5a),
        "beta's later write is on alpha"
    );
    let before = std::fs::read(before).unwrap();
    assert!(
        disk_a[..at] == before[..at],
        "alpha's disk below the later write equals what beta had at promotion"
    );
    assert_eq!(db.stop().code(), Some(0));
}
