//! Counts over many events: requests or events per bucket of time (the console's histogram and volume), the
//! first and last time, and per cluster (`kubetrail clusters`). Over the local store they are SQL on
//! `events`. Over ClickHouse, when the question's filter compiles exactly
//! ([`crate::clickhouse::compile_exact`]), ClickHouse computes them whole, so a fleet's year is never pulled
//! here to be counted; otherwise they run here on the rows its filters select, like any question. The events
//! received per source and bucket of the collector's clock (`kubetrail gaps`, `coverage`) are counted the
//! same way.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{col, lit};
use futures::StreamExt;
use serde_json::Value;

use crate::clickhouse::{ClickHouseTable, compile_exact};
use crate::{Cell, Engine, EngineError};

/// One cluster's events in the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSummary {
    pub cluster: String,
    /// Events (stages) stored.
    pub events: u64,
    /// The first and last event `time`, in microseconds since the epoch.
    pub first_us: i64,
    pub last_us: i64,
    /// Events whose `time` is in the hour before the `now` asked about.
    pub last_hour: u64,
}

impl Engine {
    /// The ClickHouse table and the exact conditions of the scope and of `predicate` (SQL over `events`), when
    /// ClickHouse can answer alone.
    async fn pushed(
        &self,
        predicate: Option<&str>,
    ) -> Result<Option<(Arc<ClickHouseTable>, Vec<String>)>, EngineError> {
        self.pushed_with(predicate, &[]).await
    }

    /// [`Engine::pushed`] with more conditions, as expressions over `events`.
    async fn pushed_with(
        &self,
        predicate: Option<&str>,
        extra: &[Expr],
    ) -> Result<Option<(Arc<ClickHouseTable>, Vec<String>)>, EngineError> {
        let Some(table) = &self.clickhouse else {
            return Ok(None);
        };
        let ts = |t: jiff::Timestamp| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(t.as_microsecond()),
                Some("UTC".into()),
            ))
        };
        let mut exprs = Vec::new();
        if let Some(since) = self.scope.since {
            exprs.push(col("time").gt_eq(ts(since)));
        }
        if let Some(until) = self.scope.until {
            exprs.push(col("time").lt_eq(ts(until)));
        }
        if let Some(cluster) = &self.scope.cluster {
            exprs.push(col("cluster").eq(lit(cluster.as_str())));
        }
        let parsed = match predicate {
            Some(p) => {
                let schema = self.ctx.table("events").await?.schema().clone();
                Some(self.ctx.parse_sql_expr(p, &schema)?)
            }
            None => None,
        };
        let mut conditions = Vec::new();
        for e in exprs
            .iter()
            .chain(extra)
            .chain(parsed.iter().flat_map(|p| split_conjunction(p)))
        {
            match compile_exact(e) {
                Some(c) => conditions.push(c),
                None => return Ok(None),
            }
        }
        Ok(Some((table.clone(), conditions)))
    }

    /// Requests (distinct auditIDs; with `requests` false, events) matching `predicate` (SQL over `events`;
    /// all if `None`) per bucket of `size_us` microseconds of `time`: `(time / size_us, count)` in bucket
    /// order, empty buckets left out.
    pub async fn counts(
        &self,
        predicate: Option<&str>,
        size_us: i64,
        requests: bool,
    ) -> Result<Vec<(i64, i64)>, EngineError> {
        let size_us = size_us.max(1);
        if let Some((table, conditions)) = self.pushed(predicate).await? {
            // Distinct ids: copies of one event that the table has not merged yet count once.
            let n = if requests {
                "uniqExact(audit_id)"
            } else {
                "uniqExact(id)"
            };
            let rows = table
                .aggregate(
                    &format!("intDiv(time_us, {size_us}) AS b, {n} AS n"),
                    &conditions,
                    "GROUP BY b ORDER BY b",
                )
                .await?;
            return Ok(rows
                .iter()
                .filter_map(|r| Some((number(&r["b"])?, number(&r["n"])?)))
                .collect());
        }
        let n = if requests {
            "count(DISTINCT \"audit_id\")"
        } else {
            "count(*)"
        };
        let sql = format!(
            "SELECT CAST(\"time\" AS BIGINT) / {size_us} AS b, {n} AS n FROM events{} GROUP BY b ORDER BY b",
            filter(predicate)
        );
        let (_, rows) = self.sql_rows(&sql, None).await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((Cell::as_i64(&r[0])?, Cell::as_i64(&r[1])?)))
            .collect())
    }

    /// The first and last `time` (microseconds) of the events matching `predicate`; `None` when there are none.
    pub async fn time_bounds(
        &self,
        predicate: Option<&str>,
    ) -> Result<Option<(i64, i64)>, EngineError> {
        if let Some((table, conditions)) = self.pushed(predicate).await? {
            let rows = table
                .aggregate(
                    "count() AS n, min(time_us) AS lo, max(time_us) AS hi",
                    &conditions,
                    "",
                )
                .await?;
            return Ok(rows
                .first()
                .filter(|r| number(&r["n"]).is_some_and(|n| n > 0))
                .and_then(|r| Some((number(&r["lo"])?, number(&r["hi"])?))));
        }
        let sql = format!(
            "SELECT CAST(min(\"time\") AS BIGINT), CAST(max(\"time\") AS BIGINT) FROM events{}",
            filter(predicate)
        );
        let (_, rows) = self.sql_rows(&sql, Some(1)).await?;
        Ok(rows
            .first()
            .and_then(|r| Some((Cell::as_i64(&r[0])?, Cell::as_i64(&r[1])?))))
    }

    /// The names of the clusters in the scope, sorted: from the store's partition directories (no file is
    /// opened), or ClickHouse's `cluster` column alone. Cheap enough for every page of the console, unlike
    /// [`Engine::clusters`], which counts.
    pub async fn cluster_names(&self) -> Result<Vec<String>, EngineError> {
        if let Some((table, conditions)) = self.pushed(None).await? {
            let rows = table
                .aggregate("DISTINCT cluster", &conditions, "ORDER BY cluster")
                .await?;
            return Ok(rows
                .iter()
                .filter_map(|r| Some(r.get("cluster")?.as_str()?.to_string()))
                .collect());
        }
        let names: std::collections::BTreeSet<&str> =
            self.files.iter().map(|f| f.cluster.as_str()).collect();
        Ok(names.into_iter().map(str::to_string).collect())
    }

    /// Each cluster's events in the scope, by name, with those of the hour before `now_us`.
    pub async fn clusters(&self, now_us: i64) -> Result<Vec<ClusterSummary>, EngineError> {
        let hour_ago = now_us.saturating_sub(3_600_000_000);
        if let Some((table, conditions)) = self.pushed(None).await? {
            let rows = table
                .aggregate(
                    &format!(
                        "cluster, uniqExact(id) AS events, min(time_us) AS lo, max(time_us) AS hi, \
                         uniqExactIf(id, time_us >= {}) AS recent",
                        hour_ago.max(0)
                    ),
                    &conditions,
                    "GROUP BY cluster ORDER BY cluster",
                )
                .await?;
            return Ok(rows
                .iter()
                .filter_map(|r| {
                    Some(ClusterSummary {
                        cluster: r["cluster"].as_str()?.to_string(),
                        events: u64::try_from(number(&r["events"])?).ok()?,
                        first_us: number(&r["lo"])?,
                        last_us: number(&r["hi"])?,
                        last_hour: u64::try_from(number(&r["recent"])?).ok()?,
                    })
                })
                .collect());
        }
        let sql = format!(
            "SELECT \"cluster\", count(*), CAST(min(\"time\") AS BIGINT), CAST(max(\"time\") AS BIGINT), \
             sum(CASE WHEN CAST(\"time\" AS BIGINT) >= {hour_ago} THEN 1 ELSE 0 END) \
             FROM events GROUP BY \"cluster\" ORDER BY \"cluster\""
        );
        let (_, rows) = self.sql_rows(&sql, None).await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let Cell::Text(cluster) = &r[0] else {
                    return None;
                };
                Some(ClusterSummary {
                    cluster: cluster.clone(),
                    events: u64::try_from(Cell::as_i64(&r[1])?).ok()?,
                    first_us: Cell::as_i64(&r[2])?,
                    last_us: Cell::as_i64(&r[3])?,
                    last_hour: u64::try_from(Cell::as_i64(&r[4])?).ok()?,
                })
            })
            .collect())
    }
}

