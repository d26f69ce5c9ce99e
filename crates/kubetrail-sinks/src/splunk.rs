//! Splunk HTTP Event Collector: `POST /services/collector/event` with `Authorization: Splunk <token>`, the batch
//! as concatenated JSON event objects (`time` in epoch seconds with microseconds, `host` = the cluster, `source`,
//! `sourcetype` `kube:apiserver-audit`, optional `index`, the audit event as `event`).
//!
//! With indexer acknowledgement, every request carries the channel (`X-Splunk-Request-Channel`), the answer's
//! `ackId` is polled at `/services/collector/ack` until Splunk says the events are indexed, and a batch not
//! acknowledged in time is retried (HEC cannot deduplicate: a retry after a lost acknowledgement duplicates).
//!
//! HEC answers `{"text": ..., "code": N}`. Token errors (codes 1 to 4), a wrong index (7), channel or
//! acknowledgement settings (10, 11, 14) are configuration: retried with the reason, nothing is dead-lettered.
//! Server busy (9, 503), internal errors (8) and 429/5xx are retried. Invalid data (6, 12, 13) names the event
//! (`invalid-event-number`): HEC has indexed the events before it (unconfirmed with acknowledgement, so retried
//! then), that one is dead, the ones after it are retried.

use std::time::{Duration, Instant};

use hyper::http::Method;
use serde_json::Value;

use crate::fields::Fields;
use crate::http::{Auth, Class, HttpClient, HttpConfig, Request, classify};
use crate::{Error, Outcome, Record, Secret, shorten};

/// Indexer acknowledgement settings.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The channel GUID; `None` makes one.
    pub channel: Option<String>,
    /// How long to wait for the acknowledgement of a batch.
    pub timeout: Duration,
    /// How often to ask.
    pub poll: Duration,
}

