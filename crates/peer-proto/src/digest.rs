//! Block digests for online verify (`verify-alg`) and checksum-based resync
//! (`csums-alg`): one digest per 4 KiB block of a range, concatenated.
//!
//! The digest is computed per [`BLOCK_BYTES`] block (the last block of a
//! range may be shorter), so a mismatch names exactly the blocks that
//! differ: verify marks only those out of sync and a csums resync sends
//! only those. The algorithms are DRBD's names for the kernel's crypto
//! transforms, implemented by RustCrypto (`sha2`, `sha1`, `md-5`) and the
//! `crc32c` crate (hardware CRC32C where the CPU has it). Pure: no I/O.
//!
//! Wire cost per 4 KiB block: 32 bytes (sha256), 20 (sha1), 16 (md5),
//! 4 (crc32c), i.e. 0.78 % down to 0.1 % of the data.

use std::fmt;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::frame::BLOCK_BYTES;

/// Longest digest of any algorithm (SHA-256).
pub const MAX_DIGEST_LEN: usize = 32;

/// A digest algorithm of `verify-alg` / `csums-alg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    Sha256,
    Sha1,
    Md5,
    Crc32c,
}

/// Every algorithm, in the order error messages list them.
pub const DIGEST_ALGS: [DigestAlg; 4] = [
    DigestAlg::Sha256,
    DigestAlg::Sha1,
    DigestAlg::Md5,
    DigestAlg::Crc32c,
];

/// A `verify-alg` / `csums-alg` value that is not a supported algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown digest algorithm \"{name}\": use one of {}", valid_names())]
pub struct UnknownDigest {
    pub name: String,
}

/// "sha256, sha1, md5, crc32c".
pub fn valid_names() -> String {
    DIGEST_ALGS
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl DigestAlg {
    /// The DRBD (kernel crypto) name, as written in a resource file.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Md5 => "md5",
            DigestAlg::Crc32c => "crc32c",
        }
    }

    /// Parses a resource file's value (case-insensitive, as the kernel's
    /// crypto API names are lower case but users write `SHA1`).
    pub fn from_name(name: &str) -> Result<DigestAlg, UnknownDigest> {
        DIGEST_ALGS
            .iter()
            .copied()
            .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownDigest {
                name: name.to_string(),
            })
    }

    /// Bytes of one block's digest.
    pub fn len(self) -> usize {
        match self {
            DigestAlg::Sha256 => 32,
            DigestAlg::Sha1 => 20,
            DigestAlg::Md5 => 16,
            DigestAlg::Crc32c => 4,
        }
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    pub fn is_empty(self) -> bool {
        false
    }

    /// The code in a digest frame.
    pub fn to_wire(self) -> u8 {
        match self {
            DigestAlg::Sha256 => 1,
            DigestAlg::Sha1 => 2,
            DigestAlg::Md5 => 3,
            DigestAlg::Crc32c => 4,
        }
    }

    pub fn from_wire(code: u8) -> Option<DigestAlg> {
        DIGEST_ALGS.iter().copied().find(|a| a.to_wire() == code)
    }

    /// Appends the digest of one block to `out`.
    pub fn digest_into(self, block: &[u8], out: &mut Vec<u8>) {
        match self {
            DigestAlg::Sha256 => out.extend_from_slice(&Sha256::digest(block)),
            DigestAlg::Sha1 => out.extend_from_slice(&Sha1::digest(block)),
            DigestAlg::Md5 => out.extend_from_slice(&Md5::digest(block)),
            DigestAlg::Crc32c => out.extend_from_slice(&crc32c::crc32c(block).to_le_bytes()),
        }
    }

    /// The digests of every [`BLOCK_BYTES`] block of `data` (the last one
    /// may be short), concatenated.
    pub fn digest_blocks(self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(blocks_in(data.len() as u64) as usize * self.len());
        for block in data.chunks(BLOCK_BYTES as usize) {
            self.digest_into(block, &mut out);
        }
        out
    }
}

impl fmt::Display for DigestAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Blocks (digests) covering `len_bytes`.
pub fn blocks_in(len_bytes: u64) -> u64 {
    len_bytes.div_ceil(BLOCK_BYTES)
}

/// Indices of the blocks whose digests differ between two equally long
/// digest lists of `alg` (a length mismatch marks every block of the longer
/// list that the shorter lacks).
pub fn differing_blocks(alg: DigestAlg, a: &[u8], b: &[u8]) -> Vec<u64> {
    let n = a.len().max(b.len()).div_ceil(alg.len());
    (0..n)
        .filter(|i| {
            let at = i * alg.len()..(i + 1) * alg.len();
            a.get(at.clone()) != b.get(at)
        })
        .map(|i| i as u64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers (the empty block would be the usual vector; 4 KiB of
    /// zeros is what an unwritten disk holds).
    #[test]
    fn known_answers_of_a_zero_block() {
        let zeros = vec![0u8; 4096];
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&DigestAlg::Sha256.digest_blocks(&zeros)),
            "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"
        );
        assert_eq!(
            hex(&DigestAlg::Sha1.digest_blocks(&zeros)),
            "1ceaf73df40e531df3bfb26b4fb7cd95fb7bff1d"
        );
        assert_eq!(
            hex(&DigestAlg::Md5.digest_blocks(&zeros)),
            "620f0b67a91f7f74151bc5be745b7110"
        );
        assert_eq!(
            DigestAlg::Crc32c.digest_blocks(b"123456789"),
            0xe306_9283u32.to_le_bytes()
        );
    }

    #[test]
    fn names_and_wire_codes_round_trip() {
        for alg in DIGEST_ALGS {
            assert_eq!(DigestAlg::from_name(alg.name()), Ok(alg));
            assert_eq!(DigestAlg::from_wire(alg.to_wire()), Some(alg));
            assert!(alg.len() <= MAX_DIGEST_LEN);
        }
        assert_eq!(DigestAlg::from_name("SHA1"), Ok(DigestAlg::Sha1));
        assert_eq!(DigestAlg::from_wire(0), None);
        assert_eq!(
            DigestAlg::from_name("crc32").unwrap_err().to_string(),
            "unknown digest algorithm \"crc32\": use one of sha256, sha1, md5, crc32c"
        );
    }

    #[test]
    fn one_digest_per_block_and_differences_name_the_blocks() {
        let mut a = vec![7u8; 4096 * 5 + 512];
        for alg in DIGEST_ALGS {
            let before = alg.digest_blocks(&a);
            assert_eq!(before.len(), 6 * alg.len());
            a[4096 * 2 + 9] ^= 1;
            a[4096 * 5 + 1] ^= 1;
            let after = alg.digest_blocks(&a);
            assert_eq!(differing_blocks(alg, &before, &after), vec![2, 5]);
            assert_eq!(differing_blocks(alg, &after, &after), Vec::<u64>::new());
            a[4096 * 2 + 9] ^= 1;
            a[4096 * 5 + 1] ^= 1;
        }
    }

    proptest::proptest! {
        #[test]
        fn digests_of_arbitrary_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..9000), flip in 0usize..9000) {
            for alg in DIGEST_ALGS {
                let d = alg.digest_blocks(&data);
                proptest::prop_assert_eq!(d.len() as u64, blocks_in(data.len() as u64) * alg.len() as u64);
                if flip < data.len() {
                    let mut other = data.clone();
                    other[flip] ^= 0x80;
                    let diff = differing_blocks(alg, &d, &alg.digest_blocks(&other));
                    proptest::prop_assert_eq!(diff, vec![(flip / 4096) as u64]);
                }
            }
        }
    }
}
