use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use kubetrail_store::{ColumnarOptions, ColumnarWriter, EventRecord, Wal, WalOptions};

use super::*;

/// Two requests of `alice` (a delete with all three stages, a get with RequestReceived only) and a create by
/// `bob` one hour later in another cluster.
fn events() -> Vec<(&'static str, String)> {
    let ev = |id: &str,
              stage: &str,
              user: &str,
              verb: &str,
              ns: &str,
              name: &str,
              code: u32,
              t: &str| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/api/v1/namespaces/{ns}/pods/{name}","verb":"{verb}","user":{{"username":"{user}","groups":["dev","system:authenticated"]}},"sourceIPs":["10.0.0.7"],"userAgent":"kubectl/v1.31","objectRef":{{"resource":"pods","namespace":"{ns}","name":"{name}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}","annotations":{{"authorization.k8s.io/decision":"allow"}}}}"#
        )
    };
    vec![
        (
            "prod",
            ev(
                "a1",
                "RequestReceived",
                "alice",
                "delete",
                "prod",
                "web-1",
                0,
                "2026-03-01T10:00:00.000001Z",
            ),
        ),
        (
            "prod",
            ev(
                "g1",
                "RequestReceived",
                "alice",
                "get",
                "prod",
                "web-2",
                0,
                "2026-03-01T10:00:00.000001Z",
            ),
        ),
        (
            "prod",
            ev(
                "a1",
                "ResponseStarted",
                "alice",
                "delete",
                "prod",
                "web-1",
                0,
                "2026-03-01T10:00:00.000001Z",
            ),
        ),
        (
            "prod",
            ev(
                "a1",
                "ResponseComplete",
                "alice",
                "delete",
                "prod",
                "web-1",
                200,
                "2026-03-01T10:00:00.000001Z",
            ),
        ),
        (
            "dev",
            ev(
                "b1",
                "ResponseComplete",
                "bob",
                "create",
                "dev",
                "job-1",
                201,
                "2026-03-01T11:30:00Z",
            ),
        ),
    ]
}

fn store(dir: &Path) -> PathBuf {
    let lines: Vec<(&str, String)> = events();
    store_lines(dir, &lines)
}

/// A store of `lines` (cluster, event JSON), converted into Parquet.
fn store_lines(dir: &Path, lines: &[(&str, String)]) -> PathBuf {
    let opts = WalOptions {
        fsync: false,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&dir.join("wal"), opts).unwrap();
    let wal = Arc::new(wal);
    let mut payloads = Vec::new();
    for (cluster, line) in lines {
        let v = kubetrail_history::parse_event(line).unwrap();
        let rec = EventRecord {
            received_us: 1,
            cluster: (*cluster).into(),
            source: "test".into(),
            audit_id: v["auditID"].as_str().unwrap().to_string().into(),
            stage: v["stage"].as_str().unwrap().to_string().into(),
            variant: "".into(),
            event: line.as_str().into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        payloads.push(bytes);
    }
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    wal.append(&refs).unwrap();
    let root = dir.join("store");
    ColumnarWriter::open(&root, wal, ColumnarOptions::default())
        .unwrap()
        .flush()
        .unwrap();
    root
}

fn rows(engine: &Engine, expr: Option<&str>, query: RowQuery) -> Vec<EventRow> {
    let sql = expr.map(|e| kubetrail_query::parse(e).unwrap().to_sql());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut out = Vec::new();
    rt.block_on(engine.requests(sql.as_deref(), query, |r| {
        out.push(r);
        ControlFlow::Continue(())
    }))
    .unwrap();
    out
}

fn ids(rows: &[EventRow]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{}:{}", r.audit_id, r.stage))
        .collect()
}

#[test]
fn one_row_per_request_prefers_response_complete() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&store(dir.path()), &Scope::default()).unwrap();
    let all = rows(&engine, None, RowQuery::default());
    assert_eq!(
        ids(&all),
        [
            "a1:ResponseComplete",
            "g1:RequestReceived",
            "b1:ResponseComplete"
        ]
    );
    let r = &all[0];
    assert_eq!(
        (r.user.as_str(), r.verb.as_str(), r.code),
        ("alice", "delete", Some(200))
    );
    assert_eq!(r.source_ips, ["10.0.0.7"]);
    assert_eq!(r.groups, ["dev", "system:authenticated"]);
    assert_eq!(r.time(), "2026-03-01T10:00:00.000001Z");
    assert_eq!(r.resource_path(), "pods");
    assert_eq!(r.event, None);

    let stages = rows(
        &engine,
        None,
        RowQuery {
            all_stages: true,
            ..RowQuery::default()
        },
    );
    assert_eq!(stages.len(), 5);
    // A limit counts requests, even when the row limit cuts a request's stages.
    let one = rows(
        &engine,
        None,
        RowQuery {
            limit: Some(1),
            ..RowQuery::default()
        },
    );
    assert_eq!(ids(&one), ["a1:ResponseComplete"]);
    let two = rows(
        &engine,
        None,
        RowQuery {
            limit: Some(2),
            with_event: true,
            ..RowQuery::default()
        },
    );
    assert_eq!(ids(&two), ["a1:ResponseComplete", "g1:RequestReceived"]);
    assert!(
        two[1]
            .event
            .as_deref()
            .unwrap()
            .contains("\"auditID\":\"g1\"")
    );
}

#[test]
fn where_expressions_run_as_sql() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&store(dir.path()), &Scope::default()).unwrap();
    let check = |expr: &str, expect: &[&str]| {
        let got: Vec<String> = rows(&engine, Some(expr), RowQuery::default())
            .into_iter()
            .map(|r| r.audit_id)
            .collect();
        assert_eq!(got, expect, "{expr}");
    };
    check("verb = delete and resource = pods", &["a1"]);
    check("user = bob or namespace = prod", &["a1", "g1", "b1"]);
    check("group = dev and not verb in (get, create)", &["a1"]);
    check("group ~ 'system:*'", &["a1", "g1", "b1"]);
    check("code ~ 2??", &["a1", "b1"]);
    check("objectRef.namespace = dev", &["b1"]);
    check(
        "annotations.authorization.k8s.io/decision = allow and user != alice",
        &["b1"],
    );
    check(
        "objectRef.name ~ 'web-*' and stage = RequestReceived",
        &["a1", "g1"],
    );
    check("cluster = dev", &["b1"]);
    // `IS DISTINCT FROM` takes a whole expression on its right: what follows must not be read into it.
    check("namespace != dev and verb = delete", &["a1"]);
    check("impersonated != x and user = bob", &["b1"]);
    check("code != 200 and verb = create or user = bob", &["b1"]);
}

#[test]
fn scope_prunes_clusters_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let root = store(dir.path());
    let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let scope = Scope {
        since: Some(t("2026-03-01T11:00:00Z")),
        ..Scope::default()
    };
    let engine = Engine::open(&root, &scope).unwrap();
    assert_eq!(engine.files().len(), 1);
    assert_eq!(
        ids(&rows(&engine, None, RowQuery::default())),
        ["b1:ResponseComplete"]
    );
    let scope = Scope {
        cluster: Some("prod".into()),
        until: Some(t("2026-03-01T10:00:00.000001Z")),
        ..Scope::default()
    };
    let engine = Engine::open(&root, &scope).unwrap();
    assert_eq!(rows(&engine, None, RowQuery::default()).len(), 2);
    // What a query may spill is bounded too.
    assert_eq!(
        engine
            .context()
            .runtime_env()
            .disk_manager
            .max_temp_directory_size(),
        MAX_SPILL_BYTES
    );
    // An empty or missing store is an empty table.
    let engine = Engine::open(&dir.path().join("nothing"), &Scope::default()).unwrap();
    assert!(rows(&engine, None, RowQuery::default()).is_empty());
}

#[test]
fn sql_streams_batches() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&store(dir.path()), &Scope::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let n: usize = rt.block_on(async {
        let mut s = engine
            .stream("SELECT \"user\", count(*) AS n FROM events GROUP BY \"user\" ORDER BY n DESC")
            .await
            .unwrap();
        let mut total = 0;
        while let Some(b) = s.next().await {
            total += b.unwrap().num_rows();
        }
        total
    });
    assert_eq!(n, 2);
    // kt_json_match never returns null, even on a malformed event or an unknown operator.
    let sql = "SELECT kt_json_match('not json', 'a', '=', 'x') AS a, kt_json_match('{\"a\":[1,\"x\"]}', 'a', '=', 'x') AS b, kt_json_match('{}', 'a', '?', 'x') AS c";
    let batches = rt.block_on(async {
        let s = engine.stream(sql).await.unwrap();
        s.collect::<Vec<_>>().await
    });
    let b = batches.into_iter().next().unwrap().unwrap();
    let v: Vec<bool> = (0..3).map(|i| b.column(i).as_boolean().value(0)).collect();
    assert_eq!(v, [false, true, false]);
}

/// A path the store keeps as a column reads the column, and answers as the path does on every event.
#[test]
fn paths_kept_as_columns_answer_as_the_paths() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&store(dir.path()), &Scope::default()).unwrap();
    let all_stages = RowQuery {
        all_stages: true,
        ..RowQuery::default()
    };
    for (path, short) in [
        ("objectRef.name = web-1", "name = web-1"),
        ("objectRef.namespace != prod", "namespace != prod"),
        ("user.groups = dev", "group = dev"),
        ("sourceIPs ~ '10.*'", "ip ~ '10.*'"),
        ("user.username in (bob, carol)", "user in (bob, carol)"),
    ] {
        let sql = kubetrail_query::parse(path).unwrap().to_sql();
        assert!(!sql.contains("kt_json_match"), "{path}: {sql}");
        let by_path = ids(&rows(&engine, Some(path), all_stages));
        assert_eq!(
            by_path,
            ids(&rows(&engine, Some(short), all_stages)),
            "{path}"
        );
        let expr = kubetrail_query::parse(path).unwrap();
        let expected: Vec<String> = events()
            .iter()
            .filter(|(cluster, e)| expr.matches(&serde_json::from_str(e).unwrap(), cluster))
            .map(|(_, e)| {
                let v: serde_json::Value = serde_json::from_str(e).unwrap();
                format!(
                    "{}:{}",
                    v["auditID"].as_str().unwrap(),
                    v["stage"].as_str().unwrap()
                )
            })
            .collect();
        let mut got = by_path.clone();
        got.sort();
        let mut want = expected;
        want.sort();
        assert_eq!(got, want, "{path}");
    }
}

