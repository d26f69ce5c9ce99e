//! The collector as `kubetrail serve` runs it: [`Settings`] resolves the command line over the config file
//! into one value, [`run`] starts the services (pipeline, file followers, housekeeping, live detection,
//! shipping, alert delivery, the listener with its API and console) and stops them in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use kubetrail_pipeline::file::{FileSourceConfig, FileTailer};
use kubetrail_pipeline::{IngestError, Pipeline, PipelineConfig};
use kubetrail_server::{Accepted, Ingest, Peer, Rejected, ServerConfig, TlsFiles};
use kubetrail_store::WalOptions;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::{self, Config};
use crate::data::now_us;

/// What the command line sets over the config file.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub data: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub files: Vec<PathBuf>,
    pub cluster: Option<String>,
    pub insecure: bool,
    pub alert_webhooks: Vec<String>,
    pub alertmanagers: Vec<String>,
    pub pagerduty_key_file: Option<PathBuf>,
    pub pagerduty_url: Option<String>,
    pub slack_webhooks: Vec<String>,
    pub console_url: Option<String>,
}

/// Everything the collector runs with, resolved and checked.
#[derive(Debug)]
pub struct Settings {
    pub dir: PathBuf,
    pub server: ServerConfig,
    pub wal: WalOptions,
    pub pipeline: PipelineConfig,
    /// Audit log files to follow.
    pub files: Vec<PathBuf>,
    pub detection: crate::alerting::rules::DetectionConfig,
    pub sinks: Vec<crate::shipping::config::SinkConfig>,
    /// This collector's name among replicas sharing an archive ([`Config::replica`]).
    pub replica: Option<String>,
    pub destinations: Vec<crate::alerting::outbox::Webhook>,
    pub redaction: kubetrail_policy::RedactionConfig,
    /// The console's address as analysts reach it, for links in alerts.
    pub console_url: Option<String>,
    /// The longest suppression the API accepts, in days.
    pub max_suppression_days: u32,
    /// An API query's time limit and its worker's memory limit (bytes).
    pub query_limits: (Duration, u64),
    /// What the API and console answer from (`query.backend`): the store, or a ClickHouse table.
    pub query_source: kubetrail_engine::Source,
    /// Where the identities come from (the config's `auth` and `tls` only): read again while serving.
    pub identities: Config,
}

