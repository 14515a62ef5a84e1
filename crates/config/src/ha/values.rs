//! Value parsers shared by the Heartbeat files: times, booleans, names, and
//! the "did you mean" suggestion.
//!
//! Times are Heartbeat's: a decimal number of seconds (`2`, `0.5`), or with a
//! unit suffix, `s` or `ms` (`200ms`). They are kept in whole milliseconds,
//! at most [`MAX_TIME_MS`]; a time finer than a millisecond is refused rather
//! than rounded, so that what the user wrote is what runs.

/// The largest time any Heartbeat directive or `Delay` accepts: one day.
/// Larger values are typos (a `ms` forgotten) and would make the agent look
/// hung.
pub const MAX_TIME_MS: u64 = 24 * 60 * 60 * 1000;

/// Parses a time: seconds, or a number with an `s` or `ms` suffix.
///
/// The error is the sentence after `DIRECTIVE: `.
pub(crate) fn parse_time_ms(word: &str) -> Result<u64, String> {
    let bad = || format!("'{word}' is not a time; write seconds (2, 0.5) or milliseconds (200ms)");
    let (number, scale_ms) = if let Some(n) = word.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = word.strip_suffix('s') {
        (n, 1000)
    } else {
        (word, 1000)
    };
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() && frac_part.is_empty()
        || !digits(int_part)
        || !digits(frac_part)
        || number.ends_with('.')
    {
        return Err(bad());
    }
    // Whole milliseconds: the fraction may have at most as many digits as the
    // scale leaves (3 for seconds, 0 for milliseconds), ignoring trailing
    // zeros.
    let frac = frac_part.trim_end_matches('0');
    let max_frac_digits = if scale_ms == 1000 { 3 } else { 0 };
    if frac.len() > max_frac_digits {
        return Err(format!("'{word}' is finer than a millisecond"));
    }
    let too_big = || format!("'{word}' is more than a day ({MAX_TIME_MS} ms)");
    let whole: u64 = if int_part.is_empty() {
        0
    } else {
        int_part.parse().map_err(|_| too_big())?
    };
    let mut frac_ms: u64 = 0;
    for (b, place) in frac.bytes().zip([100, 10, 1]) {
        frac_ms += u64::from(b - b'0') * place;
    }
    let ms = whole
        .checked_mul(scale_ms)
        .and_then(|w| w.checked_add(frac_ms))
        .ok_or_else(too_big)?;
    if ms > MAX_TIME_MS {
        return Err(too_big());
    }
    Ok(ms)
}

/// Heartbeat's booleans (`cl_str_to_boolean`): on/off, yes/no, true/false,
/// 1/0, any case.
pub(crate) fn parse_bool(word: &str) -> Option<bool> {
    match word.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "y" | "1" => Some(true),
        "off" | "no" | "false" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// `; did you mean `x`?` when a candidate is close to `word`, else nothing.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&lower, c), c))
        .filter(|(d, c)| *d <= 2 && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map_or_else(String::new, |(_, c)| format!("; did you mean `{c}`?"))
}

/// Linux's limit on an interface name (IFNAMSIZ - 1).
pub const MAX_IFACE_CHARS: usize = 15;

/// Checks an interface name (or `IFACE:LABEL`) as the kernel would accept it.
pub(crate) fn check_iface(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the interface name is empty".into());
    }
    if name.len() > MAX_IFACE_CHARS {
        return Err(format!(
            "interface '{name}' is longer than Linux's {MAX_IFACE_CHARS} characters"
        ));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c.is_whitespace()) {
        return Err(format!("'{name}' is not an interface name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time_ms("2"), Ok(2000));
        assert_eq!(parse_time_ms("2s"), Ok(2000));
        assert_eq!(parse_time_ms("200ms"), Ok(200));
        assert_eq!(parse_time_ms("0.5"), Ok(500));
        assert_eq!(parse_time_ms(".25"), Ok(250));
        assert_eq!(parse_time_ms("1.250"), Ok(1250));
        assert_eq!(parse_time_ms("1.0000"), Ok(1000));
        assert_eq!(parse_time_ms("0"), Ok(0));
        assert_eq!(parse_time_ms("86400"), Ok(MAX_TIME_MS));
        assert_eq!(
            parse_time_ms("86401").unwrap_err(),
            "'86401' is more than a day (86400000 ms)"
        );
        assert_eq!(
            parse_time_ms("99999999999999999999999").unwrap_err(),
            "'99999999999999999999999' is more than a day (86400000 ms)"
        );
        assert_eq!(
            parse_time_ms("1.5ms").unwrap_err(),
            "'1.5ms' is finer than a millisecond"
        );
        assert_eq!(
            parse_time_ms("0.0001").unwrap_err(),
            "'0.0001' is finer than a millisecond"
        );
        for bad in [
            "", "ms", "s", ".", "1.", "-1", "2x", "1e3", "2 s", "1.2.3", "+1",
        ] {
            assert_eq!(
                parse_time_ms(bad).unwrap_err(),
                format!("'{bad}' is not a time; write seconds (2, 0.5) or milliseconds (200ms)"),
                "{bad}"
            );
        }
    }

    #[test]
    fn bools_and_suggestions() {
        assert_eq!(parse_bool("ON"), Some(true));
        assert_eq!(parse_bool("no"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(
            did_you_mean("keepalve", ["keepalive", "deadtime"]),
            "; did you mean `keepalive`?"
        );
        assert_eq!(did_you_mean("zzz", ["keepalive"]), "");
    }

    #[test]
    fn ifaces() {
        assert_eq!(check_iface("eth0:0"), Ok(()));
        assert!(check_iface("a/b").is_err());
        assert!(check_iface("0123456789abcdef").is_err());
    }
}
