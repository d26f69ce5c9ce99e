//! The mapping and the Parquet files, checked through the module's public functions.

use super::*;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, TimeUnit, TimestampMillisecondType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

fn src() -> LakeSource {
    LakeSource {
        source_name: "kubetrail".to_string(),
        region: "eu-west-1".to_string(),
        account_id: "123456789012".to_string(),
    }
}

fn rec<'a>(id: &'a str, event: &'a str) -> Record<'a> {
    Record {
        id,
        cluster: "prod-eu",
        received_us: 1_717_000_000_123_456,
        event,
    }
}

fn ms(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

const CREATE_POD: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods?fieldManager=kubectl-client-side-apply&dryRun=","verb":"create","user":{"username":"alice@example.com","uid":"u-1","groups":["devs","system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=ab12"]}},"sourceIPs":["10.0.0.7","172.16.0.2"],"userAgent":"kubectl/v1.30.0 (linux/amd64)","objectRef":{"resource":"pods","namespace":"default","name":"nginx","uid":"p-9","apiVersion":"v1","resourceVersion":"42"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Pod","spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}},"requestReceivedTimestamp":"2024-05-29T16:26:40.100200Z","stageTimestamp":"2024-05-29T16:26:40.250300Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"devs\""}}"#;

const GET_SECRET_FORBIDDEN: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a2","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/secrets/admin-token","verb":"get","user":{"username":"mallory","groups":["system:authenticated"]},"sourceIPs":["203.0.113.9"],"userAgent":"curl/8.5.0","objectRef":{"resource":"secrets","namespace":"kube-system","name":"admin-token","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","message":"secrets \"admin-token\" is forbidden: User \"mallory\" cannot get resource \"secrets\" in API group \"\" in the namespace \"kube-system\"","reason":"Forbidden","details":{"name":"admin-token","kind":"secrets"},"code":403},"requestReceivedTimestamp":"2024-05-29T16:27:00.000000Z","stageTimestamp":"2024-05-29T16:27:00.001000Z","annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}"#;

const DELETE_DEPLOYMENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a3","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/shop/deployments/cart","verb":"delete","user":{"username":"system:serviceaccount:argocd:argocd-application-controller","uid":"sa-1","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["10.1.2.3"],"objectRef":{"resource":"deployments","namespace":"shop","name":"cart","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Success","code":200},"requestReceivedTimestamp":"2024-05-29T23:59:59.900000Z","stageTimestamp":"2024-05-30T00:00:00.100000Z"}"#;

