//! `kubetrail setup systemd`: `kubetrail serve` as a hardened systemd service. A unit that runs it as its
//! own user with no capabilities (only `CAP_NET_BIND_SERVICE` for a port below 1024), a read-only system
//! but for the data directory, a system call allow list and no access to homes, devices, kernel settings or
//! other namespaces; the `sysusers.d` snippet that makes the user and the `tmpfiles.d` snippet that makes the
//! data directory (0700, the user's). The config is read now, when it exists, for the port, the data
//! directory and the files the service must be able to see.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use kubetrail_runtime::config::Config;

use super::{OutFile, prepare_out, write_files};
use crate::Outcome;

const DEFAULT_DATA: &str = "/var/lib/kubetrail";
/// Where `serve` listens without a `listen:` (its own default).
const SERVE_DEFAULT_PORT: u16 = 9443;
const UNIT: &str = "kubetrail.service";
const SYSUSERS: &str = "sysusers.d/kubetrail.conf";
const TMPFILES: &str = "tmpfiles.d/kubetrail.conf";

#[derive(Debug, Args)]
pub struct SystemdArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The service's own user (and group), created by the sysusers.d snippet.
    #[arg(long, value_name = "NAME", default_value = "kubetrail")]
    user: String,
    /// The data directory, the only place the service may write [default: the config's `data:`, else
    /// /var/lib/kubetrail].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// kubetrail's config as the service reads it (see `kubetrail setup webhook`); read now when it exists.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kubetrail/kubetrail.yaml"
    )]
    config: PathBuf,
    /// The kubetrail binary the service runs.
    #[arg(long, value_name = "PATH", default_value = "/usr/local/bin/kubetrail")]
    bin: PathBuf,
    /// Let the service listen on a port below 1024 (CAP_NET_BIND_SERVICE) [default: when the config,
    /// read now, listens on one].
    #[arg(long)]
    low_port: bool,
    /// Overwrite files that already exist.
    #[arg(long)]
    force: bool,
}

/// What the unit is made from, checked.
#[derive(Debug)]
struct Unit {
    user: String,
    bin: String,
    config: String,
    data: String,
    low_port: bool,
}

pub fn run(args: SystemdArgs) -> anyhow::Result<Outcome> {
    if !is_user_name(&args.user) {
        bail!(
            "--user `{}` is not a usable system user name: lowercase letters, digits, `_` and `-`, starting \
             with a letter or `_`, at most 31 characters",
            args.user
        );
    }
    let bin = unit_path("--bin", &args.bin)?;
    let config_path = unit_path("--config", &args.config)?;
    let config = if args.config.exists() {
        Some(Config::load(&args.config).context("--config is read to fit the unit to it")?)
    } else {
        None
    };

    let data = match (&args.data, config.as_ref().and_then(|c| c.data.as_ref())) {
        (Some(flag), Some(cfg)) if flag != cfg => bail!(
            "`{}` stores data in `{}` but --data is `{}`: the service may write only to --data; make them \
             the same",
            args.config.display(),
            cfg.display(),
            flag.display()
        ),
        (Some(flag), _) => flag.clone(),
        (None, Some(cfg)) => cfg.clone(),
        (None, None) => PathBuf::from(DEFAULT_DATA),
    };
    let data_path = unit_path("the data directory", &data)?;
    if data == Path::new("/") {
        bail!("the data directory cannot be `/`: the service may write to all of it");
    }

    let port = config
        .as_ref()
        .map(|c| c.listen.map_or(SERVE_DEFAULT_PORT, |a| a.port()));
    let low_port = args.low_port || port.is_some_and(|p| p < 1024);

    // What the sandbox hides from the service, named now rather than by a failed start (a warning: the unit
    // is still what was asked for, e.g. to try it with a binary that is not installed yet).
    let mut seen: Vec<(&str, &Path)> = vec![
        ("--bin", &args.bin),
        ("--config", &args.config),
        ("the data directory", &data),
    ];
    if let Some(c) = &config {
        seen.extend(config_files(c));
    }
    for (what, path) in &seen {
        if let Some(why) = hidden(what, path) {
            eprintln!("warning: {why}");
        }
    }

    let unit = Unit {
        user: args.user.clone(),
        bin: bin.to_owned(),
        config: config_path.to_owned(),
        data: data_path.to_owned(),
        low_port,
    };
    let files = [
        OutFile {
            name: UNIT,
            private: false,
            contents: unit_file(&unit),
        },
        OutFile {
            name: SYSUSERS,
            private: false,
            contents: sysusers(&unit),
        },
        OutFile {
            name: TMPFILES,
            private: false,
            contents: tmpfiles(&unit),
        },
    ];
    let names = [UNIT, SYSUSERS, TMPFILES];
    debug_assert!(files.iter().map(|f| f.name).eq(names));
    let dir = prepare_out(&args.out, &names, args.force, 0o755, "")?;
    write_files(&dir, &files)?;
    let followed: Vec<&Path> = config
        .iter()
        .flat_map(|c| &c.files)
        .map(|f| f.path.as_path())
        .collect();
    print!(
        "{}",
        instructions(&dir, &unit, port, config.is_some(), &followed)
    );
    Ok(Outcome::Ok)
}

