#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The heartbeat codec and the replay guard: round trips, hostile bytes,
//! flipped bits, wrong keys, replays, restarts.

use std::path::Path;

use hadisk_agent::replay::{Fresh, Receiver, Rejected, ReplayError, ReplayGuard, Sequencer};
use hadisk_agent::wire::{
    decode, encode, Heartbeat, Mode, WireError, HEADER_BYTES, MAX_MESSAGE_BYTES,
};
use hadisk_config::ha::{parse_authkeys, Authkeys};
use proptest::prelude::*;

fn keys(text: &str) -> Authkeys {
    parse_authkeys(text, Path::new("authkeys"), true).unwrap()
}

fn seed_keys() -> Authkeys {
    keys("auth 1\n1 md5 hatest\n")
}

fn hb(from: &str, generation: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        from: from.into(),
        generation,
        seq,
        mode: Mode::Auto,
        held: 0b1,
        failed: 0,
    }
}

fn signed(k: &Authkeys, h: &Heartbeat) -> Vec<u8> {
    encode(h, k.active_key().unwrap()).unwrap()
}

#[test]
fn layout_is_the_documented_one() {
    let k = seed_keys();
    let h = Heartbeat {
        from: "NAS1".into(),
        generation: 0x0102_0304_0506_0708,
        seq: 9,
        mode: Mode::Takeover,
        held: 0x8001,
        failed: 0x0002,
    };
    let b = signed(&k, &h);
    assert_eq!(b.len(), HEADER_BYTES + 4 + 16);
    assert_eq!(&b[0..4], b"HDHB");
    assert_eq!(b[4..8], [1, 2, 1, 4]); // version, md5, key 1, name length
    assert_eq!(b[8..16], [8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(b[16..24], [9, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(b[24..32], [2, 0, 0x01, 0x80, 0x02, 0, 0, 0]);
    assert_eq!(&b[32..36], b"NAS1");
    assert_eq!(decode(&b, &k).unwrap(), h);
}

#[test]
fn every_method_round_trips_and_the_longest_fits() {
    let k = keys("auth 1\n1 sha1 s\n2 md5 m\n3 crc\n");
    let name = "n".repeat(64);
    for index in [1, 2, 3] {
        let h = hb(&name, u64::MAX, u64::MAX);
        let b = encode(&h, k.key(index).unwrap()).unwrap();
        assert!(b.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(decode(&b, &k).unwrap(), h);
    }
    assert_eq!(MAX_MESSAGE_BYTES, 32 + 64 + 20);
}

#[test]
fn unsendable_names_are_refused() {
    let k = seed_keys();
    for bad in ["", "has space", "ünï", &"n".repeat(65)] {
        assert_eq!(
            encode(&hb(bad, 1, 1), k.active_key().unwrap()).unwrap_err(),
            WireError::Name(bad.into())
        );
    }
}

#[test]
fn wrong_keys_and_malformed_datagrams_have_exact_errors() {
    let k = seed_keys();
    let b = signed(&k, &hb("NAS1", 1, 1));
    let other = keys("auth 1\n1 md5 other\n");
    assert_eq!(decode(&b, &other), Err(WireError::BadSignature(1)));
    assert_eq!(
        decode(&b, &other).unwrap_err().to_string(),
        "bad signature (key 1): wrong authkeys on one node, or a forged or corrupted message"
    );
    let sha = keys("auth 1\n1 sha1 hatest\n");
    assert_eq!(
        decode(&b, &sha).unwrap_err().to_string(),
        "signed with key 1 as md5, but authkeys defines key 1 as sha1; give both nodes the same authkeys"
    );
    let two = keys("auth 2\n2 md5 hatest\n");
    assert_eq!(
        decode(&b, &two).unwrap_err().to_string(),
        "signed with key 1, which authkeys does not define; give both nodes the same authkeys"
    );
    assert_eq!(
        decode(&b[..31], &k).unwrap_err().to_string(),
        "31-byte datagram is not a heartbeat (32-116 bytes)"
    );
    assert_eq!(decode(&[0; 117], &k), Err(WireError::Size { len: 117 }));
    assert_eq!(
        decode(&b[..b.len() - 1], &k).unwrap_err().to_string(),
        "51-byte datagram does not match its name length 4"
    );
    let mut m = b.clone();
    m[0] = b'X';
    assert_eq!(decode(&m, &k), Err(WireError::Magic));
    let mut m = b.clone();
    m[4] = 2;
    assert_eq!(
        decode(&m, &k).unwrap_err().to_string(),
        "heartbeat format version 2, this agent reads 1; upgrade both nodes"
    );
    let mut m = b.clone();
    m[5] = 9;
    assert_eq!(decode(&m, &k), Err(WireError::Method(9)));
    let mut m = b.clone();
    m[7] = 0;
    assert_eq!(
        decode(&m, &k),
        Err(WireError::Length {
            len: b.len(),
            name_len: 0
        })
    );
}

#[test]
fn signed_but_invalid_fields_are_refused() {
    // A peer with the right key and a newer format: refused, not guessed.
    let k = keys("auth 3\n3 crc\n");
    let mut b = signed(&k, &hb("b", 1, 1));
    let body = b.len() - 4;
    b[24] = 7;
    let crc = crc32fast::hash(&b[..body]).to_le_bytes();
    b[body..].copy_from_slice(&crc);
    assert_eq!(decode(&b, &k), Err(WireError::Field("mode")));
    b[24] = 0;
    b[30] = 1;
    let crc = crc32fast::hash(&b[..body]).to_le_bytes();
    b[body..].copy_from_slice(&crc);
    assert_eq!(
        decode(&b, &k).unwrap_err().to_string(),
        "signed heartbeat with an invalid field: reserved"
    );
}

#[test]
fn every_single_bit_flip_is_rejected() {
    for text in [
        "auth 1\n1 md5 hatest\n",
        "auth 1\n1 sha1 hatest\n",
        "auth 1\n1 crc\n",
    ] {
        let k = keys(text);
        let b = signed(&k, &hb("NAS1", 77, 1234));
        for bit in 0..b.len() * 8 {
            let mut m = b.clone();
            m[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode(&m, &k).is_err(),
                "{text:?}: flipping bit {bit} was accepted"
            );
        }
    }
}

#[test]
fn replay_guard_rules() {
    let mut g = ReplayGuard::default();
    assert_eq!(g.check(5, 10), Ok(Fresh::First));
    assert_eq!(g.check(5, 11), Ok(Fresh::Next { lost: 0 }));
    assert_eq!(g.check(5, 14), Ok(Fresh::Next { lost: 2 }));
    assert_eq!(
        g.check(5, 14),
        Err(ReplayError::Replayed {
            generation: 5,
            seq: 14,
            last_seq: 14
        })
    );
    assert_eq!(
        g.check(5, 12),
        Err(ReplayError::Replayed {
            generation: 5,
            seq: 12,
            last_seq: 14
        })
    );
    assert_eq!(
        g.check(4, 100),
        Err(ReplayError::OldGeneration {
            generation: 4,
            current: 5
        })
    );
    assert_eq!(g.check(6, 1), Ok(Fresh::Restarted { previous: 5 }));
    // The old incarnation cannot come back.
    assert_eq!(
        g.check(5, 15),
        Err(ReplayError::OldGeneration {
            generation: 5,
            current: 6
        })
    );
    assert_eq!(
        g.check(6, 1).unwrap_err().to_string(),
        "replayed or reordered heartbeat: generation 6 sequence 1, last accepted 1"
    );
}

#[test]
fn sequencer_counts_from_one() {
    let mut s = Sequencer::new(42);
    assert_eq!(s.stamp(), (42, 1));
    assert_eq!(s.stamp(), (42, 2));
}

#[test]
fn receiver_drops_own_stranger_replayed_and_forged() {
    let k = seed_keys();
    let mut r = Receiver::new("NAS2", "NAS1");
    let mut seq = Sequencer::new(3);
    let send = |s: &mut Sequencer, from: &str| {
        let (g, n) = s.stamp();
        signed(&k, &hb(from, g, n))
    };
    let first = send(&mut seq, "NAS1");
    assert_eq!(r.accept(&first, &k).unwrap().1, Fresh::First);
    assert_eq!(
        r.accept(&first, &k).unwrap_err(),
        Rejected::Replay(ReplayError::Replayed {
            generation: 3,
            seq: 1,
            last_seq: 1
        })
    );
    assert_eq!(r.accept(&send(&mut seq, "nas2"), &k), Err(Rejected::Own));
    assert_eq!(
        r.accept(&send(&mut seq, "NAS3"), &k)
            .unwrap_err()
            .to_string(),
        "heartbeat from 'NAS3', which is not this pair's peer"
    );
    // A forged message does not move the replay state: the next real one
    // (sequence 4 here) is still accepted.
    let wrong = keys("auth 1\n1 md5 guess\n");
    let forged = signed(&wrong, &hb("NAS1", 3, 1000));
    assert_eq!(
        r.accept(&forged, &k),
        Err(Rejected::Wire(WireError::BadSignature(1)))
    );
    let (h, fresh) = r.accept(&send(&mut seq, "NAS1"), &k).unwrap();
    assert_eq!((h.seq, fresh), (4, Fresh::Next { lost: 2 }));
    // The peer restarts: a new generation, sequence from 1 again.
    let mut seq2 = Sequencer::new(4);
    assert_eq!(
        r.accept(&send(&mut seq2, "NAS1"), &k).unwrap().1,
        Fresh::Restarted { previous: 3 }
    );
}

fn arb_heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        "[A-Za-z0-9._-]{1,64}",
        any::<u64>(),
        any::<u64>(),
        prop_oneof![Just(Mode::Auto), Just(Mode::Standby), Just(Mode::Takeover)],
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(from, generation, seq, mode, held, failed)| Heartbeat {
            from,
            generation,
            seq,
            mode,
            held,
            failed,
        })
}

proptest! {
    #[test]
    fn round_trip(h in arb_heartbeat(), index in 1u8..=3) {
        let k = keys("auth 1\n1 sha1 s\n2 md5 m\n3 crc\n");
        let b = encode(&h, k.key(index).unwrap()).unwrap();
        prop_assert_eq!(decode(&b, &k).unwrap(), h);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&b, &seed_keys());
    }

    /// Garbage behind a valid header: still never a panic, and never
    /// accepted with an HMAC key.
    #[test]
    fn valid_header_with_garbage(tail in proptest::collection::vec(any::<u8>(), 0..100), name_len in any::<u8>()) {
        let mut b = signed(&seed_keys(), &hb("NAS1", 1, 1))[..32].to_vec();
        b[7] = name_len;
        b.extend_from_slice(&tail);
        prop_assert!(decode(&b, &seed_keys()).is_err());
    }

    #[test]
    fn a_flipped_bit_is_rejected(h in arb_heartbeat(), bit in any::<usize>()) {
        let k = keys("auth 1\n1 sha1 secret\n");
        let mut b = encode(&h, k.active_key().unwrap()).unwrap();
        let bit = bit % (b.len() * 8);
        b[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode(&b, &k).is_err());
    }
}
