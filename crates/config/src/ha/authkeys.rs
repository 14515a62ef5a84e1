//! `authkeys`: the keys that sign heartbeats, read into [`Authkeys`].
//!
//! Format (Heartbeat's): `auth N` names the key that signs outgoing
//! heartbeats; lines `N METHOD [KEY]` define keys, N in 0-15, METHOD `sha1`,
//! `md5` or `crc`. The key is the rest of the line (it may hold spaces and
//! `#`); lines whose first non-blank character is `#` are comments; there
//! are no `\` continuations. Incoming heartbeats may use any defined key, so
//! keys can be rotated one node at a time.
//!
//! Invariants of a parsed [`Authkeys`]: the `auth` key is defined; every
//! sha1/md5 key is non-empty; a crc entry (a checksum, no secret: anyone can
//! forge it) exists only when the caller allowed it. Loading from a file
//! refuses a file that group or others may access, as Heartbeat does
//! ([`check_authkeys_mode`]). Keys are never printed (`Debug` redacts them)
//! and never appear in error messages.

use std::fmt;
use std::io::Read;
use std::path::Path;

use super::values::did_you_mean;
use crate::error::{ConfigError, Result};

/// The largest key index (Heartbeat's MAXAUTH - 1).
pub const MAX_KEY_INDEX: u8 = 15;
/// The longest key: HMAC takes any length, but a key longer than this is a
/// pasted file, not a secret.
pub const MAX_KEY_BYTES: usize = 1024;

/// How a heartbeat is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// HMAC-SHA1 with the key.
    Sha1,
    /// HMAC-MD5 with the key.
    Md5,
    /// CRC32 of the message: no key, no protection against forgery.
    Crc,
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMethod::Sha1 => "sha1",
            AuthMethod::Md5 => "md5",
            AuthMethod::Crc => "crc",
        })
    }
}

/// One `N METHOD KEY` line.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    /// N, 0-15.
    pub index: u8,
    /// The method.
    pub method: AuthMethod,
    /// The secret (empty for crc).
    pub key: Vec<u8>,
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthKey")
            .field("index", &self.index)
            .field("method", &self.method)
            .field("key", &format_args!("<{} bytes redacted>", self.key.len()))
            .finish()
    }
}

/// A parsed `authkeys` (see the module header for its invariants).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authkeys {
    /// The index named by `auth N`: the key outgoing heartbeats use.
    pub active: u8,
    /// Every defined key, in index order.
    pub keys: Vec<AuthKey>,
}

impl Authkeys {
    /// The key with this index.
    pub fn key(&self, index: u8) -> Option<&AuthKey> {
        self.keys.iter().find(|k| k.index == index)
    }

    /// The key outgoing heartbeats are signed with.
    pub fn active_key(&self) -> Option<&AuthKey> {
        self.key(self.active)
    }
}

/// Refuses an `authkeys` file whose permission bits (`st_mode`) let group or
/// others in, as Heartbeat does.
pub fn check_authkeys_mode(file: &Path, mode: u32) -> Result<()> {
    if mode & 0o077 != 0 {
        return Err(ConfigError::ha_file(
            file,
            format!(
                "mode {:04o} lets other users read the key; run `chmod 600 {}` (Heartbeat refuses it too)",
                mode & 0o7777,
                file.display()
            ),
        ));
    }
    Ok(())
}

/// Reads an `authkeys` file: refuses it unless it is a regular file that
/// only its owner may access, then parses it.
pub fn load_authkeys(path: &Path, allow_crc: bool) -> Result<Authkeys> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Check the mode of the file that is read (not of a path that may be
    // swapped in between).
    let f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ConfigError::ha_file(path, "is not a regular file"));
    }
    check_authkeys_mode(path, meta.permissions().mode())?;
    let limit = crate::drbd::MAX_FILE_BYTES;
    let mut text = String::new();
    f.take(limit + 1).read_to_string(&mut text).map_err(io)?;
    if text.len() as u64 > limit {
        return Err(ConfigError::ha_file(
            path,
            format!("is larger than the {limit}-byte limit"),
        ));
    }
    parse_authkeys(&text, path, allow_crc)
}

