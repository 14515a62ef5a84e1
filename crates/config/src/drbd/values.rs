//! Value parsers for DRBD options: numbers with DRBD's units, booleans,
//! keyword enums, addresses; and the "did you mean" suggestion.
//!
//! Numbers follow drbdadm's `m_strtoll`: decimal digits and at most one unit
//! suffix, `K`/`k`, `M`/`m`, `G`/`g` (powers of 1024) or `s` (512-byte
//! sectors); without a suffix the option's default unit applies (KiB for
//! rates). Plain counts and times take no suffix here: DRBD would read
//! `wfc-timeout 30s` as 30 × 512, which is never what was meant.

use std::net::SocketAddr;

use super::syntax::{Stmt, Value};
use crate::error::Result;

/// The closest candidate to `word`, if it is close enough to be a likely
/// typo: edit distance at most 2, or at most a third of the word's length
/// for long words.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `; did you mean `x`?` or nothing.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    suggest(word, candidates).map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

/// Checks the shape of a simple `key values… ;` statement and returns its
/// values. Too many values on a later line means a `;` was forgotten: the
/// error then points just after the last value that belongs.
pub(crate) fn values<'s>(
    stmt: &'s Stmt,
    min: usize,
    max: usize,
    usage: &str,
) -> Result<&'s [Value]> {
    if stmt.block.is_some() {
        return Err(stmt.pos.error(format!(
            "`{}` takes a value, not a `{{ }}` block (usage: {usage})",
            stmt.key
        )));
    }
    let vals = stmt.values.as_slice();
    if vals.len() < min {
        let at = vals.last().map_or_else(|| stmt.key_end(), Value::end);
        return Err(at.error(format!("missing value for `{}` (usage: {usage})", stmt.key)));
    }
    if let Some(extra) = vals.get(max) {
        let prev_line = if max == 0 {
            stmt.pos.line
        } else {
            vals[max - 1].pos.line
        };
        if extra.pos.line > prev_line {
            let (at, after) = if max == 0 {
                (stmt.key_end(), stmt.key.as_str())
            } else {
                (vals[max - 1].end(), vals[max - 1].text.as_str())
            };
            return Err(at.error(format!("missing `;` after `{after}`")));
        }
        return Err(extra.pos.error(format!(
            "unexpected `{}`: too many values for `{}` (usage: {usage})",
            extra.text, stmt.key
        )));
    }
    Ok(vals)
}

/// The single value of `key VALUE;`.
pub(crate) fn one<'s>(stmt: &'s Stmt, usage: &str) -> Result<&'s Value> {
    let vals = values(stmt, 1, 1, usage)?;
    vals.first()
        .ok_or_else(|| stmt.pos.error(format!("missing value for `{}`", stmt.key)))
}

/// A plain decimal number within `min..=max`; `what` describes the unit.
pub(crate) fn plain_number(v: &Value, option: &str, min: u64, max: u64, what: &str) -> Result<u64> {
    let text = v.text.as_str();
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return Err(v
            .pos
            .error(format!("`{text}` is not a number: `{option}` takes {what}")));
    }
    if digits < text.len() {
        return Err(v.pos.error(format!(
            "bad unit in `{text}`: `{option}` takes a plain number ({what})"
        )));
    }
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(v.pos.error(format!(
            "`{text}` is out of range for `{option}`: {min}..{max} ({what})"
        ))),
    }
}

/// Bytes in one unit suffix.
fn unit_bytes(suffix: &str) -> Option<u64> {
    match suffix {
        "K" | "k" => Some(1 << 10),
        "M" | "m" => Some(1 << 20),
        "G" | "g" => Some(1 << 30),
        "s" => Some(512),
        _ => None,
    }
}

/// Renders a byte count with the largest exact binary suffix (`4G`, `250K`).
pub(crate) fn show_bytes(n: u64) -> String {
    for (shift, s) in [(30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n.trailing_zeros() >= shift {
            return format!("{}{s}", n >> shift);
        }
    }
    n.to_string()
}

/// A size or rate with DRBD's unit suffixes, in bytes; a plain number is in
/// `default_unit_bytes` units. `min_bytes..=max_bytes` is DRBD's range.
pub(crate) fn size_bytes(
    v: &Value,
    option: &str,
    default_unit_bytes: u64,
    min_bytes: u64,
    max_bytes: u64,
) -> Result<u64> {
    let text = v.text.as_str();
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return Err(v.pos.error(format!(
            "`{text}` is not a number: `{option}` takes a number with an optional unit K, M, G or s"
        )));
    }
    let (num, suffix) = text.split_at(digits);
    let unit = if suffix.is_empty() {
        default_unit_bytes
    } else {
        unit_bytes(suffix).ok_or_else(|| {
            v.pos.error(format!(
                "bad unit `{suffix}` in `{text}` for `{option}`: use K, M or G (powers of 1024) or s (512-byte sectors); a plain number means {}",
                if default_unit_bytes == 1024 { "KiB" } else { "bytes" }
            ))
        })?
    };
    let range_err = || {
        v.pos.error(format!(
            "`{text}` is out of range for `{option}`: {}..{}",
            show_bytes(min_bytes),
            show_bytes(max_bytes)
        ))
    };
    let n: u64 = num.parse().map_err(|_| range_err())?;
    let bytes = n.checked_mul(unit).ok_or_else(range_err)?;
    if (min_bytes..=max_bytes).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(range_err())
    }
}

