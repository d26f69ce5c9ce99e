//! Text renderings of the library reports, for people.

use std::fmt::Write as _;

use kubetrail_policy::{Grain, Report};

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Decimal units, as disks and cloud bills count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `-1234` with `thousands` -> `-1,234`; `+` for growth.
fn signed(n: i64, f: fn(u64) -> String) -> String {
    format!("{}{}", if n < 0 { "-" } else { "+" }, f(n.unsigned_abs()))
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{secs:.1}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

fn grain(g: Grain) -> &'static str {
    match g {
        Grain::User => "user",
        Grain::UserVerb => "user+verb",
        Grain::UserVerbResource => "user+verb+resource",
        Grain::UserGroup => "userGroup",
    }
}

/// The `policy simulate` report.
pub fn simulation(r: &Report) -> String {
    let mut o = String::new();
    let span = r
        .span_seconds
        .map(|s| format!("   over {}", duration(s)))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "events in    {:>12}   {:>9}{span}",
        thousands(r.events_in),
        bytes(r.bytes_in)
    );
    let _ = writeln!(
        o,
        "events kept  {:>12}   {:>9}   {} of events, {} of bytes",
        thousands(r.events_kept),
        bytes(r.bytes_kept),
        pct(r.events_kept, r.events_in),
        pct(r.bytes_kept, r.bytes_in)
    );
    match r.gb_per_day {
        Some(gb) => {
            let _ = writeln!(
                o,
                "volume       {gb:>12.2} GB/day kept, {:.0} GB over 400 days",
                gb * 400.0
            );
        }
        None => {
            let _ = writeln!(
                o,
                "volume       unknown (the input has no time span to extrapolate from)"
            );
        }
    }
    let _ = writeln!(
        o,
        "\nper rule:\n  {:>5} {:>5}  {:<16} {:>12} {:>7} {:>10}",
        "rule", "line", "level", "events", "share", "kept"
    );
    for v in &r.rules {
        if v.events == 0 && v.index.is_some() {
            continue;
        }
        let (idx, line, level) = match v.index {
            Some(i) => (
                i.to_string(),
                v.line.map_or("-".into(), |l| l.to_string()),
                v.level.to_string(),
            ),
            None => ("-".into(), "-".into(), "None (no rule)".into()),
        };
        let _ = writeln!(
            o,
            "  {idx:>5} {line:>5}  {level:<16} {:>12} {:>7} {:>10}",
            thousands(v.events),
            format!("{:.1}%", v.share * 100.0),
            bytes(v.bytes)
        );
    }
    if r.noisy.is_empty() {
        let _ = writeln!(
            o,
            "\nno noisy group: nothing is over 10% of the kept events"
        );
    } else {
        let _ = writeln!(
            o,
            "\nnoisy groups (over 10% of the kept events), each with a None rule that silences it:"
        );
        for n in &r.noisy {
            let who = n.user.as_deref().or(n.group.as_deref()).unwrap_or("");
            let what = [n.verb.as_deref(), n.resource.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                o,
                "  {:>5.1}%  {:<18}  {who} {what}   ({} events, {})",
                n.share * 100.0,
                grain(n.grain),
                thousands(n.events),
                bytes(n.bytes)
            );
            let _ = writeln!(
                o,
                "    suggested rule (insert it above the rule that keeps these events):"
            );
            for line in n.suggestion.lines() {
                let _ = writeln!(o, "      {line}");
            }
        }
    }
    if r.groups_overflow > 0 {
        let _ = writeln!(
            o,
            "({} events in groups beyond the tracking cap were not grouped)",
            thousands(r.groups_overflow)
        );
    }
    if let Some(c) = &r.against {
        let _ = writeln!(o, "\nagainst the other policy:");
        let gb = c
            .gb_per_day
            .map(|g| format!(", {g:.2} GB/day"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "  events kept  {:>12}   {:>9}{gb}   ({} events, {})",
            thousands(c.events_kept),
            bytes(c.bytes_kept),
            signed(c.events_kept_delta, thousands),
            signed(c.bytes_kept_delta, bytes)
        );
        if c.changes.is_empty() {
            let _ = writeln!(o, "  no event changes level");
        }
        for ch in &c.changes {
            let _ = writeln!(
                o,
                "  {:>16} -> {:<16} {:>12} events   e.g. {}",
                ch.from.to_string(),
                ch.to.to_string(),
                thousands(ch.events),
                ch.examples.join("; ")
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(100), "100");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(duration(5400.0), "1h 30m");
    }
}
