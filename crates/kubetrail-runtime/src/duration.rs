//! The one duration grammar of the CLI, the config and the API: a number (decimals allowed) and a unit,
//! `ms`, `s`, `m`, `h`, `d` or `w` (`250ms`, `90s`, `15m`, `1.5h`, `7d`, `4w`), and the times given as a
//! duration ago (`--since 7d`), `now` or RFC 3339.

/// The longest duration accepted: a hundred years.
const MAX_SECS: f64 = 100.0 * 365.25 * 86_400.0;

/// Seconds of a duration: above zero, at most a hundred years.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    let err = || {
        format!(
            "`{s}` is not a duration: use a number and a unit (ms, s, m, h, d, w), e.g. `90s`, `15m`, `1.5h`, `7d`, `4w`"
        )
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        _ => return Err(err()),
    };
    let secs = n * scale;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(err());
    }
    if secs > MAX_SECS {
        return Err(format!("`{s}` is too long: at most a hundred years"));
    }
    Ok(secs)
}

/// A duration as jiff's.
pub fn parse(s: &str) -> Result<jiff::SignedDuration, String> {
    parse_secs(s).map(jiff::SignedDuration::from_secs_f64)
}

/// A time: a duration ago (`90s`, `30m`, `1.5h`, `7d`, `4w`), `now`, or RFC 3339.
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    let now = jiff::Timestamp::now();
    if s == "now" {
        return Ok(now);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    // A number and a unit (`7d`, `1.5h`, `10y`): a duration ago, or the duration's own error.
    let unit = s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    if unit.len() < s.len() && !unit.is_empty() && unit.chars().all(|c| c.is_ascii_alphabetic()) {
        let ago = parse(s)?;
        return now
            .checked_sub(ago)
            .map_err(|_| format!("`{s}` is too far back"));
    }
    Err(format!(
        "`{s}` is not a time: give RFC 3339 (`2026-11-01T00:00:00Z`), `now` or a duration ago (`30m`, `1.5h`, `7d`, `4w`)"
    ))
}

/// `now` plus a duration (`--for 4h`).
pub fn from_now(s: &str) -> Result<jiff::Timestamp, String> {
    jiff::Timestamp::now()
        .checked_add(parse(s)?)
        .map_err(|_| format!("`{s}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar() {
        for (s, secs) in [
            ("250ms", 0.25),
            ("90s", 90.0),
            ("15m", 900.0),
            ("1.5h", 5_400.0),
            ("7d", 604_800.0),
            ("4w", 2_419_200.0),
            ("0.5d", 43_200.0),
        ] {
            assert_eq!(parse_secs(s), Ok(secs), "{s}");
        }
        for s in [
            "", "10", "m", "10y", "-5s", "0s", "1..2m", "5 m", "1e3s", "999999w",
        ] {
            assert!(parse_secs(s).is_err(), "{s}");
        }
    }

    #[test]
    fn times_ago_now_and_rfc3339() {
        let now = jiff::Timestamp::now();
        let week = parse_time("1w").unwrap();
        let secs = now.duration_since(week).as_secs_f64();
        assert!((604_799.0..604_900.0).contains(&secs), "{secs}");
        let half = now
            .duration_since(parse_time("1.5h").unwrap())
            .as_secs_f64();
        assert!((5_399.0..5_500.0).contains(&half), "{half}");
        assert_eq!(
            parse_time("2026-11-01T00:00:00Z").unwrap().to_string(),
            "2026-11-01T00:00:00Z"
        );
        assert!(parse_time("now").is_ok());
        let err = parse_time("yesterday").unwrap_err();
        assert!(err.contains("`yesterday` is not a time"), "{err}");
        assert!(parse_time("10y").unwrap_err().contains("not a duration"));
        let later = from_now("1w").unwrap();
        assert!(later.duration_since(now).as_secs() >= 604_799);
    }
}
