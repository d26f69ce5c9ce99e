//! `kubetrail gen`: realistic audit traffic as JSON lines, or posted to a webhook receiver as a load test
//! (`--post`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use hyper::header::{HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::http::Method;
use kubetrail_gen::{Config, Generator};
use kubetrail_sinks::Secret;
use kubetrail_sinks::http::{Auth, HttpClient, HttpConfig, Request};

use crate::Outcome;
use crate::output::Format;
use crate::report::thousands;

const DEFAULT_COUNT: u64 = 10_000;

#[derive(Debug, Args)]
#[command(
    after_help = "The traffic of a simulated cluster: the controller-manager's informers, kubelets, the \
scheduler, operators, CI, people running kubectl, health probes, some 403s and 404s. Output is \
deterministic: the same flags always give the same bytes, with timestamps advancing at --rate from --start.

Examples:
  kubetrail gen --count 1000 | head -n 3
  kubetrail gen --nodes 200 --rate 2000 --duration 10m --attacks -o audit.jsonl
  kubetrail gen --stages --seed 42 --start 2026-03-01T12:00:00Z --count 50000 > audit.jsonl

Load test (--post): the events go to a webhook receiver as kube-apiserver's audit webhook sends them, EventList
batches over keep-alive connections, retried on 429/503 after Retry-After. The report gives events/s, MB/s and
the ack latency of each request (send start to full response) at p50/p90/p99/max. Bounded runs are generated
in memory before the clock starts, so the tool is not what is measured. Exit 1 if a batch was not acknowledged.
--duration with --post covers rate × duration events: to send for 60 s at 4,000 events/s, give
--rate 4000 --send-rate 4000 --duration 60s.
  kubetrail gen --count 2000000 --post http://127.0.0.1:9443/k8s-audit --connections 8
  kubetrail gen --rate 4000 --send-rate 4000 --duration 60s --connections 1 --post http://127.0.0.1:9443/k8s-audit
  kubetrail gen --count 100000 --post https://kubetrail.example:9443/k8s-audit --cacert ca.crt \\
      --cert apiserver.crt --key apiserver.key --format json"
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
    /// Simulated time to cover instead of a count, e.g. `90s`, `10m`, `1.5h`, `7d`, `4w` (rate × duration events).
    #[arg(long, value_name = "DURATION", value_parser = kubetrail_runtime::duration::parse_secs)]
    duration: Option<f64>,
    /// Seed of the random stream: a different seed gives a different cluster and traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time of the first event (RFC 3339) [default: with --post, such that the events end now, so a
    /// collector's recent searches show them; otherwise 2026-01-01T00:00:00Z, the same bytes every run].
    #[arg(long, value_name = "RFC3339")]
    start: Option<jiff::Timestamp>,
    /// Interleave attack scenarios (secret theft, RBAC escalation, privileged pods, exec, nodes/proxy, token
    /// requests, impersonation, anonymous access, 403 bursts), one every few thousand events, and two slow
    /// ones beside them: a production Deployment tampered with, and an access grant (an EKS admin binds a
    /// contractor to a Role reading prod-payments secrets, the contractor reads them, the binding is widened
    /// to a group, then revoked, and the next read refused). Nothing in the events marks them.
    #[arg(long)]
    attacks: bool,
    /// Also write the simulated cluster's RBAC objects at --start to FILE, as `kubectl get
    /// clusterroles,clusterrolebindings,roles,rolebindings -A -o json` prints them (the bindings the traffic's
    /// reasons name, with Kubernetes' bootstrap policy).
    #[arg(long, value_name = "FILE")]
    rbac_snapshot: Option<PathBuf>,
    /// Also write RequestReceived (and ResponseStarted for watch, exec, logs) stages, as an apiserver
    /// without `omitStages` does.
    #[arg(long)]
    stages: bool,
    /// Audit every request at Metadata, as a policy of only `level: Metadata` does: no request or response
    /// bodies (events of ~1,000 bytes instead of ~1,300).
    #[arg(long)]
    metadata_only: bool,
    /// Quiet nights: from 00:00 to 06:00 UTC a quarter of the rate, and people, CI and their pods all but
    /// stop while the control plane and nodes go on.
    #[arg(long)]
    nights: bool,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Send the events to this webhook receiver (`kubetrail serve`, or anything that takes kube-apiserver's
    /// audit webhook), e.g. `http://127.0.0.1:9443/k8s-audit`, and report throughput and ack latency.
    #[arg(long, value_name = "URL", conflicts_with = "output")]
    post: Option<String>,
    /// Events per request with --post (kube-apiserver sends up to 400).
    #[arg(long, value_name = "N", default_value_t = 400, requires = "post",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch: u32,
    /// Concurrent keep-alive connections with --post.
    #[arg(long, value_name = "C", default_value_t = 4, requires = "post",
          value_parser = clap::value_parser!(u32).range(1..=1_024))]
    connections: u32,
    /// Pace --post at this many events per second (0: as fast as the receiver acknowledges).
    #[arg(long, value_name = "EVENTS_PER_SEC", default_value_t = 0.0, requires = "post",
          value_parser = parse_send_rate)]
    send_rate: f64,
    /// CA certificates (PEM) that sign the receiver's certificate, for an https:// URL.
    #[arg(long, value_name = "FILE", requires = "post")]
    cacert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS, as the webhook kubeconfig's client-certificate.
    #[arg(long, value_name = "FILE", requires_all = ["post", "key"])]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires_all = ["post", "cert"])]
    key: Option<PathBuf>,
    /// Bearer token sent with every --post request, as the webhook kubeconfig's token.
    #[arg(long, value_name = "TOKEN", requires = "post")]
    token: Option<String>,
    /// Report of --post: text on standard error, and with `json` also one JSON object on standard output.
    #[arg(long, value_enum, default_value_t = Format::Table, requires = "post")]
    format: Format,
}