/// DRBD's booleans: no value or `yes` is true, `no` is false.
pub(crate) fn boolean(stmt: &Stmt) -> Result<bool> {
    let vals = values(stmt, 0, 1, &format!("{} [yes|no];", stmt.key))?;
    match vals.first().map(|v| v.text.as_str()) {
        None | Some("yes") => Ok(true),
        Some("no") => Ok(false),
        Some(other) => Err(vals[0].pos.error(format!(
            "bad value `{other}` for `{}`: expected yes or no",
            stmt.key
        ))),
    }
}

/// One of a keyword enum's values.
pub(crate) fn keyword<T: Copy>(stmt: &Stmt, all: &[(T, &'static str)]) -> Result<T> {
    let names: Vec<&str> = all.iter().map(|(_, n)| *n).collect();
    let v = one(stmt, &format!("{} {};", stmt.key, names.join("|")))?;
    all.iter()
        .find(|(_, n)| *n == v.text)
        .map(|(t, _)| *t)
        .ok_or_else(|| {
            v.pos.error(format!(
                "bad value `{}` for `{}`: expected one of {}{}",
                v.text,
                stmt.key,
                names.join(", "),
                did_you_mean(&v.text, names.iter().copied())
            ))
        })
}

/// Usage text of `address`.
const ADDRESS_USAGE: &str =
    "address [ipv4|ipv6] IP:PORT; e.g. 192.168.0.226:7789 or ipv6 [fd00::1]:7789";

/// `address [ipv4|ipv6] IP:PORT` (and hadisk's `nbd-listen`, same syntax).
pub(crate) fn address(stmt: &Stmt) -> Result<SocketAddr> {
    let usage = ADDRESS_USAGE.replacen("address", &stmt.key, 1);
    let vals = values(stmt, 1, 2, &usage)?;
    address_in(stmt, vals, &usage)
}

/// The address in `vals` (`[FAMILY] IP:PORT`), for `address` and for the
/// head of `floating [FAMILY] IP:PORT { }`.
pub(crate) fn address_in(stmt: &Stmt, vals: &[Value], usage: &str) -> Result<SocketAddr> {
    let (family, addr) = match vals {
        [a] => (None, a),
        [f, a] => (Some(f), a),
        _ => {
            return Err(stmt
                .pos
                .error(format!("missing value for `{}` (usage: {usage})", stmt.key)))
        }
    };
    if let Some(f) = family {
        if !matches!(f.text.as_str(), "ipv4" | "ipv6") {
            let msg = if matches!(f.text.as_str(), "sdp" | "ssocks") {
                format!(
                    "address family `{}` is not supported by hadisk: use ipv4 or ipv6",
                    f.text
                )
            } else {
                format!("unknown address family `{}`: expected ipv4 or ipv6", f.text)
            };
            return Err(f.pos.error(msg));
        }
    }
    let text = addr.text.as_str();
    let parsed: SocketAddr = text.parse().map_err(|_| {
        let hint = if text.parse::<std::net::IpAddr>().is_ok() || !text.contains(':') {
            "missing `:PORT`".to_owned()
        } else {
            "expected IP:PORT (host names are not resolved)".to_owned()
        };
        addr.pos
            .error(format!("bad address `{text}`: {hint}; usage: {usage}"))
    })?;
    match family.map(|f| f.text.as_str()) {
        Some("ipv6") if parsed.is_ipv4() => {
            return Err(addr.pos.error(format!(
                "`{text}` is an IPv4 address but the family says ipv6"
            )))
        }
        Some("ipv4") if parsed.is_ipv6() => {
            return Err(addr.pos.error(format!(
                "`{text}` is an IPv6 address but the family says ipv4"
            )))
        }
        _ => {}
    }
    if parsed.port() == 0 {
        return Err(addr
            .pos
            .error(format!("bad address `{text}`: port 0 is not a usable port")));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestion_distance() {
        assert_eq!(
            suggest("wfc-timout", ["wfc-timeout", "degr-wfc-timeout"]),
            Some("wfc-timeout")
        );
        assert_eq!(suggest("xyzzy", ["wfc-timeout"]), None);
    }

    #[test]
    fn bytes_render() {
        assert_eq!(show_bytes(4 << 30), "4G");
        assert_eq!(show_bytes(1024), "1K");
        assert_eq!(show_bytes(1000), "1000");
    }
}
