//! Rows: a log record and its event, parsed as `kubetrail_model::Event` (borrowing from the log payload where
//! it can), with the columns' values moved out of it; and the column builders that turn rows into a batch.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder, UInt8Builder, UInt64Builder,
};
use arrow::error::ArrowError;
use kubetrail_model::{Event, ObjectReference};

use super::HOUR_US;
use super::elide::{Flat, elide_at, value_range};
use super::schema::{list_item, schema};
use crate::record::EventRecord;

// columns' values moved out of it.

/// The annotation the `decision` column holds.
const DECISION: &str = "authorization.k8s.io/decision";
/// The annotation the `reason` column holds.
const REASON: &str = "authorization.k8s.io/reason";

/// One row to be: the record's own fields and the columns' values from the event, borrowing from the log
/// payload.
#[derive(Debug)]
pub(super) struct Row<'a> {
    pub(super) seq: u64,
    pub(super) time: i64,
    stage_time: Option<i64>,
    latency: Option<i64>,
    received: i64,
    pub(super) cluster: &'a str,
    audit_id: &'a str,
    stage: &'a str,
    pub(super) event: &'a str,
    /// Where the values `elide` may take out are in `event` (read off the parse: the event is read once).
    elidable: [Option<std::ops::Range<usize>>; 4],
    /// How the event arrived (`webhook:<identity>`, `file:<path>`, `import`); null when unknown.
    source: Option<&'a str>,
    /// Empty when the event did not parse.
    cols: EventColumns<'a>,
}

/// The columns that come from the event (see the module docs); all empty or null when it did not parse.
#[derive(Debug, Default)]
struct EventColumns<'a> {
    level: &'static str,
    verb: Cow<'a, str>,
    user: Cow<'a, str>,
    groups: Vec<Cow<'a, str>>,
    impersonated_user: Option<Cow<'a, str>>,
    impersonated_groups: Vec<Cow<'a, str>>,
    source_ips: Vec<Cow<'a, str>>,
    user_agent: Option<Cow<'a, str>>,
    uri: Cow<'a, str>,
    object_ref: Option<ObjectReference<'a>>,
    code: Option<i32>,
    decision: Option<Cow<'a, str>>,
    reason: Option<Cow<'a, str>>,
}

impl<'a> EventColumns<'a> {
    /// Moves the columns' values out of `ev` (no string is copied).
    fn from_event(ev: Event<'a>) -> EventColumns<'a> {
        let (decision, reason) = match ev.annotations {
            Some(mut a) => (a.remove(DECISION), a.remove(REASON)),
            None => (None, None),
        };
        let (impersonated_user, impersonated_groups) = match ev.impersonated_user {
            // `username` is left out when empty (Kubernetes writes it with `omitempty`): null, as when absent.
            Some(u) => (Some(u.username).filter(|n| !n.is_empty()), u.groups),
            None => (None, Vec::new()),
        };
        EventColumns {
            level: ev.level.as_str(),
            verb: ev.verb,
            user: ev.user.username,
            groups: ev.user.groups,
            impersonated_user,
            impersonated_groups,
            source_ips: ev.source_ips,
            user_agent: ev.user_agent,
            uri: ev.request_uri,
            object_ref: ev.object_ref,
            code: ev.response_status.and_then(|s| s.code),
            decision,
            reason,
        }
    }
}

fn clamp_us(us: i64) -> i64 {
    us.clamp(
        jiff::Timestamp::MIN.as_microsecond(),
        jiff::Timestamp::MAX.as_microsecond(),
    )
}

fn parse_time(s: Option<&str>) -> Option<i64> {
    s.and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_microsecond())
}

impl<'a> Row<'a> {
    /// The `user` column's value: rows are sorted by it first.
    pub(super) fn user(&self) -> &str {
        &self.cols.user
    }

