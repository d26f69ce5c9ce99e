//! The columns of a batch of OCSF records, built column by column from the mapped records (never inferred), in
//! the order and types of [`schema`](super::schema).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
    TimestampMillisecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields as ArrowFields};
use arrow::error::ArrowError;

use super::record::{
    Actor, Api, ApiActivity, Cloud, Endpoint, HttpRequest, Metadata, Named, Product, User,
};
use super::schema::{
    account_fields, actor_fields, api_fields, api_request_fields, api_response_fields,
    authorization_fields, cloud_fields, endpoint_fields, http_request_fields, metadata_fields,
    named_fields, observable_fields, policy_fields, product_fields, resource_fields, schema,
    session_fields, url_fields, user_fields,
};

fn strs<'a, T>(rows: &[&'a T], f: impl Fn(&'a T) -> Option<&'a str>) -> ArrayRef {
    Arc::new(rows.iter().map(|r| f(r)).collect::<StringArray>())
}

fn i32s<T>(rows: &[&T], f: impl Fn(&T) -> Option<i32>) -> ArrayRef {
    Arc::new(rows.iter().map(|r| f(r)).collect::<Int32Array>())
}

fn i64s<T>(rows: &[&T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(rows.iter().map(|r| f(r)).collect::<Int64Array>())
}

fn times<T>(rows: &[&T], f: impl Fn(&T) -> Option<i64>) -> ArrayRef {
    Arc::new(
        rows.iter()
            .map(|r| f(r))
            .collect::<TimestampMillisecondArray>()
            .with_timezone("UTC"),
    )
}

/// A struct column; `valid` says which rows have one (none: all).
fn structs(
    fields: ArrowFields,
    children: Vec<ArrayRef>,
    valid: Option<Vec<bool>>,
) -> Result<ArrayRef, ArrowError> {
    Ok(Arc::new(StructArray::try_new(
        fields,
        children,
        valid.map(NullBuffer::from),
    )?))
}

/// A list column: `items` of each row (`None`: null), their values built by `values` from all rows' items.
fn lists<'a, T, U: 'a>(
    rows: &[&'a T],
    items: impl Fn(&'a T) -> Option<&'a [U]>,
    item_type: DataType,
    values: impl FnOnce(&[&'a U]) -> Result<ArrayRef, ArrowError>,
) -> Result<ArrayRef, ArrowError> {
    let mut flat = Vec::new();
    let mut lengths = Vec::with_capacity(rows.len());
    let mut valid = Vec::with_capacity(rows.len());
    for r in rows {
        let xs = items(r);
        valid.push(xs.is_some());
        let xs = xs.unwrap_or_default();
        lengths.push(xs.len());
        flat.extend(xs);
    }
    Ok(Arc::new(ListArray::try_new(
        Arc::new(Field::new_list_field(item_type, true)),
        OffsetBuffer::from_lengths(lengths),
        values(&flat)?,
        Some(NullBuffer::from(valid)),
    )?))
}

fn named(rows: &[&Named]) -> Result<ArrayRef, ArrowError> {
    structs(named_fields(), vec![strs(rows, |n| Some(&n.name))], None)
}

fn string_list<'a, T>(
    rows: &[&'a T],
    items: impl Fn(&'a T) -> Option<&'a [String]>,
) -> Result<ArrayRef, ArrowError> {
    lists(rows, items, DataType::Utf8, |xs| {
        Ok(strs(xs, |s| Some(s.as_str())))
    })
}

fn non_empty<T>(v: &[T]) -> Option<&[T]> {
    (!v.is_empty()).then_some(v)
}

fn actor_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let actors: Vec<&Actor> = rows.iter().map(|a| &a.actor).collect();
    let users: Vec<&User> = actors.iter().map(|a| &a.user).collect();
    let user = structs(
        user_fields(),
        vec![
            strs(&users, |u| u.name.as_deref()),
            strs(&users, |u| u.uid.as_deref()),
            strs(&users, |u| Some(u.kind)),
            i32s(&users, |u| Some(u.type_id)),
            lists(
                &users,
                |u| Some(&u.groups[..]),
                DataType::Struct(named_fields()),
                named,
            )?,
        ],
        None,
    )?;
    let session = structs(
        session_fields(),
        vec![strs(&actors, |a| {
            a.session.as_ref().map(|s| s.credential_uid.as_str())
        })],
        Some(actors.iter().map(|a| a.session.is_some()).collect()),
    )?;
    let authorizations = lists(
        &actors,
        |a| non_empty(&a.authorizations),
        DataType::Struct(authorization_fields()),
        |az| {
            let policy = structs(
                policy_fields(),
                vec![strs(az, |z| z.policy.as_ref().map(|p| p.desc.as_str()))],
                Some(az.iter().map(|z| z.policy.is_some()).collect()),
            )?;
            structs(
                authorization_fields(),
                vec![strs(az, |z| Some(&z.decision)), policy],
                None,
            )
        },
    )?;
    structs(actor_fields(), vec![user, session, authorizations], None)
}

fn api_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let apis: Vec<&Api> = rows.iter().map(|a| &a.api).collect();
    let services: Vec<&Named> = apis.iter().map(|a| &a.service).collect();
    let group = structs(
        named_fields(),
        vec![strs(&apis, |a| a.group.as_ref().map(|g| g.name.as_str()))],
        Some(apis.iter().map(|a| a.group.is_some()).collect()),
    )?;
    let request = structs(
        api_request_fields(),
        vec![strs(&apis, |a| Some(&a.request.uid))],
        None,
    )?;
    let response = structs(
        api_response_fields(),
        vec![
            i32s(&apis, |a| a.response.as_ref().and_then(|r| r.code)),
            strs(&apis, |a| {
                a.response.as_ref().and_then(|r| r.message.as_deref())
            }),
            strs(&apis, |a| {
                a.response.as_ref().and_then(|r| r.error.as_deref())
            }),
        ],
        Some(apis.iter().map(|a| a.response.is_some()).collect()),
    )?;
    structs(
        api_fields(),
        vec![
            strs(&apis, |a| Some(&a.operation)),
            strs(&apis, |a| a.version.as_deref()),
            named(&services)?,
            group,
            request,
            response,
        ],
        None,
    )
}

fn src_endpoint_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let eps: Vec<&Endpoint> = rows.iter().map(|a| &a.src_endpoint).collect();
    structs(
        endpoint_fields(),
        vec![
            strs(&eps, |e| e.ip.as_deref()),
            string_list(&eps, |e| non_empty(&e.intermediate_ips))?,
        ],
        None,
    )
}

fn http_request_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let reqs: Vec<&HttpRequest> = rows.iter().map(|a| &a.http_request).collect();
    let url = structs(
        url_fields(),
        vec![
            strs(&reqs, |h| Some(&h.url.path)),
            strs(&reqs, |h| h.url.query_string.as_deref()),
        ],
        None,
    )?;
    structs(
        http_request_fields(),
        vec![strs(&reqs, |h| h.user_agent.as_deref()), url],
        None,
    )
}

fn resources_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    lists(
        rows,
        |a| non_empty(&a.resources),
        DataType::Struct(resource_fields()),
        |rs| {
            structs(
                resource_fields(),
                vec![
                    strs(rs, |r| r.uid.as_deref()),
                    strs(rs, |r| r.name.as_deref()),
                    strs(rs, |r| Some(&r.kind)),
                    strs(rs, |r| r.namespace.as_deref()),
                    strs(rs, |r| r.version.as_deref()),
                ],
                None,
            )
        },
    )
}

fn cloud_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let clouds: Vec<&Cloud> = rows.iter().map(|a| &a.cloud).collect();
    let account = structs(
        account_fields(),
        vec![strs(&clouds, |c| Some(&c.account.uid))],
        None,
    )?;
    structs(
        cloud_fields(),
        vec![
            strs(&clouds, |c| Some(c.provider)),
            strs(&clouds, |c| Some(&c.region)),
            account,
        ],
        None,
    )
}

