//! The schema of every file (see the module docs of `columnar`) and the properties the Parquet writer writes it
//! with: compression, encodings, statistics, bloom filters, sort order, page and row group sizes.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Written into every file's key-value metadata, so a later format can tell the files apart.
const FORMAT_KEY: &str = "kubetrail.columnar.version";
/// 2 added `source`; 3 added `event_rest` and `event_elided` and leaves `event` null (`elide`). Files of an
/// older format lack the later columns, which read as null there.
const FORMAT_VERSION: &str = "3";

/// Columns with bloom filters: the values a selective forensic query looks up.
pub const BLOOM_FILTER_COLUMNS: [&str; 5] = ["user", "name", "audit_id", "namespace", "ip"];

/// The `user` column's index in [`schema`].
pub(super) const USER_COLUMN: usize = 9;
/// Rows per data page at most (checked every 1,024 rows written).
const PAGE_ROWS: usize = 2048;

/// The schema of every file (see the module docs).
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let list = || DataType::List(list_item());
            let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
            Arc::new(Schema::new(vec![
                Field::new("time", ts(), false),
                Field::new("stage_time", ts(), true),
                Field::new("received", ts(), false),
                Field::new("seq", DataType::UInt64, false),
                s("cluster", false),
                s("audit_id", false),
                s("stage", false),
                s("level", false),
                s("verb", false),
                s("user", false),
                Field::new("groups", list(), false),
                s("impersonated_user", true),
                Field::new("impersonated_groups", list(), false),
                Field::new("source_ips", list(), false),
                s("ip", true),
                s("user_agent", true),
                s("uri", false),
                s("resource", true),
                s("subresource", true),
                s("namespace", true),
                s("name", true),
                s("api_group", true),
                s("api_version", true),
                Field::new("code", DataType::Int32, true),
                s("decision", true),
                s("reason", true),
                Field::new("latency_us", DataType::Int64, true),
                s("event", true),
                s("source", true),
                s("event_rest", true),
                Field::new("event_elided", DataType::UInt8, true),
            ]))
        })
        .clone()
}

/// Columns a file of format 1 or 2 lacks: format 1 ends before `source`, format 2 before `event_rest`.
const ADDED: [usize; 2] = [3, 2];

/// Whether `fields` are this schema's, or those of format 1 or 2 (the first columns of it), whose batches
/// [`upgrade`] brings to this schema.
pub(super) fn readable(fields: &arrow::datatypes::Fields) -> bool {
    let now = schema();
    let n = now.fields().len();
    let same = |a: &FieldRef, b: &FieldRef| a.name() == b.name() && a.data_type() == b.data_type();
    (fields.len() == n || ADDED.iter().any(|added| fields.len() == n - added))
        && fields
            .iter()
            .zip(now.fields().iter())
            .all(|(a, b)| same(a, b))
}

/// A batch of this schema as it is; one of format 1 or 2 with the columns it lacks added and its events
/// stored as format 3 stores them (`event_rest` and `event_elided`, `event` null): merged into a new file,
/// an old file's events take the new format's room.
pub(super) fn upgrade(
    batch: arrow::array::RecordBatch,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray, StringBuilder, UInt8Builder};
    use arrow::datatypes::TimestampMicrosecondType;
    let now = schema();
    let rows = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    if columns.len() == now.fields().len() {
        return Ok(batch);
    }
    if columns.len() == now.fields().len() - ADDED[0] {
        columns.push(arrow::array::new_null_array(&DataType::Utf8, rows));
    }
    let col = |name: &str| &batch.columns()[now.index_of(name).expect("a column of the schema")];
    let event = col("event").as_string::<i32>();
    let audit_id = col("audit_id").as_string::<i32>();
    let uri = col("uri").as_string::<i32>();
    let time = col("time").as_primitive::<TimestampMicrosecondType>();
    let stage_time = col("stage_time").as_primitive::<TimestampMicrosecondType>();
    let mut rest = StringBuilder::with_capacity(rows, event.value_data().len());
    let mut elided = UInt8Builder::with_capacity(rows);
    for i in 0..rows {
        if event.is_null(i) {
            rest.append_null();
            elided.append_value(0);
            continue;
        }
        let flat = super::elide::Flat {
            audit_id: audit_id.value(i),
            time: time.value(i),
            stage_time: stage_time.is_valid(i).then(|| stage_time.value(i)),
            uri: uri.value(i),
        };
        let (r, bits) = super::elide::elide(event.value(i), &flat);
        rest.append_value(r);
        elided.append_value(bits.0);
    }
    columns[now.index_of("event").expect("a column of the schema")] =
        arrow::array::new_null_array(&DataType::Utf8, rows);
    columns.push(Arc::new(rest.finish()));
    columns.push(Arc::new(elided.finish()));
    arrow::array::RecordBatch::try_new(now, columns)
}

pub(super) fn list_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Utf8, false))
}

/// zstd level of `event_rest` in hour files. They are written as events arrive (100,000 a second must convert
/// on one core) and merged into a day file once the day is closed, so they are written fast: level 3 stores
/// the rest of an event in ~13 bytes where level 9 needs ~9, at a third of the time (200,000 generated events,
/// `docs/benchmarks.md`).
pub(super) const HOUR_EVENT_LEVEL: i32 = 3;

/// zstd level of `event_rest` in day files, written once per closed day and kept for the retention period:
/// level 9 stores it in 30% fewer bytes than level 3 (on the whole event before format 3, 16% fewer than
/// level 5).
pub(super) const DAY_EVENT_LEVEL: i32 = 9;

/// The properties files are written with; `event_level` is the zstd level of `event_rest`.
pub(super) fn writer_props(row_group_rows: usize, event_level: i32) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(zstd_level(3))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(row_group_rows.max(1)))
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: USER_COLUMN as i32,
                descending: false,
                nulls_first: false,
            },
            SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            },
        ]))
        // Pages of at most ~2,000 rows: with rows sorted by user, page statistics then skip all but an
        // identity's own pages (the timeline of one identity among many reads a few pages per file).
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            FORMAT_KEY.to_string(),
            FORMAT_VERSION.to_string(),
        )]))
        .set_column_dictionary_enabled(ColumnPath::from("event_rest"), false)
        .set_column_dictionary_enabled(ColumnPath::from("audit_id"), false)
        .set_column_statistics_enabled(ColumnPath::from("event"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("event_rest"), EnabledStatistics::None);
    // The rest of the event is most of a file's bytes: in 8 MiB pages zstd finds the repeats across events.
    // Queries filter on the other columns and read it only for the rows they keep.
    b = b
        .set_column_compression(ColumnPath::from("event_rest"), zstd_level(event_level))
        .set_column_data_page_size_limit(ColumnPath::from("event_rest"), 8 << 20);
    // Sorted or nearly sorted integers: deltas take a byte or two where plain values take four or five.
    for col in ["time", "stage_time", "received", "seq"] {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    for col in BLOOM_FILTER_COLUMNS {
        b = b
            .set_column_bloom_filter_enabled(ColumnPath::from(col), true)
            .set_column_bloom_filter_fpp(ColumnPath::from(col), 0.01)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(col), row_group_rows.max(1) as u64);
    }
    b.build()
}

fn zstd_level(level: i32) -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(level).expect("a valid zstd level"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sort_key_column_is_user() {
        assert_eq!(schema().field(USER_COLUMN).name(), "user");
    }
}