impl Default for Ack {
    fn default() -> Ack {
        Ack {
            channel: None,
            timeout: Duration::from_secs(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// Configuration.
#[derive(Debug, Clone)]
pub struct SplunkConfig {
    /// `https://splunk.example:8088`.
    pub url: String,
    /// The HEC token.
    pub token: Secret,
    /// The index; `None`: the token's default.
    pub index: Option<String>,
    /// `source` of every event (default `kubetrail`).
    pub source: String,
    /// `sourcetype` (default `kube:apiserver-audit`).
    pub sourcetype: String,
    /// Indexer acknowledgement, if the token has it on.
    pub ack: Option<Ack>,
    /// Timeout and TLS (its `auth` stays `None`: the token is the credential).
    pub http: HttpConfig,
}

impl SplunkConfig {
    /// The defaults for `url` and `token`.
    pub fn new(url: &str, token: Secret) -> SplunkConfig {
        SplunkConfig {
            url: url.into(),
            token,
            index: None,
            source: "kubetrail".into(),
            sourcetype: "kube:apiserver-audit".into(),
            ack: None,
            http: HttpConfig::default(),
        }
    }
}

/// A HEC client.
#[derive(Debug)]
pub struct Splunk {
    client: HttpClient,
    index: Option<String>,
    source: String,
    sourcetype: String,
    ack: Option<(String, Ack)>,
}

impl Splunk {
    /// Checks the configuration; connects to nothing.
    pub fn new(mut cfg: SplunkConfig) -> Result<Splunk, Error> {
        cfg.http.auth = Auth::Raw(Secret::new(format!("Splunk {}", cfg.token.expose())));
        let ack = cfg.ack.map(|a| {
            let channel = a.channel.clone().unwrap_or_else(new_guid);
            (channel, a)
        });
        if let Some((channel, _)) = &ack {
            cfg.http.headers.push((
                "X-Splunk-Request-Channel".into(),
                Secret::new(channel.clone()),
            ));
        }
        Ok(Splunk {
            client: HttpClient::new(&cfg.url, &cfg.http)?,
            index: cfg.index,
            source: cfg.source,
            sourcetype: cfg.sourcetype,
            ack,
        })
    }

    /// The acknowledgement channel, if acknowledgement is on.
    pub fn channel(&self) -> Option<&str> {
        self.ack.as_ref().map(|(c, _)| c.as_str())
    }

    /// Nothing to set up: HEC tokens and indexes are made in Splunk.
    pub async fn prepare(&self) -> Result<(), Error> {
        Ok(())
    }

    /// One HEC request for the batch (and the acknowledgement polls, when on).
    pub async fn send(&self, batch: &[Record<'_>]) -> Outcome {
        let mut body = String::new();
        let (mut sent, mut dead) = (Vec::new(), Vec::new());
        for (i, r) in batch.iter().enumerate() {
            match Fields::parse(r) {
                Ok(f) => {
                    self.event_json(r, &f, &mut body);
                    sent.push(i);
                }
                Err(why) => dead.push((i, why)),
            }
        }
        if sent.is_empty() {
            return Outcome::from_parts(batch.len(), vec![], dead, String::new, None);
        }
        let req =
            Request::new(Method::POST, "/services/collector/event").body(body, "application/json");
        let resp = match self.client.send(req).await {
            Ok(r) => r,
            Err(why) => return Outcome::from_parts(batch.len(), sent, dead, || why, None),
        };
        let answer: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        let code = answer["code"].as_i64();
        let text = answer["text"]
            .as_str()
            .map_or_else(|| resp.text(200), str::to_string);
        let reason = match code {
            Some(c) => format!("HTTP {} HEC code {c}: {text}", resp.status),
            None => format!("HTTP {}: {text}", resp.status),
        };
        if classify(resp.status) == Class::Success && code.unwrap_or(0) == 0 {
            let Some((_, ack)) = &self.ack else {
                return Outcome::from_parts(batch.len(), vec![], dead, String::new, None);
            };
            let Some(id) = answer["ackId"].as_u64() else {
                let why = "indexer acknowledgement is on but HEC returned no ackId (is it off on the token?)";
                return Outcome::from_parts(batch.len(), sent, dead, || why.to_string(), None);
            };
            return match self.wait_for_ack(id, ack).await {
                Ok(()) => Outcome::from_parts(batch.len(), vec![], dead, String::new, None),
                Err(why) => Outcome::from_parts(batch.len(), sent, dead, || why, None),
            };
        }
        match code {
            Some(1..=4) => {
                let why = format!("{reason} (the HEC token was refused: fix the token)");
                Outcome::from_parts(batch.len(), sent, dead, || why, None)
            }
            Some(7 | 10 | 11 | 14) => {
                let why = format!(
                    "{reason} (a configuration error: fix the sink's index or acknowledgement settings)"
                );
                Outcome::from_parts(batch.len(), sent, dead, || why, None)
            }
            Some(6 | 12 | 13) => match answer["invalid-event-number"].as_u64() {
                Some(n) if (n as usize) < sent.len() => {
                    let n = n as usize;
                    dead.push((sent[n], reason));
                    let start = if self.ack.is_some() { 0 } else { n + 1 };
                    let retry: Vec<usize> = sent[start..]
                        .iter()
                        .copied()
                        .filter(|&i| i != sent[n])
                        .collect();
                    Outcome::from_parts(batch.len(), retry, dead, String::new, None)
                }
                _ => Outcome::Dead { reason },
            },
            _ => match classify(resp.status) {
                Class::Dead => Outcome::Dead { reason },
                _ => Outcome::from_parts(batch.len(), sent, dead, || reason, resp.retry_after()),
            },
        }
    }

    fn event_json(&self, r: &Record<'_>, f: &Fields<'_>, out: &mut String) {
        let us = f.time_us();
        let q = |s: &str| serde_json::to_string(s).expect("a string serialises");
        out.push_str(&format!(
            "{{\"time\":{}.{:06},\"host\":{},\"source\":{},\"sourcetype\":{}",
            us.div_euclid(1_000_000),
            us.rem_euclid(1_000_000),
            q(r.cluster),
            q(&self.source),
            q(&self.sourcetype)
        ));
        if let Some(index) = &self.index {
            out.push_str(&format!(",\"index\":{}", q(index)));
        }
        out.push_str(",\"event\":");
        out.push_str(r.event.trim());
        out.push('}');
    }

    async fn wait_for_ack(&self, id: u64, ack: &Ack) -> Result<(), String> {
        let deadline = Instant::now() + ack.timeout;
        loop {
            let req = Request::new(Method::POST, "/services/collector/ack")
                .body(format!("{{\"acks\":[{id}]}}"), "application/json");
            let resp = self.client.send(req).await?;
            let answer: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
            if classify(resp.status) != Class::Success {
                return Err(format!(
                    "acknowledgement poll: HTTP {}: {}",
                    resp.status,
                    answer["text"]
                        .as_str()
                        .map_or_else(|| resp.text(200), str::to_string)
                ));
            }
            if answer["acks"][id.to_string()] == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() + ack.poll > deadline {
                return Err(format!(
                    "HEC did not acknowledge ackId {id} within {:?}",
                    ack.timeout
                ));
            }
            tokio::time::sleep(ack.poll).await;
        }
    }
}

/// A random version 4 GUID from the kernel's random source (`getrandom`; failing that, from time and pid).
fn new_guid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        use sha2::Digest as _;
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        b.copy_from_slice(&sha2::Sha256::digest(seed.as_bytes())[..16]);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::s3::sigv4::hex(&b);
    shorten(
        &format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        ),
        36,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_version_4() {
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert!(matches!(&g[19..20], "8" | "9" | "a" | "b"), "{g}");
        assert_ne!(g, new_guid());
    }

    #[test]
    fn event_objects() {
        let s = Splunk::new(SplunkConfig {
            index: Some("k8s_audit".into()),
            ..SplunkConfig::new("http://127.0.0.1:8088", Secret::new("t"))
        })
        .unwrap();
        let r = Record {
            id: "a-ResponseComplete",
            cluster: "prod \"eu\"",
            received_us: 0,
            event: r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","requestReceivedTimestamp":"2018-10-26T13:38:34.000042Z"}"#,
        };
        let mut out = String::new();
        s.event_json(&r, &Fields::parse(&r).unwrap(), &mut out);
        assert_eq!(
            out,
            format!(
                r#"{{"time":1540561114.000042,"host":"prod \"eu\"","source":"kubetrail","sourcetype":"kube:apiserver-audit","index":"k8s_audit","event":{}}}"#,
                r.event
            )
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["event"]["auditID"], "a");
    }
}
