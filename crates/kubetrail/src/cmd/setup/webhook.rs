//! `kubetrail setup webhook`: everything that connects kube-apiserver's audit webhook to kubetrail, in one
//! directory. A private CA, a server certificate for kubetrail's listener, a client certificate for
//! kube-apiserver (mutual TLS, so only the apiserver can write audit events), the webhook kubeconfig, the
//! recommended audit policy and kubetrail's matching config; then the steps to install them.

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use kubetrail_policy::{GenerateOptions, generate};

use super::pki::{CLIENT_CN, Pki, kubeconfig};
use super::{OutFile, prepare_out, quote, write_files};
use crate::Outcome;

const DEFAULT_PORT: u16 = 8443;
const WEBHOOK_PATH: &str = "/k8s-audit";

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// DNS name or IP address kube-apiserver uses to reach kubetrail, put in the server certificate
    /// (repeatable) [default: this machine's hostname, localhost, 127.0.0.1, and the host of --url].
    #[arg(long = "server-name", value_name = "NAME")]
    server_names: Vec<String>,
    /// The webhook URL kube-apiserver posts to [default: https://FIRST-SERVER-NAME:8443/k8s-audit].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Days the certificates are valid for.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    days: u32,
    /// The cluster name kubetrail stamps on the events it receives.
    #[arg(long, value_name = "NAME", default_value = "kubernetes")]
    cluster: String,
    /// Overwrite files that already exist (this replaces the CA: reinstall the webhook kubeconfig too).
    #[arg(long)]
    force: bool,
}

/// A parsed `https://HOST[:PORT]/PATH` URL.
#[derive(Debug)]
struct Url {
    host: String,
    port: u16,
}

pub fn run(args: WebhookArgs) -> anyhow::Result<Outcome> {
    let url_arg = args.url.as_deref();
    let parsed = url_arg.map(parse_url).transpose()?;
    let server_names = server_names(&args.server_names, parsed.as_ref())?;
    let url = match url_arg {
        Some(u) => u.to_owned(),
        None => {
            let host = &server_names[0];
            let host = if host.parse::<std::net::Ipv6Addr>().is_ok() {
                format!("[{host}]")
            } else {
                host.clone()
            };
            format!("https://{host}:{DEFAULT_PORT}{WEBHOOK_PATH}")
        }
    };
    let port = parsed.as_ref().map_or(DEFAULT_PORT, |u| u.port);

    let names = [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
        "webhook-kubeconfig.yaml",
        "kubetrail.yaml",
        "audit-policy.yaml",
    ];
    let dir = prepare_out(
        &args.out,
        &names,
        args.force,
        0o700,
        " (new certificates replace the old ones: kube-apiserver's webhook kubeconfig must then be \
         reinstalled too)",
    )?;

    let pki = Pki::generate(&server_names, args.days)?;
    let files = [
        OutFile {
            name: "ca.crt",
            private: false,
            contents: pki.ca_cert.clone(),
        },
        OutFile {
            name: "ca.key",
            private: true,
            contents: pki.ca_key.clone(),
        },
        OutFile {
            name: "server.crt",
            private: false,
            contents: pki.server_cert.clone(),
        },
        OutFile {
            name: "server.key",
            private: true,
            contents: pki.server_key.clone(),
        },
        OutFile {
            name: "client.crt",
            private: false,
            contents: pki.client_cert.clone(),
        },
        OutFile {
            name: "client.key",
            private: true,
            contents: pki.client_key.clone(),
        },
        // Carries the client key.
        OutFile {
            name: "webhook-kubeconfig.yaml",
            private: true,
            contents: kubeconfig(&url, &pki),
        },
        OutFile {
            name: "kubetrail.yaml",
            private: false,
            contents: kubetrail_config(&dir, port, &args.cluster),
        },
        OutFile {
            name: "audit-policy.yaml",
            private: false,
            contents: generate(&GenerateOptions::default()),
        },
    ];
    debug_assert!(files.iter().map(|f| f.name).eq(names));
    write_files(&dir, &files)?;
    print!(
        "{}",
        instructions(&dir, &url, &server_names, &pki.not_after)
    );
    Ok(Outcome::Ok)
}

/// `https://HOST[:PORT][/PATH]`; kube-apiserver accepts other URLs, but these files are for TLS.
fn parse_url(url: &str) -> anyhow::Result<Url> {
    let Some(rest) = url.strip_prefix("https://") else {
        bail!("--url `{url}` must start with `https://` (kubetrail's webhook listener uses TLS)");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            bail!("--url `{url}`: unclosed `[` in the host");
        };
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains('@') {
        bail!("--url `{url}` has no usable host; write it as https://HOST:PORT{WEBHOOK_PATH}");
    }
    let port = match port {
        None => 443,
        Some(p) => p
            .parse()
            .ok()
            .filter(|&p: &u16| p != 0)
            .with_context(|| format!("--url `{url}`: `{p}` is not a port number"))?,
    };
    Ok(Url {
        host: host.to_owned(),
        port,
    })
}

