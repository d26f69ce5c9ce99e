//! `kubetrail serve`: the collector. Webhook and audit log files in, durable redacted log out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use kubetrail_pipeline::file::{FileSourceConfig, FileTailer};
use kubetrail_pipeline::{IngestError, Pipeline, PipelineConfig};
use kubetrail_server::{Accepted, Ingest, Peer, Rejected, ServerConfig, TlsFiles};
use kubetrail_store::WalOptions;

use crate::Outcome;
use crate::cmd::import::now_us;
use crate::config::{self, Config};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubetrail serve                                  # local trial: http://127.0.0.1:9443, ./kubetrail-data\n  \
                        kubetrail setup webhook --out /etc/kubetrail && kubetrail serve --config /etc/kubetrail/kubetrail.yaml\n  \
                        kubetrail serve --file /var/log/kubernetes/audit/audit.log"
)]
pub struct ServeArgs {
    /// Configuration file (YAML; see `kubetrail setup webhook` and `kubetrail config check`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (default ./kubetrail-data).
    #[arg(long, env = "KUBETRAIL_DATA")]
    pub data: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:9443). A non-loopback address needs TLS and authentication.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Follow this kube-apiserver audit log file (repeatable), rotation-safe, resuming where it stopped.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Cluster name stamped on events whose source names none.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Allow a non-loopback listener without TLS or authentication. Audit events carry who did what to which
    /// secret: never in production.
    #[arg(long)]
    pub insecure: bool,
    /// Send every alert of medium severity or above to this URL (repeatable): one JSON object per POST,
    /// signed with `X-Kubetrail-Signature: sha256=HMAC` under the key in DATA/alerts/webhook.key; retried
    /// until delivered, never lost across restarts.
    #[arg(long = "alert-webhook", value_name = "URL")]
    pub alert_webhooks: Vec<String>,
    /// Send every alert of medium severity or above to this Prometheus Alertmanager (repeatable; its base
    /// URL, e.g. `http://alertmanager:9093`): labels alertname, severity, rule, actor for routing.
    #[arg(long = "alertmanager", value_name = "URL")]
    pub alertmanagers: Vec<String>,
    /// Send every alert of medium severity or above to PagerDuty (Events API v2) with this integration's
    /// routing key (read from the file, so it stays out of process listings); resolving an alert resolves it.
    #[arg(long = "pagerduty-routing-key-file", value_name = "FILE")]
    pub pagerduty_key_file: Option<PathBuf>,
    /// PagerDuty's events endpoint (default `https://events.pagerduty.com/v2/enqueue`).
    #[arg(
        long = "pagerduty-url",
        value_name = "URL",
        requires = "pagerduty_key_file"
    )]
    pub pagerduty_url: Option<String>,
    /// Send every alert of medium severity or above to this Slack incoming webhook (repeatable).
    #[arg(long = "slack-webhook", value_name = "URL")]
    pub slack_webhooks: Vec<String>,
    /// The web console's address as analysts reach it: alerts link to `<URL>/alerts/<id>` (overrides the
    /// config's `alerts.console_url`).
    #[arg(long = "console-url", value_name = "URL")]
    pub console_url: Option<String>,
}

/// The pipeline as the HTTP listener sees it.
struct Collector {
    pipeline: Arc<Pipeline>,
    /// Alert delivery, per destination.
    delivery: Vec<Arc<crate::outbox::DestinationStats>>,
    /// Shipping, per sink.
    sinks: Vec<Arc<crate::ship::Stats>>,
}

