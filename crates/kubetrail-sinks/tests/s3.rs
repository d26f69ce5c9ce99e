//! The S3 client against `moto_server` (PyPI `moto[server]`) on loopback, which enforces Object Lock and, when
//! asked to, checks every signature with its own SigV4 implementation (botocore's).
//!
//! moto recomputes signatures over the path as werkzeug re-quotes it, which leaves `=`, `+` and non-ASCII
//! characters as they are where SigV4 (AWS, MinIO, Ceph, this client) percent-encodes them: keys with those
//! characters only pass moto's check by luck, so the signature test uses plain keys and the Object Lock test,
//! with the archive's real `cluster=/year=` keys, runs moto without signature checks.

mod common;

use bytes::Bytes;
use common::{Server, post_form};
use kubetrail_sinks::http::HttpConfig;
use kubetrail_sinks::s3::{Credentials, Lock, LockMode, S3, S3Config, S3Error};

/// Creates an IAM user allowed everything and returns its access key, in moto's first three (unchecked)
/// requests.
fn bootstrap_user(port: u16) -> Credentials {
    // Unchecked requests still need a credential scope naming the service.
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/iam/aws4_request, \
                SignedHeaders=host, Signature=00\r\n";
    let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C\
                  %22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
    post_form(
        port,
        auth,
        "Action=CreateUser&UserName=archiver&Version=2010-05-08",
    );
    post_form(
        port,
        auth,
        &format!(
            "Action=PutUserPolicy&UserName=archiver&PolicyName=all&PolicyDocument={policy}&Version=2010-05-08"
        ),
    );
    let answer = post_form(
        port,
        auth,
        "Action=CreateAccessKey&UserName=archiver&Version=2010-05-08",
    );
    let tag = |t: &str| {
        let start = answer
            .find(&format!("<{t}>"))
            .unwrap_or_else(|| panic!("{answer}"))
            + t.len()
            + 2;
        answer[start..start + answer[start..].find('<').unwrap()].to_string()
    };
    Credentials::new(&tag("AccessKeyId"), &tag("SecretAccessKey"))
}

fn client(port: u16, bucket: &str, credentials: &Credentials) -> S3 {
    S3::new(S3Config {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: "us-east-1".into(),
        bucket: bucket.into(),
        path_style: None,
        credentials: Some(credentials.clone()),
        http: HttpConfig::default(),
    })
    .unwrap()
}

fn code(r: Result<impl std::fmt::Debug, S3Error>) -> String {
    match r {
        Err(e) => e.code().unwrap_or_else(|| panic!("{e}")).to_string(),
        Ok(v) => panic!("succeeded: {v:?}"),
    }
}

fn in_days(days: i64) -> jiff::Timestamp {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .unwrap()
}