    /// The row for a record; `false` with it when the event JSON did not parse.
    pub(super) fn new(seq: u64, rec: &EventRecord<'a>) -> (Row<'a>, bool) {
        let event: &'a str = match &rec.event {
            Cow::Borrowed(s) => s,
            Cow::Owned(_) => unreachable!("decoded records borrow"),
        };
        let borrowed = |c: &Cow<'a, str>| -> &'a str {
            match c {
                Cow::Borrowed(s) => s,
                Cow::Owned(_) => unreachable!("decoded records borrow"),
            }
        };
        let received = clamp_us(rec.received_us);
        let mut elidable = [None, None, None, None];
        let (requested, stage_time, cols, parsed) = match Event::parse(event) {
            Ok(ev) => {
                let at = |key: &str, value: Option<&Cow<'_, str>>| match value {
                    Some(Cow::Borrowed(v)) => value_range(event, key, v),
                    _ => None,
                };
                elidable = [
                    at("auditID", Some(&ev.audit_id)),
                    at(
                        "requestReceivedTimestamp",
                        ev.request_received_timestamp.as_ref(),
                    ),
                    at("stageTimestamp", ev.stage_timestamp.as_ref()),
                    at("requestURI", Some(&ev.request_uri)),
                ];
                (
                    parse_time(
                        ev.request_received_timestamp
                            .as_deref()
                            .or(ev.timestamp.as_deref()),
                    ),
                    parse_time(ev.stage_timestamp.as_deref()),
                    EventColumns::from_event(ev),
                    true,
                )
            }
            Err(_) => (None, None, EventColumns::default(), false),
        };
        let latency = requested.zip(stage_time).map(|(r, s)| s - r);
        let row = Row {
            seq,
            time: requested.or(stage_time).unwrap_or(received),
            stage_time,
            latency,
            received,
            cluster: borrowed(&rec.cluster),
            audit_id: borrowed(&rec.audit_id),
            stage: borrowed(&rec.stage),
            event,
            elidable,
            source: Some(borrowed(&rec.source)).filter(|s| !s.is_empty()),
            cols,
        };
        (row, parsed)
    }

    pub(super) fn hour(&self) -> i64 {
        self.time.div_euclid(HOUR_US)
    }
}

/// Column builders for one batch.
pub(super) struct Columns {
    time: TimestampMicrosecondBuilder,
    stage_time: TimestampMicrosecondBuilder,
    received: TimestampMicrosecondBuilder,
    seq: UInt64Builder,
    cluster: StringBuilder,
    audit_id: StringBuilder,
    stage: StringBuilder,
    level: StringBuilder,
    verb: StringBuilder,
    user: StringBuilder,
    groups: ListBuilder<StringBuilder>,
    impersonated_user: StringBuilder,
    impersonated_groups: ListBuilder<StringBuilder>,
    source_ips: ListBuilder<StringBuilder>,
    ip: StringBuilder,
    user_agent: StringBuilder,
    uri: StringBuilder,
    resource: StringBuilder,
    subresource: StringBuilder,
    namespace: StringBuilder,
    name: StringBuilder,
    api_group: StringBuilder,
    api_version: StringBuilder,
    code: Int32Builder,
    decision: StringBuilder,
    reason: StringBuilder,
    latency_us: Int64Builder,
    event: StringBuilder,
    source: StringBuilder,
    event_rest: StringBuilder,
    event_elided: UInt8Builder,
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

impl Columns {
    pub(super) fn new(rows: usize, event_bytes: usize) -> Columns {
        let ts = || TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
        let s = || StringBuilder::with_capacity(rows, rows * 16);
        let list =
            || ListBuilder::with_capacity(StringBuilder::new(), rows).with_field(list_item());
        Columns {
            time: ts(),
            stage_time: ts(),
            received: ts(),
            seq: UInt64Builder::with_capacity(rows),
            cluster: s(),
            audit_id: StringBuilder::with_capacity(rows, rows * 36),
            stage: s(),
            level: s(),
            verb: s(),
            user: s(),
            groups: list(),
            impersonated_user: s(),
            impersonated_groups: list(),
            source_ips: list(),
            ip: s(),
            user_agent: s(),
            uri: StringBuilder::with_capacity(rows, rows * 64),
            resource: s(),
            subresource: s(),
            namespace: s(),
            name: s(),
            api_group: s(),
            api_version: s(),
            code: Int32Builder::with_capacity(rows),
            decision: s(),
            reason: s(),
            latency_us: Int64Builder::with_capacity(rows),
            event: StringBuilder::with_capacity(rows, 0),
            source: StringBuilder::with_capacity(rows, rows * 16),
            event_rest: StringBuilder::with_capacity(rows, event_bytes),
            event_elided: UInt8Builder::with_capacity(rows),
        }
    }