impl Ingest for Collector {
    async fn ingest(&self, body: Bytes, _peer: Peer) -> Result<Accepted, Rejected> {
        let guard_pipeline = self.pipeline.clone();
        let len = body.len();
        let result = tokio::task::spawn_blocking(move || {
            let _inflight = guard_pipeline.admit(len)?;
            guard_pipeline.ingest_body(&body, "webhook", now_us())
        })
        .await
        .map_err(|e| Rejected::Unavailable {
            retry_after_secs: 5,
            reason: format!("internal error: {e}"),
        })?;
        match result {
            Ok(o) => Ok(Accepted {
                events: o.events,
                duplicates: o.duplicates,
                skipped: o.skipped,
            }),
            Err(IngestError::Malformed(m)) => Err(Rejected::Malformed(m)),
            Err(IngestError::Overloaded { .. }) => Err(Rejected::Overloaded {
                retry_after_secs: 1,
            }),
            Err(e @ IngestError::Full { .. }) => Err(Rejected::Unavailable {
                retry_after_secs: 30,
                reason: e.to_string(),
            }),
            Err(e @ IngestError::Wal(_)) => {
                tracing::error!(error = %e, "write-ahead log append failed");
                Err(Rejected::Unavailable {
                    retry_after_secs: 5,
                    reason: "storage error".into(),
                })
            }
        }
    }

    fn ready(&self) -> Result<(), String> {
        self.pipeline.ready()
    }