/// Parses `authkeys` text; `file` names it in errors. `allow_crc` admits
/// crc entries (which have no key).
pub fn parse_authkeys(text: &str, file: &Path, allow_crc: bool) -> Result<Authkeys> {
    let mut active: Option<(u8, u32)> = None;
    let mut keys: Vec<(AuthKey, u32)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |m: String| ConfigError::ha(file, n, m);
        let (first, rest) = split_word(line);
        if first == "auth" {
            let index = match rest.split_whitespace().collect::<Vec<_>>().as_slice() {
                [w] => parse_index(w).map_err(|m| err(format!("auth: {m}")))?,
                _ => return Err(err("auth takes one key index (auth 1)".into())),
            };
            if let Some((_, first_line)) = active {
                return Err(err(format!(
                    "auth given twice (first on line {first_line}); keep one"
                )));
            }
            active = Some((index, n));
            continue;
        }
        let index = parse_index(first)
            .map_err(|m| err(format!("{m}; lines are `auth N` or `N METHOD KEY`")))?;
        let key = parse_key(index, rest, allow_crc).map_err(err)?;
        if let Some((_, first_line)) = keys.iter().find(|(k, _)| k.index == index) {
            return Err(err(format!(
                "key {index} defined twice (first on line {first_line})"
            )));
        }
        keys.push((key, n));
    }
    let Some((active, auth_line)) = active else {
        return Err(ConfigError::ha_file(
            file,
            "has no `auth N` line; add one naming the key to sign with (auth 1)",
        ));
    };
    if !keys.iter().any(|(k, _)| k.index == active) {
        let defined: Vec<String> = keys.iter().map(|(k, _)| k.index.to_string()).collect();
        let defined = if defined.is_empty() {
            "none".to_owned()
        } else {
            defined.join(", ")
        };
        return Err(ConfigError::ha(
            file,
            auth_line,
            format!("auth {active}: key {active} is not defined (keys: {defined}); add a line `{active} sha1 SECRET`"),
        ));
    }
    let mut keys: Vec<AuthKey> = keys.into_iter().map(|(k, _)| k).collect();
    keys.sort_by_key(|k| k.index);
    Ok(Authkeys { active, keys })
}

/// The first word of a trimmed line and the rest (trimmed).
fn split_word(line: &str) -> (&str, &str) {
    match line.split_once(char::is_whitespace) {
        Some((w, rest)) => (w, rest.trim()),
        None => (line, ""),
    }
}

fn parse_index(word: &str) -> Result<u8, String> {
    word.parse::<u8>()
        .ok()
        .filter(|i| *i <= MAX_KEY_INDEX)
        .ok_or_else(|| format!("'{word}' is not a key index (0-{MAX_KEY_INDEX})"))
}

/// `METHOD [KEY]` after the index. Error messages never quote the key.
fn parse_key(index: u8, rest: &str, allow_crc: bool) -> Result<AuthKey, String> {
    let (method_word, key) = split_word(rest);
    let method = match method_word.to_ascii_lowercase().as_str() {
        "sha1" => AuthMethod::Sha1,
        "md5" => AuthMethod::Md5,
        "crc" => AuthMethod::Crc,
        "" => {
            return Err(format!(
                "key {index} has no method; write `{index} sha1 SECRET`"
            ))
        }
        other => {
            return Err(format!(
            "key {index}: unknown method '{other}'; Heartbeat's methods are sha1, md5 and crc{}",
            did_you_mean(other, ["sha1", "md5", "crc"])
        ))
        }
    };
    match method {
        AuthMethod::Crc if !allow_crc => Err(format!(
            "key {index} uses crc, which has no key: anyone on the network could forge heartbeats; use sha1 or md5 with a secret (or allow crc explicitly)"
        )),
        AuthMethod::Crc if !key.is_empty() => Err(format!(
            "key {index}: crc takes no key (it is a checksum, not a signature); remove the key or use sha1 or md5"
        )),
        AuthMethod::Sha1 | AuthMethod::Md5 if key.is_empty() => Err(format!(
            "key {index} ({method}) has no key; write `{index} {method} SECRET`"
        )),
        _ if key.len() > MAX_KEY_BYTES => Err(format!(
            "key {index} is {} bytes, longer than the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )),
        _ => Ok(AuthKey { index, method, key: key.as_bytes().to_vec() }),
    }
}
