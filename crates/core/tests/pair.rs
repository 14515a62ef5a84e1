#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Behaviour of the core driven step by step: two resources, their disks
//! as sector maps, and the link as two FIFO queues. Each test controls
//! exactly which I/O completes and which message is delivered when.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use hadisk_bitmap::DirtyBitmap;
use hadisk_core::{
    Action, AdminOp, Attached, CmdId, Config, Connection, CoreError, Digested, Event, IoId,
    RateMode, Replication, ReqId, Resource, SuperblockState,
};
use hadisk_peer_proto::{DigestAlg, DiskState, Message, Role, Uuids};

const SIZE: u64 = 64 << 20;
const SECTOR: u64 = 512;

struct Node {
    r: Resource,
    disk: BTreeMap<u64, u8>,
    io: Vec<Action>,
    done: Vec<(ReqId, Result<(), CoreError>)>,
    admin: Vec<(CmdId, Result<(), CoreError>)>,
    outbox: VecDeque<Message>,
    meta_writes: usize,
    dials: usize,
    /// Times asked for with `WakeAt`.
    wakes: Vec<u64>,
}

fn fresh(yields: bool) -> Node {
    fresh_rate(yields, RateMode::default())
}

fn fresh_rate(yields: bool, rate: RateMode) -> Node {
    fresh_cfg(yields, |cfg| cfg.rate = rate)
}

/// A fresh node whose configuration `f` adjusts.
fn fresh_cfg(yields: bool, f: impl FnOnce(&mut Config)) -> Node {
    let attached = Attached {
        superblock: SuperblockState {
            uuids: Uuids::just_created(),
            consistent: false,
            was_up_to_date: false,
            primary: false,
            crashed_primary: false,
            peer_outdated: false,
        },
        bitmap: DirtyBitmap::new(SIZE).unwrap(),
        al_slots: vec![None; 7],
    };
    let mut cfg = Config::new(SIZE, yields, if yields { 1 } else { 2 });
    cfg.al_extents = 7;
    cfg.resync_chunk_bytes = 4 << 20;
    f(&mut cfg);
    let (r, actions) = Resource::new(cfg, attached).unwrap();
    let mut n = Node {
        r,
        disk: BTreeMap::new(),
        io: Vec::new(),
        done: Vec::new(),
        admin: Vec::new(),
        outbox: VecDeque::new(),
        meta_writes: 0,
        dials: 0,
        wakes: Vec::new(),
    };
    n.absorb(actions);
    n
}

impl Node {
    fn ev(&mut self, e: Event) {
        let a = self.r.handle(0, e);
        self.absorb(a);
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(m) => self.outbox.push_back(m),
                Action::ClientDone { req, result } => self.done.push((req, result)),
                Action::AdminDone { cmd, result } => self.admin.push((cmd, result)),
                Action::Transition { .. } | Action::CloseLink { .. } => {}
                Action::Dial => self.dials += 1,
                Action::WakeAt { at_ms } => self.wakes.push(at_ms),
                Action::WriteMeta { .. } => {
                    self.meta_writes += 1;
                    self.io.push(a)
                }
                other => self.io.push(other),
            }
        }
    }

    /// Completes every pending I/O (repeating until none is left).
    fn finish_io(&mut self) {
        while !self.io.is_empty() {
            for a in std::mem::take(&mut self.io) {
                self.complete(a);
            }
        }
    }

    fn complete(&mut self, a: Action) {
        match a {
            Action::WriteLocal {
                io,
                offset_bytes,
                data,
                ..
            } => {
                for (i, chunk) in data.to_bytes().unwrap().chunks(SECTOR as usize).enumerate() {
                    self.disk.insert(offset_bytes / SECTOR + i as u64, chunk[0]);
                }
                self.ev(Event::IoDone { io, ok: true });
            }
            Action::ReadLocal {
                io,
                offset_bytes,
                len_bytes,
            } => {
                let v = self.read_bytes(offset_bytes, len_bytes);
                self.ev(Event::ReadDone {
                    io,
                    data: Some(Bytes::from(v)),
                });
            }
            Action::DigestLocal {
                io,
                offset_bytes,
                len_bytes,
                alg,
            } => {
                let v = self.read_bytes(offset_bytes, len_bytes);
                let digests = Bytes::from(alg.digest_blocks(&v));
                let result = Some(Digested {
                    data: Bytes::from(v),
                    digests,
                });
                self.ev(Event::DigestDone { io, result });
            }
            Action::FlushLocal { io } | Action::WriteMeta { io, .. } => {
                self.ev(Event::IoDone { io, ok: true })
            }
            _ => {}
        }
    }

    /// The disk model as bytes: each sector holds its tag byte, then zeros.
    fn read_bytes(&self, offset_bytes: u64, len_bytes: u32) -> Vec<u8> {
        let mut v = vec![0u8; len_bytes as usize];
        for (i, chunk) in v.chunks_mut(SECTOR as usize).enumerate() {
            chunk[0] = *self
                .disk
                .get(&(offset_bytes / SECTOR + i as u64))
                .unwrap_or(&0);
        }
        v
    }

    fn write(&mut self, req: u64, offset: u64, len: u64, tag: u8) {
        let data = Bytes::from(vec![tag; len as usize]);
        self.ev(Event::ClientWrite {
            req: ReqId(req),
            offset_bytes: offset,
            data: data.into(),
            fua: false,
        });
    }

    fn admin(&mut self, cmd: u64, op: AdminOp) -> Option<Result<(), CoreError>> {
        self.ev(Event::Admin {
            cmd: CmdId(cmd),
            op,
        });
        self.admin
            .iter()
            .find(|(c, _)| *c == CmdId(cmd))
            .map(|(_, r)| r.clone())
    }

    fn result(&self, req: u64) -> Option<Result<(), CoreError>> {
        self.done
            .iter()
            .find(|(r, _)| *r == ReqId(req))
            .map(|(_, r)| r.clone())
    }

    fn has_io(&self, pred: impl Fn(&Action) -> bool) -> bool {
        self.io.iter().any(pred)
    }
}