fn parse_send_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a send rate: give events per second, 0 or more (0: as fast as acknowledged)"
        )),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give events per second, a number above 0 (up to 10000000)"
        )),
    }
}

/// Where generated time starts unless `--start` says: posted events end now (a collector's "last 24 hours"
/// shows them); written ones start at a fixed time, so the same arguments give the same bytes.
fn default_start(post: bool, count: u64, rate: f64) -> jiff::Timestamp {
    const FIXED: jiff::Timestamp = jiff::Timestamp::constant(1_767_225_600, 0); // 2026-01-01T00:00:00Z
    if !post {
        return FIXED;
    }
    let span = jiff::SignedDuration::from_secs_f64((count as f64 / rate).min(1e9));
    jiff::Timestamp::now().checked_sub(span).unwrap_or(FIXED)
}

pub fn run(args: GenArgs) -> anyhow::Result<Outcome> {
    let count = match (args.count, args.duration) {
        (Some(n), _) => n,
        (None, Some(secs)) => (secs * args.rate).round() as u64,
        (None, None) => DEFAULT_COUNT,
    };
    let config = Config {
        nodes: args.nodes,
        rate: args.rate,
        seed: args.seed,
        start: args
            .start
            .unwrap_or_else(|| default_start(args.post.is_some(), count, args.rate)),
        attacks: args.attacks,
        stages: args.stages,
        metadata_only: args.metadata_only,
        nights: args.nights,
    };
    if let Some(path) = &args.rbac_snapshot {
        std::fs::write(path, kubetrail_gen::rbac_snapshot(&config))
            .with_context(|| format!("failed to write the RBAC snapshot `{}`", path.display()))?;
    }
    let generator = Generator::new(config);
    if let Some(url) = &args.post {
        return post(&args, url, generator, count);
    }
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

/// What an apiserver's webhook strips from each item of an EventList (the generator writes it first).
const EVENT_PREFIX: &[u8] = br#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","#;
const LIST_HEAD: &[u8] =
    br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#;
/// Batches generated before the clock starts: up to this many bytes; the rest is generated while sending.
const PREGENERATE_BYTES: u64 = 4 << 30;
/// Retries of one batch after 429/503 (or a broken connection) before it counts as an error.
const MAX_RETRIES: u32 = 20;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One EventList request: `first` is the index of its first event (paces the send).
#[derive(Debug)]
struct Job {
    first: u64,
    events: u64,
    body: Bytes,
}

/// `{"kind":"EventList",...,"items":[...]}` of the next `n` events, items without kind and apiVersion.
fn event_list(generator: &mut Generator, n: u64, body: &mut Vec<u8>) {
    body.clear();
    body.extend_from_slice(LIST_HEAD);
    for i in 0..n {
        if i > 0 {
            body.push(b',');
        }
        let start = body.len();
        generator.next_into(body);
        if body[start..].starts_with(EVENT_PREFIX) {
            body.drain(start + 1..start + EVENT_PREFIX.len());
        }
    }
    body.extend_from_slice(b"]}");
}

/// Where to post: the client every connection clones (TLS, --token, the proxy of the environment), the
/// request's path and query, and the URL as given for the report.
struct Target {
    url: String,
    client: HttpClient,
    path: String,
}

impl Target {
    fn new(args: &GenArgs, url: &str) -> anyhow::Result<Target> {
        let bad = || {
            format!("`{url}` is not a URL to post to: give e.g. http://127.0.0.1:9443/k8s-audit")
        };
        let uri: hyper::Uri = url.parse().with_context(bad)?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => bail!("{}", bad()),
        };
        let authority = uri.authority().with_context(bad)?;
        if authority.as_str().contains('@') {
            bail!("{}: give the token with --token, not in the URL", bad());
        }
        if https && args.cacert.is_none() {
            bail!(
                "an https:// URL needs --cacert FILE: the CA certificate that signed the receiver's \
                 certificate"
            );
        }
        if !https && (args.cacert.is_some() || args.cert.is_some()) {
            bail!("--cacert, --cert and --key apply to https:// URLs; `{url}` is plain HTTP");
        }
        let auth = match &args.token {
            Some(t) => {
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .context("the --token is not a valid header value")?;
                Auth::Bearer(Secret::new(t.as_str()))
            }
            None => Auth::None,
        };
        let cfg = HttpConfig {
            // The worker's own timeout (REQUEST_TIMEOUT) ends a request first, so that it is told apart
            // from a broken connection; this one bounds connecting.
            timeout: REQUEST_TIMEOUT + Duration::from_secs(5),
            extra_ca: args.cacert.clone(),
            auth,
            client_cert: args.cert.clone().zip(args.key.clone()),
            // A load test's connections are kept however long the pacing leaves them idle, as the
            // apiserver's are; one the receiver closed is found closed and replaced before the request.
            reuse_idle: Duration::MAX,
            ..HttpConfig::default()
        };
        let base = format!("{}://{authority}", if https { "https" } else { "http" });
        let client = HttpClient::new(&base, &cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Target {
            url: url.to_string(),
            client,
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }

    fn request(&self, body: Bytes) -> Request {
        Request::new(Method::POST, self.path.as_str())
            .header(USER_AGENT, "kubetrail-gen")
            .body(body, "application/json")
    }
}

/// What one connection saw; merged at the end.
#[derive(Debug, Default)]
struct Tally {
    sent_events: u64,
    acked_events: u64,
    acked_bytes: u64,
    requests: u64,
    retries: u64,
    /// Batches given up on, by the last status (or `connection`, `timeout`).
    errors: BTreeMap<String, u64>,
    /// The receiver's own count, when it answers kubetrail's `{"accepted":N,"duplicates":M}`.
    receiver_accepted: u64,
    receiver_duplicates: u64,
    /// Microseconds from send start to the full response, per acknowledged request.
    latencies_us: Vec<u64>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.sent_events += o.sent_events;
        self.acked_events += o.acked_events;
        self.acked_bytes += o.acked_bytes;
        self.requests += o.requests;
        self.retries += o.retries;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.receiver_accepted += o.receiver_accepted;
        self.receiver_duplicates += o.receiver_duplicates;
        self.latencies_us.extend(o.latencies_us);
    }
}

enum Attempt {
    Acked,
    /// Send again after the wait; the reason names the error if the retries run out.
    Retry(Duration, String),
    Failed(String),
}

/// One keep-alive connection (a client of its own): takes batches off the shared queue, paced, until it is
/// empty.
async fn worker(
    target: Arc<Target>,
    queue: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Job>>>,
    start: tokio::time::Instant,
    send_rate: f64,
) -> Tally {
    let mut tally = Tally::default();
    let client = target.client.clone();
    loop {
        let Some(job) = queue.lock().await.recv().await else {
            return tally;
        };
        if send_rate > 0.0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64(job.first as f64 / send_rate))
                .await;
        }
        tally.sent_events += job.events;
        let mut retries = 0;
        loop {
            let attempt = attempt(&target, &client, &job, &mut tally).await;
            match attempt {
                Attempt::Acked => break,
                Attempt::Retry(wait, _) if retries < MAX_RETRIES => {
                    retries += 1;
                    tally.retries += 1;
                    tokio::time::sleep(wait).await;
                }
                Attempt::Retry(_, why) | Attempt::Failed(why) => {
                    *tally.errors.entry(why).or_default() += 1;
                    break;
                }
            }
        }
    }
}