impl Settings {
    /// Resolves the command line's flags over the config file (flags win) into one value; reads what the
    /// settings name (tokens, the filter policy, PagerDuty's key) so a mistake is reported before anything
    /// starts.
    pub fn resolve(cfg: Config, args: Flags) -> anyhow::Result<Settings> {
        cfg.validate()?;
        for d in cfg.warnings() {
            tracing::warn!("config: {d}");
        }
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
        server.identities = cfg.identities()?;
        server.server_names = cfg.server_names.clone();
        server.metrics_public = cfg.metrics.as_ref().is_some_and(|m| m.public);
        let wal_opts = config::WalConfig::options(cfg.wal.as_ref());
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
            server.max_decompressed_bytes =
                server.max_decompressed_bytes.max(server.max_body_bytes);
        }
        let files: Vec<PathBuf> = args
            .files
            .iter()
            .cloned()
            .chain(cfg.files.iter().map(|f| f.path.clone()))
            .collect();
        // The command line's destinations, as the config file's would be written.
        use crate::alerting::outbox::{DestinationConfig, DestinationType};
        let flag = |kind: DestinationType, url: &String| DestinationConfig {
            kind: Some(kind),
            url: Some(url.clone()),
            ..DestinationConfig::default()
        };
        let mut flagged: Vec<DestinationConfig> = Vec::new();
        flagged.extend(
            args.alert_webhooks
                .iter()
                .map(|u| flag(DestinationType::Webhook, u)),
        );
        flagged.extend(
            args.alertmanagers
                .iter()
                .map(|u| flag(DestinationType::Alertmanager, u)),
        );
        flagged.extend(
            args.slack_webhooks
                .iter()
                .map(|u| flag(DestinationType::Slack, u)),
        );
        if let Some(file) = &args.pagerduty_key_file {
            flagged.push(DestinationConfig {
                kind: Some(DestinationType::Pagerduty),
                url: args.pagerduty_url.clone(),
                routing_key_file: Some(file.clone()),
                ..DestinationConfig::default()
            });
        }
        let mut webhooks = Vec::new();
        for d in &flagged {
            webhooks.push(d.webhook()?);
        }
        for (i, d) in cfg.alerts.iter().flat_map(|a| &a.destinations).enumerate() {
            webhooks.push(
                d.webhook()
                    .with_context(|| format!("alerts.destinations[{i}]"))?,
            );
        }
        kubetrail_server::check_config(&server)?;
        let detection = cfg.detection.clone().unwrap_or_default();
        let max_suppression_days = cfg
            .alerts
            .as_ref()
            .and_then(|a| a.max_suppression_days)
            .unwrap_or(crate::alerting::suppress::DEFAULT_MAX_DAYS);
        if max_suppression_days == 0 || max_suppression_days > 365 {
            anyhow::bail!(
                "alerts.max_suppression_days must be 1 to 365, got {max_suppression_days}"
            );
        }
        let (timeout, memory) = match &cfg.query {
            Some(q) => q.resolve()?,
            None => (None, None),
        };
        let query_limits = (
            timeout.unwrap_or(crate::service::api::QUERY_TIMEOUT),
            memory.unwrap_or(crate::service::api::DEFAULT_WORKER_MEMORY),
        );
        let query_source = match &cfg.query {
            Some(q) => q.source(&dir)?,
            None => kubetrail_engine::Source::Store(dir.join("store")),
        };
        let identities = Config {
            auth: cfg.auth.clone(),
            tls: cfg.tls.clone(),
            ..Config::default()
        };
        Ok(Settings {
            max_suppression_days,
            query_limits,
            query_source,
            identities,
            console_url: args
                .console_url
                .clone()
                .or_else(|| cfg.alerts.as_ref().and_then(|a| a.console_url.clone())),
            dir,
            server,
            wal: wal_opts,
            pipeline: pipe_cfg,
            files,
            detection,
            replica: cfg.replica()?,
            sinks: cfg.sinks,
            destinations: webhooks,
            redaction: cfg.redaction,
        })
    }
}