#[test]
fn last_writes_of_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let root = store(dir.path());
    let engine = Engine::open(&root, &Scope::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let writes = |res: &str, ns: &str, name: &str| {
        rt.block_on(engine.last_writes(res, ns, name, 5))
            .unwrap()
            .into_iter()
            .map(|r| format!("{}:{}:{}", r.user, r.verb, r.audit_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(writes("pods", "dev", "job-1"), ["bob:create:b1"]);
    // A delete is not a write; another namespace or kind is another object.
    assert!(writes("pods", "prod", "web-1").is_empty());
    assert!(writes("pods", "prod", "job-1").is_empty());
    assert!(writes("deployments", "dev", "job-1").is_empty());
    // Names are values, never SQL.
    assert!(writes("pods", "dev", "job-1' OR '1'='1").is_empty());
}

/// A store holding files of format 1 (no `source` column, the whole event in `event`) beside current ones
/// answers queries over `source` (null for the old files' rows) and gives every row's stored event the same,
/// whichever format holds it, also to a filter on the event's JSON.
#[test]
fn format_1_files_read_with_a_null_source() {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = tempfile::tempdir().unwrap();
    let root = store(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let text = |sql: &str| -> Vec<Vec<String>> {
        let engine = Engine::open(&root, &Scope::default()).unwrap();
        let (_, rows) = rt.block_on(engine.sql_rows(sql, None)).unwrap();
        rows.into_iter()
            .map(|r| r.into_iter().map(|c| c.text()).collect())
            .collect()
    };
    let events = "SELECT seq, event FROM events ORDER BY seq";
    let matching =
        "SELECT seq FROM events WHERE kt_json_match(event, 'auditID', '=', 'b1') ORDER BY seq";
    let (all, hits) = (text(events), text(matching));
    assert!(
        all.iter()
            .all(|r| r[1].starts_with('{') && r[1].contains("\"auditID\":\""))
    );
    assert_eq!(hits.len(), 1, "{hits:?}");
    let now = columnar::schema();
    let kept = now.index_of("source").unwrap();
    let old = Arc::new(arrow::datatypes::Schema::new(now.fields()[..kept].to_vec()));
    for f in kubetrail_store::list_files(&root, Some("dev"), None, None).unwrap() {
        let batches: Vec<RecordBatch> =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f.path).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&f.path).unwrap(), old.clone(), None)
                .unwrap();
        for b in batches {
            let events: Vec<String> = (0..b.num_rows())
                .map(|i| columnar::stored_event(&b, i).unwrap().into_owned())
                .collect();
            let mut cols = b.columns()[..kept].to_vec();
            cols[now.index_of("event").unwrap()] =
                Arc::new(arrow::array::StringArray::from(events));
            w.write(&RecordBatch::try_new(old.clone(), cols).unwrap())
                .unwrap();
        }
        w.close().unwrap();
    }
    assert_eq!(text(events), all, "the same events from either format");
    assert_eq!(text(matching), hits);
    let rows = text(
        "SELECT cluster, source, count(*) FROM events GROUP BY cluster, source ORDER BY cluster",
    );
    assert_eq!(
        rows,
        [
            vec!["dev".to_string(), String::new(), "1".into()],
            vec!["prod".to_string(), "test".into(), "4".into()]
        ]
    );
}

#[test]
fn the_largest_accepted_queries_fit_half_the_query_stack() {
    use crate::limits::{MAX_SQL_TOKENS, MAX_WHERE_TERMS, QUERY_STACK_BYTES, check_sql};
    let dir = tempfile::tempdir().unwrap();
    let root = store(dir.path());
    // The deepest SQL of each iterative shape the token limit accepts: one level more is refused.
    let shapes: [fn(usize) -> String; 4] = [
        |k| format!("SELECT {}1 AS n FROM events", "1+".repeat(k)),
        |k| format!("SELECT 1{} AS n", "::int".repeat(k)),
        |k| format!("SELECT 1{} AS n", " IS NULL".repeat(k)),
        |k| {
            format!(
                "SELECT count(*) FROM (SELECT 1 AS x{})",
                " UNION ALL SELECT 1".repeat(k)
            )
        },
    ];
    let mut sqls = Vec::new();
    for shape in shapes {
        let k = (1..MAX_SQL_TOKENS)
            .take_while(|&k| check_sql(&shape(k)).is_ok())
            .last()
            .unwrap();
        // Two to four tokens a level: hundreds of levels deep.
        assert!(k > MAX_SQL_TOKENS / 5, "{}", shape(k));
        sqls.push(shape(k));
    }
    // The longest `where` runs: `and`s come back from DataFusion as a chain.
    let run = |term: &str, join: &str| {
        let terms: Vec<String> = (0..MAX_WHERE_TERMS).map(|i| format!("{term}{i}")).collect();
        kubetrail_query::parse(&terms.join(join)).unwrap().to_sql()
    };
    let wheres = [
        run("user != u", " and "),
        run("user = u", " or "),
        run("objectRef.name != n", " and "),
    ];
    std::thread::Builder::new()
        .stack_size(QUERY_STACK_BYTES / 2)
        .spawn(move || {
            let engine = Engine::open(&root, &Scope::default()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for sql in &sqls {
                let (_, rows) = rt.block_on(engine.sql_rows(sql, None)).unwrap();
                assert!(!rows.is_empty(), "{sql}");
            }
            for predicate in &wheres {
                rt.block_on(engine.rows(Some(predicate), RowQuery::default()))
                    .unwrap();
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn every_operator_yields_between_batches() {
    // A cross join makes 100 million rows from two sources of 10,000 without reading any more input: unless
    // its own batches yield, the task runs it all in one poll, and a time limit cannot act until it is done.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&dir.path().join("nothing"), &Scope::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        rt.spawn(async move {
            loop {
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let sql = "SELECT max(a.value + b.value) FROM generate_series(1, 10000) a, \
               generate_series(1, 10000) b";
    let (_, rows) = rt.block_on(engine.sql_rows(sql, None)).unwrap();
    assert_eq!(rows, [[Cell::Int(20_000)]]);
    ticker.abort();
    // About one yield per 128 batches of 8,192 rows: some 80 while the join ran (1 without the rule).
    let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(ticks > 20, "the query yielded {ticks} times");
}

#[test]
fn functions_cannot_make_more_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&store(dir.path()), &Scope::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let run = |sql: &str| rt.block_on(engine.sql_rows(sql, None));
    let refused = |sql: &str, what: &str| {
        let e = run(sql).expect_err(sql);
        assert!(e.is_resources_exhausted(), "{sql}: {e}");
        assert!(
            e.to_string().contains(what) && e.to_string().contains("at most 67108864"),
            "{sql}: {e}"
        );
    };
    refused("SELECT repeat('a', 1500000000)", "repeat() would make");
    // A constant is copied into every row of a batch: 60 MB made once would become 491 GB and abort the
    // process (an allocation failure is not an error in Rust).
    refused(
        "SELECT max(octet_length(s)) FROM (SELECT arrow_cast(repeat('a', 60000000), 'LargeUtf8') s \
         FROM generate_series(1, 8192))",
        "repeat() would make",
    );
    refused("SELECT length(lpad('a', 1000000000))", "lpad() would make");
    // `||` and `[..]` on lists are planned by DataFusion's own planner from its built-in functions: still
    // bounded (doubling a list ten times took 6 GB).
    let doubling = "WITH a AS (SELECT array_agg(value) AS x FROM generate_series(1, 1000000)), \
         b AS (SELECT x || x AS x FROM a), c AS (SELECT x || x AS x FROM b), d AS (SELECT x || x AS x FROM c), \
         e AS (SELECT x || x AS x FROM d), f AS (SELECT x || x AS x FROM e) SELECT cardinality(x) FROM f";
    refused(doubling, "array_concat() would make");
    refused(
        "WITH a AS (SELECT array_agg(value) AS x FROM generate_series(1, 1000000)) \
         SELECT cardinality([x, x, x, x, x, x, x, x, x, x]) FROM a",
        "make_array() would make",
    );
    refused(
        "SELECT length(rpad('a', 20000000, '😀'))",
        "rpad() would make",
    );
    refused(
        "SELECT length(repeat(\"user\", 100000000)) FROM events",
        "repeat() would make",
    );
    // The same value many times, however it is joined.
    // A value of a column (not a constant): made once per row.
    let x = "WITH t AS (SELECT repeat(c, 10000000) AS x FROM (VALUES ('a')) AS v(c))";
    refused(
        &format!("{x} SELECT length(concat(x, x, x, x, x, x, x)) FROM t"),
        "concat() would make",
    );
    refused(
        &format!("{x} SELECT length(x || x || x || x || x || x || x) FROM t"),
        "`||` would make",
    );
    refused(
        &format!("{x} SELECT length(replace(x, 'a', 'bbbbbbb')) FROM t"),
        "replace() would make",
    );
    refused(
        "SELECT regexp_replace(repeat(c, 100000), '', repeat(d, 1000)) FROM (VALUES ('a', 'b')) AS v(c, d)",
        "regexp_replace() would make",
    );
    // Under the limit they are what they were.
    let (_, rows) = run(&format!(
        "{x} SELECT length(concat(x, 'b')), length(x || x), length(replace(x, 'a', 'bb')), \
         concat('a', NULL, 'b'), 'a' || NULL, repeat('ab', 2) FROM t"
    ))
    .unwrap();
    assert_eq!(
        rows,
        [[
            Cell::Int(10_000_001),
            Cell::Int(20_000_000),
            Cell::Int(20_000_000),
            Cell::Text("ab".into()),
            Cell::Null,
            Cell::Text("abab".into()),
        ]]
    );
    // Long lists over many rows are estimated row by row: 8,192 rows of 50 groups of 30 bytes (12 MB) joined
    // are 13 MB, not 50 times the whole column.
    let groups = vec!["repeat('g', 30)"; 50].join(", ");
    let (_, rows) = run(&format!(
        "SELECT max(length(array_to_string(l, ','))) FROM \
         (SELECT make_array({groups}) AS l FROM generate_series(1, 8192))"
    ))
    .unwrap();
    assert_eq!(rows, [[Cell::Int(50 * 31 - 1)]]);
    refused(
        &format!(
            "SELECT max(length(array_to_string(l, repeat(',', 1000)))) FROM \
             (SELECT make_array({groups}) AS l FROM generate_series(1, 8192))"
        ),
        "array_to_string() would make",
    );
    // Many results under the limit do not make an answer over its own.
    let e = run("SELECT repeat(c, 30000000) FROM (VALUES ('a')) AS v(c) \
         UNION ALL SELECT repeat(c, 30000000) FROM (VALUES ('b')) AS v(c) \
         UNION ALL SELECT repeat(c, 30000000) FROM (VALUES ('c')) AS v(c)")
    .unwrap_err();
    assert!(e.is_resources_exhausted(), "{e}");
    assert!(
        e.to_string()
            .contains("the answer would exceed 67108864 bytes after 2 rows"),
        "{e}"
    );
    // List makers sized only by an argument are gone; the table functions stay.
    let e = run("SELECT array_repeat(1, 1000000000)").unwrap_err();
    assert!(e.is_invalid_query(), "{e}");
    let e = run("SELECT range(1, 10000000000)").unwrap_err();
    assert!(e.is_invalid_query(), "{e}");
    let (_, rows) = run("SELECT count(*) FROM generate_series(1, 10)").unwrap();
    assert_eq!(rows, [[Cell::Int(10)]]);
}

#[test]
fn a_pattern_that_does_not_compile_is_the_query_s_fault() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&store(dir.path()), &Scope::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for sql in [
        // Over the regex crate's size limit, compiled while the store is scanned.
        "SELECT count(*) FROM events WHERE uri ~ '(a{1000}){1000}'",
        "SELECT count(*) FROM events WHERE uri ~ 'x['",
    ] {
        let e = rt.block_on(engine.sql_rows(sql, None)).unwrap_err();
        assert!(e.is_invalid_query(), "{sql}: {e}");
    }
}

// ---- gaps and coverage ------------------------------------------------------------------------------------

/// 2026-03-01T10:00:00Z in microseconds.
const T0: i64 = 1_772_359_200_000_000;
const SEC: i64 = 1_000_000;

/// A store of one Metadata `ResponseComplete` event per `(cluster, source, received_us)`, each happening
/// (`requestReceivedTimestamp`) when it was received.
fn store_received(dir: &Path, events: &[(&str, &str, i64)]) -> PathBuf {
    let opts = WalOptions {
        fsync: false,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(&dir.join("wal"), opts).unwrap();
    let wal = Arc::new(wal);
    let mut payloads = Vec::new();
    for (i, (cluster, source, received_us)) in events.iter().enumerate() {
        let t = format_time_us(*received_us);
        let line = format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"id-{i}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/pods","verb":"list","user":{{"username":"system:kube-controller-manager"}},"sourceIPs":["10.0.0.1"],"objectRef":{{"resource":"pods","namespace":"ns","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
        );
        let rec = EventRecord {
            received_us: *received_us,
            cluster: (*cluster).into(),
            source: (*source).into(),
            audit_id: format!("id-{i}").into(),
            stage: "ResponseComplete".into(),
            variant: "".into(),
            event: line.as_str().into(),
        };
        let mut bytes = Vec::new();
        rec.encode(&mut bytes);
        payloads.push(bytes);
    }
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    wal.append(&refs).unwrap();
    let root = dir.join("store");
    ColumnarWriter::open(&root, wal, ColumnarOptions::default())
        .unwrap()
        .flush()
        .unwrap();
    root
}

const STEADY: &str = "webhook:apiserver";
const HOLED: &str = "file:/var/log/kubernetes/audit.log";

/// Two hours from [`T0`] of cluster `prod`: the webhook's event every 30 s (at .000123 s), and the log file's
/// 7 s after each, except from 10:40:37 to 10:69:37: its last event before the hole is at 10:40:07.000123 and
/// its first after it at 11:10:07.000123, thirty minutes later.
fn two_sources() -> Vec<(&'static str, &'static str, i64)> {
    let mut out = Vec::new();
    for k in 0..240 {
        out.push(("prod", STEADY, T0 + k * 30 * SEC + 123));
        if !(81..=139).contains(&k) {
            out.push(("prod", HOLED, T0 + (k * 30 + 7) * SEC + 123));
        }
    }
    out
}

fn gaps_request(since: Option<i64>, until: Option<i64>) -> reports::GapsRequest {
    let t = |us: i64| jiff::Timestamp::from_microsecond(us).unwrap();
    reports::GapsRequest {
        since: since.map(t),
        until: until.map(t),
        cluster: None,
        longer_than: reports::GapsRequest::DEFAULT_LONGER_THAN,
        now_us: T0 + 24 * 3600 * SEC,
    }
}

/// The report `req` asks for over the store at `root`, opened as the request says.
fn report(root: &Path, req: reports::ReportRequest) -> reports::Report {
    let scope = match &req {
        reports::ReportRequest::Gaps(r) | reports::ReportRequest::Coverage(r) => r.scope(),
        _ => Scope::default(),
    };
    let engine = Engine::open(root, &scope).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(reports::build(&engine, &req)).unwrap()
}

#[test]
fn gaps_a_thirty_minute_hole_is_one_gap_with_exact_ends() {
    let dir = tempfile::tempdir().unwrap();
    let root = store_received(dir.path(), &two_sources());
    // From an hour before the first event (a source that had not started is not silent) to the hour after it:
    // the webhook's last event is 30 s before the end, the file's 23 s.
    let req = gaps_request(Some(T0 - 3600 * SEC), Some(T0 + 2 * 3600 * SEC));
    let r = report(&root, reports::ReportRequest::Gaps(req.clone()));
    assert_eq!(
        r.title,
        "gaps longer than 5m in the audit trail: every cluster, events received from \
         2026-03-01T09:00:00.000000Z to 2026-03-01T12:00:00.000000Z"
    );
    assert_eq!(r.sections.len(), 1);
    assert_eq!(
        r.sections[0].rows,
        [[
            "prod",
            HOLED,
            "2026-03-01T10:40:07.000123Z",
            "2026-03-01T11:10:07.000123Z",
            "30m",
            "no"
        ]]
    );
    assert_eq!(
        r.sections[0].json_keys(),
        ["cluster", "source", "from", "to", "length", "ongoing"]
    );
    // A threshold over the hole: no gap. Under a second: refused.
    let longer = reports::GapsRequest {
        longer_than: jiff::SignedDuration::from_mins(31),
        ..req.clone()
    };
    let r = report(&root, reports::ReportRequest::Gaps(longer));
    assert!(r.sections[0].rows.is_empty(), "{:?}", r.sections[0].rows);
    let tiny = reports::GapsRequest {
        longer_than: jiff::SignedDuration::from_millis(500),
        ..req
    };
    let engine = Engine::open(&root, &tiny.scope()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt.block_on(reports::gaps(&engine, &tiny)).unwrap_err();
    assert!(matches!(e, reports::ReportError::Invalid(_)), "{e}");
}

#[test]
fn gaps_none_for_a_steady_stream() {
    let dir = tempfile::tempdir().unwrap();
    let steady: Vec<_> = two_sources()
        .into_iter()
        .filter(|(_, s, _)| *s == STEADY)
        .collect();
    let root = store_received(dir.path(), &steady);
    for (since, until) in [
        (Some(T0 - 3600 * SEC), Some(T0 + 2 * 3600 * SEC)),
        (Some(T0), Some(T0 + 7200 * SEC)),
        (None, Some(T0 + 7200 * SEC)),
    ] {
        let r = report(
            &root,
            reports::ReportRequest::Gaps(gaps_request(since, until)),
        );
        assert!(r.sections[0].rows.is_empty(), "{:?}", r.sections[0].rows);
    }
    // Every 30 s is a gap of a 20 s threshold, exactly: the buckets are smaller than the threshold.
    let fine = reports::GapsRequest {
        longer_than: jiff::SignedDuration::from_secs(20),
        ..gaps_request(Some(T0), Some(T0 + 7200 * SEC))
    };
    let r = report(&root, reports::ReportRequest::Gaps(fine));
    assert_eq!(r.sections[0].rows.len(), 239 + 1);
    assert_eq!(
        r.sections[0].rows[0][2..],
        [
            "2026-03-01T10:00:00.000123Z",
            "2026-03-01T10:00:30.000123Z",
            "30s",
            "no"
        ]
    );
}

#[test]
fn gaps_ongoing_at_the_end_and_silent_since_before_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut events = two_sources();
    // A third source stopped an hour before the range: silent all through it.
    for k in 0..10 {
        events.push(("dev", "webhook:old-apiserver", T0 - 3600 * SEC + k * SEC));
    }
    let root = store_received(dir.path(), &events);
    let req = gaps_request(Some(T0), Some(T0 + 2 * 3600 * SEC + 10 * 60 * SEC));
    let r = report(&root, reports::ReportRequest::Gaps(req.clone()));
    let rows: Vec<Vec<&str>> = r.sections[0]
        .rows
        .iter()
        .map(|r| r.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec![
                "dev",
                "webhook:old-apiserver",
                "2026-03-01T09:00:09.000000Z",
                "2026-03-01T12:10:00.000000Z",
                "3h 9m 51s",
                "yes"
            ],
            vec![
                "prod",
                HOLED,
                "2026-03-01T10:40:07.000123Z",
                "2026-03-01T11:10:07.000123Z",
                "30m",
                "no"
            ],
            vec![
                "prod",
                HOLED,
                "2026-03-01T11:59:37.000123Z",
                "2026-03-01T12:10:00.000000Z",
                "10m 22s",
                "yes"
            ],
            vec![
                "prod",
                STEADY,
                "2026-03-01T11:59:30.000123Z",
                "2026-03-01T12:10:00.000000Z",
                "10m 29s",
                "yes"
            ],
        ]
    );
    // One cluster.
    let prod = reports::GapsRequest {
        cluster: Some("prod".into()),
        ..req
    };
    let r = report(&root, reports::ReportRequest::Gaps(prod));
    assert_eq!(r.sections[0].rows.len(), 3);
    assert!(r.sections[0].rows.iter().all(|r| r[0] == "prod"));
}

#[test]
fn gaps_and_coverage_of_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let root = store_received(dir.path(), &two_sources());
    let req = gaps_request(Some(T0), Some(T0 + 2 * 3600 * SEC));
    let r = report(&root, reports::ReportRequest::Coverage(req));
    assert_eq!(
        r.title,
        "coverage of the audit trail: every cluster, events received from 2026-03-01T10:00:00.000000Z to \
         2026-03-01T12:00:00.000000Z; 2 hour(s), gaps longer than 5m; produced 2026-03-02T10:00:00.000000Z"
    );
    let keys: Vec<&str> = r.sections.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, ["sources", "gaps", "levels", "stages"]);
    assert_eq!(
        r.sections[0].rows,
        [
            vec![
                "prod",
                HOLED,
                "2026-03-01T10:00:07.000123Z",
                "2026-03-01T11:59:37.000123Z",
                "181",
                "2",
                "2",
                "100.0%",
                "1",
                "30m",
                "90.5",
                "100 at 2026-03-01T11:00:00.000000Z",
                "100 at 2026-03-01T11:00:00.000000Z"
            ],
            vec![
                "prod",
                STEADY,
                "2026-03-01T10:00:00.000123Z",
                "2026-03-01T11:59:30.000123Z",
                "240",
                "2",
                "2",
                "100.0%",
                "0",
                "0s",
                "120.0",
                "120 at 2026-03-01T11:00:00.000000Z",
                "120 at 2026-03-01T10:00:00.000000Z"
            ],
        ]
    );
    assert_eq!(
        r.sections[1].rows,
        [[
            "prod",
            HOLED,
            "2026-03-01T10:40:07.000123Z",
            "2026-03-01T11:10:07.000123Z",
            "30m",
            "no"
        ]]
    );
    assert_eq!(
        r.sections[2].rows,
        [
            ["prod", "Metadata", "421", "100.0%"],
            ["prod", "Request", "0", "0.0%"],
            ["prod", "RequestResponse", "0", "0.0%"],
        ]
    );
    assert_eq!(
        r.sections[3].rows,
        [["prod", "ResponseComplete", "421", "100.0%"]]
    );
    // A range with a silent hour: the share and the lowest full hour say so.
    let wide = gaps_request(Some(T0), Some(T0 + 3 * 3600 * SEC));
    let r = report(&root, reports::ReportRequest::Coverage(wide));
    let steady = &r.sections[0].rows[1];
    assert_eq!(steady[5..8], ["3", "2", "66.7%"]);
    assert_eq!(steady[11], "0 at 2026-03-01T12:00:00.000000Z");
    // The ongoing gap counts within the range, to its end.
    assert_eq!(steady[8..10], ["1", "1h 29s"]);
}

/// An import is a load that ended: no ongoing silence after its last event (a sender's would be one).
#[test]
fn gaps_an_import_is_not_silent_after_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<_> = (0..10)
        .flat_map(|k| {
            [
                ("prod", "import", T0 + k * SEC),
                ("prod", STEADY, T0 + k * SEC),
            ]
        })
        .collect();
    let root = store_received(dir.path(), &events);
    let r = report(
        &root,
        reports::ReportRequest::Gaps(gaps_request(Some(T0), Some(T0 + 3600 * SEC))),
    );
    let sources: Vec<&str> = r.sections[0].rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(sources, [STEADY], "{:?}", r.sections[0].rows);
}

/// A range that ends in the future ends now: nobody is silent in the future.
#[test]
fn gaps_a_range_ending_in_the_future_ends_now() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<_> = (0..60)
        .map(|k| ("prod", STEADY, T0 + k * 10 * SEC))
        .collect();
    let root = store_received(dir.path(), &events);
    let req = reports::GapsRequest {
        now_us: T0 + 600 * SEC,
        ..gaps_request(Some(T0), Some(T0 + 24 * 3600 * SEC))
    };
    let r = report(&root, reports::ReportRequest::Gaps(req));
    assert!(r.sections[0].rows.is_empty(), "{:?}", r.sections[0].rows);
}

/// One write of `deployments/api` (or `name`) as stored: `body` is the event's bodies (`"requestObject":{..}`)
/// or empty.
#[allow(clippy::too_many_arguments)] // an event's fields, as the tests list them
fn write_event(
    id: &str,
    verb: &str,
    user: &str,
    level: &str,
    ns: &str,
    name: &str,
    code: u32,
    t: &str,
    body: &str,
) -> String {
    let body = if body.is_empty() {
        String::new()
    } else {
        format!(",{body}")
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{level}","auditID":"{id}","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/{ns}/deployments/{name}?fieldManager=kubectl-patch","verb":"{verb}","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["203.0.113.9"],"userAgent":"kubectl/v1.31","objectRef":{{"resource":"deployments","namespace":"{ns}","name":"{name}","apiGroup":"apps","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"{body}}}"#
    )
}

fn deployment(containers: &str) -> String {
    format!(
        r#"{{"kind":"Deployment","apiVersion":"apps/v1","metadata":{{"name":"api","namespace":"prod"}},"spec":{{"replicas":3,"template":{{"spec":{{"containers":[{containers}]}}}}}}}}"#
    )
}

const API: &str = r#"{"name":"api","image":"corp/api:2","env":[{"name":"DB_PASSWORD","value":"kubetrail-redacted:len=12:hmac=AAAAAAAAAAAAAAAAAAAAAA"}]}"#;

fn history_of(root: &Path, object: &str, ns: Option<&str>) -> history::History {
    let engine = Engine::open(root, &Scope::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let req = history::HistoryRequest::parse(object, ns.map(String::from), 100).unwrap();
    rt.block_on(history::history(&engine, &req)).unwrap()
}

#[test]
fn history_shows_each_write_with_its_author_and_the_fields_it_changed() {
    let dir = tempfile::tempdir().unwrap();
    let created = deployment(API);
    let swapped = API.replace("corp/api:2", "evil/api:2");
    let sidecar = deployment(&format!(
        r#"{swapped},{{"name":"shipper","image":"alpine:3.19","securityContext":{{"privileged":true}}}}"#
    ));
    let lines: Vec<(&str, String)> = vec![
        (
            "c1",
            write_event(
                "w1",
                "create",
                "ci",
                "Request",
                "prod",
                "api",
                201,
                "2026-03-01T09:00:00.000001Z",
                &format!(r#""requestObject":{created}"#),
            ),
        ),
        // The same name in another namespace is another object.
        (
            "c1",
            write_event(
                "x1",
                "patch",
                "eve",
                "Request",
                "staging",
                "api",
                200,
                "2026-03-01T09:30:00.000001Z",
                r#""requestObject":{"spec":{"replicas":9}}"#,
            ),
        ),
        (
            "c1",
            write_event(
                "w2",
                "patch",
                "mallory@corp.example",
                "Request",
                "prod",
                "api",
                200,
                "2026-03-01T10:00:00.000001Z",
                r#""requestObject":{"spec":{"template":{"spec":{"containers":[{"name":"api","image":"evil/api:2"}]}}}}"#,
            ),
        ),
        (
            "c1",
            write_event(
                "w3",
                "patch",
                "mallory@corp.example",
                "Request",
                "prod",
                "api",
                403,
                "2026-03-01T10:01:00.000001Z",
                r#""requestObject":{"spec":{"replicas":0}}"#,
            ),
        ),
        (
            "c1",
            write_event(
                "w4",
                "update",
                "mallory@corp.example",
                "Request",
                "prod",
                "api",
                200,
                "2026-03-01T10:02:00.000001Z",
                &format!(r#""requestObject":{sidecar}"#),
            ),
        ),
        (
            "c1",
            write_event(
                "w5",
                "patch",
                "bob",
                "Metadata",
                "prod",
                "api",
                200,
                "2026-03-01T10:03:00.000001Z",
                "",
            ),
        ),
        // The controller reporting progress: counted, not shown unless asked.
        (
            "c1",
            write_event(
                "st",
                "update",
                "system:kube-controller-manager",
                "Request",
                "prod",
                "api",
                200,
                "2026-03-01T10:03:30.000001Z",
                r#""requestObject":{"status":{"replicas":3}}"#,
            )
            .replace(
                r#""apiVersion":"v1"}"#,
                r#""apiVersion":"v1","subresource":"status"}"#,
            ),
        ),
        (
            "c1",
            write_event(
                "w6",
                "delete",
                "bob",
                "Metadata",
                "prod",
                "api",
                200,
                "2026-03-01T10:04:00.000001Z",
                "",
            ),
        ),
    ];
    let root = store_lines(dir.path(), &lines);
    let h = history_of(&root, "deploy/api", Some("prod"));
    assert_eq!(h.object, "deployments/api -n prod");
    let ids: Vec<&str> = h.entries.iter().map(|e| e.audit_id.as_str()).collect();
    assert_eq!(
        ids,
        ["w1", "w2", "w3", "w4", "w5", "w6"],
        "in order, this namespace's only"
    );
    assert!(
        h.notes
            .iter()
            .any(|n| n.starts_with("1 write(s) of its status")),
        "{:?}",
        h.notes
    );
    let text =
        |i: usize| -> Vec<String> { h.entries[i].changes.iter().map(|c| c.to_string()).collect() };

    // The create: the fields it set.
    assert!(
        text(0).contains(&"spec.replicas: (absent) -> 3".to_string()),
        "{:?}",
        text(0)
    );
    // The patch, against the state the create recorded: before and after.
    let swap = &h.entries[1];
    assert_eq!(swap.user, "mallory@corp.example");
    assert_eq!(swap.source_ips, ["203.0.113.9"]);
    assert_eq!(
        swap.patch,
        Some(kubetrail_history::PatchType::StrategicMerge)
    );
    assert!(swap.before_known);
    assert_eq!(
        text(1),
        ["spec.template.spec.containers[0].image: corp/api:2 -> evil/api:2"],
        "one field changed; the redacted env value is the same marker, so unchanged"
    );
    // Refused: nothing changed.
    assert!(h.entries[2].changes.is_empty());
    assert!(
        h.entries[2].notes.iter().any(|n| n.contains("403")),
        "{:?}",
        h.entries[2].notes
    );
    // The update, diffed against the patched state: only the sidecar is new.
    let added = text(3);
    assert!(
        added.contains(
            &"spec.template.spec.containers[1].securityContext.privileged: (absent) -> true"
                .to_string()
        ),
        "{added:?}"
    );
    assert!(
        added.iter().all(|c| c.contains("containers[1]")),
        "nothing else changed: {added:?}"
    );
    // Metadata: said so, no guess.
    assert!(h.entries[4].changes.is_empty());
    assert!(
        h.entries[4]
            .notes
            .iter()
            .any(|n| n.contains("logged at Metadata")),
        "{:?}",
        h.entries[4].notes
    );
    assert_eq!(h.entries[5].action, kubetrail_history::Action::Deleted);
    // Never a marker in the answer.
    let json = serde_json::to_string(&h).unwrap();
    assert!(!json.contains("kubetrail-redacted"), "{json}");

    // Without the namespace, each namespace's object is replayed on its own.
    let all = history_of(&root, "deployments/api", None);
    assert_eq!(all.entries.len(), 7);
    // With the status writes.
    let engine = Engine::open(&root, &Scope::default()).unwrap();
    let mut req =
        history::HistoryRequest::parse("deployments/api", Some("prod".into()), 100).unwrap();
    req.with_status = true;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let with = rt.block_on(history::history(&engine, &req)).unwrap();
    let st = with
        .entries
        .iter()
        .find(|e| e.audit_id == "st")
        .unwrap_or_else(|| panic!("no status write in {:?}", with.entries));
    assert_eq!(st.subresource.as_deref(), Some("status"));
    assert!(
        with.notes.iter().all(|n| !n.contains("status")),
        "{:?}",
        with.notes
    );
    let staging = all.entries.iter().find(|e| e.audit_id == "x1").unwrap();
    assert!(
        !staging.before_known,
        "no earlier state of the staging object"
    );
    // Nothing stored: said so.
    let none = history_of(&root, "deployments/other", Some("prod"));
    assert!(none.entries.is_empty());
    assert!(none.notes[0].contains("no write"), "{:?}", none.notes);
    assert!(
        history::HistoryRequest::parse("deployments", None, 10).is_err(),
        "RESOURCE/NAME is required"
    );
}

#[test]
fn sessions_have_their_command_terminal_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let exec = |id: &str, user: &str, uri_query: &str, stage: &str, start: &str, end: &str| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"{stage}","requestURI":"/api/v1/namespaces/prod/pods/db-0/exec?{uri_query}","verb":"create","user":{{"username":"{user}","groups":["system:authenticated"]}},"sourceIPs":["198.51.100.7"],"userAgent":"kubectl/v1.31","objectRef":{{"resource":"pods","namespace":"prod","name":"db-0","subresource":"exec","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":101}},"requestReceivedTimestamp":"{start}","stageTimestamp":"{end}"}}"#
        )
    };
    let q = "command=mysql&command=-uroot&command=-pkubetrail-redacted%3Alen%3D7%3Ahmac%3DAAAAAAAAAAAAAAAAAAAAAA&container=db&stdin=true&stdout=true&tty=true";
    let lines: Vec<(&str, String)> = vec![
        (
            "c1",
            exec(
                "s1",
                "mallory",
                q,
                "ResponseStarted",
                "2026-03-01T10:00:00.000001Z",
                "2026-03-01T10:00:00.200000Z",
            ),
        ),
        (
            "c1",
            exec(
                "s1",
                "mallory",
                q,
                "ResponseComplete",
                "2026-03-01T10:00:00.000001Z",
                "2026-03-01T10:04:12.500000Z",
            ),
        ),
        (
            "c1",
            exec(
                "s2",
                "bob",
                "command=ls&container=db&stdout=true",
                "ResponseStarted",
                "2026-03-01T11:00:00.000001Z",
                "2026-03-01T11:00:00.100000Z",
            ),
        ),
        (
            "c1",
            write_event(
                "w1",
                "patch",
                "mallory",
                "Metadata",
                "prod",
                "api",
                200,
                "2026-03-01T10:05:00.000001Z",
                "",
            ),
        ),
        // Straight on the kubelet: no pods/exec request at all.
        (
            "c1",
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"p1","stage":"ResponseComplete","requestURI":"/api/v1/nodes/n1/proxy/exec/prod/db-0/db?command=sh&input=1&output=1&tty=1","verb":"create","user":{"username":"system:node:n1"},"objectRef":{"resource":"nodes","name":"n1","subresource":"proxy","apiVersion":"v1"},"responseStatus":{"code":101},"requestReceivedTimestamp":"2026-03-01T12:00:00.000001Z","stageTimestamp":"2026-03-01T12:01:00.000001Z"}"#.to_string(),
        ),
        // The same, its path encoded as the apiserver decodes it; and a scrape of metrics, no session.
        (
            "c1",
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"p2","stage":"ResponseComplete","requestURI":"/api/v1/nodes/n1/proxy/exec%2Fprod%2Fdb-0%2Fdb?command=id","verb":"create","user":{"username":"system:node:n1"},"objectRef":{"resource":"nodes","name":"n1","subresource":"proxy","apiVersion":"v1"},"responseStatus":{"code":101},"requestReceivedTimestamp":"2026-03-01T12:10:00.000001Z","stageTimestamp":"2026-03-01T12:11:00.000001Z"}"#.to_string(),
        ),
        (
            "c1",
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"m1","stage":"ResponseComplete","requestURI":"/api/v1/nodes/n1/proxy/metrics","verb":"get","user":{"username":"system:serviceaccount:monitoring:prometheus"},"objectRef":{"resource":"nodes","name":"n1","subresource":"proxy","apiVersion":"v1"},"responseStatus":{"code":200},"requestReceivedTimestamp":"2026-03-01T12:20:00.000001Z","stageTimestamp":"2026-03-01T12:20:00.000001Z"}"#.to_string(),
        ),
    ];
    let root = store_lines(dir.path(), &lines);
    let all = report(
        &root,
        reports::ReportRequest::Sessions(history::SessionsRequest {
            limit: 100,
            ..Default::default()
        }),
    );
    let s = &all.sections[0];
    let col = |row: &Vec<String>, name: &str| {
        row[s.columns.iter().position(|c| *c == name).unwrap()].clone()
    };
    assert_eq!(
        s.rows.len(),
        4,
        "one row per session; the patch and the metrics scrape are none"
    );
    assert_eq!(
        col(&s.rows[3], "COMMAND"),
        "id",
        "the encoded path read as the apiserver reads it"
    );
    let proxied = &s.rows[2];
    assert_eq!(col(proxied, "POD"), "prod/db-0");
    assert_eq!(col(proxied, "CONTAINER"), "db");
    assert_eq!(col(proxied, "COMMAND"), "sh");
    assert_eq!(col(proxied, "STDIN"), "yes");
    assert!(col(proxied, "NOTE").contains("nodes/proxy"), "{proxied:?}");
    let in_ns = |ns: &str| {
        report(
            &root,
            reports::ReportRequest::Sessions(history::SessionsRequest {
                namespace: Some(ns.into()),
                limit: 100,
                ..Default::default()
            }),
        )
        .sections[0]
            .rows
            .len()
    };
    assert_eq!(
        in_ns("prod"),
        4,
        "the proxied session is in the namespace of its pod"
    );
    assert_eq!(in_ns("other"), 0);
    // Paths the SQL keeps that are no session, earlier than every session, do not use up the limit.
    let mut flooded = lines.clone();
    for i in 0..5 {
        flooded.push((
            "c1",
            format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"f{i}","stage":"ResponseComplete","requestURI":"/api/v1/nodes/n1/proxy/exec-not-really/{i}","verb":"get","user":{{"username":"mallory"}},"objectRef":{{"resource":"nodes","name":"n1","subresource":"proxy","apiVersion":"v1"}},"responseStatus":{{"code":404}},"requestReceivedTimestamp":"2026-03-01T09:0{i}:00.000001Z","stageTimestamp":"2026-03-01T09:0{i}:00.000001Z"}}"#
            ),
        ));
    }
    let dir2 = tempfile::tempdir().unwrap();
    let root2 = store_lines(dir2.path(), &flooded);
    let first = report(
        &root2,
        reports::ReportRequest::Sessions(history::SessionsRequest {
            limit: 1,
            ..Default::default()
        }),
    );
    assert_eq!(first.sections[0].rows.len(), 1);
    assert_eq!(
        col(&first.sections[0].rows[0], "USER"),
        "mallory",
        "the first session, not nothing"
    );
    assert_eq!(col(&first.sections[0].rows[0], "POD"), "prod/db-0");
    let m = &s.rows[0];
    assert_eq!(col(m, "USER"), "mallory");
    assert_eq!(col(m, "POD"), "prod/db-0");
    assert_eq!(col(m, "CONTAINER"), "db");
    assert_eq!(col(m, "COMMAND"), "mysql -uroot '-p[redacted]'");
    assert_eq!(
        (col(m, "STDIN"), col(m, "TTY")),
        ("yes".into(), "yes".into())
    );
    assert_eq!(col(m, "DURATION"), "4m 12s");
    assert_eq!(col(m, "END"), "2026-03-01T10:04:12.500000Z");
    let b = &s.rows[1];
    assert_eq!(col(b, "END"), "", "no ResponseComplete: no end");
    assert!(col(b, "NOTE").contains("no end recorded"), "{b:?}");
    let mine = report(
        &root,
        reports::ReportRequest::Sessions(history::SessionsRequest {
            user: Some("bob".into()),
            limit: 100,
            ..Default::default()
        }),
    );
    assert_eq!(mine.sections[0].rows.len(), 1);
    assert!(!format!("{all:?}").contains("kubetrail-redacted"));
}