async fn attempt(target: &Target, client: &HttpClient, job: &Job, tally: &mut Tally) -> Attempt {
    // Connected (or the kept-alive connection found open) before the clock starts: the latency is the
    // request's alone.
    if let Err(e) = client.ready().await {
        return Attempt::Retry(Duration::from_millis(200), e);
    }
    tally.requests += 1;
    let began = Instant::now();
    let send = client.send(target.request(job.body.clone()));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, send).await {
        Ok(Ok(r)) => r,
        // Broken connection: reconnect and send the batch again, as the apiserver does.
        Ok(Err(e)) => {
            return Attempt::Retry(Duration::from_millis(200), format!("connection: {e}"));
        }
        // The connection went with the abandoned request.
        Err(_) => return Attempt::Failed("timeout".into()),
    };
    let latency = began.elapsed();
    match response.status {
        200..=299 => {
            tally.acked_events += job.events;
            tally.acked_bytes += job.body.len() as u64;
            tally.latencies_us.push(latency.as_micros() as u64);
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&response.body) {
                tally.receiver_accepted += v["accepted"].as_u64().unwrap_or(0);
                tally.receiver_duplicates += v["duplicates"].as_u64().unwrap_or(0);
            }
            Attempt::Acked
        }
        429 | 503 => {
            let secs = response
                .header(RETRY_AFTER.as_str())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .min(60);
            Attempt::Retry(Duration::from_secs(secs), response.status.to_string())
        }
        status => Attempt::Failed(status.to_string()),
    }
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

