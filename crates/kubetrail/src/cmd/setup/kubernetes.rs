//! `kubetrail setup kubernetes`: kubetrail in the cluster it audits, as a kustomize base. A StatefulSet (the
//! data directory on a volume claim) in its own namespace, locked down (non-root, read-only root, no
//! capabilities, RuntimeDefault seccomp, no service account token), its config as a ConfigMap and its TLS
//! files as a Secret made by kustomize from files written beside it (the same PKI as `setup webhook`), a
//! Service for the webhook, a NetworkPolicy, a PodDisruptionBudget, optionally a ServiceMonitor; and the
//! webhook kubeconfig for the control plane.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use kubetrail_policy::{GenerateOptions, generate};

use super::pki::{CLIENT_CN, Pki, kubeconfig};
use super::{OutFile, prepare_out, quote, write_files};
use crate::Outcome;

/// The Service's port, in the kubeconfig's URL.
const SERVICE_PORT: u16 = 8443;
/// The container's listener.
const CONTAINER_PORT: u16 = 9443;
/// The non-root user (and group) the container runs as: distroless's `nonroot`.
const UID: u32 = 65532;
const DATA: &str = "/var/lib/kubetrail";
const CONFIG_DIR: &str = "/etc/kubetrail/config";
const TLS_DIR: &str = "/etc/kubetrail/tls";

