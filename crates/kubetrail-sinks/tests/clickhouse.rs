//! The ClickHouse sink against Debian's clickhouse-server (18.16), started by the test on a free loopback port.

mod common;

use std::time::Instant;

use common::{Server, events, free_port};
use kubetrail_sinks::clickhouse::{ClickHouse, ClickHouseConfig};
use kubetrail_sinks::http::HttpConfig;
use kubetrail_sinks::{Outcome, Record};

fn sink(port: u16, table: &str) -> ClickHouse {
    ClickHouse::new(ClickHouseConfig {
        url: format!("http://127.0.0.1:{port}"),
        database: "kubetrail".into(),
        table: table.into(),
        retention_days: Some(365),
        cluster: None,
        http: HttpConfig::default(),
    })
    .unwrap()
}

async fn lines(ch: &ClickHouse, sql: &str) -> Vec<String> {
    ch.query(sql)
        .await
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn stores_deduplicates_and_answers_forensic_queries() {
    let server = Server::clickhouse();
    let ch = sink(server.port, "events");
    ch.prepare().await.unwrap();
    ch.prepare().await.expect("prepare is idempotent");
    let t = ch.qualified_table();

    let ev = events();
    let batch = ev.records("prod-eu");
    assert_eq!(ch.send(&batch).await, Outcome::Delivered);
    assert_eq!(ch.send(&batch).await, Outcome::Delivered, "a re-send");
    ch.query(&format!("OPTIMIZE TABLE {t} FINAL"))
        .await
        .unwrap();
    assert_eq!(
        lines(&ch, &format!("SELECT count(), uniqExact(id) FROM {t}")).await,
        [format!("{}\t{}", batch.len(), batch.len())],
        "the re-sent rows collapsed into one per id"
    );

    // Who did what: the rows of one user are exactly the fixture events of that user.
    let mut want: Vec<&str> = ev
        .lines
        .iter()
        .zip(&ev.ids)
        .filter(|(l, _)| l.contains(r#""username":"alice@example.com""#))
        .map(|(_, id)| id.as_str())
        .collect();
    want.sort_unstable();
    assert!(want.len() > 5);
    let got = lines(
        &ch,
        &format!("SELECT id FROM {t} FINAL WHERE user = 'alice@example.com' ORDER BY id"),
    )
    .await;
    assert_eq!(got, want);

    // The columns come from the event; the event itself is kept byte for byte.
    let (i, line) = ev
        .lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("nginx-deployment-7998647bdf-phvq7") && l.contains("\"exec\""))
        .unwrap();
    let row = lines(
        &ch,
        &format!(
            "SELECT cluster, audit_id, stage, level, verb, user, groups, namespace, resource, subresource, name, \
             response_code, decision, time_us, toString(time), source_ips, received_us FROM {t} FINAL \
             WHERE id = '{}' FORMAT TabSeparated",
            ev.ids[i]
        ),
    )
    .await;
    assert_eq!(
        row,
        [format!(
            "prod-eu\tca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6\tResponseStarted\tRequest\tcreate\tminikube-user\t\
             ['system:masters','system:authenticated']\tdefault\tpods\texec\tnginx-deployment-7998647bdf-phvq7\t\
             101\tallow\t1540561114867116\t2018-10-26 13:38:34\t['192.168.99.1']\t{}",
            1_700_000_000_000_000 + i as i64
        )]
    );
    let stored = lines(
        &ch,
        &format!(
            "SELECT event FROM {t} FINAL WHERE id = '{}' FORMAT JSONEachRow",
            ev.ids[i]
        ),
    )
    .await;
    let stored: serde_json::Value = serde_json::from_str(&stored[0]).unwrap();
    assert_eq!(stored["event"].as_str().unwrap(), line);

    // Retention on a server without TTL: whole day partitions older than the retention are dropped.
    let now: jiff::Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
    let kept = lines(
        &ch,
        &format!("SELECT count() FROM {t} WHERE time >= '2019-01-01 00:00:00'"),
    )
    .await;
    let dropped = ch.drop_expired_partitions(now).await.unwrap();
    assert!(!dropped.is_empty());
    assert!(
        dropped.iter().all(|p| p.as_str() < "20190101"),
        "{dropped:?}"
    );
    assert_eq!(lines(&ch, &format!("SELECT count() FROM {t}")).await, kept);
}

#[tokio::test]
async fn bad_rows_are_dead_and_the_rest_retried_or_stored() {
    let server = Server::clickhouse();
    let ch = sink(server.port, "events");
    ch.prepare().await.unwrap();
    let t = ch.qualified_table();
    let ev = events();
    let good = ev.records("c");

    // A record that is not an audit event never leaves: dead with the reason, the others stored.
    let batch = [
        good[0],
        Record {
            id: "broken-1",
            cluster: "c",
            received_us: 0,
            event: "{\"auditID\": \"x\", ",
        },
        good[1],
    ];
    match ch.send(&batch).await {
        Outcome::Partial { retry, dead } => {
            assert!(retry.is_empty());
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].0, 1);
            assert!(
                dead[0].1.starts_with("not an audit event: "),
                "{}",
                dead[0].1
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(lines(&ch, &format!("SELECT count() FROM {t}")).await, ["2"]);

    // A row the server cannot read: ClickHouse refuses the block and names the row, which is dead; the other
    // rows were not stored and are to be sent again. (The table's `cluster` is a number here.)
    let odd = sink(server.port, "numeric_cluster");
    odd.query(
        &odd.create_table_sql(false)
            .replace("cluster String", "cluster UInt32"),
    )
    .await
    .unwrap();
    let mut batch = ev.records("1")[..3].to_vec();
    batch[1].cluster = "prod";
    match odd.send(&batch).await {
        Outcome::Partial { retry, dead } => {
            assert_eq!(retry, [0, 2]);
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].0, 1);
            assert!(
                dead[0]
                    .1
                    .starts_with("ClickHouse code 27: Cannot parse input")
                    && dead[0].1.contains("(at row 2)"),
                "{}",
                dead[0].1
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        lines(&odd, "SELECT count() FROM kubetrail.numeric_cluster").await,
        ["0"]
    );

    // A missing table is configuration, not data: retried, with ClickHouse's reason.
    let missing = sink(server.port, "never_prepared");
    match missing.send(&good[..2]).await {
        Outcome::Retry { reason, .. } => {
            assert!(reason.starts_with("ClickHouse code 60: "), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_down_is_retry() {
    let ch = sink(free_port(), "events");
    let ev = events();
    match ch.send(&ev.records("c")).await {
        Outcome::Retry {
            after: None,
            reason,
        } => {
            assert!(reason.contains("failed to connect"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(ch.prepare().await.is_err());
}

/// Not a benchmark: one number for the report, printed with `--nocapture`.
#[tokio::test]
async fn inserts_twenty_thousand_events_in_one_batch() {
    let server = Server::clickhouse();
    let ch = sink(server.port, "events");
    ch.prepare().await.unwrap();
    let ev = events();
    let ids: Vec<String> = (0..20_000).map(|i| format!("bulk-{i}")).collect();
    let batch: Vec<Record<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Record {
            id,
            cluster: "bulk",
            received_us: i as i64,
            event: &ev.lines[i % ev.lines.len()],
        })
        .collect();
    let bytes: usize = batch.iter().map(|r| r.event.len()).sum();
    let start = Instant::now();
    assert_eq!(ch.send(&batch).await, Outcome::Delivered);
    let took = start.elapsed();
    eprintln!(
        "clickhouse: 20000 events ({:.1} MB of event JSON) in {took:?}: {:.0} events/s",
        bytes as f64 / 1e6,
        20_000.0 / took.as_secs_f64()
    );
    assert_eq!(
        lines(
            &ch,
            &format!("SELECT count() FROM {}", ch.qualified_table())
        )
        .await,
        ["20000"]
    );
}