/// Delivers every queued message both ways, with all I/O completing,
/// until nothing moves.
fn settle(a: &mut Node, b: &mut Node) {
    loop {
        a.finish_io();
        b.finish_io();
        if a.outbox.is_empty() && b.outbox.is_empty() {
            break;
        }
        while let Some(m) = a.outbox.pop_front() {
            b.ev(Event::Peer(m));
        }
        while let Some(m) = b.outbox.pop_front() {
            a.ev(Event::Peer(m));
        }
    }
}

fn connect(a: &mut Node, b: &mut Node) {
    assert_eq!(
        a.admin(
            900,
            AdminOp::Connect {
                discard_my_data: false
            }
        ),
        Some(Ok(()))
    );
    assert_eq!(
        b.admin(
            900,
            AdminOp::Connect {
                discard_my_data: false
            }
        ),
        Some(Ok(()))
    );
    a.ev(Event::LinkUp);
    b.ev(Event::LinkUp);
}

fn cut(a: &mut Node, b: &mut Node) {
    a.outbox.clear();
    b.outbox.clear();
    a.ev(Event::LinkDown {
        reason: "test".into(),
    });
    b.ev(Event::LinkDown {
        reason: "test".into(),
    });
}

/// A new pair, A forced Primary, initial sync done.
fn synced_pair() -> (Node, Node) {
    let mut a = fresh(false);
    let mut b = fresh(true);
    assert_eq!(a.r.disk(), DiskState::Inconsistent);
    a.admin(1, AdminOp::Promote { force: true });
    a.finish_io();
    assert_eq!(a.admin.last().unwrap(), &(CmdId(1), Ok(())));
    connect(&mut a, &mut b);
    settle(&mut a, &mut b);
    (a, b)
}

#[test]
fn initial_sync_after_force_copies_everything_and_reports_progress() {
    let mut a = fresh(false);
    let mut b = fresh(true);
    a.write(1, 0, 4096, 7); // refused: not Primary yet
    assert_eq!(a.result(1), Some(Err(CoreError::NotPrimary)));
    assert_eq!(
        a.admin(2, AdminOp::Promote { force: false }),
        Some(Err(CoreError::NotUpToDate {
            disk: DiskState::Inconsistent
        }))
    );
    a.admin(3, AdminOp::Promote { force: true });
    a.finish_io();
    assert_eq!(a.r.role(), Role::Primary);
    a.write(4, 8192, 4096, 9);
    a.finish_io();
    assert_eq!(a.result(4), Some(Ok(())));
    connect(&mut a, &mut b);
    // Handshake only: deliver params and bitmaps, no I/O yet.
    while let Some(m) = a.outbox.pop_front() {
        b.ev(Event::Peer(m));
    }
    while let Some(m) = b.outbox.pop_front() {
        a.ev(Event::Peer(m));
    }
    assert_eq!(a.r.replication(), Replication::SyncSource);
    assert_eq!(b.r.replication(), Replication::SyncTarget);
    // The SyncTarget may not promote, forced or not: the Primary peer is
    // named as the reason, without asking it.
    for (cmd, force) in [(5, false), (6, true)] {
        assert_eq!(
            b.admin(cmd, AdminOp::Promote { force }),
            Some(Err(CoreError::PeerIsPrimary))
        );
    }
    assert!(b.outbox.is_empty());
    let st = a.r.status(1000);
    assert_eq!(st.out_of_sync_bytes, SIZE);
    assert_eq!(st.resync.as_ref().unwrap().done_bytes, 0);
    settle(&mut a, &mut b);
    assert_eq!(a.r.replication(), Replication::Established);
    assert_eq!(b.r.replication(), Replication::Established);
    assert_eq!(b.r.disk(), DiskState::UpToDate);
    assert_eq!(a.r.status(2000).out_of_sync_bytes, 0);
    assert_eq!(b.disk.get(&16), Some(&9));
    assert_eq!(a.r.status(0).uuids.current, b.r.status(0).uuids.current);
    assert_eq!(a.r.status(0).uuids.bitmap, 0);
}

#[test]
fn protocol_c_completes_only_with_the_peer_ack() {
    let (mut a, mut b) = synced_pair();
    a.write(10, 4096, 4096, 1);
    a.finish_io();
    assert_eq!(a.result(10), None, "completed before the peer acked");
    // The Data message is on the link; the secondary writes and acks.
    let data = a.outbox.pop_front().unwrap();
    assert!(matches!(
        data,
        Message::Data {
            offset_bytes: 4096,
            ..
        }
    ));
    b.ev(Event::Peer(data));
    b.finish_io();
    let ack = b.outbox.pop_front().unwrap();
    assert!(matches!(ack, Message::WriteAck { .. }));
    a.ev(Event::Peer(ack));
    assert_eq!(a.result(10), Some(Ok(())));
    assert_eq!(b.disk.get(&8), Some(&1));
}