fn post(
    args: &GenArgs,
    url: &str,
    mut generator: Generator,
    count: u64,
) -> anyhow::Result<Outcome> {
    let target = Arc::new(Target::new(args, url)?);
    let batch = u64::from(args.batch);
    let batches = count.div_ceil(batch);
    let gen_started = Instant::now();
    let mut body = Vec::with_capacity((batch * 2048) as usize);
    let mut next_job = move |b: u64, body: &mut Vec<u8>| {
        let first = b * batch;
        let events = batch.min(count - first);
        event_list(&mut generator, events, body);
        Job {
            first,
            events,
            body: Bytes::copy_from_slice(body),
        }
    };
    let first_job = (batches > 0).then(|| next_job(0, &mut body));
    // The queue holds what fits in PREGENERATE_BYTES (sized by the first batch); the generator fills it
    // before the clock starts, and keeps filling it while sending when the run is larger.
    let batch_bytes = first_job.as_ref().map_or(1, |j| j.body.len() as u64);
    let capacity = (PREGENERATE_BYTES / batch_bytes).clamp(1, batches.max(1)) as usize;
    let (tx, rx) = tokio::sync::mpsc::channel::<Job>(capacity);
    if let Some(job) = first_job {
        tx.try_send(job).expect("an empty queue");
    }
    let (filled_tx, filled_rx) = std::sync::mpsc::channel::<bool>();
    let filler = std::thread::Builder::new()
        .name("gen".into())
        .spawn(move || {
            let mut signalled = false;
            for b in 1..batches {
                let job = next_job(b, &mut body);
                match tx.try_send(job) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(job)) => {
                        if !signalled {
                            signalled = filled_tx.send(false).is_ok();
                        }
                        if tx.blocking_send(job).is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            if !signalled {
                let _ = filled_tx.send(true);
            }
        })
        .context("failed to start the generator thread")?;
    let all_in_memory = filled_rx.recv().unwrap_or(true);
    eprintln!(
        "kubetrail gen: {} events in {} batches of {batch}{}, generated in {:.1} s; posting to {url} over {} \
         connection(s), {}",
        thousands(count),
        thousands(batches),
        if all_in_memory {
            ""
        } else {
            " (partly: the rest is generated while sending)"
        },
        gen_started.elapsed().as_secs_f64(),
        args.connections,
        if args.send_rate > 0.0 {
            format!(
                "paced at {} events/s",
                thousands(args.send_rate.round() as u64)
            )
        } else {
            "as fast as acknowledged".to_string()
        },
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let queue = Arc::new(tokio::sync::Mutex::new(rx));
    let (tally, elapsed) = runtime.block_on(async {
        let start = tokio::time::Instant::now();
        let workers: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(worker(target.clone(), queue.clone(), start, args.send_rate)))
            .collect();
        let mut tally = Tally::default();
        for w in workers {
            tally.merge(w.await.expect("a load worker panicked"));
        }
        (tally, start.elapsed())
    });
    drop(queue);
    filler.join().ok();
    report(args, &target, tally, elapsed)
}

fn report(
    args: &GenArgs,
    target: &Target,
    mut t: Tally,
    elapsed: Duration,
) -> anyhow::Result<Outcome> {
    t.latencies_us.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let lat = |q| percentile_ms(&t.latencies_us, q);
    let max = t.latencies_us.last().map_or(0.0, |&us| us as f64 / 1000.0);
    let errors: u64 = t.errors.values().sum();
    let events_per_s = t.acked_events as f64 / secs;
    let mb_per_s = t.acked_bytes as f64 / secs / 1e6;
    eprintln!(
        "sent {} events, acknowledged {} in {} requests ({} retries after 429/503 or a broken connection, \
         {errors} batches failed{})",
        thousands(t.sent_events),
        thousands(t.acked_events),
        thousands(t.requests),
        thousands(t.retries),
        if t.errors.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                t.errors
                    .iter()
                    .map(|(k, v)| format!("{k} ×{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    );
    if t.receiver_accepted + t.receiver_duplicates > 0 {
        eprintln!(
            "the receiver stored {} and recognised {} as duplicates",
            thousands(t.receiver_accepted),
            thousands(t.receiver_duplicates)
        );
    }
    eprintln!(
        "{secs:.2} s: {} events/s, {mb_per_s:.1} MB/s; ack latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, \
         max {max:.1} ms",
        thousands(events_per_s.round() as u64),
        lat(0.50),
        lat(0.90),
        lat(0.99),
    );
    if args.format == Format::Json {
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        let out = serde_json::json!({
            "url": target.url,
            "batch": args.batch,
            "connections": args.connections,
            "send_rate": args.send_rate,
            "events_sent": t.sent_events,
            "events_acknowledged": t.acked_events,
            "requests": t.requests,
            "retries": t.retries,
            "errors": errors,
            "errors_by_status": t.errors,
            "receiver_accepted": t.receiver_accepted,
            "receiver_duplicates": t.receiver_duplicates,
            "bytes_acknowledged": t.acked_bytes,
            "elapsed_s": round(secs),
            "events_per_s": round(events_per_s),
            "mb_per_s": round(mb_per_s),
            "latency_ms": {
                "p50": lat(0.50),
                "p90": lat(0.90),
                "p99": lat(0.99),
                "max": max,
            },
        });
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{out}").context("failed to write to standard output")?;
    }
    Ok(if errors > 0 || t.acked_events < t.sent_events {
        Outcome::Findings
    } else {
        Outcome::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_rates_that_are_not_positive() {
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("NaN").is_err());
        assert_eq!(parse_rate("2.5"), Ok(2.5));
    }

    #[test]
    fn event_lists_are_valid_and_items_carry_no_kind() {
        let mut g = Generator::new(Config::default());
        let mut body = Vec::new();
        event_list(&mut g, 3, &mut body);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "EventList");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        for item in items {
            assert!(item.get("kind").is_none() && item.get("apiVersion").is_none());
            assert!(item["auditID"].is_string());
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&v, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