    pub(super) fn push(&mut self, r: &Row<'_>) {
        let c = &r.cols;
        self.time.append_value(r.time);
        self.stage_time.append_option(r.stage_time);
        self.received.append_value(r.received);
        self.seq.append_value(r.seq);
        self.cluster.append_value(r.cluster);
        self.audit_id.append_value(r.audit_id);
        self.stage.append_value(r.stage);
        self.level.append_value(c.level);
        self.verb.append_value(&c.verb);
        self.user.append_value(&c.user);
        append_list(&mut self.groups, &c.groups);
        self.impersonated_user
            .append_option(c.impersonated_user.as_deref());
        append_list(&mut self.impersonated_groups, &c.impersonated_groups);
        append_list(&mut self.source_ips, &c.source_ips);
        self.ip
            .append_option(c.source_ips.first().map(AsRef::as_ref));
        self.user_agent.append_option(c.user_agent.as_deref());
        self.uri.append_value(&c.uri);
        let o = c.object_ref.as_ref();
        let field =
            |f: for<'r, 's> fn(&'r ObjectReference<'s>) -> &'r str| o.and_then(|o| non_empty(f(o)));
        self.resource.append_option(field(|o| &o.resource));
        self.subresource.append_option(field(|o| &o.subresource));
        self.namespace.append_option(field(|o| &o.namespace));
        self.name.append_option(field(|o| &o.name));
        self.api_group.append_option(field(|o| &o.api_group));
        self.api_version.append_option(field(|o| &o.api_version));
        self.code.append_option(c.code);
        self.decision.append_option(c.decision.as_deref());
        self.reason.append_option(c.reason.as_deref());
        self.latency_us.append_option(r.latency);
        // Format 3 keeps the event in `event_rest`; `event` is for files of format 1 and 2.
        self.event.append_null();
        self.source.append_option(r.source);
        let flat = Flat {
            audit_id: r.audit_id,
            time: r.time,
            stage_time: r.stage_time,
            uri: &c.uri,
        };
        let (rest, elided) = elide_at(r.event, r.elidable.clone(), &flat);
        self.event_rest.append_value(rest);
        self.event_elided.append_value(elided.0);
    }

    pub(super) fn finish(mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.stage_time.finish()),
            Arc::new(self.received.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.cluster.finish()),
            Arc::new(self.audit_id.finish()),
            Arc::new(self.stage.finish()),
            Arc::new(self.level.finish()),
            Arc::new(self.verb.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.groups.finish()),
            Arc::new(self.impersonated_user.finish()),
            Arc::new(self.impersonated_groups.finish()),
            Arc::new(self.source_ips.finish()),
            Arc::new(self.ip.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.uri.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.subresource.finish()),
            Arc::new(self.namespace.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.api_group.finish()),
            Arc::new(self.api_version.finish()),
            Arc::new(self.code.finish()),
            Arc::new(self.decision.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.latency_us.finish()),
            Arc::new(self.event.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.event_rest.finish()),
            Arc::new(self.event_elided.finish()),
        ];
        RecordBatch::try_new(schema(), columns)
    }
}