#[test]
fn history_reads_a_change_hidden_beside_a_body_nested_too_deep_for_serde() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let lines: Vec<(&str, String)> = vec![
        (
            "c1",
            write_event(
                "w1",
                "create",
                "ci",
                "Request",
                "prod",
                "api",
                201,
                "2026-03-01T09:00:00.000001Z",
                &format!(r#""requestObject":{}"#, deployment(API)),
            ),
        ),
        (
            "c1",
            write_event(
                "w2",
                "patch",
                "mallory",
                "Request",
                "prod",
                "api",
                200,
                "2026-03-01T10:00:00.000001Z",
                &format!(
                    r#""requestObject":{{"x":{deep},"spec":{{"template":{{"spec":{{"containers":[{{"name":"api","image":"evil/api:2"}}]}}}}}}}}"#
                ),
            ),
        ),
    ];
    let root = store_lines(dir.path(), &lines);
    let h = history_of(&root, "deployments/api", Some("prod"));
    let swap = &h.entries[1];
    let lines: Vec<String> = swap.changes.iter().map(|c| c.to_string()).collect();
    assert!(
        lines.contains(
            &"spec.template.spec.containers[0].image: corp/api:2 -> evil/api:2".to_string()
        ),
        "{lines:?} {:?}",
        swap.notes
    );
}