/// The names for the server certificate: as given (the URL's host must be one), or the defaults.
fn server_names(given: &[String], url: Option<&Url>) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: String| {
        if !names.iter().any(|m| m.eq_ignore_ascii_case(&n)) {
            names.push(n);
        }
    };
    if given.is_empty() {
        if let Some(u) = url {
            push(u.host.clone());
        }
        if let Some(h) = hostname() {
            push(h);
        }
        push("localhost".to_owned());
        push("127.0.0.1".to_owned());
    } else {
        for n in given {
            let n = n.trim();
            if n.is_empty() {
                bail!("--server-name is empty; give a DNS name or an IP address");
            }
            push(n.to_owned());
        }
        if let Some(u) = url
            && !names.iter().any(|n| same_host(n, &u.host))
        {
            bail!(
                "the host `{}` of --url is not among the --server-name values, so kube-apiserver would \
                 refuse kubetrail's certificate; add --server-name {}",
                u.host,
                u.host
            );
        }
    }
    for n in &names {
        if n.parse::<IpAddr>().is_err() && !is_dns_name(n) {
            bail!("--server-name `{n}` is neither a DNS name nor an IP address");
        }
    }
    Ok(names)
}

fn same_host(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// Letters, digits, `-`, `.` and a leading `*.` wildcard label: what a certificate's DNS SAN holds.
fn is_dns_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// This machine's hostname, if it has a usable one.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|h| !h.is_empty() && is_dns_name(h))
}

/// kubetrail's own config for this listener (keys as `kubetrail serve --config` reads them).
fn kubetrail_config(dir: &Path, port: u16, cluster: &str) -> String {
    let path = |name: &str| quote(&dir.join(name).display().to_string());
    format!(
        "# kubetrail serve --config {config}\n\
         # Receives kube-apiserver's audit webhook over TLS; only clients with a certificate from ca.crt\n\
         # (kube-apiserver's, in webhook-kubeconfig.yaml) may post.\n\
         listen: \"0.0.0.0:{port}\"\n\
         data: /var/lib/kubetrail\n\
         cluster: {cluster}\n\
         tls:\n\
         \x20 cert: {cert}\n\
         \x20 key: {key}\n\
         \x20 client_ca: {ca}\n\
         # Who may do what: kube-apiserver's certificate sends events (the ingest role) and nothing else; no\n\
         # other certificate is accepted. Add people with a token each (`openssl rand -hex 32 > FILE; chmod\n\
         # 600 FILE`) and the least role they need: reader (queries, console), responder (works alerts), admin\n\
         # (suppressions).\n\
         auth:\n\
         \x20 identities:\n\
         \x20   - {{name: apiserver, client_cert_cn: {CLIENT_CN}, role: ingest}}\n\
         \x20   # - {{name: soc-analyst, token_file: /etc/kubetrail/tokens/analyst, role: reader}}\n\
         \x20   # - {{name: platform-security, token_file: /etc/kubetrail/tokens/admin, role: admin}}\n\
         # The names kube-apiserver and analysts reach this server by, beyond the certificate's (DNS\n\
         # rebinding: other Host headers are refused):\n\
         # server_names: [kubetrail.example.com]\n",
        config = dir.join("kubetrail.yaml").display(),
        cluster = quote(cluster),
        cert = path("server.crt"),
        key = path("server.key"),
        ca = path("ca.crt"),
    )
}