#[test]
fn link_loss_marks_unacked_blocks_and_the_primary_goes_on_alone() {
    let (mut a, mut b) = synced_pair();
    a.write(20, 1 << 20, 8192, 3);
    a.finish_io();
    assert_eq!(a.result(20), None);
    let before = a.r.status(0).uuids;
    cut(&mut a, &mut b);
    // Not before the new generation UUID is durable.
    assert_eq!(a.result(20), None);
    assert!(a.has_io(|x| matches!(x, Action::WriteMeta { update, .. } if update.superblock.is_some_and(|s| s.peer_outdated))));
    a.finish_io();
    assert_eq!(a.result(20), Some(Ok(())));
    let st = a.r.status(0);
    assert_eq!(st.out_of_sync_bytes, 8192);
    assert_eq!(st.peer_disk, Some(DiskState::Outdated));
    assert_eq!(st.connection, Connection::Connecting);
    assert_eq!(a.dials, 2, "connect, then again after the loss");
    // A new generation: the old current is now the bitmap UUID.
    assert_eq!(Uuids::id(st.uuids.bitmap), Uuids::id(before.current));
    // Writes while disconnected are marked too.
    a.write(21, 2 << 20, 4096, 4);
    a.finish_io();
    assert_eq!(a.result(21), Some(Ok(())));
    assert_eq!(a.r.status(0).out_of_sync_bytes, 8192 + 4096);
    // Reconnect: bitmap-based resync of exactly those blocks.
    a.ev(Event::LinkUp);
    b.ev(Event::LinkUp);
    settle(&mut a, &mut b);
    assert_eq!(a.r.replication(), Replication::Established);
    assert_eq!(b.disk.get(&((1 << 20) / SECTOR)), Some(&3));
    assert_eq!(b.disk.get(&((2 << 20) / SECTOR)), Some(&4));
    assert_eq!(a.r.status(0).out_of_sync_bytes, 0);
}

/// Once a mirrored write is issued the core keeps no reference to its
/// payload: the disk write and the link's `Data` message hold the only
/// two, so whichever of them finishes with it last can move a pipe
/// payload's own pages (no `tee`) — the Primary's share of the zero-copy
/// path, as the Secondary's `PeerWrite` hands its payload over.
#[test]
fn an_issued_write_leaves_its_payload_to_the_disk_write_and_the_link() {
    use hadisk_payload::{Payload, PipeData};
    use std::sync::Arc;
    let (mut a, _b) = synced_pair();
    let pipe = Arc::new(PipeData::from_bytes(&[7u8; 8192]).unwrap());
    a.ev(Event::ClientWrite {
        req: ReqId(1),
        offset_bytes: 0,
        data: Payload::Pipe(pipe.clone()),
        fua: false,
    });
    // Complete only metadata (the activity log's transaction) until the
    // data write is issued.
    for _ in 0..8 {
        if a.has_io(|x| matches!(x, Action::WriteLocal { .. })) {
            break;
        }
        for x in std::mem::take(&mut a.io) {
            if matches!(x, Action::WriteMeta { .. }) {
                a.complete(x);
            } else {
                a.io.push(x);
            }
        }
    }
    let local =
        a.io.iter()
            .position(|x| matches!(x, Action::WriteLocal { .. }))
            .expect("the local write was issued");
    let data = a
        .outbox
        .iter()
        .position(|m| matches!(m, Message::Data { .. }))
        .expect("the write went to the peer");
    assert_eq!(
        Arc::strong_count(&pipe),
        3,
        "this test, the disk write, the link"
    );
    // The peer applies the write (and lets go of the payload) first.
    let data = a.outbox.remove(data).unwrap();
    let mut b = _b;
    b.ev(Event::Peer(data));
    b.finish_io();
    assert_eq!(Arc::strong_count(&pipe), 2, "this test and the disk write");
    let local = a.io.remove(local);
    a.complete(local);
    assert_eq!(Arc::strong_count(&pipe), 1, "the core kept a reference");
    // The write completes by its length and both acknowledgements alone.
    assert_eq!(a.result(1), None, "completed before the peer acked");
    let ack = b.outbox.pop_front().unwrap();
    a.ev(Event::Peer(ack));
    assert_eq!(a.result(1), Some(Ok(())));
    assert_eq!((a.disk.get(&15), b.disk.get(&15)), (Some(&7), Some(&7)));
}

#[test]
fn a_write_into_a_new_extent_waits_for_its_al_transaction() {
    let (mut a, mut b) = synced_pair();
    let meta_before = a.meta_writes;
    a.write(30, 40 << 20, 4096, 5);
    assert_eq!(a.meta_writes, meta_before + 1);
    assert!(a.has_io(|x| matches!(x, Action::WriteMeta { update, .. } if !update.al.is_empty())));
    // The superblock did not change since the last metadata write: the AL
    // transaction does not rewrite it (one durable write, not two).
    assert!(
        a.has_io(|x| matches!(x, Action::WriteMeta { update, .. } if update.superblock.is_none()))
    );
    assert!(
        !a.has_io(|x| matches!(x, Action::WriteLocal { .. })),
        "write issued before the AL transaction"
    );
    assert!(a.outbox.is_empty(), "data sent before the AL transaction");
    let meta = a.io.remove(0);
    a.complete(meta);
    assert!(a.has_io(
        |x| matches!(x, Action::WriteLocal { offset_bytes, .. } if *offset_bytes == 40 << 20)
    ));
    assert!(matches!(a.outbox.front(), Some(Message::Data { .. })));
    // A second write into the same (now active) extent needs no transaction.
    a.write(31, (40 << 20) + 8192, 4096, 6);
    assert_eq!(a.meta_writes, meta_before + 1);
    settle(&mut a, &mut b);
    assert_eq!(a.result(31), Some(Ok(())));
}

