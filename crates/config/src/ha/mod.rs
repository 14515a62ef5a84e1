//! Heartbeat 3's files, read as Heartbeat reads them: `ha.cf` ([`hacf`]),
//! `authkeys` ([`authkeys`]) and `haresources` ([`haresources`]).
//!
//! All three are line-based. In `ha.cf` and `haresources`, `#` starts a
//! comment (at the start of a word), words are separated by white space, and
//! a line ending in `\` continues on the next one. `authkeys` has no
//! continuations and its key is the rest of its line (see [`authkeys`]).
//! Errors are `FILE:LINE: message`, LINE being the first line of a continued
//! line; whole-file problems are `FILE: message`.

pub mod authkeys;
pub mod hacf;
pub mod haresources;
mod values;

use std::path::Path;

pub use authkeys::{
    check_authkeys_mode, load_authkeys, parse_authkeys, AuthKey, AuthMethod, Authkeys,
};
pub use hacf::{
    load_hacf, parse_hacf, AutoFailback, HaCf, HaIgnored, HaWarning, Mcast, Ucast,
    MAX_NODE_NAME_BYTES,
};
pub use haresources::{
    load_haresources, parse_haresources, Group, HaResource, Haresources, IpAddrKind,
};
pub use values::{MAX_IFACE_CHARS, MAX_TIME_MS};

/// One logical line: its first physical line number and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub number: u32,
    pub words: Vec<String>,
}

/// Splits text into logical lines of words, dropping comments and blank
/// lines and joining `\` continuations.
pub(crate) fn logical_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<Line> = None;
    for (i, raw) in text.lines().enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let (body, continued) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (raw, false),
        };
        let line = pending.get_or_insert_with(|| Line {
            number,
            words: Vec::new(),
        });
        for word in body.split_whitespace() {
            if word.starts_with('#') {
                break;
            }
            line.words.push(word.to_owned());
        }
        if !continued {
            if let Some(l) = pending.take() {
                if !l.words.is_empty() {
                    out.push(l);
                }
            }
        }
    }
    if let Some(l) = pending.take() {
        if !l.words.is_empty() {
            out.push(l);
        }
    }
    out
}

/// Reads a Heartbeat file (size-limited like the DRBD files).
pub(crate) fn read(path: &Path) -> crate::Result<String> {
    crate::drbd::read_limited(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_and_comments() {
        let l = logical_lines("# c\na b \\\n  c # d\n\n  e\n");
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0],
            Line {
                number: 2,
                words: vec!["a".into(), "b".into(), "c".into()]
            }
        );
        assert_eq!(
            l[1],
            Line {
                number: 5,
                words: vec!["e".into()]
            }
        );
    }
}