/// The events of one cluster and source received in one bucket of time ([`Engine::received_buckets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedBucket {
    pub cluster: String,
    /// How the events arrived (`webhook:<identity>`, `file:<path>`, `import`); `""` where the store has none
    /// (ClickHouse, files of format 1).
    pub source: String,
    /// `received` (microseconds) divided by the bucket size.
    pub bucket: i64,
    /// Events (stages) stored.
    pub events: u64,
    /// The first and last `received`, in microseconds since the epoch.
    pub first_us: i64,
    pub last_us: i64,
}

/// Which events of the scope are counted by the time they were received: those of `cluster` (all when
/// `None`) received between `since_us` and `until_us` (microseconds, inclusive; open when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received<'a> {
    pub cluster: Option<&'a str>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
}

impl Received<'_> {
    /// The conditions over `events`, as plan literals (never SQL text: a cluster's name is anyone's).
    fn exprs(&self) -> Vec<Expr> {
        let ts = |us: i64| {
            lit(ScalarValue::TimestampMicrosecond(
                Some(us),
                Some("UTC".into()),
            ))
        };
        let mut out = Vec::new();
        if let Some(c) = self.cluster {
            out.push(col("cluster").eq(lit(c)));
        }
        if let Some(us) = self.since_us {
            out.push(col("received").gt_eq(ts(us)));
        }
        if let Some(us) = self.until_us {
            out.push(col("received").lt_eq(ts(us)));
        }
        out
    }
}

/// A column [`Engine::received_tally`] counts events by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    Level,
    Stage,
}

