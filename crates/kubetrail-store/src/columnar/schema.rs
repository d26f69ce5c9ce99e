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
/// 2 added `source` (last); version 1 files lack it and read as null there.
const FORMAT_VERSION: &str = "2";

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
                s("event", false),
                s("source", true),
            ]))
        })
        .clone()
}

/// Whether `fields` are this schema's, or those of format 1 (every column but the last, `source`), whose
/// batches [`upgrade`] brings to this schema.
pub(super) fn readable(fields: &arrow::datatypes::Fields) -> bool {
    let now = schema();
    fields == now.fields()
        || fields
            .iter()
            .eq(now.fields().iter().take(now.fields().len() - 1))
}

/// A batch of a format 1 file with the `source` column added (null); a batch of this schema as it is.
pub(super) fn upgrade(
    batch: arrow::array::RecordBatch,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let now = schema();
    if batch.num_columns() == now.fields().len() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    columns.push(arrow::array::new_null_array(
        &DataType::Utf8,
        batch.num_rows(),
    ));
    arrow::array::RecordBatch::try_new(now, columns)
}

pub(super) fn list_item() -> FieldRef {
    Arc::new(Field::new("item", DataType::Utf8, false))
}

/// zstd level of the `event` column: on generated events in 8 MiB pages, level 9 stores the JSON in 16% fewer
/// bytes than level 5 for ~1.5x its compression time (an 8 MiB page: 0.12 s against 0.08 s on one core), which
/// conversion affords (the log absorbs bursts; `serve` converts a few thousand events per second).
const EVENT_LEVEL: i32 = 9;

pub(super) fn writer_props(row_group_rows: usize) -> WriterProperties {
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
        .set_column_dictionary_enabled(ColumnPath::from("event"), false)
        .set_column_dictionary_enabled(ColumnPath::from("audit_id"), false)
        .set_column_statistics_enabled(ColumnPath::from("event"), EnabledStatistics::None);
    // The event JSON is 90% of the bytes: zstd 5 (lazy matching) in 8 MiB pages stores it in ~1/17 of its
    // size where level 3 in 1 MiB pages needs ~1/14, for ~25% more conversion time (measured in
    // tests/columnar.rs); level 9 (`EVENT_LEVEL`) saves another 16%. Queries filter on the other columns and
    // read `event` only for the rows they keep.
    b = b
        .set_column_compression(ColumnPath::from("event"), zstd_level(EVENT_LEVEL))
        .set_column_data_page_size_limit(ColumnPath::from("event"), 8 << 20);
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
