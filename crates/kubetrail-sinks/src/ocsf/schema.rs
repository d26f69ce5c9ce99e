//! The fixed Arrow schema of every OCSF Parquet file: nested columns in OCSF's names, nulls where the event has
//! nothing. Each `*_fields` function and the column builder of the same struct (in `columns`) list the
//! children in the same order; `RecordBatch::try_new` checks every type against [`schema`].

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields as ArrowFields, Schema, SchemaRef, TimeUnit};

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

fn int32(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int32, nullable)
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn struct_field(name: &str, fields: ArrowFields, nullable: bool) -> Field {
    Field::new(name, DataType::Struct(fields), nullable)
}

fn list_type(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

fn list_field(name: &str, item: DataType) -> Field {
    Field::new(name, list_type(item), true)
}

pub(super) fn named_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("name")])
}

pub(super) fn user_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("name"),
        utf8("uid"),
        utf8("type"),
        int32("type_id", true),
        list_field("groups", DataType::Struct(named_fields())),
    ])
}

pub(super) fn session_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("credential_uid")])
}

pub(super) fn policy_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("desc")])
}

pub(super) fn authorization_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("decision"),
        struct_field("policy", policy_fields(), true),
    ])
}

pub(super) fn actor_fields() -> ArrowFields {
    ArrowFields::from(vec![
        struct_field("user", user_fields(), true),
        struct_field("session", session_fields(), true),
        list_field("authorizations", DataType::Struct(authorization_fields())),
    ])
}

pub(super) fn api_request_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("uid")])
}

pub(super) fn api_response_fields() -> ArrowFields {
    ArrowFields::from(vec![int32("code", true), utf8("message"), utf8("error")])
}

pub(super) fn api_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("operation"),
        utf8("version"),
        struct_field("service", named_fields(), true),
        struct_field("group", named_fields(), true),
        struct_field("request", api_request_fields(), true),
        struct_field("response", api_response_fields(), true),
    ])
}

pub(super) fn endpoint_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("ip"),
        list_field("intermediate_ips", DataType::Utf8),
    ])
}

pub(super) fn url_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("path"), utf8("query_string")])
}

pub(super) fn http_request_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("user_agent"),
        struct_field("url", url_fields(), true),
    ])
}

pub(super) fn resource_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("uid"),
        utf8("name"),
        utf8("type"),
        utf8("namespace"),
        utf8("version"),
    ])
}

pub(super) fn account_fields() -> ArrowFields {
    ArrowFields::from(vec![utf8("uid")])
}

pub(super) fn cloud_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("provider"),
        utf8("region"),
        struct_field("account", account_fields(), true),
    ])
}

pub(super) fn product_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("name"),
        utf8("vendor_name"),
        utf8("version"),
        struct_field("feature", named_fields(), true),
    ])
}

pub(super) fn metadata_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("version"),
        utf8("uid"),
        utf8("correlation_uid"),
        utf8("log_name"),
        utf8("log_level"),
        utf8("log_version"),
        utf8("original_time"),
        Field::new("logged_time", ts_type(), true),
        list_field("profiles", DataType::Utf8),
        struct_field("product", product_fields(), true),
    ])
}

pub(super) fn observable_fields() -> ArrowFields {
    ArrowFields::from(vec![
        utf8("name"),
        utf8("type"),
        int32("type_id", true),
        utf8("value"),
    ])
}

/// The Arrow schema of every file (the Parquet schema follows from it).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        int32("activity_id", false),
        utf8("activity_name"),
        int32("category_uid", false),
        utf8("category_name"),
        int32("class_uid", false),
        utf8("class_name"),
        Field::new("type_uid", DataType::Int64, false),
        utf8("type_name"),
        int32("severity_id", false),
        utf8("severity"),
        int32("status_id", true),
        utf8("status"),
        utf8("status_code"),
        utf8("status_detail"),
        utf8("message"),
        Field::new("time", DataType::Int64, false),
        Field::new("time_dt", ts_type(), false),
        Field::new("start_time", DataType::Int64, true),
        struct_field("actor", actor_fields(), false),
        struct_field("api", api_fields(), false),
        struct_field("src_endpoint", endpoint_fields(), false),
        struct_field("http_request", http_request_fields(), true),
        list_field("resources", DataType::Struct(resource_fields())),
        struct_field("cloud", cloud_fields(), false),
        struct_field("metadata", metadata_fields(), false),
        list_field("observables", DataType::Struct(observable_fields())),
        utf8("unmapped"),
    ]))
}
