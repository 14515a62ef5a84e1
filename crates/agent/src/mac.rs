//! Heartbeat signatures with an `authkeys` key: HMAC-SHA1 (`sha1`),
//! HMAC-MD5 (`md5`) or, when the user allowed it, a bare CRC32 (`crc`).
//!
//! Invariants: a tag's length depends only on the method ([`tag_len`]), so
//! the codec knows where the body ends before it computes anything;
//! verification compares in constant time (the `hmac` crate's
//! `verify_slice`), so a forger learns nothing from timing.

use hadisk_config::ha::AuthMethod;
use hmac::{Hmac, Mac};

/// The longest tag any method produces (HMAC-SHA1).
pub const MAX_TAG_BYTES: usize = 20;

/// The tag length of a method.
pub fn tag_len(method: AuthMethod) -> usize {
    match method {
        AuthMethod::Sha1 => 20,
        AuthMethod::Md5 => 16,
        AuthMethod::Crc => 4,
    }
}

/// The tag of `data` under `key` with `method`; its length is
/// [`tag_len`]`(method)`.
pub fn sign(method: AuthMethod, key: &[u8], data: &[u8]) -> Vec<u8> {
    match method {
        AuthMethod::Sha1 => hmac_tag::<Hmac<sha1::Sha1>>(key, data),
        AuthMethod::Md5 => hmac_tag::<Hmac<md5::Md5>>(key, data),
        AuthMethod::Crc => crc32fast::hash(data).to_le_bytes().to_vec(),
    }
}

/// Whether `tag` is the tag of `data` under `key` with `method`.
pub fn verify(method: AuthMethod, key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    match method {
        AuthMethod::Sha1 => hmac_verify::<Hmac<sha1::Sha1>>(key, data, tag),
        AuthMethod::Md5 => hmac_verify::<Hmac<md5::Md5>>(key, data, tag),
        // A checksum, not a secret: no timing to protect.
        AuthMethod::Crc => crc32fast::hash(data).to_le_bytes().as_slice() == tag,
    }
}

fn hmac_tag<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length (long ones are hashed), so `new_from_slice`
    // cannot fail for it; an empty tag would simply never verify.
    match <M as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn hmac_verify<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    match <M as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.verify_slice(tag).is_ok()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rfc_2202_vectors() {
        // RFC 2202 test case 2 for both HMACs.
        let key = b"Jefe";
        let data = b"what do ya want for nothing?";
        assert_eq!(
            hex(&sign(AuthMethod::Md5, key, data)),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        assert_eq!(
            hex(&sign(AuthMethod::Sha1, key, data)),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        for m in [AuthMethod::Sha1, AuthMethod::Md5, AuthMethod::Crc] {
            let tag = sign(m, key, data);
            assert_eq!(tag.len(), tag_len(m));
            assert!(verify(m, key, data, &tag));
            assert!(!verify(m, key, b"what do ya want for nothing!", &tag));
        }
        assert!(!verify(
            AuthMethod::Sha1,
            b"jefe",
            data,
            &sign(AuthMethod::Sha1, key, data)
        ));
    }
}