fn metadata_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    let metas: Vec<&Metadata> = rows.iter().map(|a| &a.metadata).collect();
    let products: Vec<&Product> = metas.iter().map(|m| &m.product).collect();
    let features: Vec<&Named> = products.iter().map(|p| &p.feature).collect();
    let product = structs(
        product_fields(),
        vec![
            strs(&products, |p| Some(p.name)),
            strs(&products, |p| Some(p.vendor_name)),
            strs(&products, |p| Some(p.version)),
            named(&features)?,
        ],
        None,
    )?;
    let profiles = lists(
        &metas,
        |m| Some(&m.profiles[..]),
        DataType::Utf8,
        |ps| Ok(strs(ps, |p| Some(*p))),
    )?;
    structs(
        metadata_fields(),
        vec![
            strs(&metas, |m| Some(m.version)),
            strs(&metas, |m| Some(&m.uid)),
            strs(&metas, |m| Some(&m.correlation_uid)),
            strs(&metas, |m| Some(&m.log_name)),
            strs(&metas, |m| Some(m.log_level)),
            strs(&metas, |m| m.log_version.as_deref()),
            strs(&metas, |m| m.original_time.as_deref()),
            times(&metas, |m| Some(m.logged_time)),
            profiles,
            product,
        ],
        None,
    )
}

fn observables_column(rows: &[&ApiActivity]) -> Result<ArrayRef, ArrowError> {
    lists(
        rows,
        |a| non_empty(&a.observables),
        DataType::Struct(observable_fields()),
        |os| {
            structs(
                observable_fields(),
                vec![
                    strs(os, |o| Some(o.name)),
                    strs(os, |o| Some(o.kind)),
                    i32s(os, |o| Some(o.type_id)),
                    strs(os, |o| Some(&o.value)),
                ],
                None,
            )
        },
    )
}

pub(super) fn record_batch(rows: &[&ApiActivity]) -> Result<RecordBatch, ArrowError> {
    let columns = vec![
        i32s(rows, |a| Some(a.activity_id)),
        strs(rows, |a| Some(&a.activity_name)),
        i32s(rows, |a| Some(a.category_uid)),
        strs(rows, |a| Some(a.category_name)),
        i32s(rows, |a| Some(a.class_uid)),
        strs(rows, |a| Some(a.class_name)),
        i64s(rows, |a| Some(a.type_uid)),
        strs(rows, |a| Some(&a.type_name)),
        i32s(rows, |a| Some(a.severity_id)),
        strs(rows, |a| Some(a.severity)),
        i32s(rows, |a| Some(a.status_id)),
        strs(rows, |a| Some(a.status)),
        strs(rows, |a| a.status_code.as_deref()),
        strs(rows, |a| a.status_detail.as_deref()),
        strs(rows, |a| Some(&a.message)),
        i64s(rows, |a| Some(a.time)),
        times(rows, |a| Some(a.time)),
        i64s(rows, |a| a.start_time),
        actor_column(rows)?,
        api_column(rows)?,
        src_endpoint_column(rows)?,
        http_request_column(rows)?,
        resources_column(rows)?,
        cloud_column(rows)?,
        metadata_column(rows)?,
        observables_column(rows)?,
        strs(rows, |a| Some(a.unmapped.get())),
    ];
    RecordBatch::try_new(schema(), columns)
}