#[test]
fn flush_reaches_both_disks_before_it_completes() {
    let (mut a, mut b) = synced_pair();
    a.ev(Event::ClientFlush { req: ReqId(40) });
    assert!(a.has_io(|x| matches!(x, Action::FlushLocal { .. })));
    a.finish_io();
    assert_eq!(a.result(40), None);
    let flush = a.outbox.pop_front().unwrap();
    assert!(matches!(flush, Message::Flush { .. }));
    b.ev(Event::Peer(flush));
    assert!(b.has_io(|x| matches!(x, Action::FlushLocal { .. })));
    b.finish_io();
    a.ev(Event::Peer(b.outbox.pop_front().unwrap()));
    assert_eq!(a.result(40), Some(Ok(())));
}

/// A manual switchover: `secondary` on A returns, and `primary` on B at
/// once, while A's state message saying it is Secondary is still on the
/// way. B asks A, whose answer is authoritative, and becomes Primary.
#[test]
fn promotion_right_after_the_peer_demoted_is_granted() {
    let (mut a, mut b) = synced_pair();
    assert_eq!(a.admin(60, AdminOp::Demote), None);
    // Demotion flushes both disks: carry messages until it is done, and
    // not one message further.
    for _ in 0..10 {
        a.finish_io();
        if a.admin.last().is_some_and(|(c, _)| *c == CmdId(60)) {
            break;
        }
        while let Some(m) = a.outbox.pop_front() {
            b.ev(Event::Peer(m));
        }
        b.finish_io();
        while let Some(m) = b.outbox.pop_front() {
            a.ev(Event::Peer(m));
        }
    }
    assert_eq!(a.admin.last().unwrap(), &(CmdId(60), Ok(())));
    assert_eq!(a.r.role(), Role::Secondary);
    // A's state message has not reached B: B still sees a Primary peer.
    assert!(!a.outbox.is_empty());
    assert_eq!(b.admin(61, AdminOp::Promote { force: false }), None);
    settle(&mut a, &mut b);
    assert_eq!(b.admin.last().unwrap(), &(CmdId(61), Ok(())));
    assert_eq!(b.r.role(), Role::Primary);
    assert_eq!(a.r.role(), Role::Secondary);
}

#[test]
fn promotion_rules() {
    let (mut a, mut b) = synced_pair();
    // Peer is Primary: refused by the peer, whatever the disk.
    for cmd in [50, 51] {
        let force = cmd == 51;
        assert_eq!(b.admin(cmd, AdminOp::Promote { force }), None);
        settle(&mut a, &mut b);
        assert_eq!(
            b.admin.last().unwrap(),
            &(CmdId(cmd), Err(CoreError::PeerIsPrimary))
        );
        assert_eq!(b.r.role(), Role::Secondary);
        assert_eq!(a.r.role(), Role::Primary);
    }
    // Demote A, then B may promote through the two-phase handshake.
    assert_eq!(a.admin(52, AdminOp::Demote), None);
    settle(&mut a, &mut b);
    assert_eq!(a.admin.last().unwrap(), &(CmdId(52), Ok(())));
    assert_eq!(b.admin(53, AdminOp::Promote { force: false }), None);
    // While B's request is pending, A's own request is refused by B.
    assert_eq!(a.admin(54, AdminOp::Promote { force: false }), None);
    settle(&mut a, &mut b);
    assert_eq!(
        b.admin.last().unwrap(),
        &(CmdId(53), Err(CoreError::PromotionDenied))
    );
    assert_eq!(
        a.admin.last().unwrap(),
        &(CmdId(54), Err(CoreError::PromotionDenied))
    );
    assert_eq!(b.admin(55, AdminOp::Promote { force: false }), None);
    settle(&mut a, &mut b);
    assert_eq!(b.admin.last().unwrap(), &(CmdId(55), Ok(())));
    assert_eq!(b.r.role(), Role::Primary);
    assert_eq!(a.admin(56, AdminOp::Promote { force: false }), None);
    settle(&mut a, &mut b);
    assert_eq!(
        a.admin.last().unwrap(),
        &(CmdId(56), Err(CoreError::PeerIsPrimary))
    );
    // B "crashes": A, UpToDate, is promoted without --force.
    cut(&mut a, &mut b);
    assert_eq!(a.r.disk(), DiskState::UpToDate);
    assert_eq!(a.admin(57, AdminOp::Promote { force: false }), None);
    a.finish_io();
    assert_eq!(a.admin.last().unwrap(), &(CmdId(57), Ok(())));
    assert_eq!(a.r.role(), Role::Primary);
}

