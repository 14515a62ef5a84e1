//! The link handshake: version and features, then (with a `shared-secret`)
//! an HMAC challenge-response in both directions. Sans-IO: the caller sends
//! what `start`/`on_message` return and feeds what arrives.
//!
//! Sequence, identical in both directions (neither side waits for the other
//! to start): `Hello`, then `AuthChallenge` when a secret is configured. On
//! the peer's challenge we answer `AuthResponse`; on the peer's response we
//! verify it. The handshake is done when the peer's `Hello` is in and, with a
//! secret, the peer's response verified (ours having been sent).
//!
//! Invariants:
//! * The secret never goes on the wire; only `HMAC-SHA256(secret, TAG ||
//!   responder_name || 0 || challenge)` does.
//! * The responder's node name is inside the MAC, so a response obtained from
//!   node A (by reflecting A's own challenge back at it on another
//!   connection) never verifies as coming from node B. A peer challenge equal
//!   to our own is refused outright as well (DRBD's check).
//! * Challenges come from the caller (no RNG here) and must be
//!   `MIN_CHALLENGE_BYTES..=MAX_CHALLENGE_BYTES` long.
//! * Responses are compared in constant time (`hmac::Mac::verify_slice`).

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::frame::{Message, DIGEST_BYTES, MAX_CHALLENGE_BYTES, MIN_CHALLENGE_BYTES};
use crate::ProtoError;

/// This implementation's protocol version; both sides must speak it.
pub const PROTOCOL_VERSION: u32 = 1;
/// Feature bit: the sender has a shared secret and requires authentication.
pub const FEATURE_AUTH: u64 = 1 << 0;
/// Feature bit: the sender supports checksum-based resync and verify.
pub const FEATURE_CSUMS: u64 = 1 << 1;
/// Features this implementation knows; unknown peer bits are ignored
/// (the negotiated set is the intersection).
pub const KNOWN_FEATURES: u64 = FEATURE_AUTH | FEATURE_CSUMS;

/// Domain separation for the response MAC.
const AUTH_TAG: &[u8] = b"hadisk-auth-v1";

/// The `cram-hmac-alg` values hadisk accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlg {
    Sha256,
}

impl HmacAlg {
    /// Maps a resource file's `cram-hmac-alg` (DRBD passes kernel crypto
    /// names: `sha256`, `hmac(sha256)`, `sha1`, `md5`, ...). Only SHA-256 is
    /// implemented; the others are refused with a message saying what to use
    /// rather than silently replaced, because both nodes must agree.
    pub fn from_cram_name(name: &str) -> Result<HmacAlg, ProtoError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "sha256" | "hmac(sha256)" | "sha-256" => Ok(HmacAlg::Sha256),
            _ => Err(ProtoError::UnsupportedHmacAlg {
                name: name.to_string(),
            }),
        }
    }
}

/// What a side is configured with.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// This node's name (its `on NAME` section).
    pub local_name: String,
    /// The peer's name, as this node's resource file says.
    pub peer_name: String,
    /// `shared-secret`, if configured.
    pub secret: Option<Vec<u8>>,
    pub alg: HmacAlg,
    /// Features we offer (besides `FEATURE_AUTH`, set from `secret`).
    pub features: u64,
    /// A fresh random challenge (ignored without a secret).
    pub challenge: Bytes,
}

impl std::fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("HandshakeConfig")
            .field("local_name", &self.local_name)
            .field("peer_name", &self.peer_name)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("alg", &self.alg)
            .field("features", &self.features)
            .finish()
    }
}

/// The result of a completed handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub protocol_version: u32,
    /// Features both sides offered.
    pub features: u64,
    /// Whether the peer proved knowledge of the shared secret.
    pub authenticated: bool,
}

/// What to do after feeding a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Send these, in order.
    pub send: Vec<Message>,
    /// `Some` once the handshake is complete.
    pub done: Option<Negotiated>,
}

/// The handshake state machine of one connection.
#[derive(Debug)]
pub struct Handshake {
    cfg: HandshakeConfig,
    peer_features: Option<u64>,
    answered: bool,
    verified: bool,
    finished: bool,
}

type HmacSha256 = Hmac<Sha256>;

fn mac_for(secret: &[u8], responder: &str, challenge: &[u8]) -> Result<HmacSha256, ProtoError> {
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| ProtoError::EmptySecret)?;
    mac.update(AUTH_TAG);
    mac.update(responder.as_bytes());
    mac.update(&[0]);
    mac.update(challenge);
    Ok(mac)
}

impl Handshake {
    /// Validates the configuration (challenge length, non-empty secret).
    pub fn new(cfg: HandshakeConfig) -> Result<Handshake, ProtoError> {
        if let Some(secret) = &cfg.secret {
            if secret.is_empty() {
                return Err(ProtoError::EmptySecret);
            }
            let len = cfg.challenge.len() as u32;
            if !(MIN_CHALLENGE_BYTES..=MAX_CHALLENGE_BYTES).contains(&len) {
                return Err(ProtoError::BadChallengeLength { len_bytes: len });
            }
        }
        Ok(Handshake {
            cfg,
            peer_features: None,
            answered: false,
            verified: false,
            finished: false,
        })
    }

