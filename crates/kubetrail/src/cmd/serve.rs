//! `kubetrail serve`: the collector's command line. The collector itself is
//! `kubetrail_runtime::service::collector`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use kubetrail_runtime::config::Config;
use kubetrail_runtime::service::collector::{self, Flags, Settings};

use crate::Outcome;

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

pub fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    kubetrail_runtime::logging::init();
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let flags = Flags {
        data: args.data,
        listen: args.listen,
        files: args.files,
        cluster: args.cluster,
        insecure: args.insecure,
        alert_webhooks: args.alert_webhooks,
        alertmanagers: args.alertmanagers,
        pagerduty_key_file: args.pagerduty_key_file,
        pagerduty_url: args.pagerduty_url,
        slack_webhooks: args.slack_webhooks,
        console_url: args.console_url,
    };
    let settings = Settings::resolve(cfg, flags)?;
    collector::run(settings, None, shutdown_signal(), &|line| {
        eprintln!("kubetrail: {line}")
    })?;
    Ok(Outcome::Ok)
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