#[test]
fn resync_read_waits_for_an_application_write_to_the_same_blocks() {
    let (mut a, mut b) = synced_pair();
    cut(&mut a, &mut b);
    a.write(60, 0, 4096, 1);
    a.finish_io();
    a.ev(Event::LinkUp);
    b.ev(Event::LinkUp);
    // Handshake; B becomes target and (after its metadata) requests block 0.
    while let Some(m) = a.outbox.pop_front() {
        b.ev(Event::Peer(m));
    }
    while let Some(m) = b.outbox.pop_front() {
        a.ev(Event::Peer(m));
    }
    b.finish_io();
    // An application write to block 0 starts on A before the request lands.
    a.write(61, 0, 4096, 2);
    a.finish_io();
    let req = b.outbox.pop_front().unwrap();
    assert!(matches!(
        req,
        Message::ResyncRequest {
            offset_bytes: 0,
            ..
        }
    ));
    a.ev(Event::Peer(req));
    assert!(
        !a.has_io(|x| matches!(x, Action::ReadLocal { .. })),
        "resync read while a write holds the range"
    );
    settle(&mut a, &mut b);
    assert_eq!(a.result(61), Some(Ok(())));
    assert_eq!(b.disk.get(&0), Some(&2));
    assert_eq!(b.r.disk(), DiskState::UpToDate);
}

#[test]
fn crashed_primary_marks_its_activity_log() {
    let attached = Attached {
        superblock: SuperblockState {
            uuids: Uuids {
                current: 0x40,
                bitmap: 0,
                history: [0, 0],
            },
            consistent: true,
            was_up_to_date: true,
            primary: true,
            crashed_primary: false,
            peer_outdated: false,
        },
        bitmap: DirtyBitmap::new(SIZE).unwrap(),
        al_slots: vec![Some(2), None, Some(5), None, None, None, None],
    };
    let mut cfg = Config::new(SIZE, false, 3);
    cfg.al_extents = 7;
    let (r, actions) = Resource::new(cfg, attached).unwrap();
    assert_eq!(r.status(0).out_of_sync_bytes, 2 * (4 << 20));
    assert_eq!(r.role(), Role::Secondary);
    let sb = actions.iter().find_map(|a| match a {
        Action::WriteMeta { update, .. } => update.superblock,
        _ => None,
    });
    let sb = sb.unwrap();
    assert!(sb.crashed_primary && !sb.primary);
    let _ = IoId(0);
}

#[test]
fn disconnect_and_refused_connections_stay_standalone() {
    let mut a = fresh(false);
    let mut b = fresh(true);
    a.admin(1, AdminOp::Promote { force: true });
    b.admin(2, AdminOp::Promote { force: true });
    a.finish_io();
    b.finish_io();
    connect(&mut a, &mut b);
    settle(&mut a, &mut b);
    // Both forced from "just created": both moved on from the same bitmap
    // generation, a split brain; the default policy disconnects.
    let st = a.r.status(0);
    assert_eq!(st.connection, Connection::StandAlone);
    assert_eq!(st.last_error.unwrap(), "split brain detected: both nodes changed the data while disconnected [split-brain (rule 90)]; after-sb-2pri is disconnect, so the connection is refused (StandAlone). To recover, on the node whose changes are to be discarded run `hadisk secondary RES` and `hadisk connect --discard-my-data RES` (its diverging blocks are saved to the split-brain directory first), then `hadisk connect RES` on the other node");
    assert_eq!(b.r.status(0).connection, Connection::StandAlone);
}

#[test]
fn a_write_wider_than_the_activity_log_is_refused_not_hung() {
    let (mut a, _b) = synced_pair();
    // 7 extents of 4 MiB: a 32 MiB write at an unaligned start spans 9.
    a.write(70, 2 << 20, 32 << 20, 1);
    assert_eq!(
        a.result(70).unwrap().unwrap_err().to_string(),
        "a write of 33554432 bytes spans 9 activity-log extents but al-extents is 7: raise al-extents or use smaller requests"
    );
}

/// `primary --force` on a new pair whose link comes up while the Primary
/// flag and the new generation are being persisted: the handshake must
/// carry the promoted state (UpToDate with the new UUID), not the new UUID
/// with the old Inconsistent disk, which both sides refused (rule 30) and
/// left StandAlone for good.
#[test]
fn a_link_up_during_a_forced_promotion_handshakes_with_the_promoted_state() {
    let mut a = fresh(false);
    let mut b = fresh(true);
    for n in [&mut a, &mut b] {
        let connect = AdminOp::Connect {
            discard_my_data: false,
        };
        assert_eq!(n.admin(900, connect), Some(Ok(())));
    }
    // The promotion's metadata write is still in flight on A ...
    assert_eq!(a.admin(1, AdminOp::Promote { force: true }), None);
    assert!(a.has_io(|x| matches!(x, Action::WriteMeta { .. })));
    // ... when the link comes up and the handshake starts.
    a.ev(Event::LinkUp);
    b.ev(Event::LinkUp);
    settle(&mut a, &mut b);
    assert_eq!(a.admin.last().unwrap(), &(CmdId(1), Ok(())));
    assert_eq!(a.r.status(0).last_error, None);
    assert_eq!(a.r.connection(), Connection::Connected);
    assert_eq!(b.r.connection(), Connection::Connected);
    assert_eq!(a.r.role(), Role::Primary);
    assert_eq!(a.r.replication(), Replication::Established);
    assert_eq!(b.r.replication(), Replication::Established);
    assert_eq!(a.r.disk(), DiskState::UpToDate);
    assert_eq!(b.r.disk(), DiskState::UpToDate);
    assert_eq!(a.r.status(0).uuids.current, b.r.status(0).uuids.current);
}