    fn metrics(&self) -> String {
        let mut m = self.pipeline.metrics().render();
        m += &crate::outbox::render_metrics(&self.delivery);
        m += &crate::ship::render_metrics(&self.sinks);
        m
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    crate::logging::init();
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    cfg.validate()?;
    let dir = crate::data::resolve(args.data.clone(), cfg.data.clone());

    let mut server = ServerConfig {
        listen: args
            .listen
            .or(cfg.listen)
            .unwrap_or_else(|| config::DEFAULT_LISTEN.parse().expect("valid")),
        insecure: args.insecure || cfg.insecure,
        ..ServerConfig::default()
    };
    if let Some(tls) = &cfg.tls {
        server.tls = Some(TlsFiles {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            client_ca: tls.client_ca.clone(),
        });
    }
    if let Some(auth) = &cfg.auth {
        server.bearer_tokens = config::read_tokens(&auth.bearer_tokens_file)?;
    }
    let mut wal_opts = WalOptions::default();
    let mut pipe_cfg = PipelineConfig {
        cluster: args
            .cluster
            .clone()
            .or(cfg.cluster.clone())
            .unwrap_or_else(|| "default".into()),
        filter: cfg
            .filter_policy
            .as_deref()
            .map(config::load_filter)
            .transpose()?,
        ..PipelineConfig::default()
    };
    if let Some(w) = &cfg.wal {
        if let Some(mb) = w.segment_mb {
            wal_opts.segment_bytes = mb << 20;
        }
        if let Some(gb) = w.budget_gb {
            wal_opts.budget_bytes = (gb * (1u64 << 30) as f64) as u64;
        }
    }
    if let Some(l) = &cfg.limits {
        if let Some(mb) = l.max_body_mb {
            server.max_body_bytes = mb << 20;
        }
        if let Some(mb) = l.max_decompressed_mb {
            server.max_decompressed_bytes = mb << 20;
        }
        if let Some(mb) = l.max_inflight_mb {
            pipe_cfg.max_inflight_bytes = mb << 20;
        }
        // A plain body as large as the wire allows must not be refused as "decompressed" too large.
        server.max_decompressed_bytes = server.max_decompressed_bytes.max(server.max_body_bytes);
    }
    kubetrail_server::check_config(&server)?;
    crate::data::ensure(&dir)?;
    let _writer = crate::data::lock_writer(&dir, "serve")?;

    let wal = crate::data::open_wal(&dir, wal_opts)?;
    let alerts_file = dir.join("alerts").join("alerts.jsonl");
    std::fs::create_dir_all(dir.join("alerts"))?;
    if let Some(damage) = wal.damage() {
        let _ = crate::alerts::raise_system(
            &alerts_file,
            "kt-log-damaged",
            "Write-ahead log damaged",
            "critical",
            "wal",
            &format!(
                "{damage}: records were lost or altered on disk (not a torn write, which a crash leaves); \
                 find out who could write the data directory"
            ),
            &["kubetrail verify"],
        );
    }
    let pipeline = Arc::new(Pipeline::new(
        wal,
        crate::data::redactor(&dir, &cfg.redaction)?,
        pipe_cfg,
    )?);

    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let how = match (&server.tls, server.listen.ip().is_loopback()) {
        (Some(_), _) => "TLS".to_string(),
        (None, true) => "plain HTTP on loopback: a local trial; see `kubetrail setup webhook` to connect a cluster".into(),
        (None, false) => "plain HTTP, --insecure: anyone on the network can write audit events".into(),
    };
    eprintln!(
        "kubetrail: receiving audit events at {scheme}://{}/k8s-audit ({how})",
        server.listen
    );
    let login = if server.tls.as_ref().is_some_and(|t| t.client_ca.is_some()) {
        "log in with a client certificate or a bearer token"
    } else if !server.bearer_tokens.is_empty() {
        "log in with a token of auth.bearer_tokens_file"
    } else {
        "no login on loopback"
    };
    eprintln!(
        "kubetrail: web console at {scheme}://{}/ ({login})",
        server.listen
    );
    eprintln!("kubetrail: storing in {}", dir.display());
    // Alerts link to the console; without a configured address, this listener's own when it names one.
    let default_console =
        (!server.listen.ip().is_unspecified()).then(|| format!("{scheme}://{}", server.listen));

    let stop = Arc::new(AtomicBool::new(false));
    let mut tailers = Vec::new();
    let files: Vec<PathBuf> = args
        .files
        .iter()
        .cloned()
        .chain(cfg.files.iter().map(|f| f.path.clone()))
        .collect();
    for (i, path) in files.into_iter().enumerate() {
        eprintln!("kubetrail: following {}", path.display());
        let checkpoint = source_position(&dir, i, &path)?;
        let tailer = FileTailer::open(FileSourceConfig::new(path.clone(), checkpoint))
            .with_context(|| format!("failed to follow `{}`", path.display()))?;
        let (pipeline, stop) = (pipeline.clone(), stop.clone());
        tailers.push(std::thread::spawn(move || {
            follow(tailer, &path, &pipeline, &stop)
        }));
    }

    // The log becomes Parquet within seconds, checkpoints are signed every few minutes and at shutdown.
    let mut store = crate::store::Store::open(&dir, pipeline.wal().clone())?;

    // Every stored event goes through detection, from the log, within a second of its acknowledgement.
    let detection = cfg.detection.clone().unwrap_or_default();
    let sources = crate::detection::Sources {
        builtin: detection.builtin.unwrap_or(true),
        paths: detection.rules.clone(),
    };
    let (rules, engine) = crate::detection::engine(&sources, &detection)?;
    let detector = crate::live::Detector::open(
        &dir,
        pipeline.wal().clone(),
        engine,
        args.console_url
            .clone()
            .or_else(|| cfg.alerts.as_ref().and_then(|a| a.console_url.clone()))
            .or(default_console),
    )?
    .report_to(pipeline.metrics());
    store.hold_for(detector.position());
    let sinks = crate::sinks_config::build_all(&cfg.sinks)?;
    for s in &sinks {
        eprintln!(
            "kubetrail: shipping to {} `{}` (batches of up to {} events, flushed within {:?})",
            s.kind, s.name, s.batching.max_events, s.batching.flush
        );
    }
    let mut shipping = Vec::new();
    let mut sink_stats = Vec::new();
    for (thread, stats, hold) in
        crate::ship::start(&dir, pipeline.wal().clone(), sinks, stop.clone())?
    {
        store.hold_for(hold);
        shipping.push(thread);
        sink_stats.push(stats);
    }
    eprintln!(
        "kubetrail: detecting with {} rules; alerts in {}",
        rules.len(),
        dir.join("alerts").join("alerts.jsonl").display()
    );
    let detecting = {
        let stop = stop.clone();
        std::thread::spawn(move || detector.run(&stop))
    };
    let destination = |kind: crate::outbox::Kind| {
        move |url: &String| crate::outbox::Webhook {
            url: url.clone(),
            kind: kind.clone(),
            route: crate::outbox::Route::medium_and_above(),
        }
    };
    let webhooks: Vec<crate::outbox::Webhook> = args
        .alert_webhooks
        .iter()
        .map(destination(crate::outbox::Kind::Webhook))
        .chain(
            args.alertmanagers
                .iter()
                .map(destination(crate::outbox::Kind::Alertmanager)),
        )
        .chain(
            args.slack_webhooks
                .iter()
                .map(destination(crate::outbox::Kind::Slack)),
        )
        .collect();
    let mut webhooks = webhooks;
    if let Some(file) = &args.pagerduty_key_file {
        let key = std::fs::read_to_string(file)
            .with_context(|| {
                format!(
                    "failed to read the PagerDuty routing key `{}`",
                    file.display()
                )
            })?
            .trim()
            .to_string();
        if key.is_empty() {
            anyhow::bail!(
                "the PagerDuty routing key file `{}` is empty",
                file.display()
            );
        }
        let url = args
            .pagerduty_url
            .clone()
            .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".to_string());
        webhooks.push(destination(crate::outbox::Kind::PagerDuty {
            routing_key: key,
        })(&url));
    }
    for d in cfg.alerts.iter().flat_map(|a| &a.destinations) {
        webhooks.push(d.webhook()?);
    }
    let (delivering, delivery) = crate::outbox::start(&dir, &webhooks, stop.clone())?;
    for w in &webhooks {
        match w.kind {
            crate::outbox::Kind::Webhook => eprintln!(
                "kubetrail: sending alerts of medium or above to {} (signed with {})",
                w.url.split(['?', '#']).next().unwrap_or(""),
                dir.join("alerts").join("webhook.key").display()
            ),
            crate::outbox::Kind::Alertmanager => eprintln!(
                "kubetrail: sending alerts of medium or above to Alertmanager at {}",
                w.url
            ),
            crate::outbox::Kind::PagerDuty { .. } => eprintln!(
                "kubetrail: sending alerts of medium or above to PagerDuty at {}",
                w.url
            ),
            crate::outbox::Kind::Slack => eprintln!(
                "kubetrail: sending alerts of medium or above to Slack ({})",
                w.url.split('/').take(3).collect::<Vec<_>>().join("/")
            ),
        }
    }
    let housekeeping = {
        let stop = stop.clone();
        let pipeline = pipeline.clone();
        std::thread::spawn(move || {
            // While the log cannot write: since when and why, and whether the alert is recorded yet (on a
            // full disk it cannot be until space frees; it is retried every second).
            let mut failing: Option<(String, String, bool)> = None;
            let mut wal_errors = pipeline.metrics().rejected("wal_error").get();
            while !stop.load(Ordering::SeqCst) {
                if let Err(e) = store.tick() {
                    tracing::error!(error = %format!("{e:#}"), "storage housekeeping failed; retrying");
                }
                // A log that cannot write is healed here (and by the next append), once a second.
                pipeline.heal();
                // Batches refused for a storage error since the last tick: an episode may have healed
                // before this thread saw the log unhealthy.
                let errors = pipeline.metrics().rejected("wal_error").get();
                let refused = errors > wal_errors;
                wal_errors = errors;
                match (pipeline.wal().healthy(), &mut failing) {
                    (Err(e), None) => {
                        tracing::error!(error = %e, "the write-ahead log cannot write: batches are answered 503 until it heals");
                        failing = Some((jiff::Timestamp::now().to_string(), e, false));
                    }
                    (Ok(()), None) if refused => {
                        failing = Some((
                            jiff::Timestamp::now().to_string(),
                            "a write or fsync failed, and the log healed".into(),
                            false,
                        ));
                    }
                    _ => {}
                }
                if let Some((since, e, recorded)) = &mut failing {
                    if !*recorded {
                        *recorded = crate::alerts::raise_system(
                            &alerts_file,
                            "kt-log-write-failing",
                            "Write-ahead log cannot write",
                            "critical",
                            "wal",
                            &format!(
                                "since {since} the write-ahead log could not write ({e}): batches were refused \
                                 with 503 (the apiserver retries, then drops what overflows its buffer); free \
                                 disk space"
                            ),
                            &["df -h", "kubetrail verify"],
                        );
                    }
                    if *recorded && pipeline.wal().healthy().is_ok() {
                        tracing::info!("the write-ahead log writes again");
                        failing = None;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            if let Err(e) = store.finish() {
                tracing::error!(error = %format!("{e:#}"), "final conversion or checkpoint failed");
            }
        })
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let collector = Arc::new(Collector {
        pipeline: pipeline.clone(),
        delivery,
        sinks: sink_stats,
    });
    // Queries get their own threads: a heavy one never delays a webhook acknowledgement.
    let queries = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kubetrail-query")
        .enable_all()
        .build()?;
    let api = crate::api::QueryApi::new(dir.clone(), queries.handle().clone())
        .router()
        .merge(crate::console::router());
    let result = runtime.block_on(kubetrail_server::serve(
        server,
        collector,
        api,
        shutdown_signal(),
    ));
    queries.shutdown_timeout(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    for t in tailers {
        let _ = t.join();
    }
    let _ = detecting.join();
    for t in shipping {
        let _ = t.join();
    }
    for t in delivering {
        let _ = t.join();
    }
    let _ = housekeeping.join();
    result?;
    eprintln!("kubetrail: stopped");
    Ok(Outcome::Ok)
}

/// Follows one audit log file until `stop`: every complete line goes through the pipeline; the checkpoint
/// advances only once a batch is durable, so a crash re-reads at most the batch in flight.
fn follow(mut tailer: FileTailer, path: &std::path::Path, pipeline: &Pipeline, stop: &AtomicBool) {
    let source = format!("file:{}", path.display());
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::SeqCst) {
        let polled = tailer.poll(&mut |lines| {
            let mut batch = kubetrail_pipeline::Batch::new();
            let received = now_us();
            for line in lines {
                let loc = format!("{}:{}", line.file.display(), line.line);
                if line.truncated {
                    // Its metadata is stored, marked `kubetrail.io/truncated`: one huge event never
                    // stalls the file nor hides what it was.
                    tracing::warn!(location = %loc, "audit log line longer than the limit: storing its metadata");
                    pipeline.add_cut(&mut batch, line.bytes, line.len, loc, &source, received);
                    continue;
                }
                match std::str::from_utf8(line.bytes) {
                    Ok(text) => pipeline.decode_into(&mut batch, text, &source, received),
                    Err(_) => batch.skip(loc, "not UTF-8 text".into()),
                }
            }
            pipeline.commit(batch).map(|_| ()).map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        });
        match polled {
            Ok(stats) => {
                pipeline
                    .metrics()
                    .file_lag_bytes
                    .get_or_create(&kubetrail_pipeline::metrics_labels::PathLabel {
                        path: path.display().to_string(),
                    })
                    .set(stats.lag_bytes as i64);
                backoff = Duration::from_millis(200);
                if stats.lines == 0 {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "reading the audit log failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Where a followed file's read position is kept: `DATA/sources/`, apart from the signed checkpoints in
/// `DATA/checkpoints/` (which `verify` reads as a chain, so nothing else may live there). A position left in
/// `checkpoints/` by an earlier version is moved over.
fn source_position(
    dir: &std::path::Path,
    index: usize,
    path: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let sources = dir.join(SOURCES_DIR);
    std::fs::create_dir_all(&sources)
        .with_context(|| format!("failed to create `{}`", sources.display()))?;
    let name = sanitize(path);
    let hash = &crate::alerts::short_hash(&path.display().to_string())[..12];
    let position = sources.join(format!("file-{name}-{hash}.json"));
    let legacy = dir
        .join(kubetrail_store::integrity::CHECKPOINT_DIR)
        .join(format!("file-{index}-{name}.json"));
    if !position.exists() && legacy.exists() {
        std::fs::rename(&legacy, &position).with_context(|| {
            format!(
                "failed to move the file position `{}` to `{}`",
                legacy.display(),
                position.display()
            )
        })?;
        tracing::info!(from = %legacy.display(), to = %position.display(), "moved a file source's position out of the checkpoints");
    }
    Ok(position)
}

/// The directory of sources' read positions under the data directory.
pub const SOURCES_DIR: &str = "sources";

fn sanitize(p: &std::path::Path) -> String {
    p.display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("kubetrail: shutting down, finishing in-flight batches");
}