#[test]
fn history_keeps_a_custom_resource_apart_from_the_built_in_kind_of_its_plural() {
    // A tenant who may write Knative's `services` writes one named like the core Service.
    let dir = tempfile::tempdir().unwrap();
    let svc = |id: &str, group: &str, user: &str, t: &str| {
        let g = if group.is_empty() {
            String::new()
        } else {
            format!(r#","apiGroup":"{group}""#)
        };
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"{id}","stage":"ResponseComplete","requestURI":"/x","verb":"patch","user":{{"username":"{user}"}},"objectRef":{{"resource":"services","namespace":"prod","name":"api"{g}}},"responseStatus":{{"code":200}},"requestObject":{{"spec":{{"x":"{id}"}}}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
        )
    };
    let lines: Vec<(&str, String)> = vec![
        (
            "c1",
            svc("core-1", "", "admin", "2026-03-01T10:00:00.000001Z"),
        ),
        (
            "c1",
            svc(
                "kn-1",
                "serving.knative.dev",
                "tenant",
                "2026-03-01T10:01:00.000001Z",
            ),
        ),
    ];
    let root = store_lines(dir.path(), &lines);
    let ids = |h: &history::History| -> Vec<String> {
        h.entries.iter().map(|e| e.audit_id.clone()).collect()
    };
    let core = history_of(&root, "svc/api", Some("prod"));
    assert_eq!(ids(&core), ["core-1"], "the core Service only");
    let knative = history_of(&root, "services.serving.knative.dev/api", Some("prod"));
    assert_eq!(ids(&knative), ["kn-1"]);
    assert_eq!(knative.object, "services.serving.knative.dev/api -n prod");
    // A plural no built-in kind has, without its group: every group's, said so.
    let dir2 = tempfile::tempdir().unwrap();
    let crd = |id: &str, group: &str| {
        svc(id, group, "x", "2026-03-01T10:00:00.000001Z")
            .replace(r#""resource":"services""#, r#""resource":"certificates""#)
    };
    let root2 = store_lines(
        dir2.path(),
        &[
            ("c1", crd("a", "cert-manager.io")),
            ("c1", crd("b", "example.com")),
        ],
    );
    let both = history_of(&root2, "certificates/api", Some("prod"));
    assert_eq!(both.entries.len(), 2);
    assert!(
        both.notes.iter().any(|n| n.contains("2 API groups")),
        "{:?}",
        both.notes
    );
}

/// A `get pods` by `user` (a JSON `user` object, with `impersonated` as `"impersonatedUser":{..}` or empty)
/// from `ips`.
fn identity_event(id: &str, user: &str, impersonated: &str, ips: &str, t: &str) -> String {
    let imp = if impersonated.is_empty() {
        String::new()
    } else {
        format!(",\"impersonatedUser\":{impersonated}")
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods","verb":"list","user":{user}{imp},"sourceIPs":[{ips}],"userAgent":"kubectl/v1.31","objectRef":{{"resource":"pods","namespace":"prod","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"}}"#
    )
}

const DANA: &str = r#"{"username":"arn:aws:sts::111122223333:assumed-role/eks-admins/dana@example.com","uid":"aws-iam-authenticator:111122223333:AROAEXAMPLE","groups":["eks-admins","system:authenticated"],"extra":{"accessKeyId":["ASIAEXAMPLEDANA00001"],"arn":["arn:aws:sts::111122223333:assumed-role/eks-admins/dana@example.com"],"canonicalArn":["arn:aws:iam::111122223333:role/eks-admins"],"sessionName":["dana@example.com"],"principalId":["AROAEXAMPLE:dana@example.com"]}}"#;
const ERIN: &str = r#"{"username":"arn:aws:sts::111122223333:assumed-role/eks-admins/erin@example.com","groups":["eks-admins","system:authenticated"],"extra":{"accessKeyId":["ASIAEXAMPLEERIN00001"],"arn":["arn:aws:sts::111122223333:assumed-role/eks-admins/erin@example.com"],"canonicalArn":["arn:aws:iam::111122223333:role/eks-admins"],"sessionName":["erin@example.com"]}}"#;
const WEB_TOKEN: &str = r#"{"username":"system:serviceaccount:staging:web","uid":"sa-uid","groups":["system:serviceaccounts","system:serviceaccounts:staging","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=7f3e-stolen"],"authentication.kubernetes.io/node-name":["node-a"],"authentication.kubernetes.io/pod-name":["web-5d8f-x2x4q"],"authentication.kubernetes.io/pod-uid":["pod-uid-1"]}}"#;
const WEB_OTHER_TOKEN: &str = r#"{"username":"system:serviceaccount:staging:web","groups":["system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["JTI=0a0a-other"],"authentication.kubernetes.io/node-name":["node-b"],"authentication.kubernetes.io/pod-name":["web-5d8f-77777"]}}"#;

fn identities_store(dir: &Path) -> PathBuf {
    let kubelet = r#"{"username":"system:node:node-b","groups":["system:nodes"]}"#;
    let alice = r#"{"username":"alice@example.com","groups":["dev"]}"#;
    let bob = r#"{"username":"bob@example.com","groups":["ops"]}"#;
    let lines: Vec<(&str, String)> = vec![
        (
            "c1",
            identity_event("k1", kubelet, "", r#""10.0.0.11""#, "2026-03-01T09:00:00Z"),
        ),
        (
            "c1",
            identity_event("d1", DANA, "", r#""192.0.2.10""#, "2026-03-01T10:00:00Z"),
        ),
        (
            "c1",
            identity_event("d2", DANA, "", r#""192.0.2.10""#, "2026-03-01T10:05:00Z"),
        ),
        (
            "c1",
            identity_event("e1", ERIN, "", r#""192.0.2.11""#, "2026-03-01T10:07:00Z"),
        ),
        (
            "c1",
            identity_event(
                "w1",
                WEB_TOKEN,
                "",
                r#""10.244.1.7""#,
                "2026-03-01T11:00:00Z",
            ),
        ),
        (
            "c1",
            identity_event(
                "w2",
                WEB_TOKEN,
                "",
                r#""203.0.113.66""#,
                "2026-03-01T12:00:00Z",
            ),
        ),
        (
            "c1",
            identity_event(
                "w3",
                WEB_TOKEN,
                "",
                r#""10.0.0.11""#,
                "2026-03-01T12:01:00Z",
            ),
        ),
        (
            "c1",
            identity_event(
                "o1",
                WEB_OTHER_TOKEN,
                "",
                r#""10.244.2.9""#,
                "2026-03-01T12:30:00Z",
            ),
        ),
        (
            "c1",
            identity_event("i1", alice, bob, r#""10.0.0.7""#, "2026-03-01T13:00:00Z"),
        ),
    ];
    store_lines(dir, &lines)
}

fn section<'r>(r: &'r reports::Report, key: &str) -> &'r reports::Section {
    r.sections
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no section {key} in {r:?}"))
}

fn whois_of(root: &Path, identity: &str) -> reports::Report {
    report(
        root,
        reports::ReportRequest::Whois(whois::WhoisRequest {
            identity: identity.into(),
        }),
    )
}

#[test]
fn whois_resolves_an_eks_session_to_its_role_and_the_human_named_by_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let root = identities_store(dir.path());
    // By the human's name: the session named after her, not another session of the role.
    let r = whois_of(&root, "dana@example.com");
    let ids = section(&r, "identities");
    assert_eq!(ids.rows.len(), 1, "{:?}", ids.rows);
    let row = &ids.rows[0];
    assert_eq!(
        row[0],
        "arn:aws:sts::111122223333:assumed-role/eks-admins/dana@example.com"
    );
    assert_eq!(row[1], "AWS IAM principal (EKS)");
    assert_eq!(
        row[2],
        "AWS role eks-admins (account 111122223333), session dana@example.com"
    );
    assert_eq!(row[3], "AWS session name");
    assert_eq!(row[8], "2", "two requests");
    let cloud = section(&r, "cloud_principals");
    assert_eq!(
        cloud.rows[0][1],
        "arn:aws:iam::111122223333:role/eks-admins"
    );
    assert_eq!(cloud.rows[0][3], "dana@example.com");
    assert_eq!(cloud.rows[0][4], "ASIAEXAMPLEDANA00001");
    assert!(cloud.note.as_deref().unwrap().contains("sts:AssumeRole"));
    // The role is shared: erin's session of it.
    let shared = section(&r, "shared_credentials");
    assert_eq!(shared.rows.len(), 1, "{:?}", shared.rows);
    assert_eq!(
        shared.rows[0][0],
        "AWS role arn:aws:iam::111122223333:role/eks-admins"
    );
    assert!(shared.rows[0][1].ends_with("/erin@example.com"));
    // By the role's ARN: both sessions; by the access key: dana's only.
    let r = whois_of(&root, "arn:aws:iam::111122223333:role/eks-admins");
    assert_eq!(section(&r, "identities").rows.len(), 2);
    let r = whois_of(&root, "ASIAEXAMPLEDANA00001");
    let ids = section(&r, "identities");
    assert_eq!(ids.rows.len(), 1);
    assert_eq!(ids.rows[0][3], "AWS access key");
}

#[test]
fn whois_resolves_a_stolen_token_to_its_pod_node_and_the_addresses_it_was_used_from() {
    let dir = tempfile::tempdir().unwrap();
    let root = identities_store(dir.path());
    let r = whois_of(&root, "JTI=7f3e-stolen");
    let ids = section(&r, "identities");
    assert_eq!(ids.rows.len(), 1);
    assert_eq!(ids.rows[0][0], "system:serviceaccount:staging:web");
    assert_eq!(ids.rows[0][1], "service account web in staging");
    assert_eq!(ids.rows[0][3], "credential id");
    let creds = section(&r, "credentials");
    assert_eq!(
        creds.rows.len(),
        1,
        "the other token of the account is not this one"
    );
    let c = &creds.rows[0];
    assert_eq!(c[1], "service-account token");
    assert_eq!(
        c[3],
        "pod staging/web-5d8f-x2x4q on node node-a (pod uid pod-uid-1)"
    );
    assert_eq!(c[4], "2026-03-01T11:00:00.000000Z");
    assert_eq!(c[5], "2026-03-01T12:01:00.000000Z");
    assert_eq!(c[6], "3");
    assert!(
        c[8].contains("public address (203.0.113.66)") && c[8].contains("kt-sa-token-external"),
        "{}",
        c[8]
    );
    assert!(
        c[8].contains("node(s) node-b it was not bound to"),
        "{}",
        c[8]
    );
    let addrs = section(&r, "source_addresses");
    let what: std::collections::BTreeMap<&str, &str> = addrs
        .rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(what["203.0.113.66"], "public: outside the cluster network");
    assert_eq!(what["10.0.0.11"], "node node-b");
    assert_eq!(what["10.244.1.7"], "private");
    // By the account's name: both tokens, each with its pod.
    let r = whois_of(&root, "system:serviceaccount:staging:web");
    assert_eq!(section(&r, "credentials").rows.len(), 2);
    // Following the one token: its requests only.
    let t = report(
        &root,
        reports::ReportRequest::Timeline(reports::TimelineRequest {
            user: String::new(),
            credential: Some("JTI=7f3e-stolen".into()),
        }),
    );
    assert_eq!(t.title, "timeline of credential JTI=7f3e-stolen");
    let rows = &t.sections[0].rows;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][5], "3",
        "three requests of the token, not the fourth of the other"
    );
}

#[test]
fn whois_shows_impersonation_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let root = identities_store(dir.path());
    let r = whois_of(&root, "bob@example.com");
    let imp = section(&r, "impersonation");
    assert_eq!(imp.rows.len(), 1);
    assert_eq!(imp.rows[0][..2], ["impersonated by", "alice@example.com"]);
    assert_eq!(
        section(&r, "identities").rows[0][3],
        "impersonated username"
    );
    let r = whois_of(&root, "alice@example.com");
    assert_eq!(
        section(&r, "impersonation").rows[0][..2],
        ["impersonated", "bob@example.com"]
    );
    // Nothing: said so.
    let r = whois_of(&root, "nobody");
    assert!(section(&r, "identities").rows.is_empty());
    assert!(
        section(&r, "identities")
            .note
            .as_deref()
            .unwrap()
            .contains("widen")
    );
}

/// An RBAC write as stored: `body` is the event's bodies (`"requestObject":{..}`) or empty.
fn rbac_write(id: &str, verb: &str, level: &str, name: &str, t: &str, body: &str) -> String {
    let body = if body.is_empty() {
        String::new()
    } else {
        format!(",{body}")
    };
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"{level}","auditID":"{id}","stage":"ResponseComplete","requestURI":"/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings/{name}","verb":"{verb}","user":{{"username":"dana@example.com","groups":["admins"]}},"sourceIPs":["192.0.2.10"],"userAgent":"kubectl/v1.31","objectRef":{{"resource":"rolebindings","namespace":"prod","name":"{name}","apiGroup":"rbac.authorization.k8s.io","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{t}","stageTimestamp":"{t}"{body}}}"#
    )
}