/// Runs the collector until `shutdown` completes, then finishes in-flight work: on `listener` when given (a
/// test's port 0, socket activation), else on the settings' address. `say` gets the startup lines (where it
/// listens, stores, ships and sends alerts) for the operator.
pub fn run(
    s: Settings,
    listener: Option<std::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    say: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let Settings {
        dir,
        server,
        wal: wal_opts,
        pipeline: pipe_cfg,
        files,
        detection,
        sinks,
        replica,
        destinations: webhooks,
        redaction,
        console_url,
        max_suppression_days,
        query_limits: (query_timeout, query_memory),
        query_source,
        identities: identity_source,
    } = s;
    crate::data::ensure(&dir)?;
    let _writer = crate::data::lock_writer(&dir, "serve")?;

    let wal = crate::data::open_wal(&dir, wal_opts)?;
    let alerts_file = dir.join("alerts").join("alerts.jsonl");
    std::fs::create_dir_all(dir.join("alerts"))?;
    if let Some(damage) = wal.damage() {
        let _ = crate::alerting::store::raise_system(
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
        crate::data::redactor(&dir, &redaction)?,
        PipelineConfig {
            dedup_keys: Some(crate::data::dedup_keys(&dir)),
            ..pipe_cfg
        },
    )?);

    let metrics = ServiceMetrics::default();
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
    say(&format!(
        "receiving audit events at {scheme}://{}/k8s-audit ({how})",
        server.listen
    ));
    let login = if server.tls.as_ref().is_some_and(|t| t.client_ca.is_some()) {
        "log in with a client certificate or a bearer token"
    } else if !server.identities.is_empty() {
        "log in with your identity's token"
    } else {
        "no login on loopback"
    };
    say(&format!(
        "web console at {scheme}://{}/ ({login})",
        server.listen
    ));
    say(&format!("storing in {}", dir.display()));
    // Alerts link to the console; without a configured address, this listener's own when it names one.
    let default_console =
        (!server.listen.ip().is_unspecified()).then(|| format!("{scheme}://{}", server.listen));

    let stop = Arc::new(AtomicBool::new(false));
    let mut tailers = Vec::new();
    for (i, path) in files.into_iter().enumerate() {
        say(&format!("following {}", path.display()));
        let checkpoint = source_position(&dir, i, &path)?;
        let tailer = FileTailer::open(FileSourceConfig::new(path.clone(), checkpoint))
            .with_context(|| format!("failed to follow `{}`", path.display()))?;
        let (pipeline, stop) = (pipeline.clone(), stop.clone());
        tailers.push(std::thread::spawn(move || {
            follow(tailer, &path, &pipeline, &stop)
        }));
    }

    // The log becomes Parquet within seconds, checkpoints are signed every few minutes and at shutdown.
    let mut store = crate::service::housekeeping::Store::open(&dir, pipeline.wal().clone())?;
    store.report_to(&metrics.store);
    if let Some(keys) = pipeline.dedup_keys() {
        store.release_as_converted(keys.clone());
    }

    // Every stored event goes through detection, from the log, within a second of its acknowledgement.
    let sources = crate::alerting::rules::Sources {
        builtin: detection.builtin.unwrap_or(true),
        paths: detection.rules.clone(),
    };
    let (rules, engine) = crate::alerting::rules::engine(&sources, &detection)?;
    let detector = crate::alerting::live::Detector::open(
        &dir,
        pipeline.wal().clone(),
        engine,
        console_url.or(default_console),
    )?
    .max_suppression_days(max_suppression_days)
    .watching(detection.watch(sources.builtin)?)
    .report_to(pipeline.metrics());
    store.hold_for(detector.position());
    let sinks = crate::shipping::config::build_all(&sinks, replica.as_deref())?;
    for s in &sinks {
        say(&format!(
            "shipping to {} `{}` (batches of up to {} events, flushed within {:?})",
            s.kind, s.name, s.batching.max_events, s.batching.flush
        ));
    }
    let mut shipping = Vec::new();
    for (thread, hold) in crate::shipping::worker::start(
        &dir,
        pipeline.wal().clone(),
        sinks,
        &metrics.shipping,
        stop.clone(),
    )? {
        store.hold_for(hold);
        shipping.push(thread);
    }
    say(&format!(
        "detecting with {} rules; alerts in {}",
        rules.len(),
        dir.join("alerts").join("alerts.jsonl").display()
    ));
    let detecting = {
        let stop = stop.clone();
        std::thread::spawn(move || detector.run(&stop))
    };
    let delivering =
        crate::alerting::outbox::start(&dir, &webhooks, &metrics.outbox, stop.clone())?;
    for w in &webhooks {
        // Never the URL's path or query: they may be the destination's secret (Slack's).
        let what = match w.kind {
            crate::alerting::outbox::Kind::Webhook => format!(
                "the webhook at {} (signed with {})",
                w.shown_url(),
                dir.join("alerts").join("webhook.key").display()
            ),
            crate::alerting::outbox::Kind::Alertmanager => {
                format!("Alertmanager at {}", w.shown_url())
            }
            crate::alerting::outbox::Kind::PagerDuty { .. } => {
                format!("PagerDuty at {}", w.shown_url())
            }
            crate::alerting::outbox::Kind::Slack => format!("Slack at {}", w.shown_url()),
        };
        let via = match w
            .endpoint()
            .ok()
            .and_then(|(c, _)| c.proxy().map(str::to_string))
        {
            Some(p) => format!(" through the proxy {p}"),
            None => String::new(),
        };
        say(&format!(
            "sending alerts of {} or above to {what}{via}",
            w.route.min_severity.as_str()
        ));
    }
    let housekeeping = {
        let stop = stop.clone();
        let pipeline = pipeline.clone();
        let alerts_file = alerts_file.clone();
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
                        *recorded = crate::alerting::store::raise_system(
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
        metrics,
    });
    // Queries get their own threads: a heavy one never delays a webhook acknowledgement.
    let queries = crate::service::api::query_runtime()?;
    // Each query in a worker process of this very binary: killed at its time limit, bounded in memory.
    let api = crate::service::api::QueryApi::new(dir.clone(), queries.handle().clone())
        .with_timeout(query_timeout)
        .source(query_source)
        .isolation(crate::service::api::Isolation::Worker {
            exe: "/proc/self/exe".into(),
            memory: query_memory,
        })
        .max_suppression_days(max_suppression_days)
        .router()
        .merge(crate::service::console::router());
    // Identities and the certificate, re-read while serving (token files and Secrets are rotated in place).
    let live = kubetrail_server::Live::new(&server)?;
    let reloading = {
        let (live, stop, alerts_file) = (live.clone(), stop.clone(), alerts_file.clone());
        let (identities, tls) = (server.identities.clone(), server.tls.clone());
        std::thread::Builder::new()
            .name("kubetrail-reload".into())
            .spawn(move || {
                crate::service::reload::run(
                    &live,
                    identity_source,
                    identities,
                    tls,
                    &alerts_file,
                    &stop,
                )
            })?
    };
    let listener = match listener {
        Some(l) => l,
        None => std::net::TcpListener::bind(server.listen).map_err(|source| {
            kubetrail_server::ServerError::Bind {
                addr: server.listen,
                source,
            }
        })?,
    };
    let result = runtime.block_on(async move {
        kubetrail_server::serve_live(listener, server, live, collector, api, shutdown).await
    });
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
    let _ = reloading.join();
    result?;
    say("stopped");
    Ok(())
}