#[tokio::test]
async fn locked_versions_cannot_be_deleted_overwritten_or_shortened() {
    let server = Server::moto(None);
    let creds = Credentials::new("AKIDEXAMPLE", "unchecked");
    let s3 = client(server.port, "kubetrail-archive", &creds);
    s3.create_bucket(true).await.unwrap();
    s3.prepare().await.expect("the bucket has Object Lock");

    // The archive's key layout, and characters that need encoding.
    let key = "cluster=prod eu/year=2026/month=11/day=25/hour=20/part 0+ü.parquet";
    let v1_body = Bytes::from_static(b"PAR1 first version");
    let lock = Lock {
        mode: LockMode::Compliance,
        retain_until: in_days(2),
        legal_hold: false,
    };
    let (put, info) = s3
        .put_object_verified(
            key,
            v1_body.clone(),
            "application/vnd.apache.parquet",
            Some(&lock),
        )
        .await
        .unwrap();
    let v1 = put.version_id.clone().expect("a versioned bucket");
    assert_eq!(info.lock_mode, Some(LockMode::Compliance));
    assert_eq!(
        info.retain_until.map(|t| t.as_second()),
        Some(lock.retain_until.as_second())
    );
    assert_eq!(
        info.checksum_sha256.as_deref(),
        Some(put.checksum_sha256.as_str())
    );

    // The locked version cannot be deleted, not even with the governance bypass.
    assert_eq!(
        code(s3.delete_object(key, Some(&v1), false).await),
        "AccessDenied"
    );
    assert_eq!(
        code(s3.delete_object(key, Some(&v1), true).await),
        "AccessDenied"
    );

    // Writing the key again makes a new version; deleting the key only adds a delete marker: the locked
    // version is still there, byte for byte.
    let v2 = s3
        .put_object(
            key,
            Bytes::from_static(b"PAR1 tampered"),
            "application/octet-stream",
            None,
        )
        .await
        .unwrap()
        .version_id
        .unwrap();
    assert_ne!(v1, v2);
    s3.delete_object(key, None, false).await.unwrap();
    assert_eq!(s3.get_object(key, Some(&v1)).await.unwrap(), v1_body);
    assert_eq!(
        s3.head_object(key, Some(&v1)).await.unwrap().lock_mode,
        Some(LockMode::Compliance)
    );

    // COMPLIANCE retention: our guard refuses to shorten it (moto itself would allow it) or to turn it into
    // GOVERNANCE; extending it works.
    let shorter = in_days(1);
    let e = s3
        .put_retention(key, &v1, LockMode::Compliance, shorter, false)
        .await
        .unwrap_err();
    assert!(matches!(e, S3Error::Refused(_)), "{e}");
    assert!(e.to_string().contains("cannot be shortened"), "{e}");
    assert!(matches!(
        s3.put_retention(key, &v1, LockMode::Governance, in_days(30), true)
            .await,
        Err(S3Error::Refused(_))
    ));
    assert_eq!(
        s3.head_object(key, Some(&v1))
            .await
            .unwrap()
            .retain_until
            .map(|t| t.as_second()),
        Some(lock.retain_until.as_second()),
        "unchanged"
    );
    let longer = in_days(10);
    s3.put_retention(key, &v1, LockMode::Compliance, longer, false)
        .await
        .unwrap();
    assert_eq!(
        s3.head_object(key, Some(&v1))
            .await
            .unwrap()
            .retain_until
            .map(|t| t.as_second()),
        Some(longer.as_second())
    );

    // GOVERNANCE: refused without the bypass header, allowed with it.
    let gov = Lock {
        mode: LockMode::Governance,
        retain_until: in_days(2),
        legal_hold: false,
    };
    let (g, _) = s3
        .put_object_verified(
            "governed.json.zst",
            Bytes::from_static(b"x"),
            "application/zstd",
            Some(&gov),
        )
        .await
        .unwrap();
    let gv = g.version_id.unwrap();
    assert_eq!(
        code(
            s3.delete_object("governed.json.zst", Some(&gv), false)
                .await
        ),
        "AccessDenied"
    );
    s3.delete_object("governed.json.zst", Some(&gv), true)
        .await
        .unwrap();
    assert_eq!(
        code(s3.head_object("governed.json.zst", Some(&gv)).await),
        "NotFound"
    );

    // Legal hold: set at upload or later, it blocks deletion until it is lifted.
    let held = Lock {
        mode: LockMode::Governance,
        retain_until: in_days(1),
        legal_hold: true,
    };
    let (h, info) = s3
        .put_object_verified(
            "held-at-upload",
            Bytes::from_static(b"h"),
            "text/plain",
            Some(&held),
        )
        .await
        .unwrap();
    assert!(info.legal_hold);
    let hv = h.version_id.unwrap();
    assert_eq!(
        code(s3.delete_object("held-at-upload", Some(&hv), true).await),
        "AccessDenied"
    );
    let p = s3
        .put_object("held-later", Bytes::from_static(b"l"), "text/plain", None)
        .await
        .unwrap();
    let pv = p.version_id.unwrap();
    s3.put_legal_hold("held-later", &pv, true).await.unwrap();
    assert!(
        s3.head_object("held-later", Some(&pv))
            .await
            .unwrap()
            .legal_hold
    );
    assert_eq!(
        code(s3.delete_object("held-later", Some(&pv), false).await),
        "AccessDenied"
    );
    s3.put_legal_hold("held-later", &pv, false).await.unwrap();
    s3.delete_object("held-later", Some(&pv), false)
        .await
        .unwrap();
}

#[tokio::test]
async fn signatures_check_out_and_setup_errors_are_clear() {
    let server = Server::moto(Some(3));
    let creds = bootstrap_user(server.port);

    // Every call of the archive, signed and checked.
    let s3 = client(server.port, "signed-archive", &creds);
    s3.create_bucket(true).await.unwrap();
    s3.prepare().await.unwrap();
    let key = "cluster-prod/2026/11/25/20/part 0.parquet";
    let lock = Lock {
        mode: LockMode::Compliance,
        retain_until: in_days(1),
        legal_hold: false,
    };
    let (put, _) = s3
        .put_object_verified(
            key,
            Bytes::from_static(b"PAR1"),
            "application/vnd.apache.parquet",
            Some(&lock),
        )
        .await
        .unwrap();
    let v = put.version_id.unwrap();
    s3.put_legal_hold(key, &v, true).await.unwrap();
    s3.put_retention(key, &v, LockMode::Compliance, in_days(2), false)
        .await
        .unwrap();
    assert_eq!(s3.get_object(key, Some(&v)).await.unwrap(), &b"PAR1"[..]);
    assert_eq!(
        code(s3.delete_object(key, Some(&v), false).await),
        "AccessDenied"
    );

    let plain = client(server.port, "no-lock-here", &creds);
    plain.create_bucket(false).await.unwrap();
    let e = plain.prepare().await.unwrap_err();
    assert!(matches!(e, S3Error::Config(_)), "{e}");
    assert!(e.to_string().contains("has no Object Lock"), "{e}");

    let missing = client(server.port, "never-created", &creds);
    let e = missing.prepare().await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");

    // moto recomputes the signature: a wrong secret is refused, and the error does not show it.
    let wrong = Credentials::new(&creds.access_key_id, "not-the-secret-key");
    let s3 = client(server.port, "no-lock-here", &wrong);
    let e = s3
        .put_object("k", Bytes::from_static(b"x"), "text/plain", None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("SignatureDoesNotMatch"), "{e}");
    // Credentials are configuration: the archive keeps the data and retries until they are fixed.
    assert!(e.is_retriable());
    assert!(!e.to_string().contains("not-the-secret-key"));
}
