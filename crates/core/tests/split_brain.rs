#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Split-brain recovery in the core, step by step: the victim asks to save
//! its diverging blocks (exactly the merged bitmap), writes nothing of the
//! winner's before the save is reported done, resyncs after it; a failed
//! save refuses the connection with the disk untouched; a handshake that
//! ends in a refusal releases writes that waited for it.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use hadisk_bitmap::DirtyBitmap;
use hadisk_core::{
    Action, AdminOp, Attached, CmdId, Config, Connection, CoreError, Event, IoId, Replication,
    ReqId, Resource, SaveRequest, SuperblockState,
};
use hadisk_peer_proto::{DiskState, Message, Role, Uuids};

const SIZE: u64 = 64 << 20;
const SECTOR: u64 = 512;
const BLOCK: u64 = 4096;

struct Node {
    r: Resource,
    now: u64,
    disk: BTreeMap<u64, u8>,
    io: Vec<Action>,
    saves: Vec<(IoId, SaveRequest)>,
    done: Vec<(ReqId, Result<(), CoreError>)>,
    admin: Vec<(CmdId, Result<(), CoreError>)>,
    outbox: VecDeque<Message>,
    wakes: Vec<u64>,
}

fn fresh(yields: bool) -> Node {
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
    cfg.resource = "data".into();
    let (r, actions) = Resource::new(cfg, attached).unwrap();
    let mut n = Node {
        r,
        now: 0,
        disk: BTreeMap::new(),
        io: Vec::new(),
        saves: Vec::new(),
        done: Vec::new(),
        admin: Vec::new(),
        outbox: VecDeque::new(),
        wakes: Vec::new(),
    };
    n.absorb(actions);
    n
}

impl Node {
    fn ev(&mut self, e: Event) {
        self.now += 1;
        let a = self.r.handle(self.now, e);
        self.absorb(a);
    }

    fn absorb(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(m) => self.outbox.push_back(m),
                Action::ClientDone { req, result } => self.done.push((req, result)),
                Action::AdminDone { cmd, result } => self.admin.push((cmd, result)),
                Action::SaveDiverging { io, save } => self.saves.push((io, *save)),
                Action::WakeAt { at_ms } => self.wakes.push(at_ms),
                Action::Transition { .. } | Action::CloseLink { .. } | Action::Dial => {}
                other => self.io.push(other),
            }
        }
    }

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
                let mut v = vec![0u8; len_bytes as usize];
                for (i, chunk) in v.chunks_mut(SECTOR as usize).enumerate() {
                    chunk[0] = *self
                        .disk
                        .get(&(offset_bytes / SECTOR + i as u64))
                        .unwrap_or(&0);
                }
                self.ev(Event::ReadDone {
                    io,
                    data: Some(Bytes::from(v)),
                });
            }
            Action::FlushLocal { io } | Action::WriteMeta { io, .. } => {
                self.ev(Event::IoDone { io, ok: true })
            }
            _ => {}
        }
    }

    fn write(&mut self, req: u64, block: u64, tag: u8) {
        self.ev(Event::ClientWrite {
            req: ReqId(req),
            offset_bytes: block * BLOCK,
            data: Bytes::from(vec![tag; BLOCK as usize]).into(),
            fua: false,
        });
    }

    fn admin(&mut self, cmd: u64, op: AdminOp) {
        self.ev(Event::Admin {
            cmd: CmdId(cmd),
            op,
        });
        self.finish_io();
        assert!(
            self.admin
                .iter()
                .any(|(c, r)| *c == CmdId(cmd) && r.is_ok()),
            "{op:?}: {:?}",
            self.admin
        );
    }

    fn result(&self, req: u64) -> Option<Result<(), CoreError>> {
        self.done
            .iter()
            .find(|(r, _)| *r == ReqId(req))
            .map(|(_, r)| r.clone())
    }

    fn block(&self, block: u64) -> u8 {
        *self.disk.get(&(block * BLOCK / SECTOR)).unwrap_or(&0)
    }

    fn tick(&mut self) -> bool {
        let Some(at) = self.wakes.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        self.ev(Event::Tick);
        true
    }
}