#[test]
fn pause_sync_holds_the_resync_on_both_sides_until_both_resume() {
    let mut a = fresh(false);
    let mut b = fresh(true);
    a.admin(1, AdminOp::Promote { force: true });
    a.finish_io();
    // The future SyncTarget pauses before the resync starts.
    assert_eq!(b.admin(2, AdminOp::PauseSync), Some(Ok(())));
    assert_eq!(
        b.admin(3, AdminOp::PauseSync),
        Some(Err(CoreError::SyncAlreadyPaused))
    );
    connect(&mut a, &mut b);
    settle(&mut a, &mut b);
    assert_eq!(a.r.replication(), Replication::PausedSyncS);
    assert_eq!(b.r.replication(), Replication::PausedSyncT);
    assert_eq!(b.r.status(0).out_of_sync_bytes, SIZE, "nothing requested");
    assert_eq!(
        a.admin(4, AdminOp::ResumeSync),
        Some(Err(CoreError::SyncNotPaused))
    );
    // Paused on both; one resume is not enough.
    assert_eq!(a.admin(5, AdminOp::PauseSync), Some(Ok(())));
    settle(&mut a, &mut b);
    assert!(b.r.status(0).sync_paused_by_peer);
    assert_eq!(b.admin(6, AdminOp::ResumeSync), Some(Ok(())));
    settle(&mut a, &mut b);
    assert_eq!(b.r.replication(), Replication::PausedSyncT);
    assert_eq!(a.r.replication(), Replication::PausedSyncS);
    assert_eq!(b.r.status(0).out_of_sync_bytes, SIZE);
    let st = a.r.status(0);
    assert!(st.sync_paused_here && !st.sync_paused_by_peer, "{st:?}");
    assert_eq!(a.admin(7, AdminOp::ResumeSync), Some(Ok(())));
    settle(&mut a, &mut b);
    assert_eq!(a.r.replication(), Replication::Established);
    assert_eq!(b.r.replication(), Replication::Established);
    assert_eq!(b.r.disk(), DiskState::UpToDate);
}

#[test]
fn a_fixed_resync_rate_paces_requests_with_wake_ups() {
    let mut a = fresh(false);
    let mut b = fresh_rate(
        true,
        RateMode::Fixed {
            rate_bytes_per_s: 1 << 20,
        },
    );
    a.admin(1, AdminOp::Promote { force: true });
    a.finish_io();
    connect(&mut a, &mut b);
    settle(&mut a, &mut b);
    // The bucket starts with one 100 ms step's worth: 25 whole blocks of
    // 104,857 bytes; the 26th is due in 2 ms.
    let done = |b: &Node| SIZE - b.r.status(0).out_of_sync_bytes;
    assert_eq!(done(&b), 25 * 4096);
    assert_eq!(b.wakes.last(), Some(&2));
    assert_eq!(b.r.replication(), Replication::SyncTarget);
    // A second later the bucket is full again (one step's worth, no more).
    let actions = b.r.handle(1000, Event::Tick);
    b.absorb(actions);
    settle(&mut a, &mut b);
    assert_eq!(done(&b), 50 * 4096);
    assert_eq!(b.r.status(1000).rate.limit_bytes_per_s, Some(1 << 20));
}

// ---- online verify, csums resync, invalidate ----

/// Both disks hold the same data (a written zero equals a hole).
fn same_data(a: &Node, b: &Node) -> bool {
    let data = |n: &Node| -> Vec<(u64, u8)> {
        n.disk
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (*k, *v))
            .collect()
    };
    data(a) == data(b)
}

/// A synced pair with `verify-alg` and `csums-alg` on both nodes.
fn synced_digest_pair(csums: bool) -> (Node, Node) {
    let set = |cfg: &mut Config| {
        cfg.verify_alg = Some(DigestAlg::Sha256);
        cfg.csums_alg = csums.then_some(DigestAlg::Crc32c);
        // The harness's clock stands still: never throttle the resync
        // for the application's writes (c-min-rate 0).
        cfg.rate = RateMode::Dynamic(hadisk_core::DynamicRate {
            min_rate_bytes_per_s: 0,
            ..Default::default()
        });
    };
    let mut a = fresh_cfg(false, set);
    let mut b = fresh_cfg(true, set);
    a.admin(1, AdminOp::Promote { force: true });
    a.finish_io();
    connect(&mut a, &mut b);
    settle(&mut a, &mut b);
    assert_eq!(b.r.replication(), Replication::Established);
    (a, b)
}

/// `settle`, counting the resync payload bytes each way.
fn settle_counting(a: &mut Node, b: &mut Node) -> (u64, u64) {
    let mut sent = (0, 0);
    let size = |m: &Message| match m {
        Message::ResyncData { data, .. } => data.len() as u64,
        _ => 0,
    };
    loop {
        a.finish_io();
        b.finish_io();
        if a.outbox.is_empty() && b.outbox.is_empty() {
            return sent;
        }
        while let Some(m) = a.outbox.pop_front() {
            sent.0 += size(&m);
            b.ev(Event::Peer(m));
        }
        while let Some(m) = b.outbox.pop_front() {
            sent.1 += size(&m);
            a.ev(Event::Peer(m));
        }
    }
}