/// The series of the collector's services beside the pipeline's (which include detection's) and the
/// server's: alert delivery, shipping, storage housekeeping, the build.
#[derive(Debug, Clone, Default)]
pub struct ServiceMetrics {
    pub outbox: crate::alerting::outbox::OutboxMetrics,
    pub shipping: crate::shipping::worker::ShippingMetrics,
    pub store: crate::service::housekeeping::StoreMetrics,
}

impl ServiceMetrics {
    /// Registers every series (clones: they share their values) and `build_info` in `registry`, whose prefix
    /// is `kubetrail`.
    pub fn register(&self, registry: &mut Registry) {
        self.outbox.register(registry);
        self.shipping.register(registry);
        self.store.register(registry);
        // A gauge of 1, as Prometheus's text format has no `info` type.
        let build = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        build
            .get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("build_info", "The running kubetrail (always 1)", build);
    }
}

/// The pipeline as the HTTP listener sees it.
struct Collector {
    pipeline: Arc<Pipeline>,
    /// Every series but the pipeline's and the server's own.
    metrics: ServiceMetrics,
}

impl Ingest for Collector {
    async fn ingest(&self, body: Bytes, peer: Peer) -> Result<Accepted, Rejected> {
        let guard_pipeline = self.pipeline.clone();
        let len = body.len();
        // The sender is stored with every event (the `source` column): `webhook:apiserver`.
        let source = match &peer.identity {
            Some(name) => format!("webhook:{name}"),
            None => "webhook".to_string(),
        };
        let result = tokio::task::spawn_blocking(move || {
            let _inflight = guard_pipeline.admit(len)?;
            guard_pipeline.ingest_body(&body, &source, now_us())
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

    fn register_metrics(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kubetrail");
        self.pipeline.metrics().register(r);
        self.metrics.register(r);
    }
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
    let hash = &crate::alerting::store::short_hash(&path.display().to_string())[..12];
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