/// Delivers messages and completes I/O (never a save) until nothing moves.
fn settle(a: &mut Node, b: &mut Node) {
    loop {
        a.finish_io();
        b.finish_io();
        if a.outbox.is_empty() && b.outbox.is_empty() {
            if a.tick() | b.tick() {
                continue;
            }
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

fn link_up(a: &mut Node, b: &mut Node) {
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
    a.finish_io();
    b.finish_io();
}

fn connect(n: &mut Node, cmd: u64, discard_my_data: bool) {
    n.admin(cmd, AdminOp::Connect { discard_my_data });
}

/// A synced pair (A Primary), then a split brain: the link is cut, B is
/// promoted, A writes blocks 0..3 (tag 1), B writes block 10 (tag 2) and
/// demotes, both reconnect, B with `--discard-my-data`.
fn split_brain() -> (Node, Node) {
    let (mut a, mut b) = (fresh(false), fresh(true));
    a.admin(1, AdminOp::Promote { force: true });
    connect(&mut a, 2, false);
    connect(&mut b, 2, false);
    link_up(&mut a, &mut b);
    settle(&mut a, &mut b);
    assert_eq!(b.r.disk(), DiskState::UpToDate);
    cut(&mut a, &mut b);
    b.admin(3, AdminOp::Promote { force: false });
    for blk in 0..3 {
        a.write(10 + blk, blk, 1);
    }
    b.write(20, 10, 2);
    a.finish_io();
    b.finish_io();
    assert!(a.result(12).unwrap().is_ok() && b.result(20).unwrap().is_ok());
    b.admin(4, AdminOp::Demote);
    b.admin(5, AdminOp::Disconnect);
    connect(&mut b, 6, true);
    link_up(&mut a, &mut b);
    (a, b)
}

/// Delivers messages until the victim asks to save; returns the request.
fn until_save(a: &mut Node, b: &mut Node) -> (IoId, SaveRequest) {
    for _ in 0..100 {
        if let Some(s) = b.saves.pop() {
            return s;
        }
        a.finish_io();
        b.finish_io();
        while let Some(m) = a.outbox.pop_front() {
            b.ev(Event::Peer(m));
        }
        while let Some(m) = b.outbox.pop_front() {
            a.ev(Event::Peer(m));
        }
    }
    panic!("the victim never asked to save its blocks");
}

#[test]
fn the_victim_saves_the_merged_bitmap_before_any_write_then_resyncs() {
    let (mut a, mut b) = split_brain();
    let (io, save) = until_save(&mut a, &mut b);
    assert_eq!(save.resolved_by, "discard-my-data");
    assert_eq!(save.ranges, vec![(0, 3 * BLOCK), (10 * BLOCK, BLOCK)]);
    assert_eq!(save.size_bytes, SIZE);
    assert_eq!(save.local_uuids, b.r.status(0).uuids);
    assert_eq!(save.peer_uuids, a.r.status(0).uuids);
    assert_eq!(a.r.replication(), Replication::SyncSource);
    assert_eq!(b.r.replication(), Replication::SyncTarget);
    assert_eq!(b.r.disk(), DiskState::UpToDate, "nothing discarded yet");
    // The winner writes meanwhile: mirrored, but not written on the victim
    // before its save is done (and no resync request is sent).
    a.write(30, 10, 3);
    a.finish_io();
    for _ in 0..5 {
        while let Some(m) = a.outbox.pop_front() {
            b.ev(Event::Peer(m));
        }
        b.finish_io();
        while let Some(m) = b.outbox.pop_front() {
            assert!(
                !matches!(m, Message::ResyncRequest { .. }),
                "resync before the save"
            );
            a.ev(Event::Peer(m));
        }
        a.finish_io();
    }
    assert_eq!(b.block(10), 2, "the victim's block is still its own");
    assert_eq!(
        a.result(30),
        None,
        "the mirrored write waits for the victim"
    );
    b.ev(Event::IoDone { io, ok: true });
    settle(&mut a, &mut b);
    assert_eq!(a.result(30), Some(Ok(())));
    assert_eq!(b.r.disk(), DiskState::UpToDate);
    assert_eq!(b.r.replication(), Replication::Established);
    for blk in [0, 1, 2, 10] {
        assert_eq!(b.block(blk), a.block(blk), "block {blk}");
    }
    assert_eq!(b.block(10), 3);
    assert_eq!(b.block(0), 1);
    assert!(b.saves.is_empty());
    assert!(a.saves.is_empty(), "the winner saves nothing");
}

#[test]
fn a_failed_save_refuses_the_connection_and_discards_nothing() {
    let (mut a, mut b) = split_brain();
    let (io, _) = until_save(&mut a, &mut b);
    b.ev(Event::IoDone { io, ok: false });
    settle(&mut a, &mut b);
    let st = b.r.status(0);
    assert_eq!(st.connection, Connection::StandAlone);
    assert_eq!(st.last_error.as_deref(), Some("split brain: this node's changes were to be discarded, but its diverging blocks could not be saved to the split-brain directory (see the log); nothing was discarded and the connection is refused (StandAlone). Fix the directory (space, permissions: `split-brain-dir` in the resource file), then run `hadisk connect --discard-my-data data` again"));
    assert_eq!(
        st.disk,
        DiskState::UpToDate,
        "still consistent, still its own"
    );
    assert_eq!(b.block(10), 2);
    assert_eq!(b.block(0), 0);
    assert_eq!(a.r.connection(), Connection::Connecting);
    assert_eq!(
        a.r.status(0)
            .last_error
            .as_deref()
            .map(|e| e.starts_with("the peer disconnected: split brain: this node's changes")),
        Some(true)
    );
}

/// Both Primary while disconnected; A's write into a new extent has its AL
/// transaction in flight when the link comes up; the transaction completes
/// during the handshake, which ends refused (split brain, default policy).
/// The write must complete (it hung before `link_down` released it).
#[test]
fn a_refused_handshake_releases_writes_that_waited_for_it() {
    let (mut a, mut b) = (fresh(false), fresh(true));
    a.admin(1, AdminOp::Promote { force: true });
    connect(&mut a, 2, false);
    connect(&mut b, 2, false);
    link_up(&mut a, &mut b);
    settle(&mut a, &mut b);
    cut(&mut a, &mut b);
    b.admin(3, AdminOp::Promote { force: false });
    a.write(40, 5000, 7);
    let meta: Vec<Action> = std::mem::take(&mut a.io);
    assert!(
        matches!(meta.as_slice(), [Action::WriteMeta { .. }]),
        "the AL transaction first: {meta:?}"
    );
    link_up(&mut a, &mut b);
    for m in meta {
        a.complete(m);
    }
    settle(&mut a, &mut b);
    assert_eq!(a.r.connection(), Connection::StandAlone);
    assert!(a
        .r
        .status(0)
        .last_error
        .unwrap()
        .starts_with("split brain detected"));
    assert_eq!(a.result(40), Some(Ok(())));
    assert_eq!(a.r.role(), Role::Primary);
}

#[test]
fn discard_my_data_is_refused_on_a_primary_and_on_a_live_link() {
    let (mut a, mut b) = (fresh(false), fresh(true));
    a.admin(1, AdminOp::Promote { force: true });
    a.ev(Event::Admin {
        cmd: CmdId(2),
        op: AdminOp::Connect {
            discard_my_data: true,
        },
    });
    assert_eq!(
        a.admin.last(),
        Some(&(CmdId(2), Err(CoreError::DiscardWhilePrimary)))
    );
    assert_eq!(a.r.connection(), Connection::StandAlone, "nothing changed");
    connect(&mut a, 3, false);
    connect(&mut b, 3, false);
    link_up(&mut a, &mut b);
    settle(&mut a, &mut b);
    b.ev(Event::Admin {
        cmd: CmdId(4),
        op: AdminOp::Connect {
            discard_my_data: true,
        },
    });
    assert_eq!(
        b.admin.last(),
        Some(&(CmdId(4), Err(CoreError::DiscardWhileConnected)))
    );
    assert_eq!(
        CoreError::DiscardWhileConnected.to_string(),
        "the link to the peer is up: --discard-my-data applies to a new connection; disconnect first (hadisk disconnect RES)"
    );
}