/// Blocks 0, 5 and 300 (their first sectors) differ on b's disk.
fn corrupt_b(b: &mut Node) -> u64 {
    for block in [0u64, 5, 300] {
        b.disk.insert(block * 8, 0xEE);
    }
    3 * 4096
}

#[test]
fn verify_marks_exactly_the_differing_blocks_and_the_next_resync_repairs_them() {
    let (mut a, mut b) = synced_digest_pair(false);
    a.write(10, 4096 * 5, 8192, 3);
    settle(&mut a, &mut b);
    // Flushed: nothing is left unstable (re-marked when the link drops).
    a.ev(Event::ClientFlush { req: ReqId(11) });
    settle(&mut a, &mut b);
    assert_eq!(a.result(11), Some(Ok(())));
    assert!(same_data(&a, &b), "the disks differ");
    // Identical: nothing found.
    assert_eq!(a.admin(20, AdminOp::Verify), Some(Ok(())));
    assert_eq!(a.r.replication(), Replication::VerifyS);
    settle(&mut a, &mut b);
    let v = a.r.status(0).verify.unwrap();
    assert!(!v.running && v.complete && v.source, "{v:?}");
    assert_eq!(v.out_of_sync_bytes, 0);
    // Corrupted behind the core's back; verified from the Secondary.
    let expected = corrupt_b(&mut b);
    assert_eq!(b.admin(21, AdminOp::Verify), Some(Ok(())));
    let start = b.outbox.pop_front().unwrap();
    assert_eq!(start, Message::VerifyStart);
    a.ev(Event::Peer(start));
    assert_eq!(a.r.replication(), Replication::VerifyT);
    settle(&mut a, &mut b);
    for n in [&a, &b] {
        let st = n.r.status(0);
        assert_eq!(st.replication, Replication::Established);
        assert_eq!(st.out_of_sync_bytes, expected);
        assert_eq!(st.verify.unwrap().out_of_sync_bytes, expected);
        assert!(n.r.bitmap().test_block(300) && !n.r.bitmap().test_block(301));
    }
    assert!(!same_data(&a, &b), "verify writes nothing");
    // Disconnect + connect: the Primary's blocks win.
    cut(&mut a, &mut b);

    a.ev(Event::LinkUp);
    b.ev(Event::LinkUp);
    let (to_b, to_a) = settle_counting(&mut a, &mut b);
    assert_eq!((to_b, to_a), (expected, 0));
    assert!(same_data(&a, &b), "the disks differ");
    assert_eq!(b.r.status(0).out_of_sync_bytes, 0);
}

#[test]
fn verify_refusals() {
    let mut a = fresh(false);
    assert_eq!(
        a.admin(1, AdminOp::Verify),
        Some(Err(CoreError::NotConnected {
            command: "verify",
            connection: Connection::StandAlone
        }))
    );
    let (mut a, mut b) = synced_pair();
    assert_eq!(
        a.admin(2, AdminOp::Verify),
        Some(Err(CoreError::NoVerifyAlg))
    );
    let (mut a2, _b2) = synced_digest_pair(false);
    assert_eq!(
        a2.admin(3, AdminOp::Invalidate),
        Some(Err(CoreError::InvalidateWhilePrimary))
    );
    // During a resync (an invalidate of b in progress).
    assert_eq!(b.admin(4, AdminOp::Invalidate), None);
    settle_once(&mut a, &mut b);
    assert_eq!(b.admin.last().unwrap(), &(CmdId(4), Ok(())));
    assert_eq!(
        b.admin(5, AdminOp::Verify),
        Some(Err(CoreError::NotEstablished {
            command: "verify",
            replication: Replication::SyncTarget
        }))
    );
}

/// Delivers one round of messages each way (no I/O).
fn settle_once(a: &mut Node, b: &mut Node) {
    while let Some(m) = b.outbox.pop_front() {
        a.ev(Event::Peer(m));
    }
    while let Some(m) = a.outbox.pop_front() {
        b.ev(Event::Peer(m));
    }
}

#[test]
fn csums_resync_sends_only_the_differing_blocks() {
    let (mut a, mut b) = synced_digest_pair(true);
    a.write(10, 0, 65536, 4);
    settle(&mut a, &mut b);
    // invalidate of identical disks: a full resync by digest, no data.
    assert_eq!(b.admin(20, AdminOp::Invalidate), None);
    let (to_b, to_a) = settle_counting(&mut a, &mut b);
    assert_eq!(b.admin.last().unwrap(), &(CmdId(20), Ok(())));
    assert_eq!((to_b, to_a), (0, 0));
    assert_eq!(b.r.disk(), DiskState::UpToDate);
    assert_eq!(b.r.replication(), Replication::Established);
    // Three blocks differ: exactly they are sent.
    let expected = corrupt_b(&mut b);
    b.admin(21, AdminOp::Invalidate);
    let (to_b, _) = settle_counting(&mut a, &mut b);
    assert_eq!(to_b, expected);
    assert!(same_data(&a, &b), "the disks differ");
    assert_eq!(a.r.status(0).out_of_sync_bytes, 0);
}