impl Tally {
    fn column(self) -> &'static str {
        match self {
            Tally::Level => "level",
            Tally::Stage => "stage",
        }
    }
}

impl Engine {
    /// The events `range` selects per cluster, source and bucket of `size_us` microseconds of `received` (the
    /// collector's clock), handed to `f` in (cluster, source, bucket) order, empty buckets left out. One row
    /// per bucket, never per event: a month of minutes is 43,200 rows a source, whatever the events.
    pub async fn received_buckets(
        &self,
        range: Received<'_>,
        size_us: i64,
        mut f: impl FnMut(ReceivedBucket),
    ) -> Result<(), EngineError> {
        let size_us = size_us.max(1);
        let conditions = range.exprs();
        if let Some((table, conditions)) = self.pushed_with(None, &conditions).await? {
            // Distinct ids: copies of one event that the table has not merged yet count once.
            let rows = table
                .aggregate(
                    &format!(
                        "cluster, intDiv(received_us, {size_us}) AS b, uniqExact(id) AS n, \
                         min(received_us) AS lo, max(received_us) AS hi"
                    ),
                    &conditions,
                    "GROUP BY cluster, b ORDER BY cluster, b",
                )
                .await?;
            for r in &rows {
                let (Some(cluster), Some(bucket), Some(n), Some(lo), Some(hi)) = (
                    r.get("cluster").and_then(Value::as_str),
                    number(&r["b"]),
                    number(&r["n"]),
                    number(&r["lo"]),
                    number(&r["hi"]),
                ) else {
                    continue;
                };
                f(ReceivedBucket {
                    cluster: cluster.to_string(),
                    source: String::new(),
                    bucket,
                    events: u64::try_from(n).unwrap_or(0),
                    first_us: lo,
                    last_us: hi,
                });
            }
            return Ok(());
        }
        let received = cast(col("received"), DataType::Int64);
        let mut df = self.ctx.table("events").await?;
        for c in conditions {
            df = df.filter(c)?;
        }
        use datafusion::functions_aggregate::expr_fn::{count, max, min};
        let df = df
            .aggregate(
                vec![
                    col("cluster"),
                    col("source"),
                    (received.clone() / lit(size_us)).alias("bucket"),
                ],
                vec![
                    count(lit(1)).alias("n"),
                    min(received.clone()).alias("lo"),
                    max(received).alias("hi"),
                ],
            )?
            .sort(vec![
                col("cluster").sort(true, true),
                col("source").sort(true, true),
                col("bucket").sort(true, true),
            ])?;
        let mut stream = df.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            for r in crate::cells(&batch?)? {
                let (Some(bucket), Some(n), Some(lo), Some(hi)) =
                    (r[2].as_i64(), r[3].as_i64(), r[4].as_i64(), r[5].as_i64())
                else {
                    continue;
                };
                f(ReceivedBucket {
                    cluster: r[0].text(),
                    source: r[1].text(),
                    bucket,
                    events: u64::try_from(n).unwrap_or(0),
                    first_us: lo,
                    last_us: hi,
                });
            }
        }
        Ok(())
    }

    /// The events `range` selects per cluster and value of `by` (a level, a stage): `(cluster, value,
    /// events)` in that order.
    pub async fn received_tally(
        &self,
        range: Received<'_>,
        by: Tally,
    ) -> Result<Vec<(String, String, u64)>, EngineError> {
        let column = by.column();
        let conditions = range.exprs();
        if let Some((table, conditions)) = self.pushed_with(None, &conditions).await? {
            let rows = table
                .aggregate(
                    &format!("cluster, {column} AS v, uniqExact(id) AS n"),
                    &conditions,
                    "GROUP BY cluster, v ORDER BY cluster, v",
                )
                .await?;
            return Ok(rows
                .iter()
                .filter_map(|r| {
                    Some((
                        r.get("cluster")?.as_str()?.to_string(),
                        r.get("v")?.as_str()?.to_string(),
                        u64::try_from(number(&r["n"])?).ok()?,
                    ))
                })
                .collect());
        }
        let mut df = self.ctx.table("events").await?;
        for c in conditions {
            df = df.filter(c)?;
        }
        use datafusion::functions_aggregate::expr_fn::count;
        let df = df
            .aggregate(
                vec![col("cluster"), col(column)],
                vec![count(lit(1)).alias("n")],
            )?
            .sort(vec![
                col("cluster").sort(true, true),
                col(column).sort(true, true),
            ])?;
        let mut out = Vec::new();
        for batch in df.collect().await? {
            for r in crate::cells(&batch)? {
                if let Some(n) = r[2].as_i64() {
                    out.push((r[0].text(), r[1].text(), u64::try_from(n).unwrap_or(0)));
                }
            }
        }
        Ok(out)
    }
}

fn filter(predicate: Option<&str>) -> String {
    predicate.map_or(String::new(), |p| format!(" WHERE ({p})"))
}

fn number(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_u64().and_then(|n| i64::try_from(n).ok()))
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