#[derive(Debug, Args)]
pub struct KubernetesArgs {
    /// Directory to write the kustomize base into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The namespace kubetrail runs in (created by the base).
    #[arg(long, value_name = "NAME", default_value = "kubetrail")]
    namespace: String,
    /// Pods (each its own store: kube-apiserver's batches are spread over them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: u16,
    /// The data volume's StorageClass [default: the cluster's default class].
    #[arg(long, value_name = "NAME")]
    storage_class: Option<String>,
    /// The data volume's size.
    #[arg(long, value_name = "SIZE", default_value = "20Gi")]
    storage: String,
    /// The container image [default: kubetrail:VERSION].
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// The Service's name (the webhook URL is `https://SERVICE.NAMESPACE.svc:8443/k8s-audit`).
    #[arg(long, value_name = "NAME", default_value = "kubetrail")]
    service: String,
    /// Addresses outside the namespace allowed to reach the console and API (CIDR) [default: none].
    #[arg(long, value_name = "CIDR")]
    console_cidr: Option<String>,
    /// Addresses kube-apiserver posts from (the control-plane nodes' CIDR: it runs on the host network).
    #[arg(long, value_name = "CIDR", default_value = "0.0.0.0/0")]
    apiserver_cidr: String,
    /// Add a Prometheus Operator ServiceMonitor (metrics served without a credential).
    #[arg(long)]
    service_monitor: bool,
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

/// What every manifest is made from, checked.
struct Base {
    ns: String,
    svc: String,
    image: String,
    replicas: u16,
    storage: String,
    storage_class: Option<String>,
    console_cidr: Option<String>,
    apiserver_cidr: String,
    service_monitor: bool,
    cluster: String,
}

pub fn run(args: KubernetesArgs) -> anyhow::Result<Outcome> {
    for (what, v) in [
        ("--namespace", &args.namespace),
        ("--service", &args.service),
    ] {
        if !is_dns_label(v) {
            bail!(
                "{what} `{v}` is not a Kubernetes name: lowercase letters, digits and `-`, at most 63, \
                 starting with a letter"
            );
        }
    }
    if let Some(c) = &args.storage_class
        && !is_dns_label(c)
        && !c.split('.').all(is_dns_label)
    {
        bail!("--storage-class `{c}` is not a Kubernetes name");
    }
    if !is_quantity(&args.storage) {
        bail!(
            "--storage `{}` is not a size Kubernetes reads (e.g. 20Gi, 500Gi, 1Ti)",
            args.storage
        );
    }
    for (what, c) in [
        ("--apiserver-cidr", Some(&args.apiserver_cidr)),
        ("--console-cidr", args.console_cidr.as_ref()),
    ] {
        if let Some(c) = c
            && !is_cidr(c)
        {
            bail!("{what} `{c}` is not a CIDR (e.g. 10.0.0.0/24 or fd00::/64)");
        }
    }
    let b = Base {
        ns: args.namespace.clone(),
        svc: args.service.clone(),
        image: args
            .image
            .clone()
            .unwrap_or_else(|| format!("kubetrail:{}", env!("CARGO_PKG_VERSION"))),
        replicas: args.replicas,
        storage: args.storage.clone(),
        storage_class: args.storage_class.clone(),
        console_cidr: args.console_cidr.clone(),
        apiserver_cidr: args.apiserver_cidr.clone(),
        service_monitor: args.service_monitor,
        cluster: args.cluster.clone(),
    };
    let names = server_names(&b);
    let url = format!("https://{}:{SERVICE_PORT}/k8s-audit", names[2]);

    let mut files = vec![
        ("kustomization.yaml", false, kustomization(&b)),
        ("namespace.yaml", false, namespace(&b)),
        ("serviceaccount.yaml", false, service_account(&b)),
        ("statefulset.yaml", false, stateful_set(&b)),
        ("service.yaml", false, service(&b)),
        ("networkpolicy.yaml", false, network_policy(&b)),
        ("poddisruptionbudget.yaml", false, pdb(&b)),
        ("kubetrail.yaml", false, config(&b, &names)),
    ];
    if b.service_monitor {
        files.push(("servicemonitor.yaml", false, service_monitor(&b)));
    }
    let fixed = [
        "server.crt",
        "server.key",
        "ca.crt",
        "webhook-kubeconfig.yaml",
        "audit-policy.yaml",
    ];
    let monitor_ca = b.service_monitor.then_some("servicemonitor-ca.yaml");
    let all: Vec<&str> = files
        .iter()
        .map(|f| f.0)
        .chain(fixed)
        .chain(monitor_ca)
        .collect();
    let dir = prepare_out(
        &args.out,
        &all,
        args.force,
        0o700,
        " (new certificates replace the old ones: kube-apiserver's webhook kubeconfig must then be \
         reinstalled too)",
    )?;
    let pki = Pki::generate(&names, args.days)?;
    let mut out: Vec<OutFile> = files
        .into_iter()
        .map(|(name, private, contents)| OutFile {
            name,
            private,
            contents,
        })
        .collect();
    out.extend([
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
            name: "ca.crt",
            private: false,
            contents: pki.ca_cert.clone(),
        },
        OutFile {
            name: "webhook-kubeconfig.yaml",
            private: true,
            contents: kubeconfig(&url, &pki),
        },
        OutFile {
            name: "audit-policy.yaml",
            private: false,
            contents: generate(&GenerateOptions::default()),
        },
    ]);
    if let Some(name) = monitor_ca {
        out.push(OutFile {
            name,
            private: false,
            contents: ca_config_map(&b, &pki.ca_cert),
        });
    }
    write_files(&dir, &out)?;
    print!(
        "\
Wrote a kustomize base for kubetrail in namespace `{ns}` to {d}
(the CA's key is not kept: run this again with --force before {not_after} and reinstall the kubeconfig).

1. Apply it (server.key goes into a Secret, never into a printed manifest):

     kubectl apply -k {d}
     kubectl -n {ns} rollout status statefulset/{svc}

2. On every control-plane node, install {d}/webhook-kubeconfig.yaml and audit-policy.yaml as
   `kubetrail setup webhook` describes (kube-apiserver flags --audit-webhook-config-file and
   --audit-policy-file). It posts to {url}: kube-apiserver runs on the host network, so that name
   must resolve there (else give the Service a fixed clusterIP and use it).

3. Narrow --apiserver-cidr to the control-plane nodes' addresses (now {cidr}).
",
        ns = b.ns,
        svc = b.svc,
        d = dir.display(),
        not_after = pki.not_after,
        cidr = b.apiserver_cidr,
    );
    Ok(Outcome::Ok)
}

/// The Service's DNS names, the short one first; the third is the webhook URL's host.
fn server_names(b: &Base) -> Vec<String> {
    vec![
        b.svc.clone(),
        format!("{}.{}", b.svc, b.ns),
        format!("{}.{}.svc", b.svc, b.ns),
        format!("{}.{}.svc.cluster.local", b.svc, b.ns),
    ]
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// A binary-suffixed or plain quantity: `20Gi`, `500G`, `1Ti`.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
        && ["", "Ki", "Mi", "Gi", "Ti", "Pi", "k", "M", "G", "T", "P"].contains(&suffix)
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let max = match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    len.parse::<u8>().is_ok_and(|l| l <= max)
}

fn labels(b: &Base, indent: usize) -> String {
    let pad = " ".repeat(indent);
    format!(
        "{pad}app.kubernetes.io/name: kubetrail\n{pad}app.kubernetes.io/instance: {}\n",
        b.svc
    )
}

fn kustomization(b: &Base) -> String {
    let mut s = format!(
        "\
# kubetrail's kustomize base, written by `kubetrail setup kubernetes`: kubectl apply -k DIR
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {ns}
resources:
  - namespace.yaml
  - serviceaccount.yaml
  - statefulset.yaml
  - service.yaml
  - networkpolicy.yaml
  - poddisruptionbudget.yaml
",
        ns = b.ns
    );
    if b.service_monitor {
        // The CA under a fixed name (the ServiceMonitor's): a plain resource, not a generator with
        // per-generator options, which older kustomize (kubectl before 1.21) does not know.
        s.push_str("  - servicemonitor.yaml\n  - servicemonitor-ca.yaml\n");
    }
    s.push_str("configMapGenerator:\n");
    let _ = write!(
        s,
        "\
# Made from the files beside this one; a change rolls the pods (the names carry a hash of the contents).
  - name: {svc}-config
    files:
      - kubetrail.yaml
secretGenerator:
  - name: {svc}-tls
    type: Opaque
    files:
      - tls.crt=server.crt
      - tls.key=server.key
      - ca.crt=ca.crt
",
        svc = b.svc
    );
    s
}

fn namespace(b: &Base) -> String {
    format!(
        "\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    # The pods below meet the restricted Pod Security Standard; enforce it for anything else here too.
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
",
        ns = b.ns
    )
}

fn service_account(b: &Base) -> String {
    format!(
        "\
# kubetrail never calls the Kubernetes API: no token is mounted.
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {svc}
  labels:
{labels}automountServiceAccountToken: false
",
        svc = b.svc,
        labels = labels(b, 4)
    )
}

fn stateful_set(b: &Base) -> String {
    let class = match &b.storage_class {
        Some(c) => format!("        storageClassName: {c}\n"),
        None => String::new(),
    };
    format!(
        "\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {svc}
  labels:
{labels4}spec:
  serviceName: {svc}-headless
  replicas: {replicas}
  selector:
    matchLabels:
{labels6}  template:
    metadata:
      labels:
{labels8}    spec:
      serviceAccountName: {svc}
      automountServiceAccountToken: false
      enableServiceLinks: false
      # serve finishes in-flight requests (10 s), converts the log into Parquet and signs a checkpoint.
      terminationGracePeriodSeconds: 90
      securityContext:
        runAsNonRoot: true
        runAsUser: {UID}
        runAsGroup: {UID}
        # Makes the data volume writable by the user; only the volume's root is checked once it matches.
        fsGroup: {UID}
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: kubetrail
          image: {image}
          args: [serve, --config, {CONFIG_DIR}/kubetrail.yaml]
          env:
            # Each replica's S3 archive under its own `replica=<pod>/`: replicas never share a manifest chain.
            - name: KUBETRAIL_REPLICA
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
          ports:
            - name: https
              containerPort: {CONTAINER_PORT}
              protocol: TCP
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            privileged: false
            capabilities:
              drop: [ALL]
          resources:
            requests:
              cpu: 250m
              memory: 512Mi
            limits:
              memory: 2Gi
          livenessProbe:
            httpGet:
              path: /healthz
              port: https
              scheme: HTTPS
            periodSeconds: 10
            failureThreshold: 6
          readinessProbe:
            httpGet:
              path: /readyz
              port: https
              scheme: HTTPS
            periodSeconds: 5
          volumeMounts:
            - name: data
              mountPath: {DATA}
            - name: config
              mountPath: {CONFIG_DIR}
              readOnly: true
            - name: tls
              mountPath: {TLS_DIR}
              readOnly: true
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: config
          configMap:
            name: {svc}-config
        - name: tls
          secret:
            secretName: {svc}-tls
            defaultMode: 0400
        # Where queries spill (the root file system is read-only).
        - name: tmp
          emptyDir:
            sizeLimit: 2Gi
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: [ReadWriteOnce]
{class}        resources:
          requests:
            storage: {storage}
",
        svc = b.svc,
        replicas = b.replicas,
        image = quote(&b.image),
        storage = b.storage,
        labels4 = labels(b, 4),
        labels6 = labels(b, 6),
        labels8 = labels(b, 8),
    )
}

fn service(b: &Base) -> String {
    format!(
        "\
# The webhook (and the console and API, which the same listener serves).
apiVersion: v1
kind: Service
metadata:
  name: {svc}
  labels:
{labels4}spec:
  selector:
{labels4}  ports:
    - name: https
      port: {SERVICE_PORT}
      targetPort: https
      protocol: TCP
---
# The StatefulSet's own (pod DNS names).
apiVersion: v1
kind: Service
metadata:
  name: {svc}-headless
  labels:
{labels4}spec:
  clusterIP: None
  selector:
{labels4}  ports:
    - name: https
      port: {CONTAINER_PORT}
      targetPort: https
      protocol: TCP
",
        svc = b.svc,
        labels4 = labels(b, 4),
    )
}

fn network_policy(b: &Base) -> String {
    let mut from = format!(
        "\
        # kube-apiserver, on the control-plane nodes' network (--apiserver-cidr). 0.0.0.0/0 admits every
        # address: narrow it to the nodes' CIDR (kube-apiserver runs with hostNetwork, so a pod selector
        # cannot name it). Only its client certificate may post events either way.
        - ipBlock:
            cidr: {cidr}
        # The console and API from inside the namespace.
        - podSelector: {{}}
",
        cidr = b.apiserver_cidr
    );
    if let Some(c) = &b.console_cidr {
        let _ = write!(
            from,
            "        # The console and API for analysts (--console-cidr).\n        - ipBlock:\n            cidr: {c}\n"
        );
    }
    format!(
        "\
# Nothing reaches kubetrail but on its port, from these; it may reach anything (DNS, sinks, alerts).
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {svc}
  labels:
{labels4}spec:
  podSelector:
    matchLabels:
{labels6}  policyTypes: [Ingress]
  ingress:
    - ports:
        - port: https
          protocol: TCP
      from:
{from}",
        svc = b.svc,
        labels4 = labels(b, 4),
        labels6 = labels(b, 6),
    )
}

fn pdb(b: &Base) -> String {
    format!(
        "\
# One pod down at a time: a drain is not blocked, and kube-apiserver buffers and retries meanwhile.
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {svc}
  labels:
{labels4}spec:
  maxUnavailable: 1
  selector:
    matchLabels:
{labels6}",
        svc = b.svc,
        labels4 = labels(b, 4),
        labels6 = labels(b, 6),
    )
}

/// The CA that Prometheus checks kubetrail's certificate with, as the ConfigMap the ServiceMonitor names.
fn ca_config_map(b: &Base, ca_pem: &str) -> String {
    let pem: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "\
# The CA that Prometheus checks kubetrail's certificate with (the ServiceMonitor's tlsConfig.ca).
apiVersion: v1
kind: ConfigMap
metadata:
  name: {svc}-ca
  labels:
{labels4}data:
  ca.crt: |
{pem}",
        svc = b.svc,
        labels4 = labels(b, 4),
    )
}