/// The rows of `records` (each with the seq it is known by) as one batch of [`schema`], exactly as the writer
/// makes them: for a query engine over events stored elsewhere (a ClickHouse table, an archive's lines) that
/// answers as the store does.
pub fn batch(records: &[(u64, EventRecord<'_>)]) -> Result<RecordBatch, ArrowError> {
    let bytes = records.iter().map(|(_, r)| r.event.len()).sum();
    let mut cols = Columns::new(records.len(), bytes);
    fn b(c: &str) -> Cow<'_, str> {
        Cow::Borrowed(c)
    }
    for (seq, rec) in records {
        let rec = EventRecord {
            received_us: rec.received_us,
            cluster: b(&rec.cluster),
            source: b(&rec.source),
            audit_id: b(&rec.audit_id),
            stage: b(&rec.stage),
            variant: b(&rec.variant),
            event: b(&rec.event),
        };
        cols.push(&Row::new(*seq, &rec).0);
    }
    cols.finish()
}

fn append_list(b: &mut ListBuilder<StringBuilder>, items: &[Cow<'_, str>]) {
    for item in items {
        b.values().append_value(item);
    }
    b.append(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    use arrow::array::AsArray;

    #[test]
    fn columns_come_from_the_model_event() {
        let json = r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","verb":"get","user":{"username":"u","groups":["g1","g2"]},"impersonatedUser":{"groups":["ig"]},"sourceIPs":["10.0.0.1","10.0.0.2"],"objectRef":{"resource":"pods","namespace":"","name":"p"},"responseStatus":{"code":200},"annotations":{"authorization.k8s.io/decision":"allow","other":"x"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","stageTimestamp":"2026-01-01T00:00:00.5Z"}"#;
        let rec = EventRecord {
            received_us: 5,
            cluster: "c".into(),
            source: "s".into(),
            audit_id: "a".into(),
            stage: "ResponseComplete".into(),
            variant: "".into(),
            event: json.into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        let rec = EventRecord::decode(&bytes).unwrap();
        let (row, parsed) = Row::new(1, &rec);
        assert!(parsed);
        let c = &row.cols;
        assert_eq!((c.level, &*c.verb, &*c.user), ("Metadata", "get", "u"));
        assert_eq!(c.groups, ["g1", "g2"]);
        // No username: null, as when there is no impersonated user at all.
        assert_eq!(c.impersonated_user, None);
        assert_eq!(c.impersonated_groups, ["ig"]);
        assert_eq!(c.source_ips, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            (c.code, c.decision.as_deref(), c.reason.as_deref()),
            (Some(200), Some("allow"), None)
        );
        assert_eq!(
            (row.latency, row.stage_time.is_some()),
            (Some(500_000), true)
        );
        let mut cols = Columns::new(1, json.len());
        cols.push(&row);
        let batch = cols.finish().unwrap();
        let col = |name: &str| batch.column(schema().index_of(name).unwrap()).clone();
        assert!(col("impersonated_user").is_null(0));
        assert!(col("namespace").is_null(0), "empty is null");
        assert_eq!(col("name").as_string::<i32>().value(0), "p");
        assert_eq!(col("ip").as_string::<i32>().value(0), "10.0.0.1");
    }

    #[test]
    fn unparsable_events_keep_the_record_fields() {
        let rec = EventRecord {
            received_us: 5,
            cluster: "c".into(),
            source: "s".into(),
            audit_id: "id".into(),
            stage: "ResponseComplete".into(),
            variant: "".into(),
            event: "{not json".into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        let rec = EventRecord::decode(&bytes).unwrap();
        let (row, parsed) = Row::new(7, &rec);
        assert!(!parsed);
        assert_eq!((row.time, row.seq, row.audit_id), (5, 7, "id"));
        let mut cols = Columns::new(1, 9);
        cols.push(&row);
        let batch = cols.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
    }

    /// The conversion finds the values to elide from its parse of the event; it takes out exactly what a
    /// scan of the event would, and what it takes out is put back byte for byte.
    #[test]
    fn elision_located_by_the_parse_is_the_scans() {
        let mut events: Vec<String> = kubetrail_gen::Generator::new(kubetrail_gen::Config {
            attacks: true,
            stages: true,
            ..kubetrail_gen::Config::default()
        })
        .take(3000)
        .collect();
        let base = r#"{"auditID":"a","stage":"ResponseComplete","level":"Metadata","requestURI":"/x","requestReceivedTimestamp":"2026-01-01T00:00:00.000001Z","stageTimestamp":"2026-01-01T00:00:00.000002Z"}"#;
        events.extend([
            base.to_string(),
            // Escaped key spellings, a key inside a string, spaces around the colon.
            base.replace(r#""auditID":"a""#, r#""audit\u0049D":"a""#),
            base.replace(r#""requestURI":"/x""#, r#""requestURI" : "/x""#),
            base.replace(r#""level""#, r#""x\"auditID":"a","level""#),
            base.replace(r#""stageTimestamp""#, r#""stage\u0054imestamp""#),
        ]);
        let mut elided = 0;
        for (i, json) in events.iter().enumerate() {
            let rec = EventRecord {
                received_us: 5,
                cluster: "c".into(),
                source: "s".into(),
                audit_id: Event::parse(json).unwrap().audit_id.into_owned().into(),
                stage: "ResponseComplete".into(),
                variant: "".into(),
                event: json.as_str().into(),
            };
            let mut bytes = Vec::new();
            rec.encode(&mut bytes);
            let rec = EventRecord::decode(&bytes).unwrap();
            let (row, parsed) = Row::new(i as u64, &rec);
            assert!(parsed);
            let flat = Flat {
                audit_id: row.audit_id,
                time: row.time,
                stage_time: row.stage_time,
                uri: &row.cols.uri,
            };
            let fast = elide_at(row.event, row.elidable.clone(), &flat);
            assert_eq!(fast, super::super::elide::elide(json, &flat), "{json}");
            assert_eq!(
                super::super::elide::restore(&fast.0, fast.1, &flat).unwrap(),
                *json
            );
            elided += usize::from(fast.1.0 != 0);
        }
        assert!(elided >= 3000, "generated events are elided: {elided}");
    }
}