const RBAC_BASE: &str = r#"{"kind":"List","apiVersion":"v1","items":[
 {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"secret-reader"},"rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get","list"]}]},
 {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"cluster-admin"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},"subjects":[{"kind":"Group","name":"system:masters","apiGroup":"rbac.authorization.k8s.io"}]},
 {"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"cluster-admin"},"rules":[{"apiGroups":["*"],"resources":["*"],"verbs":["*"]},{"nonResourceURLs":["*"],"verbs":["*"]}]}
]}"#;

fn rbac_binding(subjects: &str) -> String {
    format!(
        r#""requestObject":{{"kind":"RoleBinding","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{{"name":"contractor","namespace":"prod"}},"roleRef":{{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"secret-reader"}},"subjects":[{subjects}]}}"#
    )
}

#[test]
fn rbac_at_any_moment_replays_grants_revocations_and_uncertainty() {
    let dir = tempfile::tempdir().unwrap();
    let eve =
        r#"{"kind":"User","name":"eve@contractor.example","apiGroup":"rbac.authorization.k8s.io"}"#;
    let lines: Vec<(&str, String)> = vec![
        (
            "c1",
            rbac_write(
                "g1",
                "create",
                "RequestResponse",
                "contractor",
                "2026-03-01T10:00:00Z",
                &rbac_binding(eve),
            ),
        ),
        (
            "c1",
            rbac_write(
                "d1",
                "delete",
                "Metadata",
                "contractor",
                "2026-03-01T12:00:00Z",
                "",
            ),
        ),
        (
            "c1",
            rbac_write(
                "m1",
                "create",
                "Metadata",
                "mystery",
                "2026-03-01T13:00:00Z",
                "",
            ),
        ),
        (
            "c1",
            identity_event(
                "u1",
                r#"{"username":"eve@contractor.example","groups":["contractors"]}"#,
                "",
                r#""198.51.100.4""#,
                "2026-03-01T11:00:00Z",
            ),
        ),
    ];
    let root = store_lines(dir.path(), &lines);
    let base = rbac::Base {
        cluster: None,
        taken_us: T0 - 3600 * SEC,
        snapshot: kubetrail_rbac::parse_snapshot(RBAC_BASE.as_bytes()).unwrap(),
    };
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_microsecond();
    let run = |at_us: i64| {
        let engine = Engine::open(&root, &base.scope(at_us)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let access = kubetrail_rbac::parse_access("get", "secrets", Some("prod")).unwrap();
        rt.block_on(rbac::who_can(&engine, &base, &access, at_us))
            .unwrap()
    };
    let subjects = |w: &rbac::WhoCanAnswer| {
        w.allowed
            .iter()
            .map(|a| a.subject.clone())
            .collect::<Vec<_>>()
    };
    // Before the grant: the masters only (the bypass, and cluster-admin's binding to the same group).
    let before = run(at("2026-03-01T09:59:59Z"));
    assert_eq!(subjects(&before), ["system:masters", "system:masters"]);
    // Between grant and revocation: eve, through the binding, as the apiserver words it.
    let during = run(at("2026-03-01T11:00:00Z"));
    assert_eq!(
        subjects(&during),
        ["system:masters", "system:masters", "eve@contractor.example"]
    );
    let eve_row = &during.allowed[2];
    assert_eq!(
        eve_row.why,
        r#"RBAC: allowed by RoleBinding "contractor/prod" of ClusterRole "secret-reader" to User "eve@contractor.example""#
    );
    assert!(!eve_row.uncertain);
    assert_eq!(during.writes, 1);
    // After the delete (a delete needs no body): gone; the Metadata create of another binding makes the
    // answer uncertain from then on, and it says so.
    let after = run(at("2026-03-01T12:30:00Z"));
    assert_eq!(subjects(&after), ["system:masters", "system:masters"]);
    assert!(after.uncertain.is_empty());
    let later = run(at("2026-03-01T14:00:00Z"));
    assert_eq!(later.uncertain.len(), 1, "{:?}", later.notes);
    assert!(
        later
            .notes
            .iter()
            .any(|n| n.contains("uncertain") && n.contains("mystery")),
        "{:?}",
        later.notes
    );

    // The diff of the day: the grant and the revocation, by whom and from where.
    let until = at("2026-03-01T23:00:00Z");
    let engine = Engine::open(&root, &base.scope(until)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let d = rt
        .block_on(rbac::diff(
            &engine,
            &base,
            at("2026-03-01T00:00:00Z"),
            until,
        ))
        .unwrap();
    assert!(
        d.notes[0].contains("before the RBAC snapshot"),
        "{:?}",
        d.notes
    );
    assert_eq!(d.since, base.taken(), "from the snapshot on");
    let grants: Vec<(bool, String, &str)> = d
        .changes
        .iter()
        .flat_map(|c| {
            c.grants
                .iter()
                .map(move |g| (g.added, g.subject.username(), c.by.as_str()))
        })
        .collect();
    assert_eq!(
        grants,
        [
            (
                true,
                "eve@contractor.example".to_string(),
                "dana@example.com"
            ),
            (
                false,
                "eve@contractor.example".to_string(),
                "dana@example.com"
            ),
        ]
    );
    assert_eq!(d.changes[0].source_ips, ["192.0.2.10"]);
    assert!(
        d.changes.iter().any(|c| c.uncertain),
        "the Metadata create is listed as uncertain"
    );

    // Eve's grants and their changes; what she used against it.
    let eve_ref = kubetrail_rbac::UserRef {
        name: "eve@contractor.example".into(),
        groups: rt
            .block_on(rbac::groups_of(&engine, "eve@contractor.example", until))
            .unwrap(),
    };
    assert_eq!(eve_ref.groups, ["contractors"]);
    let g = rt
        .block_on(rbac::grants(
            &engine,
            &base,
            &eve_ref,
            None,
            at("2026-03-01T11:00:00Z"),
        ))
        .unwrap();
    assert_eq!(g.changes.len(), 2, "{:?}", g.changes);
    assert!(g.grants.is_empty(), "revoked by the end of the replay");
    let u = rt
        .block_on(rbac::used(
            &engine,
            "eve@contractor.example",
            at("2026-03-01T00:00:00Z"),
        ))
        .unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].verb.as_str(), u[0].resource.as_str(), u[0].count),
        ("list", "pods", 1)
    );
}