fn service_monitor(b: &Base) -> String {
    format!(
        "\
# Prometheus Operator: scrapes /metrics over TLS (served without a credential: metrics.public).
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {svc}
  labels:
{labels4}spec:
  selector:
    matchLabels:
{labels6}  endpoints:
    - port: https
      scheme: https
      path: /metrics
      tlsConfig:
        serverName: {svc}.{ns}.svc
        insecureSkipVerify: false
        ca:
          configMap:
            name: {svc}-ca
            key: ca.crt
",
        svc = b.svc,
        ns = b.ns,
        labels4 = labels(b, 4),
        labels6 = labels(b, 6),
    )
}

fn config(b: &Base, names: &[String]) -> String {
    let names: Vec<String> = names.iter().map(|n| quote(n)).collect();
    format!(
        "\
# kubetrail serve --config {CONFIG_DIR}/kubetrail.yaml (the ConfigMap), written by `kubetrail setup
# kubernetes`. Only kube-apiserver's certificate (in webhook-kubeconfig.yaml) may post events.
listen: \"0.0.0.0:{CONTAINER_PORT}\"
data: {DATA}
cluster: {cluster}
tls:
  cert: {TLS_DIR}/tls.crt
  key: {TLS_DIR}/tls.key
  client_ca: {TLS_DIR}/ca.crt
auth:
  identities:
    - {{name: apiserver, client_cert_cn: {CLIENT_CN}, role: ingest}}
server_names: [{names}]
# Each API query runs in a worker process inside the container's 2Gi: at most 1 GiB of it.
query: {{memory_mb: 1024}}
{metrics}",
        cluster = quote(&b.cluster),
        names = names.join(", "),
        metrics = if b.service_monitor {
            "metrics: {public: true}\n"
        } else {
            ""
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs() {
        assert!(is_dns_label("kubetrail-audit"));
        assert!(!is_dns_label("Kubetrail") && !is_dns_label("1kt") && !is_dns_label("kt-"));
        assert!(is_quantity("20Gi") && is_quantity("100") && !is_quantity("20 GB"));
        assert!(is_cidr("10.0.0.0/24") && is_cidr("fd00::/64") && is_cidr("0.0.0.0/0"));
        assert!(!is_cidr("10.0.0.0/33") && !is_cidr("10.0.0.0") && !is_cidr("x/8"));
    }
}
