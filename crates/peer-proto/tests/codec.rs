#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Round trips of every message kind, streaming in arbitrary pieces, and
//! hostile input: arbitrary bytes never panic and lengths are checked from
//! the header alone.

use bytes::{Bytes, BytesMut};
use hadisk_peer_proto::frame::{BLOCK_BYTES, FRAME_MAGIC, HEADER_LEN, MAX_DATA_BYTES};
use hadisk_peer_proto::{
    decode, DataHead, Decoder, DigestAlg, DiskState, Kind, Message, Params, ProtoError, Role, Uuids,
};
use proptest::prelude::*;

fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Primary),
        Just(Role::Secondary),
        Just(Role::Unknown)
    ]
}

fn arb_disk() -> impl Strategy<Value = DiskState> {
    (1u8..=7).prop_map(|c| DiskState::from_wire(c).unwrap())
}

fn arb_uuids() -> impl Strategy<Value = Uuids> {
    any::<[u64; 4]>().prop_map(|u| Uuids {
        current: u[0],
        bitmap: u[1],
        history: [u[2], u[3]],
    })
}

fn arb_blocks() -> impl Strategy<Value = Bytes> {
    (0usize..17, any::<u8>()).prop_map(|(n, b)| Bytes::from(vec![b; n * 512]))
}

fn arb_offset() -> impl Strategy<Value = u64> {
    (0u64..1 << 40).prop_map(|b| b * BLOCK_BYTES)
}

fn arb_len() -> impl Strategy<Value = u32> {
    (0u32..4096).prop_map(|b| b * BLOCK_BYTES as u32)
}