fn instructions(dir: &Path, url: &str, server_names: &[String], not_after: &str) -> String {
    let d = dir.display();
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "\
Wrote kubetrail's audit webhook setup to {d}:
  ca.crt, ca.key             the CA that signs both sides (once done, move ca.key somewhere offline)
  server.crt, server.key     kubetrail's listener, valid for: {names}
  client.crt, client.key     kube-apiserver's identity (CN {CLIENT_CN})
  webhook-kubeconfig.yaml    for --audit-webhook-config-file (it holds the client key: keep it 0600)
  audit-policy.yaml          the recommended audit policy, for --audit-policy-file
  kubetrail.yaml             kubetrail's config for this listener
The certificates expire on {not_after}: run this again before then (with --force) and reinstall.

1. Start kubetrail where kube-apiserver can reach {url}:

     kubetrail serve --config {d}/kubetrail.yaml

   and check it from the control-plane node with the apiserver's own certificate:

     curl --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key {base}/healthz

2. Self-managed control plane (kubeadm): on every control-plane node, install the two files kube-apiserver
   reads:

     sudo mkdir -p /etc/kubernetes/audit
     sudo install -m 0600 {d}/webhook-kubeconfig.yaml /etc/kubernetes/audit/
     sudo install -m 0644 {d}/audit-policy.yaml /etc/kubernetes/audit/

   Then edit /etc/kubernetes/manifests/kube-apiserver.yaml (the kubelet restarts the static pod when it is
   saved; keep a copy of the original outside /etc/kubernetes/manifests):

     spec:
       containers:
       - command:
         - kube-apiserver
         # ...the existing flags, then:
         - --audit-policy-file=/etc/kubernetes/audit/audit-policy.yaml
         - --audit-webhook-config-file=/etc/kubernetes/audit/webhook-kubeconfig.yaml
         - --audit-webhook-mode=batch
         - --audit-webhook-batch-max-size=400
         - --audit-webhook-batch-max-wait=1s
         - --audit-webhook-batch-buffer-size=10000
         - --audit-webhook-initial-backoff=5s
         volumeMounts:
         # ...the existing mounts, then:
         - name: kubetrail-audit
           mountPath: /etc/kubernetes/audit
           readOnly: true
       volumes:
       # ...the existing volumes, then:
       - name: kubetrail-audit
         hostPath:
           path: /etc/kubernetes/audit
           type: DirectoryOrCreate

   kube-apiserver runs with the node's network: the host in the URL must resolve and be reachable from
   the node (for kubetrail on the same node, use --url https://127.0.0.1:8443{WEBHOOK_PATH}). When the
   apiserver is back (`kubectl get --raw /readyz`), kubetrail's log shows the batches arriving. To keep a
   local copy as well, add --audit-log-path; kubetrail can follow that file too (`files:` in its config).

   kubetrail raises kt-audit-silence when a source stops sending. Keep the heartbeat rule of
   audit-policy.yaml (Metadata for system:apiserver's lease renewals in kube-system; `kubetrail policy
   generate` has it too) when you edit the policy: with it a quiet cluster still sends about 1 event every
   10 s per apiserver, so silence means a cut audit trail (`kubetrail policy lint` warns when it is gone).

3. Managed control planes (no apiserver flags): export the audit log and import it.
   - EKS: turn on control-plane logging of type `audit`
       aws eks update-cluster-config --name CLUSTER \\
         --logging '{{\"clusterLogging\":[{{\"types\":[\"audit\"],\"enabled\":true}}]}}'
     Events go to the CloudWatch Logs group /aws/eks/CLUSTER/cluster (streams kube-apiserver-audit-*);
     export them (aws logs create-export-task to S3, or a subscription filter to Firehose) and run
       kubetrail import EXPORTED-FILES...
   - GKE: Cloud Audit Logs record the Kubernetes API (Admin Activity always; enable Data Access audit logs
     for the Kubernetes Engine API to see reads). Route them with a Logging sink, e.g.
       gcloud logging sinks create kubetrail storage.googleapis.com/BUCKET \\
         --log-filter='resource.type=\"k8s_cluster\" AND logName:\"cloudaudit.googleapis.com\"'
     and run `kubetrail import` on the exported files.
   - AKS: add a diagnostic setting with the category kube-audit (every event) or kube-audit-admin (without
     get and list), sent to a Storage account or an Event Hub, e.g.
       az monitor diagnostic-settings create --name kubetrail --resource AKS-RESOURCE-ID \\
         --storage-account STORAGE-ACCOUNT --logs '[{{\"category\":\"kube-audit-admin\",\"enabled\":true}}]'
     and run `kubetrail import` on the exported blobs (records with properties.log).
",
        names = server_names.join(", "),
        base = url.strip_suffix(WEBHOOK_PATH).unwrap_or(url),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://kubetrail.internal:9443/k8s-audit").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("kubetrail.internal", 9443));
        let u = parse_url("https://[fd00::1]:8443/k8s-audit").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00::1", 8443));
        let u = parse_url("https://10.0.0.5/k8s-audit").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.5", 443));
        assert!(parse_url("http://10.0.0.5/k8s-audit").is_err());
        assert!(parse_url("https://:8443/").is_err());
        assert!(parse_url("https://h:0/").is_err());
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("kubetrail.example.com"));
        assert!(is_dns_name("*.example.com"));
        assert!(!is_dns_name("bad name"));
        assert!(!is_dns_name("-x.example.com"));
        assert!(!is_dns_name("a..b"));
    }
}
