//! `kubetrail gen`: realistic audit traffic as JSON lines.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use kubetrail_gen::{Config, Generator};

use crate::Outcome;

const DEFAULT_COUNT: u64 = 10_000;

#[derive(Debug, Args)]
#[command(
    after_help = "The traffic of a simulated cluster: the controller-manager's informers, kubelets, the \
scheduler, operators, CI, people running kubectl, health probes, some 403s and 404s. Output is \
deterministic: the same flags always give the same bytes, with timestamps advancing at --rate from --start.

Examples:
  kubetrail gen --count 1000 | head -n 3
  kubetrail gen --nodes 200 --rate 2000 --duration 10m --attacks -o audit.jsonl
  kubetrail gen --stages --seed 42 --start 2026-03-01T12:00:00Z --count 50000 > audit.jsonl"
)]
pub struct GenArgs {
    /// Nodes in the simulated cluster (kubelet and DaemonSet traffic grows with it).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=40_000))]
    nodes: u32,
    /// Average events per second; sets the timestamps, not how fast the command runs.
    #[arg(long, value_name = "EVENTS_PER_SEC", default_value_t = 100.0, value_parser = parse_rate)]
    rate: f64,
    /// Number of events to write [default: 10000].
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    count: Option<u64>,
    /// Simulated time to cover instead of a count, e.g. `90s`, `10m`, `1.5h`, `7d` (rate × duration events).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<f64>,
    /// Seed of the random stream: a different seed gives a different cluster and traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time of the first event (RFC 3339).
    #[arg(long, value_name = "RFC3339", default_value = "2026-01-01T00:00:00Z")]
    start: jiff::Timestamp,
    /// Interleave attack scenarios (secret theft, RBAC escalation, privileged pods, exec, nodes/proxy, token
    /// requests, impersonation, anonymous access, 403 bursts), one every few thousand events. Nothing in
    /// the events marks them.
    #[arg(long)]
    attacks: bool,
    /// Also write RequestReceived (and ResponseStarted for watch, exec, logs) stages, as an apiserver
    /// without `omitStages` does.
    #[arg(long)]
    stages: bool,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give events per second, a number above 0 (up to 10000000)"
        )),
    }
}

/// Seconds from `90s`, `10m`, `1.5h`, `7d` or `250ms`.
fn parse_duration(s: &str) -> Result<f64, String> {
    let err = || {
        format!("`{s}` is not a duration: use a number and a unit, e.g. `90s`, `10m`, `2h`, `1d`")
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
        _ => return Err(err()),
    };
    let secs = n * scale;
    if secs.is_finite() && secs > 0.0 {
        Ok(secs)
    } else {
        Err(err())
    }
}

pub fn run(args: GenArgs) -> anyhow::Result<Outcome> {
    let count = match (args.count, args.duration) {
        (Some(n), _) => n,
        (None, Some(secs)) => (secs * args.rate).round() as u64,
        (None, None) => DEFAULT_COUNT,
    };
    let generator = Generator::new(Config {
        nodes: args.nodes,
        rate: args.rate,
        seed: args.seed,
        start: args.start,
        attacks: args.attacks,
        stages: args.stages,
    });
    match &args.output {
        Some(path) => {
            let file = File::create(path)
                .with_context(|| format!("failed to create `{}`", path.display()))?;
            write_events(generator, count, file)
                .with_context(|| format!("failed to write `{}`", path.display()))?;
        }
        None => write_events(generator, count, io::stdout().lock())
            .context("failed to write to standard output")?,
    }
    Ok(Outcome::Ok)
}

/// Writes `count` lines in large chunks; a reader that goes away (`| head`) surfaces as BrokenPipe.
fn write_events(mut generator: Generator, count: u64, out: impl Write) -> io::Result<()> {
    const CHUNK: usize = 256 * 1024;
    let mut out = BufWriter::with_capacity(CHUNK, out);
    let mut buf = Vec::with_capacity(CHUNK + 16 * 1024);
    for _ in 0..count {
        generator.next_into(&mut buf);
        buf.push(b'\n');
        if buf.len() >= CHUNK {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        for (s, secs) in [
            ("90s", 90.0),
            ("10m", 600.0),
            ("1.5h", 5_400.0),
            ("2d", 172_800.0),
            ("250ms", 0.25),
        ] {
            assert_eq!(parse_duration(s), Ok(secs), "{s}");
        }
        for s in ["", "10", "m", "10y", "-5s", "0s", "1..2m"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn rejects_rates_that_are_not_positive() {
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("NaN").is_err());
        assert_eq!(parse_rate("2.5"), Ok(2.5));
    }
}
