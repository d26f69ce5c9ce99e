//! RFC 3339 timestamps with microseconds, as kube-apiserver writes them, formatted without a calendar
//! library on the hot path.

use std::io::Write as _;

/// Writes `us` (microseconds since the Unix epoch, UTC) as `2026-01-01T00:00:00.000000Z`.
pub(crate) fn write_ts(buf: &mut Vec<u8>, us: i64) {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let _ = write!(
        buf,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

pub(crate) fn ts(us: i64) -> String {
    let mut buf = Vec::with_capacity(27);
    write_ts(&mut buf, us);
    String::from_utf8(buf).unwrap_or_default()
}

/// Whole seconds, as object metadata carries them (`2026-01-01T00:00:00Z`).
pub(crate) fn ts_secs(us: i64) -> String {
    let mut s = ts(us);
    s.truncate(19);
    s.push('Z');
    s
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_jiff() {
        let mut us = -86_400_000_000i64 * 400;
        while us < 86_400_000_000 * 365 * 80 {
            let ours = ts(us);
            let theirs = jiff::Timestamp::from_microsecond(us).unwrap();
            let parsed: jiff::Timestamp = ours.parse().unwrap();
            assert_eq!(parsed, theirs, "{ours}");
            us += 86_400_000_000 * 13 + 3_723_456_789;
        }
        assert_eq!(ts(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(ts_secs(1_767_225_600_123_456), "2026-01-01T00:00:00Z");
    }
}
