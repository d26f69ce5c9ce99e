//! Traffic whose audit trail is cut, for the tests and demonstrations of silence and policy drift: the
//! everyday traffic of a [`Config`], nothing at all for a while (the apiserver's audit output cut), and a deploy
//! bot's Secret create every minute whose level falls from Request to Metadata (the policy lowered).

use std::ops::Range;

use crate::{Config, Generator};

/// What to cut, in seconds from the first event.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// How much traffic in all.
    pub length_s: i64,
    /// Nothing is recorded in this range.
    pub silent_s: Range<i64>,
    /// From here, the bot's Secret creates are recorded at Metadata (their bodies gone).
    pub drift_at_s: i64,
}

impl Cut {
    /// The scenario the tests of silence and drift replay: four hours, nothing from 2:00 to 2:30, the bot's
    /// Secret creates at Metadata from 2:45.
    pub fn four_hours() -> Cut {
        Cut {
            length_s: 4 * 3600,
            silent_s: 2 * 3600..2 * 3600 + 1800,
            drift_at_s: 2 * 3600 + 2700,
        }
    }
}

/// The events of `cfg`'s traffic with `cut` applied, each with its time (µs since the epoch), in time order.
pub fn cut_trail(cfg: Config, cut: &Cut) -> Vec<(i64, String)> {
    let t0 = cfg.start.as_microsecond();
    let us = |s: i64| t0 + s * 1_000_000;
    let (end, silent) = (
        us(cut.length_s),
        us(cut.silent_s.start)..us(cut.silent_s.end),
    );
    let mut events: Vec<(i64, String)> = Generator::new(cfg)
        .map(|line| (time_us(&line).unwrap_or(t0), line))
        .take_while(|(at, _)| *at < end)
        .filter(|(at, _)| !silent.contains(at))
        .collect();
    for (i, at) in (t0..end).step_by(60_000_000).enumerate() {
        if !silent.contains(&at) {
            events.push((at, secret_create(i, at, at < us(cut.drift_at_s))));
        }
    }
    events.sort_by_key(|(at, _)| *at);
    events
}

/// The `requestReceivedTimestamp` of a generated line.
fn time_us(line: &str) -> Option<i64> {
    let key = "\"requestReceivedTimestamp\":\"";
    let start = line.find(key)? + key.len();
    let end = start + line[start..].find('"')?;
    line[start..end]
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_microsecond())
}

/// The deploy bot's Secret create in `prod`: with its (redacted) body at Request, or at Metadata.
fn secret_create(i: usize, at_us: i64, request: bool) -> String {
    let t = jiff::Timestamp::from_microsecond(at_us).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let (level, body) = if request {
        (
            "Request",
            r#","requestObject":{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s"},"data":{"k":"kubetrail-redacted:len=4:hmac=00"}}"#,
        )
    } else {
        ("Metadata", "")
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{level}","auditID":"cut-secret-{i}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets","verb":"create","user":{{"username":"system:serviceaccount:ci:deploy-bot","groups":["system:serviceaccounts","system:authenticated"]}},"sourceIPs":["10.0.0.9"],"userAgent":"deploy-bot/1.0","objectRef":{{"resource":"secrets","namespace":"prod","name":"app-{i}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":201}}{body},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_holds_nothing_and_the_bot_drifts() {
        let cfg = Config {
            nodes: 3,
            rate: 1.0,
            ..Config::default()
        };
        let t0 = cfg.start.as_microsecond();
        let cut = Cut {
            length_s: 3600,
            silent_s: 1200..1800,
            drift_at_s: 2400,
        };
        let events = cut_trail(cfg, &cut);
        assert!(events.windows(2).all(|w| w[0].0 <= w[1].0), "in time order");
        let silent = t0 + 1_200_000_000..t0 + 1_800_000_000;
        assert!(events.iter().all(|(at, _)| !silent.contains(at)));
        assert!(
            events.iter().any(|(at, _)| *at < silent.start)
                && events.iter().any(|(at, _)| *at >= silent.end)
        );
        let bot: Vec<&str> = events
            .iter()
            .filter(|(_, l)| l.contains("deploy-bot"))
            .map(|(_, l)| {
                if l.contains("\"level\":\"Request\"") {
                    "R"
                } else {
                    "M"
                }
            })
            .collect();
        assert_eq!(bot.len(), 50, "one a minute, but for the cut");
        assert_eq!(
            bot.iter().filter(|l| **l == "M").count(),
            20,
            "Metadata from minute 40"
        );
        assert!(
            events
                .iter()
                .all(|(_, l)| serde_json::from_str::<serde_json::Value>(l).is_ok())
        );
    }
}