/// Every file the config names that the service reads.
fn config_files(c: &Config) -> Vec<(&'static str, &Path)> {
    let mut out: Vec<(&'static str, &Path)> = Vec::new();
    if let Some(tls) = &c.tls {
        out.push(("tls.cert", &tls.cert));
        out.push(("tls.key", &tls.key));
        if let Some(ca) = &tls.client_ca {
            out.push(("tls.client_ca", ca));
        }
    }
    if let Some(auth) = &c.auth {
        for i in &auth.identities {
            if let Some(t) = &i.token_file {
                out.push(("auth.identities[].token_file", t));
            }
        }
        if let Some(t) = &auth.bearer_tokens_file {
            out.push(("auth.bearer_tokens_file", t));
        }
    }
    if let Some(p) = &c.filter_policy {
        out.push(("filter_policy", p));
    }
    for f in &c.files {
        out.push(("files[].path", &f.path));
    }
    out
}

/// Why the unit's sandbox hides `path` from the service (`ProtectHome=`, `PrivateTmp=`), or why the service
/// cannot find it (relative), if it does.
fn hidden(what: &str, path: &Path) -> Option<String> {
    if !path.is_absolute() {
        return Some(format!(
            "{what} `{}` is relative and the service runs in `/`: write it as an absolute path",
            path.display()
        ));
    }
    [
        ("/home", "ProtectHome=yes hides home directories"),
        ("/root", "ProtectHome=yes hides home directories"),
        ("/run/user", "ProtectHome=yes hides home directories"),
        ("/tmp", "PrivateTmp=yes gives the service its own /tmp"),
        (
            "/var/tmp",
            "PrivateTmp=yes gives the service its own /var/tmp",
        ),
    ]
    .into_iter()
    .find(|(root, _)| path.starts_with(root))
    .map(|(_, why)| {
        format!(
            "{what} `{}` is invisible to the service ({why}); move it, e.g. under /etc/kubetrail, \
             /usr/local/bin or /var/lib/kubetrail",
            path.display()
        )
    })
}

/// An absolute path systemd and tmpfiles.d read as written: no spaces, quotes, escapes or specifiers.
fn unit_path<'a>(what: &str, path: &'a Path) -> anyhow::Result<&'a str> {
    let Some(s) = path.to_str() else {
        bail!("{what} `{}` is not UTF-8", path.display());
    };
    if !path.is_absolute() {
        bail!("{what} `{s}` must be an absolute path");
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "\"'\\%$;".contains(*c))
    {
        bail!(
            "{what} `{s}` holds {c:?}, which systemd would read specially; choose a plainer path"
        );
    }
    Ok(s)
}

