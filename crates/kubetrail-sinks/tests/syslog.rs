//! The syslog sink against Debian's rsyslogd, started by the test with imtcp on two free loopback ports (plain
//! TCP, and TLS through the gtls driver with a certificate made here), writing every message it parsed to a
//! file as `pri#~#timestamp#~#hostname#~#app#~#procid#~#msgid#~#structured-data#~#msg`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, events};
use kubetrail_sinks::syslog::{Format, Syslog, SyslogConfig, SyslogTls};
use kubetrail_sinks::{Outcome, Record};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

const CONF: &str = r##"
global(maxMessageSize="1m" workDirectory="{DIR}"
       DefaultNetstreamDriverCAFile="{CERTS}/ca.pem"
       DefaultNetstreamDriverCertFile="{CERTS}/cert.pem"
       DefaultNetstreamDriverKeyFile="{CERTS}/key.pem")
module(load="imtcp")
template(name="fields" type="list") {
  property(name="pri") constant(value="#~#")
  property(name="timereported" dateFormat="rfc3339") constant(value="#~#")
  property(name="hostname") constant(value="#~#")
  property(name="app-name") constant(value="#~#")
  property(name="procid") constant(value="#~#")
  property(name="msgid") constant(value="#~#")
  property(name="structured-data") constant(value="#~#")
  property(name="msg") constant(value="\n")
}
ruleset(name="out") { action(type="omfile" file="{DIR}/out.log" template="fields") }
input(type="imtcp" address="127.0.0.1" port="{PORT}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{TLS_PORT}" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"##;

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
fn certificates(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// Waits (polling, 30 s at most) until rsyslog has written `n` lines, and returns them.
fn received(server: &Server, n: usize) -> Vec<String> {
    let path = server.dir.path().join("out.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            assert_eq!(lines.len(), n, "more messages than sent:\n{text}");
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog wrote {} of {n} messages:\n{text}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start() -> (Server, u16, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let conf = CONF.replace("{CERTS}", &certs.path().display().to_string());
    let (server, tls_port) = Server::rsyslog(&conf);
    (server, tls_port, certs)
}

#[tokio::test]
async fn json_messages_arrive_intact_over_tcp_and_tls() {
    let (server, tls_port, certs) = start();
    let ev = events();
    let batch = ev.records("prod-eu");
    let tcp = Syslog::new(SyslogConfig::new(
        &format!("127.0.0.1:{}", server.port),
        Format::Json,
    ))
    .unwrap();
    let mut tls_cfg = SyslogConfig::new(&format!("127.0.0.1:{tls_port}"), Format::Json);
    tls_cfg.tls = Some(SyslogTls {
        extra_ca: Some(certs.path().join("ca.pem")),
        server_name: None,
    });
    let tls = Syslog::new(tls_cfg).unwrap();

    // Two batches on one connection, then one over TLS: every event, each parsed as one message.
    let (first, rest) = batch.split_at(100);
    assert_eq!(tcp.send(first).await, Outcome::Delivered);
    assert_eq!(tcp.send(rest).await, Outcome::Delivered);
    assert_eq!(tls.send(&batch[..20]).await, Outcome::Delivered);
    let lines = received(&server, batch.len() + 20);
    for (line, r) in lines.iter().zip(batch.iter().chain(&batch[..20])) {
        let parts: Vec<&str> = line.splitn(8, "#~#").collect();
        let v: serde_json::Value = serde_json::from_str(r.event).unwrap();
        let failed = v["annotations"]["authorization.k8s.io/decision"] == "forbid"
            || v["responseStatus"]["code"]
                .as_i64()
                .is_some_and(|c| c >= 400);
        assert_eq!(
            parts[0],
            if failed { "132" } else { "134" },
            "local0 and warning/info: {line}"
        );
        assert_eq!(&parts[2..6], ["prod-eu", "kubetrail", "-", "audit"]);
        assert!(
            parts[6].starts_with(&format!("[kubetrail@32473 id=\"{}\" auditID=", r.id)),
            "{}",
            parts[6]
        );
        // The event, byte for byte (rsyslog escapes control characters; the fixtures have none).
        assert_eq!(parts[7], r.event.trim(), "message of {}", r.id);
    }
}

#[tokio::test]
async fn cef_escaping_survives_and_a_closed_connection_is_noticed() {
    let (server, _, _certs) = start();
    let port = server.port;
    let event = r#"{"annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":"a=b | c\\d\nnext"},"auditID":"cef-1","level":"Metadata","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets?limit=1","verb":"list","user":{"username":"eve|x"},"sourceIPs":["203.0.113.9"],"objectRef":{"resource":"secrets","namespace":"prod"},"responseStatus":{"code":403},"requestReceivedTimestamp":"2024-05-01T10:00:00.5Z"}"#;
    let r = Record {
        id: "cef-1-ResponseComplete",
        cluster: "prod-eu",
        received_us: 0,
        event,
    };
    let cef = Syslog::new(SyslogConfig::new(&format!("127.0.0.1:{port}"), Format::Cef)).unwrap();
    assert_eq!(cef.send(&[r]).await, Outcome::Delivered);
    let lines = received(&server, 1);
    let msg = lines[0].splitn(8, "#~#").nth(7).unwrap();
    assert_eq!(
        msg,
        format!(
            "CEF:0|kubetrail|kubetrail|{}|list:secrets|list secrets|7|rt=1714557600500 suser=eve|x src=203.0.113.9 \
             request=/api/v1/namespaces/prod/secrets?limit\\=1 act=list outcome=failure reason=a\\=b | c\\\\d\\nnext \
             externalId=cef-1-ResponseComplete dvchost=prod-eu cn1Label=responseCode cn1=403 cs1Label=namespace \
             cs1=prod cs2Label=resource cs2=secrets cs3Label=auditID cs3=cef-1 cs4Label=stage cs4=ResponseComplete",
            env!("CARGO_PKG_VERSION")
        )
    );

    // The server goes away: the next batch is a retry, not a silent loss.
    drop(server);
    match cef.send(&[r]).await {
        Outcome::Retry { reason, .. } => assert!(reason.contains("cannot connect"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