/// A request body nested deeper than the JSON parser goes does not hide who made it: the credential is found.
#[test]
fn whois_finds_a_credential_beside_a_body_nested_too_deep_for_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    let plain = identity_event(
        "w1",
        WEB_TOKEN,
        "",
        r#""10.244.1.7""#,
        "2026-03-01T11:00:00Z",
    );
    let nested = identity_event(
        "w2",
        WEB_TOKEN,
        "",
        r#""203.0.113.66""#,
        "2026-03-01T12:00:00Z",
    )
    .replacen(
        "\"verb\":\"list\"",
        &format!("\"verb\":\"list\",\"requestObject\":{deep}"),
        1,
    );
    assert!(
        serde_json::from_str::<serde_json::Value>(&nested).is_err(),
        "deeper than serde_json goes"
    );
    let root = store_lines(dir.path(), &[("c1", plain), ("c1", nested)]);
    let r = whois_of(&root, "JTI=7f3e-stolen");
    assert_eq!(
        section(&r, "credentials").rows[0][6],
        "2",
        "{:?}",
        section(&r, "credentials").rows
    );
    let t = report(
        &root,
        reports::ReportRequest::Timeline(reports::TimelineRequest {
            user: String::new(),
            credential: Some("JTI=7f3e-stolen".into()),
        }),
    );
    assert_eq!(t.sections[0].rows[0][5], "2");
}

