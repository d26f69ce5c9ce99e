//! ClickHouse over its HTTP interface, in SQL and formats that Debian's 18.16 server and current ClickHouse both
//! accept: `CREATE ... IF NOT EXISTS` of a `ReplacingMergeTree`, `INSERT ... FORMAT JSONEachRow` batches.
//!
//! Re-sends are deduplicated by the table engine: rows with the same sorting key (which ends with the
//! deterministic record id, and whose other parts are functions of the event) collapse into one when parts
//! merge; `SELECT ... FINAL` or `OPTIMIZE TABLE ... FINAL` shows the collapsed state at once. A batch under
//! `max_insert_block_size` rows (1,048,576 by default) is one block, inserted whole or not at all.
//!
//! Retention: servers from 19.6 on get a `TTL time + INTERVAL n DAY` on the table; older ones (18.16 has no TTL)
//! need [`ClickHouse::drop_expired_partitions`], which works on every version and which the pipeline should call
//! daily either way (a TTL is only added when the table is created).

use std::fmt::Write as _;

use bytes::Bytes;
use hyper::http::Method;
use serde::Serialize;

use crate::fields::Fields;
use crate::http::{Class, HttpClient, HttpConfig, Request, classify};
use crate::{Error, Outcome, Record};

/// Where and how to store events.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// The HTTP interface, `http://127.0.0.1:8123` (or https).
    pub url: String,
    /// Database, created if missing (letters, digits, `_`).
    pub database: String,
    /// Table, created if missing (letters, digits, `_`).
    pub table: String,
    /// Days to keep rows (by event time); `None` keeps them.
    pub retention_days: Option<u32>,
    /// A ClickHouse cluster (a `remote_servers` name, letters, digits, `_`): the rows live in `<table>_local` on
    /// every shard, created `ON CLUSTER`, and `table` is a Distributed table over them.
    pub cluster: Option<String>,
    /// Timeout, TLS and credentials (`Auth::Basic` with the ClickHouse user and password).
    pub http: HttpConfig,
}

/// A ClickHouse table of audit events.
#[derive(Debug)]
pub struct ClickHouse {
    client: HttpClient,
    database: String,
    table: String,
    retention_days: Option<u32>,
    cluster: Option<String>,
}

/// One row, as JSONEachRow. Nested JSON only as text: a String column cannot take an object.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    cluster: &'a str,
    received_us: u64,
    /// Unix seconds: unambiguous whatever the server's time zone, no `date_time_input_format` needed.
    time: i64,
    time_us: u64,
    audit_id: &'a str,
    stage: &'a str,
    level: &'a str,
    verb: &'a str,
    user: &'a str,
    groups: Vec<&'a str>,
    impersonated_user: &'a str,
    source_ips: Vec<&'a str>,
    user_agent: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    name: &'a str,
    api_group: &'a str,
    request_uri: &'a str,
    response_code: i32,
    decision: &'a str,
    reason: &'a str,
    event: &'a str,
}

/// What a read ([`ClickHouse::read`]) may cost: the server stops it past any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Rows in the answer.
    pub max_rows: u64,
    /// Bytes of the answer, as the server counts them (its columns in memory).
    pub max_bytes: u64,
    /// Seconds the query may run.
    pub max_seconds: u64,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The answer would pass a [`ReadLimits`] (the server's message says which).
    #[error("{0}")]
    Limit(String),
    /// The server, the connection or the query failed.
    #[error(transparent)]
    Failed(Error),
}

/// `TOO_MANY_ROWS_OR_BYTES`: a result limit was passed (18.16 and current servers).
const TOO_MANY_ROWS_OR_BYTES: u32 = 396;
/// `TIMEOUT_EXCEEDED`: `max_execution_time` was passed.
const TIMEOUT_EXCEEDED: u32 = 159;

/// ClickHouse error codes that mean the data itself cannot be read (parse errors, type mismatches): the row is
/// dead. Any other error (unknown table, authentication, too many parts, memory) is the server's or the
/// configuration's and the batch is retried.
const DATA_ERRORS: &[u32] = &[6, 26, 27, 38, 41, 53, 69, 70, 72, 117, 131];