/// A name `systemd-sysusers` and `useradd` accept everywhere.
fn is_user_name(n: &str) -> bool {
    let mut bytes = n.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && n.len() <= 31
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn unit_file(u: &Unit) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "\
# kubetrail as a hardened service, written by `kubetrail setup systemd`.
# Rate it with `systemd-analyze security kubetrail.service`.
[Unit]
Description=kubetrail: Kubernetes audit log collector
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User={user}
Group={user}
# --data as well as the config's `data:`: the service may write there and nowhere else.
ExecStart={bin} serve --config {config} --data {data}
# On SIGTERM serve stops accepting, finishes in-flight requests (at most 10 s), converts what the log holds
# into Parquet and signs a checkpoint. Killing it later loses nothing acknowledged (every batch is fsynced
# before its 2xx) and the next start converts the rest.
KillSignal=SIGTERM
TimeoutStopSec=90s
Restart=on-failure
RestartSec=5s
LimitNOFILE=65536
# Its memory holds audit events: never in a core dump.
LimitCORE=0
UMask=0077

# Files: the system read-only (the config, certificates and tokens under /etc stay readable), the data
# directory writable, no home directories, a /tmp of its own (where queries spill), no devices.
ProtectSystem=strict
ReadWritePaths={data}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectProc=invisible
",
        user = u.user,
        bin = u.bin,
        config = u.config,
        data = u.data,
    );
    if u.low_port {
        s.push_str(
            "\
# Privileges: none but binding a port below 1024 (the config's `listen:`). Without a user namespace, which
# would make the capability useless on the host's network.
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE
",
        );
    } else {
        s.push_str(
            "\
# Privileges: none, and the other users of the machine unseen.
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
PrivateUsers=yes
",
        );
    }
    s.push_str(
        "\
RestrictSUIDSGID=yes
RemoveIPC=yes
KeyringMode=private

# The kernel: no tunables, modules, logs, control groups, clock, hostname, namespaces or realtime.
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes

# System calls a service makes, natively, and sockets for TCP (the listener, sinks, alerts) and local ones.
# A call outside the list fails with EPERM instead of killing the collector.
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# Except lowering a limit: each API query's worker process bounds its own memory (setrlimit).
SystemCallFilter=setrlimit prlimit64
SystemCallErrorNumber=EPERM
SystemCallArchitectures=native
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX

[Install]
WantedBy=multi-user.target
",
    );
    s
}

fn sysusers(u: &Unit) -> String {
    format!(
        "# kubetrail's service user, written by `kubetrail setup systemd`: no login, no home.\n\
         u {user} - \"kubetrail audit collector\" / -\n",
        user = u.user
    )
}

fn tmpfiles(u: &Unit) -> String {
    format!(
        "# kubetrail's data directory (the log, the store, keys), written by `kubetrail setup systemd`: its\n\
         # user's alone. Never cleaned by age.\n\
         d {data} 0700 {user} {user} -\n",
        data = u.data,
        user = u.user
    )
}