fn arb_alg() -> impl Strategy<Value = DigestAlg> {
    (0usize..4).prop_map(|i| hadisk_peer_proto::digest::DIGEST_ALGS[i])
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u32>(), any::<u64>()).prop_map(|(protocol_version, features)| Message::Hello {
            protocol_version,
            features
        }),
        prop::collection::vec(any::<u8>(), 32..=64).prop_map(|c| Message::AuthChallenge {
            challenge: Bytes::from(c)
        }),
        any::<[u8; 32]>().prop_map(|mac| Message::AuthResponse { mac }),
        (
            any::<u64>(),
            arb_uuids(),
            any::<u64>(),
            arb_role(),
            arb_disk(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(
                    size_bytes,
                    uuids,
                    dirty_blocks,
                    role,
                    disk,
                    crashed_primary,
                    discard_my_data,
                )| {
                    Message::Params(Params {
                        size_bytes,
                        uuids,
                        dirty_blocks,
                        role,
                        disk,
                        crashed_primary,
                        discard_my_data,
                    })
                }
            ),
        (
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..512),
            any::<bool>()
        )
            .prop_map(|(first_block, bits, last)| Message::BitmapChunk {
                first_block,
                bits: Bytes::from(bits),
                last
            }),
        (any::<u64>(), arb_offset(), arb_blocks(), any::<bool>()).prop_map(
            |(seq, offset_bytes, data, fua)| Message::Data {
                seq,
                offset_bytes,
                data: data.into(),
                fua
            }
        ),
        any::<u64>().prop_map(|seq| Message::WriteAck { seq }),
        any::<u64>().prop_map(|seq| Message::NegAck { seq }),
        any::<u64>().prop_map(|seq| Message::Flush { seq }),
        any::<u64>().prop_map(|seq| Message::FlushAck { seq }),
        any::<u64>().prop_map(|seq| Message::Ping { seq }),
        any::<u64>().prop_map(|seq| Message::PingAck { seq }),
        (any::<u64>(), arb_offset(), arb_len()).prop_map(|(seq, offset_bytes, len_bytes)| {
            Message::ResyncRequest {
                seq,
                offset_bytes,
                len_bytes,
            }
        }),
        (any::<u64>(), arb_offset(), arb_len()).prop_map(|(seq, offset_bytes, len_bytes)| {
            Message::InSync {
                seq,
                offset_bytes,
                len_bytes,
            }
        }),
        (arb_offset(), arb_len()).prop_map(|(offset_bytes, len_bytes)| Message::OutOfSync {
            offset_bytes,
            len_bytes
        }),
        (any::<u64>(), arb_offset(), arb_blocks()).prop_map(|(seq, offset_bytes, data)| {
            Message::ResyncData {
                seq,
                offset_bytes,
                data,
            }
        }),
        (
            any::<u64>(),
            arb_offset(),
            1u32..=64,
            arb_alg(),
            any::<bool>(),
            any::<u8>()
        )
            .prop_map(|(seq, offset_bytes, blocks, alg, verify, fill)| {
                let len_bytes = blocks * 4096 - u32::from(fill % 8) * 512;
                let digests = Bytes::from(vec![fill; blocks as usize * alg.len()]);
                if verify {
                    Message::VerifyRequest {
                        seq,
                        offset_bytes,
                        len_bytes,
                        alg,
                        digests,
                    }
                } else {
                    Message::CsumRequest {
                        seq,
                        offset_bytes,
                        len_bytes,
                        alg,
                        digests,
                    }
                }
            }),
        (any::<u64>(), arb_offset(), arb_len()).prop_map(|(seq, offset_bytes, len_bytes)| {
            Message::CsumReply {
                seq,
                offset_bytes,
                len_bytes,
            }
        }),
        (any::<u64>(), arb_offset(), 1u32..=2048, any::<u8>()).prop_map(
            |(seq, offset_bytes, blocks, fill)| Message::VerifyReply {
                seq,
                offset_bytes,
                len_bytes: blocks * 4096,
                differ: Bytes::from(vec![fill; blocks.div_ceil(8) as usize]),
            }
        ),
        Just(Message::VerifyStart),
        Just(Message::VerifyEnd),
        (any::<u64>(), any::<bool>()).prop_map(|(seq, sender_is_target)| {
            Message::FullSyncRequest {
                seq,
                sender_is_target,
            }
        }),
        (any::<u64>(), any::<bool>(), "[a-z ]{0,40}").prop_map(|(seq, granted, reason)| {
            Message::FullSyncReply {
                seq,
                granted,
                reason,
            }
        }),
        (arb_role(), arb_disk(), arb_uuids())
            .prop_map(|(role, disk, uuids)| Message::StateChange { role, disk, uuids }),
        "[a-z ]{0,80}".prop_map(|reason| Message::Disconnect { reason }),
        any::<u64>().prop_map(|seq| Message::PromoteRequest { seq }),
        (any::<u64>(), any::<bool>())
            .prop_map(|(seq, granted)| Message::PromoteReply { seq, granted }),
        (
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..512),
            any::<bool>()
        )
            .prop_map(|(first_block, runs, last)| Message::BitmapRle {
                first_block,
                runs: Bytes::from(runs),
                last
            }),
        any::<bool>().prop_map(|paused| Message::SyncPause { paused }),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips_through_a_stream(
        msgs in prop::collection::vec(arb_message(), 1..8),
        cut in 1usize..97,
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode().unwrap().write_to(&mut wire).unwrap();
        }
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        for piece in wire.chunks(cut) {
            dec.feed(piece);
            while let Some(m) = dec.next_message().unwrap() {
                out.push(m);
            }
        }
        prop_assert_eq!(out, msgs);
        prop_assert_eq!(dec.buffered_bytes(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode(&mut buf);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        kind in 1u16..=32, flags in 0u16..8, seq in any::<u64>(), offset in any::<u64>(),
        body in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut buf = BytesMut::from(&header(kind, flags, seq, offset, body.len() as u32)[..]);
        buf.extend_from_slice(&body);
        let _ = decode(&mut buf);
    }
}