impl ClickHouse {
    /// Checks the names and the URL; connects to nothing.
    pub fn new(cfg: ClickHouseConfig) -> Result<ClickHouse, Error> {
        let cluster = cfg.cluster.as_ref();
        for (what, name) in [("database", &cfg.database), ("table", &cfg.table)]
            .into_iter()
            .chain(cluster.map(|c| ("cluster", c)))
        {
            if name.is_empty()
                || name.starts_with(|c: char| c.is_ascii_digit())
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Error::Config(format!(
                    "ClickHouse {what} `{name}`: use letters, digits and `_`, not starting with a digit"
                )));
            }
        }
        Ok(ClickHouse {
            client: HttpClient::new(&cfg.url, &cfg.http)?,
            database: cfg.database,
            table: cfg.table,
            retention_days: cfg.retention_days,
            cluster: cfg.cluster,
        })
    }

    /// `database.table`, quoted: where rows are inserted and read (the Distributed table on a cluster).
    pub fn qualified_table(&self) -> String {
        format!("`{}`.`{}`", self.database, self.table)
    }

    /// The table that stores the rows: `table` itself, or on a cluster each shard's `<table>_local`.
    fn storage_table(&self) -> String {
        match &self.cluster {
            Some(_) => format!("`{}`.`{}_local`", self.database, self.table),
            None => self.qualified_table(),
        }
    }

    /// ` ON CLUSTER `name`` for DDL on a cluster, else nothing.
    fn on_cluster(&self) -> String {
        self.cluster
            .as_ref()
            .map_or(String::new(), |c| format!(" ON CLUSTER `{c}`"))
    }

    /// The table's DDL. Sorting key `(cluster, user, time, id)`, partitions by day:
    ///
    /// - The day partitions already prune any time-bounded query, so the sorting key serves the other pivot:
    ///   "what else did this identity do" is the most frequent forensic question, and it reads a narrow range
    ///   of each day instead of the whole day. Within a user, rows are in time order (a timeline reads in order).
    /// - The key ends with the id so that distinct events never collapse, and everything before the id is a
    ///   function of the event, so a re-sent event has the same key and the engine deduplicates it (within a
    ///   partition, which is also a function of the event's time).
    /// - Lookups by object (namespace, resource, name) scan the day's narrow string columns, which ClickHouse does
    ///   at hundreds of millions of rows per second; 18.16 has no data-skipping indexes to do better.
    pub fn create_table_sql(&self, ttl: bool) -> String {
        let mut sql = format!(
            "CREATE TABLE IF NOT EXISTS {}{} (\
             id String, cluster String, received_us UInt64, time DateTime('UTC'), time_us UInt64, \
             audit_id String, stage String, level String, verb String, user String, groups Array(String), \
             impersonated_user String, source_ips Array(String), user_agent String, resource String, \
             subresource String, namespace String, name String, api_group String, request_uri String, \
             response_code Int32, decision String, reason String, event String\
             ) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMMDD(time) ORDER BY (cluster, user, time, id)",
            self.storage_table(),
            self.on_cluster()
        );
        if let (true, Some(days)) = (ttl, self.retention_days) {
            let _ = write!(sql, " TTL time + INTERVAL {days} DAY");
        }
        sql
    }

    /// The Distributed table over every shard's local table, on a cluster. Rows are spread by a hash of their
    /// id: the copies of one event (an HA pair's, a retry's) land on one shard, where the ReplacingMergeTree
    /// merges them.
    pub fn create_distributed_sql(&self) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        Some(format!(
            "CREATE TABLE IF NOT EXISTS {}{} AS {} ENGINE = Distributed('{cluster}', '{}', '{}_local', \
             cityHash64(id))",
            self.qualified_table(),
            self.on_cluster(),
            self.storage_table(),
            self.database,
            self.table
        ))
    }

    /// Creates the database and the table if missing (idempotent), on every host of the cluster when there is
    /// one (`ON CLUSTER` needs the cluster's ZooKeeper or Keeper). The TTL is added only on servers that have
    /// TTLs (19.6 and later) and only when the table is created.
    pub async fn prepare(&self) -> Result<(), Error> {
        let version = self.query("SELECT version()").await?;
        let ttl = supports_ttl(version.trim());
        self.query(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}`{}",
            self.database,
            self.on_cluster()
        ))
        .await?;
        self.query(&self.create_table_sql(ttl)).await?;
        if let Some(sql) = self.create_distributed_sql() {
            self.query(&sql).await?;
        }
        Ok(())
    }

    /// Runs one statement (in the body of a POST) and returns the answer's text. For the pipeline's own checks
    /// and for tests.
    pub async fn query(&self, sql: &str) -> Result<String, Error> {
        let req =
            Request::new(Method::POST, "/").body(sql.to_string(), "text/plain; charset=utf-8");
        let resp = self.client.send(req).await.map_err(Error::Unavailable)?;
        if classify(resp.status) == Class::Success {
            return Ok(String::from_utf8_lossy(&resp.body).into_owned());
        }
        let text = String::from_utf8_lossy(&resp.body);
        let message = match parse_error(&text) {
            Some((code, msg)) => format!("code {code}: {msg}"),
            None => crate::shorten(&text, 500),
        };
        Err(Error::Http {
            target: self.client.target().to_string(),
            status: resp.status,
            message,
        })
    }

    /// Runs a query read-only and returns its whole answer. The server enforces `limits` and read-only mode
    /// (`readonly=1`: no writes, no `SET` or `SETTINGS`, no table functions such as `url()` or `file()`), and
    /// holds the answer until the query has ended (`wait_end_of_query`), so a failure is an error status, never
    /// a 200 with an error at the end of a partial answer. 64-bit integers come as JSON numbers.
    pub async fn read(&self, sql: &str, limits: &ReadLimits) -> Result<Bytes, ReadError> {
        let path = format!(
            "/?readonly=1&wait_end_of_query=1&output_format_json_quote_64bit_integers=0\
             &result_overflow_mode=throw&max_result_rows={}&max_result_bytes={}&max_execution_time={}\
             &max_memory_usage={}",
            limits.max_rows,
            limits.max_bytes,
            limits.max_seconds,
            // What the query may hold on each server: its answer several times over, at least 2 GiB.
            limits.max_bytes.saturating_mul(8).max(2 << 30)
        );
        let mut req =
            Request::new(Method::POST, path).body(sql.to_string(), "text/plain; charset=utf-8");
        // The server's own count of bytes is of its columns in memory; JSON text is at most a few times more.
        req.max_response =
            usize::try_from(limits.max_bytes.saturating_mul(4)).unwrap_or(usize::MAX);
        let resp = self
            .client
            .send(req)
            .await
            .map_err(|why| ReadError::Failed(Error::Unavailable(why)))?;
        if classify(resp.status) == Class::Success {
            return Ok(resp.body);
        }
        let text = String::from_utf8_lossy(&resp.body);
        match parse_error(&text) {
            Some((code, message)) if code == TOO_MANY_ROWS_OR_BYTES || code == TIMEOUT_EXCEEDED => {
                Err(ReadError::Limit(format!(
                    "ClickHouse code {code}: {message}"
                )))
            }
            Some((code, message)) => Err(ReadError::Failed(Error::Http {
                target: self.client.target().to_string(),
                status: resp.status,
                message: format!("code {code}: {message}"),
            })),
            None => Err(ReadError::Failed(Error::Http {
                target: self.client.target().to_string(),
                status: resp.status,
                message: crate::shorten(&text, 500),
            })),
        }
    }

    /// Drops the day partitions whose every event is older than the retention (`now` minus the retention days).
    /// Returns the partitions dropped (`YYYYMMDD`). Does nothing without a retention.
    pub async fn drop_expired_partitions(
        &self,
        now: jiff::Timestamp,
    ) -> Result<Vec<String>, Error> {
        let Some(days) = self.retention_days else {
            return Ok(Vec::new());
        };
        let cutoff = now
            .checked_sub(jiff::SignedDuration::from_hours(24 * i64::from(days)))
            .map_err(|e| Error::Config(format!("retention of {days} days: {e}")))?;
        let cutoff = cutoff.strftime("%Y%m%d").to_string();
        let list = self
            .query(&format!(
                "SELECT DISTINCT partition FROM system.parts WHERE database = '{}' AND table = '{}{}' AND active \
                 FORMAT TabSeparated",
                self.database,
                self.table,
                if self.cluster.is_some() { "_local" } else { "" }
            ))
            .await?;
        let mut dropped = Vec::new();
        for p in list.lines().map(str::trim) {
            if p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit()) && *p < *cutoff.as_str() {
                self.query(&format!(
                    "ALTER TABLE {}{} DROP PARTITION {p}",
                    self.storage_table(),
                    self.on_cluster()
                ))
                .await?;
                dropped.push(p.to_string());
            }
        }
        Ok(dropped)
    }

    /// Inserts the batch as one JSONEachRow block. Records that are not audit events are dead without being
    /// sent; a row the server cannot read (its error names the row) is dead and the others are retried.
    pub async fn send(&self, batch: &[Record<'_>]) -> Outcome {
        let mut body = Vec::with_capacity(batch.iter().map(|r| r.event.len() * 2 + 512).sum());
        let mut sent = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for (i, r) in batch.iter().enumerate() {
            match Fields::parse(r) {
                Ok(f) => {
                    row_json(r, &f, &mut body);
                    sent.push(i);
                }
                Err(why) => dead.push((i, why)),
            }
        }
        if sent.is_empty() {
            return Outcome::from_parts(batch.len(), vec![], dead, String::new, None);
        }
        // On a cluster, the insert returns once every shard has its rows (not when they are queued on this host).
        let query = format!(
            "/?{}query={}",
            if self.cluster.is_some() {
                "insert_distributed_sync=1&"
            } else {
                ""
            },
            crate::http::percent_encode(&format!(
                "INSERT INTO {} FORMAT JSONEachRow",
                self.qualified_table()
            ))
        );
        let req = Request::new(Method::POST, query).body(body, "application/x-ndjson");
        let resp = match self.client.send(req).await {
            Ok(r) => r,
            Err(why) => return Outcome::from_parts(batch.len(), sent, dead, || why, None),
        };
        if classify(resp.status) == Class::Success {
            return Outcome::from_parts(batch.len(), vec![], dead, String::new, None);
        }
        let text = String::from_utf8_lossy(&resp.body);
        let after = resp.retry_after();
        let Some((code, message)) = parse_error(&text) else {
            let reason = format!("HTTP {}: {}", resp.status, crate::shorten(&text, 300));
            return match classify(resp.status) {
                Class::Dead => Outcome::Dead { reason },
                _ => Outcome::from_parts(batch.len(), sent, dead, || reason, after),
            };
        };
        let reason = format!("ClickHouse code {code}: {message}");
        // "Unknown field" (117) means the table lacks a column: configuration, like an unknown table.
        if !DATA_ERRORS.contains(&code) || message.contains("Unknown field") {
            return Outcome::from_parts(batch.len(), sent, dead, || reason, after);
        }
        // The block was refused whole: the row it names is dead, the others go again.
        match error_row(&message).and_then(|n| sent.get(n.checked_sub(1)?).copied()) {
            Some(bad) => {
                dead.push((bad, reason));
                let retry = sent.into_iter().filter(|&i| i != bad).collect();
                Outcome::from_parts(batch.len(), retry, dead, String::new, None)
            }
            None => Outcome::Dead { reason },
        }
    }
}

fn row_json(r: &Record<'_>, f: &Fields<'_>, out: &mut Vec<u8>) {
    let ev = &f.ev;
    let obj = ev.object_ref.clone().unwrap_or_default();
    let row = Row {
        id: r.id,
        cluster: r.cluster,
        received_us: r.received_us.max(0) as u64,
        time: f.time.as_second(),
        time_us: f.time_us().max(0) as u64,
        audit_id: &ev.audit_id,
        stage: ev.stage.as_str(),
        level: ev.level.as_str(),
        verb: &ev.verb,
        user: &ev.user.username,
        groups: ev.user.groups.iter().map(|g| g.as_ref()).collect(),
        impersonated_user: f.impersonated(),
        source_ips: ev.source_ips.iter().map(|g| g.as_ref()).collect(),
        user_agent: f.user_agent(),
        resource: &obj.resource,
        subresource: &obj.subresource,
        namespace: &obj.namespace,
        name: &obj.name,
        api_group: &obj.api_group,
        request_uri: &ev.request_uri,
        response_code: ev.code().unwrap_or(0),
        decision: f.decision(),
        reason: f.reason(),
        event: r.event,
    };
    serde_json::to_writer(&mut *out, &row).expect("a row serialises");
    out.push(b'\n');
}

/// Whether a `SELECT version()` answer (`18.16.1`, `24.3.2.23`) is 19.6 or later.
fn supports_ttl(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (19, 6)
}

/// The code and message of a ClickHouse error body: 18.16's `Code: 27, e.displayText() = DB::Exception: ...,
/// e.what() = DB::Exception` and current `Code: 27. DB::Exception: .... (NAME) (version 24.3.1)`.
pub fn parse_error(body: &str) -> Option<(u32, String)> {
    let rest = &body[body.find("Code: ")? + 6..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let code = rest[..digits].parse().ok()?;
    let mut msg = rest[digits..].trim_start_matches([',', '.', ' ']);
    msg = msg.strip_prefix("e.displayText() = ").unwrap_or(msg);
    msg = msg.strip_prefix("DB::Exception: ").unwrap_or(msg);
    if let Some(i) = msg.rfind(", e.what() = ") {
        msg = &msg[..i];
    }
    if let Some(i) = msg.rfind(" (version ") {
        msg = &msg[..i];
    }
    let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    Some((code, crate::shorten(&msg, 500)))
}

/// The 1-based row of `(at row N)` in a parse error.
fn error_row(message: &str) -> Option<usize> {
    let rest = &message[message.find("(at row ")? + 8..];
    rest[..rest.find(')')?].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_old_and_new_servers_parse() {
        let old = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \" before: zz\",\"groups\":[]}\\n: (while read the value of key time_us): (at row 2)\n, e.what() = DB::Exception\n";
        let (code, msg) = parse_error(old).unwrap();
        assert_eq!(code, 27);
        assert!(msg.starts_with("Cannot parse input: expected"), "{msg}");
        assert!(msg.ends_with("(at row 2)"), "{msg}");
        assert_eq!(error_row(&msg), Some(2));
        let new = "Code: 60. DB::Exception: Table kt.nope does not exist. (UNKNOWN_TABLE) (version 24.3.2.23 (official build))\n";
        assert_eq!(
            parse_error(new).unwrap(),
            (
                60,
                "Table kt.nope does not exist. (UNKNOWN_TABLE)".to_string()
            )
        );
        assert_eq!(parse_error("Bad Gateway"), None);
    }

    #[test]
    fn ttl_needs_19_6() {
        assert!(!supports_ttl("18.16.1"));
        assert!(!supports_ttl("19.5.3.8"));
        assert!(supports_ttl("19.6.2.11"));
        assert!(supports_ttl("24.3.2.23"));
    }

    #[test]
    fn names_are_checked() {
        let cfg = |db: &str| ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: db.into(),
            table: "events".into(),
            retention_days: Some(400),
            cluster: None,
            http: HttpConfig::default(),
        };
        assert!(ClickHouse::new(cfg("kubetrail")).is_ok());
        for bad in ["", "a-b", "x`; DROP TABLE y", "1x"] {
            assert!(ClickHouse::new(cfg(bad)).is_err(), "{bad}");
        }
        let ch = ClickHouse::new(cfg("kt")).unwrap();
        assert!(
            ch.create_table_sql(true)
                .ends_with("TTL time + INTERVAL 400 DAY")
        );
        assert!(!ch.create_table_sql(false).contains("TTL"));
        assert_eq!(ch.create_distributed_sql(), None);
        let on = |cluster: &str| {
            ClickHouse::new(ClickHouseConfig {
                cluster: Some(cluster.into()),
                ..cfg("kt")
            })
        };
        assert!(on("a-b").is_err(), "cluster names are checked too");
        let ch = on("fleet").unwrap();
        assert!(
            ch.create_table_sql(false)
                .starts_with("CREATE TABLE IF NOT EXISTS `kt`.`events_local` ON CLUSTER `fleet` (")
        );
        assert_eq!(
            ch.create_distributed_sql().unwrap(),
            "CREATE TABLE IF NOT EXISTS `kt`.`events` ON CLUSTER `fleet` AS `kt`.`events_local` \
             ENGINE = Distributed('fleet', 'kt', 'events_local', cityHash64(id))"
        );
    }
}