fn instructions(
    dir: &Path,
    u: &Unit,
    port: Option<u16>,
    config_read: bool,
    followed: &[&Path],
) -> String {
    let d = dir.display();
    let user = &u.user;
    let config = &u.config;
    let config_dir = Path::new(config)
        .parent()
        .map_or_else(|| "/etc/kubetrail".to_owned(), |p| p.display().to_string());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\
Wrote a hardened systemd unit for kubetrail to {d}:
  {UNIT:<27}  runs `{bin} serve` as `{user}`, writing only to {data}
  {SYSUSERS:<27}  creates the user `{user}`
  {TMPFILES:<27}  creates {data} (0700, {user}'s)",
        bin = u.bin,
        data = u.data,
    );
    match (config_read, port) {
        (true, Some(p)) if u.low_port && p < 1024 => {
            let _ = writeln!(
                s,
                "{config} listens on port {p}: the service may bind it (CAP_NET_BIND_SERVICE) and nothing else."
            );
        }
        (true, Some(p)) => {
            let _ = writeln!(
                s,
                "{config} listens on port {p}: the service has no capabilities{}.",
                if u.low_port {
                    " but CAP_NET_BIND_SERVICE (--low-port)"
                } else {
                    ""
                }
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "{config} does not exist yet, so {}; run this again once it exists.",
                if u.low_port {
                    "the service may bind a port below 1024 (--low-port)"
                } else {
                    "the unit assumes a port of 1024 or above (--low-port for a lower one)"
                }
            );
        }
    }
    let _ = write!(
        s,
        "
1. The user and the data directory:

     sudo install -m 0644 {d}/{SYSUSERS} /etc/sysusers.d/kubetrail.conf
     sudo install -m 0644 {d}/{TMPFILES} /etc/tmpfiles.d/kubetrail.conf
     sudo systemd-sysusers
     sudo systemd-tmpfiles --create /etc/tmpfiles.d/kubetrail.conf

2. The binary, and the config with its certificates (`kubetrail setup webhook`; its client.key and
   webhook-kubeconfig.yaml are kube-apiserver's: install them as it prints), readable by `{user}`:

     sudo install -m 0755 kubetrail {bin}
     sudo {bin} setup webhook --out {config_dir} --url https://HOST:8443/k8s-audit
     sudo chown root:{user} {config_dir} && sudo chmod 0750 {config_dir}
     sudo chown {user}: {config_dir}/server.key     # and every token_file: the service's alone
     sudo mv {config_dir}/ca.key SOMEWHERE-OFFLINE  # it signs certificates; the service never needs it
     sudo runuser -u {user} -- {bin} config check {config}

3. The unit: start it, now and at boot, and watch it:

     sudo install -m 0644 {d}/{UNIT} /etc/systemd/system/
     sudo systemctl daemon-reload
     sudo systemctl enable --now kubetrail
     systemctl status kubetrail
     journalctl -u kubetrail -f
     systemd-analyze security kubetrail.service
",
        bin = u.bin,
    );
    if !followed.is_empty() {
        let _ = write!(
            s,
            "
The config follows audit log files: `{user}` must be able to read them and their directory, e.g.
"
        );
        for p in followed {
            let dir = p
                .parent()
                .map_or_else(|| "/".to_owned(), |d| d.display().to_string());
            let _ = writeln!(
                s,
                "     sudo setfacl -m u:{user}:rx {dir} && sudo setfacl -d -m u:{user}:r {dir} && sudo setfacl -m u:{user}:r {}",
                p.display()
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for ok in ["kubetrail", "_kt", "kt-audit_2"] {
            assert!(is_user_name(ok), "{ok}");
        }
        for bad in ["", "Kubetrail", "1kt", "kt audit", "kt:x", &"k".repeat(32)] {
            assert!(!is_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn paths_systemd_would_misread_are_refused() {
        assert!(unit_path("--data", Path::new("/var/lib/kubetrail")).is_ok());
        for bad in [
            "var/lib/kubetrail",
            "/var/lib/kube trail",
            "/var/lib/%n",
            "/var/lib/$HOME",
            "/var/lib/\"kt\"",
        ] {
            assert!(unit_path("--data", Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_the_sandbox_hides_are_named() {
        assert_eq!(
            hidden("tls.key", Path::new("/etc/kubetrail/server.key")),
            None
        );
        assert_eq!(hidden("tls.key", Path::new("/tmpfoo/server.key")), None);
        for bad in [
            "/home/ops/server.key",
            "/root/kt.yaml",
            "/tmp/kubetrail",
            "/run/user/1000/x",
            "relative.key",
        ] {
            assert!(hidden("tls.key", Path::new(bad)).is_some(), "{bad}");
        }
    }
}