const EXEC: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"a4","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/shop/pods/cart-7d9/exec?command=sh&container=cart&stdin=true&stdout=true&tty=true","verb":"create","user":{"username":"bob","groups":["system:authenticated"]},"sourceIPs":["10.0.0.8"],"userAgent":"kubectl/v1.30.0","objectRef":{"resource":"pods","namespace":"shop","name":"cart-7d9","apiVersion":"v1","subresource":"exec"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2024-05-29T16:28:00.000000Z","stageTimestamp":"2024-05-29T16:28:00.050000Z"}"#;

const IMPERSONATED: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a5","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/kube-system/configmaps","verb":"list","user":{"username":"admin","groups":["system:masters"]},"impersonatedUser":{"username":"system:serviceaccount:kube-system:deployer","groups":["system:serviceaccounts"]},"sourceIPs":["10.0.0.9"],"objectRef":{"resource":"configmaps","namespace":"kube-system","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2024-05-29T16:29:00.000000Z","stageTimestamp":"2024-05-29T16:29:00.010000Z"}"#;

fn map_json(id: &str, event: &str) -> Value {
    api_activity(&rec(id, event), &src()).unwrap()
}

#[test]
fn create_pod() {
    let v = map_json("a1-ResponseComplete", CREATE_POD);
    assert_eq!(v["class_uid"], 6003);
    assert_eq!(v["class_name"], "API Activity");
    assert_eq!(v["category_uid"], 6);
    assert_eq!(v["category_name"], "Application Activity");
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["activity_name"], "Create");
    assert_eq!(v["type_uid"], 600301);
    assert_eq!(v["type_name"], "API Activity: Create");
    assert_eq!(v["severity_id"], 1);
    assert_eq!(v["status_id"], 1);
    assert_eq!(v["status"], "Success");
    assert_eq!(v["status_code"], "201");
    assert_eq!(v["time"], ms("2024-05-29T16:26:40.250Z"), "stageTimestamp");
    assert_eq!(v["start_time"], ms("2024-05-29T16:26:40.100Z"));
    assert_eq!(v["message"], "ResponseComplete");

    let user = &v["actor"]["user"];
    assert_eq!(user["name"], "alice@example.com");
    assert_eq!(user["uid"], "u-1");
    assert_eq!(user["type_id"], 1);
    assert_eq!(
        user["groups"],
        json!([{"name": "devs"}, {"name": "system:authenticated"}])
    );
    assert_eq!(v["actor"]["session"]["credential_uid"], "X509SHA256=ab12");
    assert_eq!(v["actor"]["authorizations"][0]["decision"], "allow");
    assert_eq!(
        v["actor"]["authorizations"][0]["policy"]["desc"],
        "RBAC: allowed by RoleBinding \"devs\""
    );

    let api = &v["api"];
    assert_eq!(api["operation"], "create");
    assert_eq!(api["request"]["uid"], "a1");
    assert_eq!(api["response"]["code"], 201);
    assert_eq!(api["service"]["name"], "kubernetes");
    assert_eq!(api["version"], "v1");
    assert!(api.get("group").is_none(), "the core group has no name");

    assert_eq!(v["src_endpoint"]["ip"], "10.0.0.7");
    assert_eq!(v["src_endpoint"]["intermediate_ips"], json!(["172.16.0.2"]));
    assert_eq!(
        v["http_request"]["user_agent"],
        "kubectl/v1.30.0 (linux/amd64)"
    );
    assert_eq!(
        v["http_request"]["url"]["path"],
        "/api/v1/namespaces/default/pods"
    );
    assert_eq!(
        v["http_request"]["url"]["query_string"],
        "fieldManager=kubectl-client-side-apply&dryRun="
    );
    assert_eq!(
        v["resources"],
        json!([{"uid": "p-9", "name": "nginx", "type": "pods", "namespace": "default", "version": "42"}])
    );
    assert_eq!(
        v["cloud"],
        json!({"provider": "AWS", "region": "eu-west-1", "account": {"uid": "123456789012"}})
    );

    let m = &v["metadata"];
    assert_eq!(m["version"], "1.1.0");
    assert_eq!(m["uid"], "a1-ResponseComplete");
    assert_eq!(m["correlation_uid"], "a1");
    assert_eq!(m["log_name"], "prod-eu");
    assert_eq!(m["log_level"], "RequestResponse");
    assert_eq!(m["log_version"], "audit.k8s.io/v1");
    assert_eq!(m["original_time"], "2024-05-29T16:26:40.250300Z");
    assert_eq!(m["logged_time"], 1_717_000_000_123_i64);
    assert_eq!(m["product"]["name"], "kubetrail");
    assert_eq!(m["product"]["vendor_name"], "kubetrail");
    assert_eq!(m["product"]["feature"]["name"], "audit");
    assert_eq!(m["profiles"], json!(["cloud"]));

    let obs: Vec<(&str, &str)> = v["observables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["value"].as_str().unwrap()))
        .collect();
    assert!(obs.contains(&("actor.user.name", "alice@example.com")));
    assert!(obs.contains(&("src_endpoint.ip", "10.0.0.7")));
    assert!(obs.contains(&("resources.uid", "p-9")));

    let u = &v["unmapped"];
    assert_eq!(u["stage"], "ResponseComplete");
    assert_eq!(u["level"], "RequestResponse");
    assert_eq!(u["annotations"]["authorization.k8s.io/decision"], "allow");
    assert_eq!(
        u["requestObject"]["spec"]["containers"][0]["image"],
        "nginx:1.27"
    );
    assert_eq!(
        u["stageTimestamp"], "2024-05-29T16:26:40.250300Z",
        "microseconds kept"
    );
    assert_eq!(
        u["user"]["extra"]["authentication.kubernetes.io/credential-id"][0],
        "X509SHA256=ab12"
    );
}

#[test]
fn get_secret_forbidden() {
    let v = map_json("a2-ResponseComplete", GET_SECRET_FORBIDDEN);
    assert_eq!(v["activity_id"], 2);
    assert_eq!(v["activity_name"], "Read");
    assert_eq!(v["type_uid"], 600302);
    assert_eq!(v["status_id"], 2);
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["status_code"], "403");
    assert!(
        v["status_detail"]
            .as_str()
            .unwrap()
            .starts_with("secrets \"admin-token\" is forbidden")
    );
    assert_eq!(v["api"]["response"]["code"], 403);
    assert_eq!(v["api"]["response"]["error"], "Forbidden");
    assert_eq!(v["actor"]["authorizations"][0]["decision"], "forbid");
    assert!(
        v["actor"]["authorizations"][0].get("policy").is_none(),
        "empty reason"
    );
    assert_eq!(v["resources"][0]["type"], "secrets");
    assert_eq!(v["resources"][0]["namespace"], "kube-system");
    assert!(
        v["http_request"]["url"].get("query_string").is_none(),
        "{v}"
    );
    assert!(v["actor"].get("session").is_none());
}