    fn offered_features(&self) -> u64 {
        let auth = if self.cfg.secret.is_some() {
            FEATURE_AUTH
        } else {
            0
        };
        (self.cfg.features & KNOWN_FEATURES & !FEATURE_AUTH) | auth
    }

    /// The messages to send as soon as the connection is up.
    pub fn start(&self) -> Vec<Message> {
        let mut out = vec![Message::Hello {
            protocol_version: PROTOCOL_VERSION,
            features: self.offered_features(),
        }];
        if self.cfg.secret.is_some() {
            out.push(Message::AuthChallenge {
                challenge: self.cfg.challenge.clone(),
            });
        }
        out
    }

    /// Feeds one received message. An error means: send
    /// `Message::Disconnect { reason: err.to_string() }` and close.
    pub fn on_message(&mut self, msg: Message) -> Result<Step, ProtoError> {
        let mut step = Step::default();
        match msg {
            Message::Hello {
                protocol_version,
                features,
            } if self.peer_features.is_none() => {
                self.on_hello(protocol_version, features)?;
            }
            Message::AuthChallenge { challenge } if self.expects_challenge() => {
                step.send.push(self.answer(&challenge)?);
                self.answered = true;
            }
            Message::AuthResponse { mac } if self.expects_response() => {
                self.verify(&mac)?;
                self.verified = true;
            }
            Message::Disconnect { reason } => return Err(ProtoError::PeerDisconnected { reason }),
            other => {
                return Err(ProtoError::UnexpectedMessage {
                    during: "handshake",
                    got: crate::frame_kind_name(&other).to_string(),
                })
            }
        }
        step.done = self.check_done();
        Ok(step)
    }

    fn on_hello(&mut self, version: u32, features: u64) -> Result<(), ProtoError> {
        if version != PROTOCOL_VERSION {
            return Err(ProtoError::VersionMismatch {
                local: PROTOCOL_VERSION,
                peer: version,
            });
        }
        let local_auth = self.cfg.secret.is_some();
        let peer_auth = features & FEATURE_AUTH != 0;
        if local_auth != peer_auth {
            return Err(ProtoError::AuthConfigMismatch {
                local_has_secret: local_auth,
            });
        }
        self.peer_features = Some(features);
        Ok(())
    }

    fn expects_challenge(&self) -> bool {
        self.cfg.secret.is_some() && self.peer_features.is_some() && !self.answered
    }

    fn expects_response(&self) -> bool {
        self.expects_challenge_done() && !self.verified
    }

    fn expects_challenge_done(&self) -> bool {
        self.cfg.secret.is_some() && self.answered
    }

    fn answer(&self, challenge: &Bytes) -> Result<Message, ProtoError> {
        if challenge.as_ref() == self.cfg.challenge.as_ref() {
            return Err(ProtoError::ReflectedChallenge);
        }
        let secret = self.cfg.secret.as_deref().ok_or(ProtoError::EmptySecret)?;
        let tag = mac_for(secret, &self.cfg.local_name, challenge)?
            .finalize()
            .into_bytes();
        let mut mac = [0u8; DIGEST_BYTES];
        mac.copy_from_slice(&tag);
        Ok(Message::AuthResponse { mac })
    }

    fn verify(&self, response: &[u8; DIGEST_BYTES]) -> Result<(), ProtoError> {
        let secret = self.cfg.secret.as_deref().ok_or(ProtoError::EmptySecret)?;
        mac_for(secret, &self.cfg.peer_name, &self.cfg.challenge)?
            .verify_slice(response)
            .map_err(|_| ProtoError::AuthFailed {
                peer: self.cfg.peer_name.clone(),
            })
    }