fn header(kind: u16, flags: u16, seq: u64, offset: u64, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    h[4..6].copy_from_slice(&kind.to_le_bytes());
    h[6..8].copy_from_slice(&flags.to_le_bytes());
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&offset.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

#[test]
fn header_layout_is_fixed_little_endian() {
    let f = Message::Data {
        seq: 7,
        offset_bytes: 8192,
        data: Bytes::from(vec![0u8; 4096]).into(),
        fua: true,
    }
    .encode()
    .unwrap();
    assert_eq!(&f.header[0..4], b"HDSK");
    assert_eq!(f.header, header(6, 1, 7, 8192, 4096));
    assert_eq!(f.len_bytes(), 32 + 4096);
}

#[test]
fn data_payload_is_shared_not_copied() {
    let data = Bytes::from(vec![5u8; 8192]);
    let f = Message::Data {
        seq: 1,
        offset_bytes: 0,
        data: data.clone().into(),
        fua: false,
    }
    .encode()
    .unwrap();
    assert_eq!(f.payload.as_bytes().unwrap().as_ptr(), data.as_ptr());
    let mut wire = BytesMut::new();
    f.write_to(&mut wire).unwrap();
    let Some(Message::Data { data: got, .. }) = decode(&mut wire).unwrap() else {
        panic!("not data")
    };
    assert_eq!(got, data.into());
}

#[test]
fn oversized_length_is_refused_from_the_header_alone() {
    let mut buf = BytesMut::from(&header(6, 0, 1, 0, MAX_DATA_BYTES + 4096)[..]);
    assert_eq!(
        decode(&mut buf).unwrap_err(),
        ProtoError::BadPayloadLength {
            kind: Kind::Data,
            len_bytes: u64::from(MAX_DATA_BYTES) + 4096
        }
    );
    let mut buf = BytesMut::from(&header(4, 0, 0, 0, 50)[..]);
    assert_eq!(
        decode(&mut buf).unwrap_err().to_string(),
        "Params message with an invalid payload length of 50 bytes"
    );
}

#[test]
fn incomplete_is_not_an_error() {
    let mut buf = BytesMut::from(&header(6, 0, 1, 0, 4096)[..]);
    assert_eq!(decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), HEADER_LEN);
    let mut short = BytesMut::from(&b"HDS"[..]);
    assert_eq!(decode(&mut short).unwrap(), None);
}

#[test]
fn garbage_gives_specific_errors() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n......"[..]);
    assert_eq!(
        decode(&mut buf).unwrap_err().to_string(),
        "bad frame magic 0x20544547: the peer is not a hadisk node or the stream is corrupt"
    );
    let mut h = header(6, 0, 1, 0, 4096);
    h[10] ^= 1;
    assert!(matches!(
        decode(&mut BytesMut::from(&h[..])).unwrap_err(),
        ProtoError::HeaderChecksum { .. }
    ));
    let mut buf = BytesMut::from(&header(99, 0, 0, 0, 0)[..]);
    assert_eq!(
        decode(&mut buf).unwrap_err(),
        ProtoError::UnknownKind { code: 99 }
    );
    let mut buf = BytesMut::from(&header(7, 0x80, 0, 0, 0)[..]);
    assert_eq!(
        decode(&mut buf).unwrap_err(),
        ProtoError::UnknownFlags {
            kind: Kind::WriteAck,
            flags: 0x80
        }
    );
    let mut buf = BytesMut::from(&header(6, 0, 0, 100, 4096)[..]);
    buf.extend_from_slice(&[0u8; 4096]);
    assert_eq!(
        decode(&mut buf).unwrap_err(),
        ProtoError::BadRange {
            kind: Kind::Data,
            offset_bytes: 100,
            len_bytes: 4096
        }
    );
    let mut buf = BytesMut::from(&header(17, 0, 0, 0, 34)[..]);
    buf.extend_from_slice(&[9u8; 34]);
    assert_eq!(
        decode(&mut buf).unwrap_err(),
        ProtoError::UnknownRole { code: 9 }
    );
}

#[test]
fn encoder_refuses_unaligned_data() {
    let err = Message::Data {
        seq: 1,
        offset_bytes: 0,
        data: Bytes::from(vec![0u8; 100]).into(),
        fua: false,
    }
    .encode()
    .unwrap_err();
    assert_eq!(
        err,
        ProtoError::BadPayloadLength {
            kind: Kind::Data,
            len_bytes: 100
        }
    );
}