#[test]
fn delete_and_other_verbs() {
    let v = map_json("a3-ResponseComplete", DELETE_DEPLOYMENT);
    assert_eq!(v["activity_id"], 4);
    assert_eq!(v["activity_name"], "Delete");
    assert_eq!(v["type_uid"], 600304);
    assert_eq!(v["api"]["group"]["name"], "apps");
    assert_eq!(v["resources"][0]["type"], "deployments");
    assert_eq!(
        v["actor"]["user"]["type_id"], 3,
        "service accounts are System"
    );
    assert_eq!(v["actor"]["user"]["type"], "System");
    assert_eq!(v["status_id"], 1);

    for (verb, id, name) in [
        ("deletecollection", 4, "Delete"),
        ("list", 2, "Read"),
        ("watch", 2, "Read"),
        ("patch", 3, "Update"),
        ("update", 3, "Update"),
        ("proxy", 99, "proxy"),
    ] {
        let ev = DELETE_DEPLOYMENT.replace(r#""verb":"delete""#, &format!(r#""verb":"{verb}""#));
        let v = map_json("x", &ev);
        assert_eq!(v["activity_id"], id, "{verb}");
        assert_eq!(v["activity_name"], name, "{verb}");
        assert_eq!(v["type_uid"], 600300 + id, "{verb}");
        assert_eq!(v["api"]["operation"], verb);
    }
    let v = map_json(
        "x",
        &DELETE_DEPLOYMENT.replace(r#""verb":"delete""#, r#""verb":"proxy""#),
    );
    assert_eq!(v["type_name"], "API Activity: Other");
}

#[test]
fn exec_subresource() {
    let v = map_json("a4-ResponseStarted", EXEC);
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["resources"][0]["type"], "pods/exec");
    assert_eq!(v["resources"][0]["name"], "cart-7d9");
    assert_eq!(v["status_id"], 1, "101 Switching Protocols");
    assert_eq!(v["message"], "ResponseStarted");
    assert_eq!(
        v["http_request"]["url"]["query_string"],
        "command=sh&container=cart&stdin=true&stdout=true&tty=true"
    );
}

#[test]
fn impersonation_keeps_the_authenticated_user_as_actor() {
    let v = map_json("a5-ResponseComplete", IMPERSONATED);
    assert_eq!(v["actor"]["user"]["name"], "admin");
    assert_eq!(
        v["actor"]["user"]["groups"],
        json!([{"name": "system:masters"}])
    );
    assert_eq!(
        v["unmapped"]["impersonatedUser"]["username"],
        "system:serviceaccount:kube-system:deployer"
    );
    assert!(v["observables"].as_array().unwrap().iter().any(|o| {
        o["name"] == "unmapped.impersonatedUser.username"
            && o["value"] == "system:serviceaccount:kube-system:deployer"
            && o["type_id"] == 4
    }));
    assert_eq!(v["activity_id"], 2);
    assert!(
        v["resources"][0].get("name").is_none(),
        "a list names no object"
    );
}

#[test]
fn time_falls_back() {
    let ev = r#"{"level":"Metadata","auditID":"a6","stage":"RequestReceived","verb":"get","requestURI":"/healthz","requestReceivedTimestamp":"2024-05-29T16:30:00.123456Z"}"#;
    let v = map_json("a6-RequestReceived", ev);
    assert_eq!(v["time"], ms("2024-05-29T16:30:00.123Z"));
    assert_eq!(v["status_id"], 0, "no answer yet");
    assert_eq!(v["status"], "Unknown");
    assert!(v.get("resources").is_none(), "non-resource request");
    assert!(v["api"].get("response").is_none());
    assert_eq!(v["http_request"]["url"]["path"], "/healthz");

    let ev = r#"{"level":"Metadata","auditID":"a7","stage":"RequestReceived","verb":"get"}"#;
    let v = map_json("a7-RequestReceived", ev);
    assert_eq!(
        v["time"], 1_717_000_000_123_i64,
        "when kubetrail received it"
    );
    assert!(v.get("start_time").is_none());
    assert!(v["metadata"].get("original_time").is_none());
}

#[test]
fn malformed_events_name_the_record() {
    let e = api_activity(&rec("bad-1", "not json"), &src()).unwrap_err();
    assert!(e.starts_with("record bad-1: not an audit event"), "{e}");

    let good = rec("a1-ResponseComplete", CREATE_POD);
    let bad = rec(
        "bad-2",
        r#"{"level":"Metadata","stage":"ResponseComplete"}"#,
    );
    match to_parquet(&[good, bad], &src()) {
        Err(OcsfError::Record { index, id, reason }) => {
            assert_eq!((index, id.as_str()), (1, "bad-2"));
            assert!(reason.contains("auditID"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let e: String = to_parquet(&[bad], &src()).unwrap_err().into();
    assert!(
        e.starts_with("record bad-2 (#0): not an audit event"),
        "{e}"
    );
    assert!(event_day(&bad).unwrap_err().contains("bad-2"));
}

#[test]
fn parquet_round_trip() {
    let records = [
        rec("a3-ResponseComplete", DELETE_DEPLOYMENT),
        rec("a1-ResponseComplete", CREATE_POD),
        rec(
            "a6-RequestReceived",
            r#"{"level":"Metadata","auditID":"a6","stage":"RequestReceived","verb":"get","requestURI":"/healthz","requestReceivedTimestamp":"2024-05-29T16:30:00Z"}"#,
        ),
        rec("a5-ResponseComplete", IMPERSONATED),
    ];
    let bytes = to_parquet(&records, &src()).unwrap();
    assert_eq!(&bytes[..4], b"PAR1");

    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
    let md = builder.metadata().clone();
    assert!(matches!(
        md.row_group(0).column(0).compression(),
        Compression::ZSTD(_)
    ));
    let reader = builder.build().unwrap();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 4);
    assert_eq!(b.schema(), schema(), "the schema survives the round trip");

    let names: Vec<&str> = b
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    for want in [
        "class_uid",
        "category_uid",
        "activity_id",
        "type_uid",
        "time",
        "start_time",
        "actor",
        "api",
        "src_endpoint",
        "http_request",
        "resources",
        "metadata",
        "cloud",
        "observables",
        "unmapped",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(
        b.schema_ref().field_with_name("time").unwrap().data_type(),
        &DataType::Int64,
        "OCSF timestamp_t: epoch milliseconds"
    );
    assert_eq!(
        b.schema_ref()
            .field_with_name("time_dt")
            .unwrap()
            .data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );

    let class = b
        .column_by_name("class_uid")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert!(class.iter().all(|c| c == Some(6003)));

    // Sorted by time: create (16:26), list (16:29), healthz (16:30), delete (next day).
    let time = b
        .column_by_name("time_dt")
        .unwrap()
        .as_primitive::<TimestampMillisecondType>();
    assert_eq!(time.value(0), ms("2024-05-29T16:26:40.250Z"));
    assert!(time.values().windows(2).all(|w| w[0] <= w[1]));
    let ids = b.column_by_name("metadata").unwrap().as_struct();
    let ids = ids.column_by_name("uid").unwrap().as_string::<i32>();
    assert_eq!(
        ids.iter().collect::<Vec<_>>(),
        [
            Some("a1-ResponseComplete"),
            Some("a5-ResponseComplete"),
            Some("a6-RequestReceived"),
            Some("a3-ResponseComplete")
        ]
    );

    let actor = b.column_by_name("actor").unwrap().as_struct();
    let user = actor.column_by_name("user").unwrap().as_struct();
    let user_names = user.column_by_name("name").unwrap().as_string::<i32>();
    assert_eq!(user_names.value(0), "alice@example.com");
    assert_eq!(user_names.value(1), "admin");
    assert!(user_names.is_null(2), "no user");
    let groups = user.column_by_name("groups").unwrap().as_list::<i32>();
    let g0 = groups.value(0);
    let g0 = g0
        .as_struct()
        .column_by_name("name")
        .unwrap()
        .as_string::<i32>();
    assert_eq!(g0.value(1), "system:authenticated");

    let resources = b.column_by_name("resources").unwrap().as_list::<i32>();
    assert!(resources.is_null(2), "non-resource request");
    let r0 = resources.value(0);
    let r0 = r0.as_struct();
    assert_eq!(
        r0.column_by_name("type")
            .unwrap()
            .as_string::<i32>()
            .value(0),
        "pods"
    );

    let api = b.column_by_name("api").unwrap().as_struct();
    let response = api.column_by_name("response").unwrap().as_struct();
    assert!(response.is_null(2), "no response yet");
    let code = response
        .column_by_name("code")
        .unwrap()
        .as_primitive::<Int32Type>();
    assert_eq!(code.value(0), 201);

    let cloud = b.column_by_name("cloud").unwrap().as_struct();
    assert_eq!(
        cloud
            .column_by_name("region")
            .unwrap()
            .as_string::<i32>()
            .value(3),
        "eu-west-1"
    );

    let unmapped = b.column_by_name("unmapped").unwrap().as_string::<i32>();
    let u: Value = serde_json::from_str(unmapped.value(1)).unwrap();
    assert_eq!(
        u["impersonatedUser"]["username"],
        "system:serviceaccount:kube-system:deployer"
    );
}

#[test]
fn empty_batch_is_a_valid_file() {
    let bytes = to_parquet(&[], &src()).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
    assert_eq!(reader.schema().as_ref(), schema().as_ref());
    assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
}

#[test]
fn keys_and_event_days() {
    assert_eq!(
        lake_key(&src(), "20240529", None, 7, 1234),
        "ext/kubetrail/region=eu-west-1/accountId=123456789012/eventDay=20240529/\
         00000000000000000007-00000000000000001234.parquet"
    );
    assert_eq!(
        lake_key(&src(), "20240529", Some("kubetrail-1"), 7, 1234),
        "ext/kubetrail/region=eu-west-1/accountId=123456789012/eventDay=20240529/\
         kubetrail-1-00000000000000000007-00000000000000001234.parquet"
    );
    assert_eq!(event_day(&rec("a1", CREATE_POD)).unwrap(), "20240529");
    assert_eq!(
        event_day(&rec("a3", DELETE_DEPLOYMENT)).unwrap(),
        "20240530",
        "the stage timestamp, past midnight"
    );
    let ev = r#"{"level":"Metadata","auditID":"a8","stage":"ResponseComplete","stageTimestamp":"2024-05-30T01:30:00+02:00"}"#;
    assert_eq!(event_day(&rec("a8", ev)).unwrap(), "20240529", "UTC");
}