#[test]
fn invalidate_remote_and_crossing_requests() {
    let (mut a, mut b) = synced_digest_pair(false);
    assert_eq!(
        b.admin(1, AdminOp::InvalidateRemote),
        Some(Err(CoreError::InvalidatePeerPrimary))
    );
    // Crossing: both wait for their own answer, both are refused.
    assert_eq!(a.admin(2, AdminOp::InvalidateRemote), None);
    assert_eq!(b.admin(3, AdminOp::Invalidate), None);
    settle(&mut a, &mut b);
    let refused = |reason: &str| {
        Err(CoreError::PeerRefused {
            reason: reason.into(),
        })
    };
    let waiting = "it is waiting for the answer to its own invalidate";
    assert_eq!(a.admin.last().unwrap(), &(CmdId(2), refused(waiting)));
    assert_eq!(b.admin.last().unwrap(), &(CmdId(3), refused(waiting)));
    assert_eq!(b.r.replication(), Replication::Established);
    // invalidate-remote from the Primary: b becomes SyncTarget, full sync.
    corrupt_b(&mut b);
    assert_eq!(a.admin(4, AdminOp::InvalidateRemote), None);
    let (to_b, _) = settle_counting(&mut a, &mut b);
    assert_eq!(a.admin.last().unwrap(), &(CmdId(4), Ok(())));
    assert_eq!(to_b, SIZE);
    assert!(same_data(&a, &b), "the disks differ");
    // A link lost before the answer fails the command.
    a.admin(5, AdminOp::InvalidateRemote);
    cut(&mut a, &mut b);
    assert_eq!(
        a.admin.last().unwrap(),
        &(CmdId(5), Err(CoreError::FullSyncInterrupted))
    );
}

/// Like [`settle`], also returning every message A sent, in order.
fn settle_recording(a: &mut Node, b: &mut Node) -> Vec<Message> {
    let mut sent = Vec::new();
    loop {
        a.finish_io();
        b.finish_io();
        if a.outbox.is_empty() && b.outbox.is_empty() {
            break;
        }
        while let Some(m) = a.outbox.pop_front() {
            sent.push(m.clone());
            b.ev(Event::Peer(m));
        }
        while let Some(m) = b.outbox.pop_front() {
            a.ev(Event::Peer(m));
        }
    }
    sent
}

#[test]
fn a_bitmap_resync_sends_adjacent_dirty_blocks_as_one_frame_and_a_coded_bitmap() {
    let (mut a, mut b) = synced_pair();
    let (ca, cb) = (
        a.r.superblock().uuids.current,
        b.r.superblock().uuids.current,
    );
    assert_eq!(ca, cb);
    cut(&mut a, &mut b);
    a.finish_io();
    // Three adjacent blocks, one alone, and two adjacent ones further on.
    for (req, offset) in [
        (1, 0),
        (2, 4096),
        (3, 8192),
        (4, 40960),
        (5, 1 << 20),
        (6, (1 << 20) + 4096),
    ] {
        a.write(req, offset, 4096, 5);
    }
    a.finish_io();
    assert_eq!(a.r.status(0).out_of_sync_bytes, 6 * 4096);
    connect(&mut a, &mut b);
    let sent = settle_recording(&mut a, &mut b);
    let frames: Vec<(u64, usize)> = sent
        .iter()
        .filter_map(|m| match m {
            Message::ResyncData {
                offset_bytes, data, ..
            } => Some((*offset_bytes, data.len())),
            _ => None,
        })
        .collect();
    assert_eq!(
        frames,
        vec![(0, 3 * 4096), (40960, 4096), (1 << 20, 2 * 4096)]
    );
    // The bitmap went run-length coded: one small chunk, no plain page.
    let coded: Vec<usize> = sent
        .iter()
        .filter_map(|m| match m {
            Message::BitmapRle { runs, .. } => Some(runs.len()),
            Message::BitmapChunk { bits, .. } => panic!("a plain page of {} bytes", bits.len()),
            _ => None,
        })
        .collect();
    assert_eq!(coded.len(), 1);
    assert!(coded[0] <= 8, "{coded:?}");
    assert_eq!(b.r.replication(), Replication::Established);
    assert_eq!(b.disk.get(&(40960 / SECTOR)), Some(&5));
}

#[test]
fn invalidate_and_verify_refuse_without_a_good_peer_copy() {
    let (mut a, mut b) = synced_digest_pair(false);
    // The Primary's disk fails a write: it stays connected, Failed.
    a.write(1, 0, 4096, 7);
    // (Its AL transaction completes first; the data write then fails.)
    let local = |a: &Node| {
        a.io.iter().find_map(|x| match x {
            Action::WriteLocal { io, .. } => Some(*io),
            _ => None,
        })
    };
    let io = loop {
        if let Some(io) = local(&a) {
            break io;
        }
        for x in std::mem::take(&mut a.io) {
            a.complete(x);
        }
    };
    a.io.retain(|x| !matches!(x, Action::WriteLocal { .. }));
    a.ev(Event::IoDone { io, ok: false });
    settle(&mut a, &mut b);
    assert_eq!(a.r.disk(), DiskState::Failed);
    assert_eq!(b.r.connection(), Connection::Connected);
    assert_eq!(
        b.admin(2, AdminOp::Invalidate),
        Some(Err(CoreError::PeerNotUpToDate {
            peer: "Failed".into()
        }))
    );
    assert_eq!(
        b.admin(3, AdminOp::Verify),
        Some(Err(CoreError::VerifyNeedsUpToDate {
            local: DiskState::UpToDate,
            peer: "Failed".into()
        }))
    );
    assert_eq!(
        a.admin(4, AdminOp::InvalidateRemote),
        Some(Err(CoreError::SourceNotUpToDate {
            disk: DiskState::Failed
        }))
    );
}