/// Writes apply in the order they finished: a grant sent slowly and received first, then a revocation received
/// later that finished first, leaves the grant (the apiserver committed it last).
#[test]
fn rbac_replay_applies_writes_in_the_order_they_finished() {
    let dir = tempfile::tempdir().unwrap();
    let eve =
        r#"{"kind":"User","name":"eve@contractor.example","apiGroup":"rbac.authorization.k8s.io"}"#;
    let slow_grant = rbac_write(
        "x",
        "update",
        "Request",
        "contractor",
        "2026-03-01T10:00:00Z",
        &rbac_binding(eve),
    )
    .replace(
        r#""stageTimestamp":"2026-03-01T10:00:00Z""#,
        r#""stageTimestamp":"2026-03-01T10:00:30Z""#,
    );
    let fast_revoke = rbac_write(
        "y",
        "update",
        "Request",
        "contractor",
        "2026-03-01T10:00:05Z",
        &rbac_binding(""),
    );
    assert!(slow_grant.contains("10:00:30Z"));
    let root = store_lines(dir.path(), &[("c1", slow_grant), ("c1", fast_revoke)]);
    let base = rbac::Base {
        cluster: None,
        taken_us: T0 - 3600 * SEC,
        snapshot: kubetrail_rbac::parse_snapshot(RBAC_BASE.as_bytes()).unwrap(),
    };
    let at = "2026-03-01T10:05:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_microsecond();
    let engine = Engine::open(&root, &base.scope(at)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let access = kubetrail_rbac::parse_access("get", "secrets", Some("prod")).unwrap();
    let w = rt
        .block_on(rbac::who_can(&engine, &base, &access, at))
        .unwrap();
    let eve = w
        .allowed
        .iter()
        .find(|a| a.subject == "eve@contractor.example");
    assert!(eve.is_some(), "{:?}", w.allowed);
    // The two were in flight at once: which the apiserver applied last is not recorded, and the answer says so.
    assert!(eve.unwrap().uncertain);
    assert!(
        w.uncertain
            .iter()
            .any(|u| u.why.contains("in flight at once")),
        "{:?}",
        w.uncertain
    );
}

/// A refused request is counted apart from allowed ones of the same shape: the proposal never takes it.
#[test]
fn rbac_usage_keeps_refused_requests_apart() {
    let dir = tempfile::tempdir().unwrap();
    let eve = r#"{"username":"eve@contractor.example","groups":["contractors"]}"#;
    let ok = identity_event("u1", eve, "", r#""198.51.100.4""#, "2026-03-01T11:00:00Z");
    let refused = identity_event("u2", eve, "", r#""198.51.100.4""#, "2026-03-01T12:00:00Z")
        .replace(r#""code":200"#, r#""code":403"#);
    let received = refused
        .replace(r#""auditID":"u2""#, r#""auditID":"u3""#)
        .replace("ResponseComplete", "RequestReceived");
    let root = store_lines(dir.path(), &[("c1", ok), ("c1", refused), ("c1", received)]);
    let engine = Engine::open(&root, &Scope::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut u = rt
        .block_on(rbac::used(
            &engine,
            "eve@contractor.example",
            T0 - 86_400 * SEC,
        ))
        .unwrap();
    u.sort_by_key(|x| x.allowed);
    let got: Vec<(bool, u64)> = u.iter().map(|x| (x.allowed, x.count)).collect();
    assert_eq!(got, [(false, 1), (true, 1)]);
}

/// A stage time far past what a write can take (a clock jump, a forged event) does not reorder the writes
/// after it: a write is taken to end within the apiserver's longest request time.
#[test]
fn rbac_replay_bounds_how_long_a_write_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let eve =
        r#"{"kind":"User","name":"eve@contractor.example","apiGroup":"rbac.authorization.k8s.io"}"#;
    let grant = rbac_write(
        "x",
        "update",
        "Request",
        "contractor",
        "2026-03-01T10:00:00Z",
        &rbac_binding(eve),
    )
    .replace(
        r#""stageTimestamp":"2026-03-01T10:00:00Z""#,
        r#""stageTimestamp":"2099-01-01T00:00:00Z""#,
    );
    let revoke = rbac_write(
        "y",
        "update",
        "Request",
        "contractor",
        "2026-03-01T11:00:00Z",
        &rbac_binding(""),
    );
    assert!(grant.contains("2099"));
    let root = store_lines(dir.path(), &[("c1", grant), ("c1", revoke)]);
    let base = rbac::Base {
        cluster: None,
        taken_us: T0 - 3600 * SEC,
        snapshot: kubetrail_rbac::parse_snapshot(RBAC_BASE.as_bytes()).unwrap(),
    };
    let at = "2026-03-01T12:00:00Z"
        .parse::<jiff::Timestamp>()
        .unwrap()
        .as_microsecond();
    let engine = Engine::open(&root, &base.scope(at)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let access = kubetrail_rbac::parse_access("get", "secrets", Some("prod")).unwrap();
    let w = rt
        .block_on(rbac::who_can(&engine, &base, &access, at))
        .unwrap();
    assert!(
        !w.allowed
            .iter()
            .any(|a| a.subject == "eve@contractor.example"),
        "{:?}",
        w.allowed
    );
}