    fn check_done(&mut self) -> Option<Negotiated> {
        let peer = self.peer_features?;
        let auth = self.cfg.secret.is_some();
        if self.finished || (auth && !(self.answered && self.verified)) {
            return None;
        }
        self.finished = true;
        Some(Negotiated {
            protocol_version: PROTOCOL_VERSION,
            features: self.offered_features() & peer,
            authenticated: auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(local: &str, peer: &str, secret: Option<&str>, challenge: u8) -> HandshakeConfig {
        HandshakeConfig {
            local_name: local.into(),
            peer_name: peer.into(),
            secret: secret.map(|s| s.as_bytes().to_vec()),
            alg: HmacAlg::Sha256,
            features: FEATURE_CSUMS,
            challenge: Bytes::from(vec![challenge; 32]),
        }
    }

    /// Runs two handshakes against each other; returns both outcomes or the
    /// first error (from side a or b).
    fn run(a: HandshakeConfig, b: HandshakeConfig) -> Result<(Negotiated, Negotiated), ProtoError> {
        let mut ha = Handshake::new(a)?;
        let mut hb = Handshake::new(b)?;
        let mut to_b = ha.start();
        let mut to_a = hb.start();
        let (mut da, mut db) = (None, None);
        while !to_a.is_empty() || !to_b.is_empty() {
            for m in std::mem::take(&mut to_b) {
                let s = hb.on_message(m)?;
                to_a.extend(s.send);
                db = db.or(s.done);
            }
            for m in std::mem::take(&mut to_a) {
                let s = ha.on_message(m)?;
                to_b.extend(s.send);
                da = da.or(s.done);
            }
        }
        Ok((da.unwrap(), db.unwrap()))
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let (a, b) = run(
            cfg("n1", "n2", Some("s3cret"), 1),
            cfg("n2", "n1", Some("s3cret"), 2),
        )
        .unwrap();
        assert!(a.authenticated && b.authenticated);
        assert_eq!(a.features, FEATURE_AUTH | FEATURE_CSUMS);
        assert_eq!(a, b);
    }

    #[test]
    fn no_secret_on_either_side_connects_unauthenticated() {
        let (a, _) = run(cfg("n1", "n2", None, 1), cfg("n2", "n1", None, 2)).unwrap();
        assert!(!a.authenticated);
        assert_eq!(a.features, FEATURE_CSUMS);
    }

    #[test]
    fn wrong_secret_is_refused_with_reason() {
        let err = run(cfg("n1", "n2", Some("a"), 1), cfg("n2", "n1", Some("b"), 2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "authentication of peer n2 failed: the shared-secret differs between the nodes"
        );
    }

    #[test]
    fn secret_on_one_side_only_is_refused() {
        let err = run(cfg("n1", "n2", Some("a"), 1), cfg("n2", "n1", None, 2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shared-secret is configured on the peer but not here: configure the same shared-secret on both nodes"
        );
    }

    #[test]
    fn reflected_challenge_is_refused() {
        let err = run(cfg("n1", "n2", Some("a"), 7), cfg("n2", "n1", Some("a"), 7)).unwrap_err();
        assert_eq!(err, ProtoError::ReflectedChallenge);
    }

    #[test]
    fn a_response_from_the_wrong_node_name_does_not_verify() {
        // A reflector relaying node n1's own answer cannot pass it off as n2's.
        let mut victim = Handshake::new(cfg("n1", "n2", Some("k"), 1)).unwrap();
        let mut twin = Handshake::new(cfg("n1", "n2", Some("k"), 3)).unwrap();
        victim
            .on_message(Message::Hello {
                protocol_version: 1,
                features: FEATURE_AUTH,
            })
            .unwrap();
        twin.on_message(Message::Hello {
            protocol_version: 1,
            features: FEATURE_AUTH,
        })
        .unwrap();
        let reply = twin
            .on_message(Message::AuthChallenge {
                challenge: Bytes::from(vec![1u8; 32]),
            })
            .unwrap();
        victim
            .on_message(Message::AuthChallenge {
                challenge: Bytes::from(vec![9u8; 32]),
            })
            .unwrap();
        let err = victim.on_message(reply.send[0].clone()).unwrap_err();
        assert!(matches!(err, ProtoError::AuthFailed { .. }));
    }

    #[test]
    fn short_challenge_and_bad_alg_are_config_errors() {
        let mut c = cfg("n1", "n2", Some("a"), 1);
        c.challenge = Bytes::from(vec![1u8; 16]);
        assert_eq!(
            Handshake::new(c).unwrap_err(),
            ProtoError::BadChallengeLength { len_bytes: 16 }
        );
        assert_eq!(
            HmacAlg::from_cram_name("HMAC(SHA256)").unwrap(),
            HmacAlg::Sha256
        );
        assert_eq!(
            HmacAlg::from_cram_name("sha1").unwrap_err().to_string(),
            "cram-hmac-alg sha1 is not supported: use cram-hmac-alg sha256 on both nodes"
        );
    }

    #[test]
    fn version_mismatch_and_out_of_order_messages_fail() {
        let mut h = Handshake::new(cfg("n1", "n2", None, 1)).unwrap();
        let err = h
            .on_message(Message::Hello {
                protocol_version: 9,
                features: 0,
            })
            .unwrap_err();
        assert_eq!(err, ProtoError::VersionMismatch { local: 1, peer: 9 });
        let mut h = Handshake::new(cfg("n1", "n2", Some("k"), 1)).unwrap();
        let err = h
            .on_message(Message::AuthResponse { mac: [0; 32] })
            .unwrap_err();
        assert!(matches!(err, ProtoError::UnexpectedMessage { .. }));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let text = format!("{:?}", cfg("n1", "n2", Some("topsecret"), 1));
        assert!(!text.contains("topsecret"));
    }
}