/// A digest frame whose digest count does not match its range, or with an
/// unknown algorithm, is refused with a specific error (never trusted).
#[test]
fn digest_frames_are_checked_against_their_range() {
    let frame = |len: u32, alg: u8, digests: usize| {
        let mut body = len.to_le_bytes().to_vec();
        body.push(alg);
        body.extend(std::iter::repeat_n(0u8, digests));
        let mut buf = BytesMut::from(&header(13, 0, 1, 0, body.len() as u32)[..]);
        buf.extend_from_slice(&body);
        decode(&mut buf)
    };
    // Two blocks of SHA-256 (code 1): 64 bytes of digests.
    assert!(matches!(
        frame(8192, 1, 64),
        Ok(Some(Message::CsumRequest { .. }))
    ));
    assert_eq!(
        frame(8192, 1, 32),
        Err(ProtoError::BadPayloadLength {
            kind: Kind::CsumRequest,
            len_bytes: 32
        })
    );
    assert_eq!(
        frame(8192, 9, 64),
        Err(ProtoError::UnknownDigestAlg { code: 9 })
    );
    assert_eq!(
        frame(0, 4, 0),
        Err(ProtoError::BadPayloadLength {
            kind: Kind::CsumRequest,
            len_bytes: 0
        })
    );
    // Encoding refuses the same mismatch.
    let bad = Message::VerifyRequest {
        seq: 1,
        offset_bytes: 0,
        len_bytes: 4096,
        alg: DigestAlg::Md5,
        digests: Bytes::from(vec![0u8; 15]),
    };
    assert_eq!(
        bad.encode().err(),
        Some(ProtoError::BadPayloadLength {
            kind: Kind::VerifyRequest,
            len_bytes: 15
        })
    );
}

#[test]
fn a_large_data_frame_can_be_taken_header_first_and_completed_by_the_caller() {
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let f = Message::Data {
        seq: 9,
        offset_bytes: 1 << 20,
        data: Bytes::from(data.clone()).into(),
        fua: true,
    }
    .encode()
    .unwrap();
    let mut wire = BytesMut::new();
    f.write_to(&mut wire).unwrap();

    // The whole frame buffered: the ordinary decode takes it, not this.
    let mut dec = Decoder::new();
    dec.feed(&wire);
    assert!(dec.take_data_head(4096).unwrap().is_none());

    // Header and the first 1000 payload bytes buffered.
    let mut dec = Decoder::new();
    dec.feed(&wire[..32 + 1000]);
    assert!(
        dec.take_data_head(65537).unwrap().is_none(),
        "below the minimum"
    );
    let head = dec.take_data_head(4096).unwrap().unwrap();
    assert_eq!(dec.buffered_bytes(), 0);
    assert_eq!(
        (head.seq, head.offset_bytes, head.fua, head.len_bytes),
        (9, 1 << 20, true, 65536)
    );
    assert_eq!(&head.prefix[..], &data[..1000]);
    let short = DataHead {
        prefix: Bytes::new(),
        ..head
    };
    assert!(matches!(
        short.into_message(Bytes::from(vec![0u8; 512]).into()),
        Err(ProtoError::BadPayloadLength { .. })
    ));
    let mut dec = Decoder::new();
    dec.feed(&wire[..40]);
    let head = dec.take_data_head(4096).unwrap().unwrap();
    let Message::Data { seq, data: got, .. } =
        head.into_message(Bytes::from(data.clone()).into()).unwrap()
    else {
        panic!("not data")
    };
    assert_eq!((seq, got), (9, Bytes::from(data).into()));

    // Other frames are left to decode; a corrupt header is an error.
    let mut dec = Decoder::new();
    dec.feed(&Message::Ping { seq: 1 }.encode().unwrap().header);
    assert!(dec.take_data_head(0).unwrap().is_none());
    assert_eq!(dec.buffered_bytes(), 32);
    let mut bad = wire[..40].to_vec();
    bad[10] ^= 1;
    let mut dec = Decoder::new();
    dec.feed(&bad);
    assert!(dec.take_data_head(4096).is_err());
}
