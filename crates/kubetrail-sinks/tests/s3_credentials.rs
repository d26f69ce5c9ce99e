//! The S3 client's credential chain against local endpoints: container credentials and IMDSv2 played by axum
//! servers on loopback, STS `AssumeRoleWithWebIdentity` by a fake and by `moto_server` (PyPI `moto[server]`),
//! whose credentials then sign real S3 requests that moto checks.
//!
//! The chain reads an explicit lookup here ([`CredentialsProvider::from_lookup`]), never the process'
//! environment, so the tests run in parallel.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use common::{Server, post_form};
use kubetrail_sinks::http::HttpConfig;
use kubetrail_sinks::s3::{CredentialsProvider, S3, S3Config};

fn provider(vars: &[(&str, &str)]) -> Result<CredentialsProvider, kubetrail_sinks::Error> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CredentialsProvider::from_lookup(|k| map.get(k).cloned(), "us-east-1")
}

async fn serve(app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn s3(port: u16, provider: &Arc<CredentialsProvider>) -> S3 {
    S3::with_credentials_provider(
        S3Config {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: "us-east-1".into(),
            bucket: "kubetrail-archive".into(),
            path_style: None,
            credentials: None,
            http: HttpConfig::default(),
        },
        provider.clone(),
    )
    .unwrap()
}

fn in_secs(secs: i64) -> String {
    jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A container credentials endpoint (`/creds`) and a fake S3 (every other path) that records which access key
/// and session token signed each request.
#[derive(Default)]
struct Container {
    hits: AtomicUsize,
    authorization: Mutex<String>,
    expires_in: AtomicI64,
    /// (access key id of the signature, x-amz-security-token) of each S3 request.
    signed: Mutex<Vec<(String, Option<String>)>>,
    /// Answer the next S3 request with 403 ExpiredToken.
    expire_next: AtomicBool,
}

async fn container_creds(State(s): State<Arc<Container>>, headers: HeaderMap) -> Response {
    if header(&headers, "authorization").as_deref()
        != Some(s.authorization.lock().unwrap().as_str())
    {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"Code":"AccessDenied","Message":"invalid authorization token"}"#,
        )
            .into_response();
    }
    let n = s.hits.fetch_add(1, Ordering::SeqCst) + 1;
    let expiration = in_secs(s.expires_in.load(Ordering::SeqCst));
    axum::Json(serde_json::json!({
        "AccessKeyId": format!("ASIACONTAINER{n}"),
        "SecretAccessKey": format!("secret-{n}"),
        "Token": format!("session-{n}"),
        "Expiration": expiration,
    }))
    .into_response()
}

async fn fake_s3(State(s): State<Arc<Container>>, headers: HeaderMap) -> Response {
    let auth = header(&headers, "authorization").unwrap_or_default();
    let key = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_string();
    s.signed
        .lock()
        .unwrap()
        .push((key, header(&headers, "x-amz-security-token")));
    if s.expire_next.swap(false, Ordering::SeqCst) {
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
        )
            .into_response();
    }
    StatusCode::OK.into_response()
}

fn signed(s: &Container) -> Vec<(String, Option<String>)> {
    std::mem::take(&mut *s.signed.lock().unwrap())
}

fn pair(key: &str, token: &str) -> (String, Option<String>) {
    (key.to_string(), Some(token.to_string()))
}

#[tokio::test]
async fn container_credentials_are_fetched_lazily_with_authorization_and_refreshed() {
    let state = Arc::new(Container::default());
    *state.authorization.lock().unwrap() = "pod-identity-token-1".into();
    state.expires_in.store(120, Ordering::SeqCst); // within the 5 minutes: refreshed at every use
    let app = Router::new()
        .route("/v1/credentials", get(container_creds))
        .fallback(fake_s3)
        .with_state(state.clone());
    let port = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, "pod-identity-token-1\n").unwrap();
    let uri = format!("http://127.0.0.1:{port}/v1/credentials");
    let vars = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.to_str().unwrap(),
        ),
    ];
    let p = Arc::new(provider(&vars).unwrap());
    assert!(p.is_refreshable());
    let client = s3(port, &p);
    assert_eq!(
        state.hits.load(Ordering::SeqCst),
        0,
        "nothing fetched before the first request"
    );

    // Each request signs with credentials asked just before; expiring soon, they are fetched every time.
    client.create_bucket(false).await.unwrap();
    client
        .put_object("a", Bytes::from_static(b"x"), "text/plain", None)
        .await
        .unwrap();
    assert_eq!(state.hits.load(Ordering::SeqCst), 2);
    assert_eq!(
        signed(&state),
        [
            pair("ASIACONTAINER1", "session-1"),
            pair("ASIACONTAINER2", "session-2")
        ]
    );

    // The token file is read at every fetch: the rotated token is sent.
    std::fs::write(&token_file, "pod-identity-token-2").unwrap();
    *state.authorization.lock().unwrap() = "pod-identity-token-2".into();
    client.create_bucket(false).await.unwrap();
    assert_eq!(state.hits.load(Ordering::SeqCst), 3);
    assert_eq!(signed(&state), [pair("ASIACONTAINER3", "session-3")]);

    // A failed refresh keeps the credentials while they are still valid.
    *state.authorization.lock().unwrap() = "something else".into();
    client.create_bucket(false).await.unwrap();
    assert_eq!(signed(&state), [pair("ASIACONTAINER3", "session-3")]);

    // A wrong token, with nothing cached, is an error that names the source but not the token.
    let wrong = provider(&[
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong-token-value"),
    ])
    .unwrap();
    let e = wrong.credentials().await.unwrap_err();
    assert!(
        e.contains("container credentials at http://127.0.0.1"),
        "{e}"
    );
    assert!(e.contains("HTTP 401: AccessDenied"), "{e}");
    assert!(e.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN"), "{e}");
    assert!(!e.contains("wrong-token-value"), "{e}");

    // Credentials valid for an hour are fetched once.
    *state.authorization.lock().unwrap() = "static-token".into();
    state.expires_in.store(3600, Ordering::SeqCst);
    let long = Arc::new(
        provider(&[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "static-token"),
        ])
        .unwrap(),
    );
    let before = state.hits.load(Ordering::SeqCst);
    let client = s3(port, &long);
    client.create_bucket(false).await.unwrap();
    client.create_bucket(false).await.unwrap();
    assert_eq!(state.hits.load(Ordering::SeqCst), before + 1);
    let first = signed(&state);
    assert_eq!(first.len(), 2);
    assert_eq!(first[0], first[1]);

    // S3's ExpiredToken makes the client fetch new credentials and send the request again, once.
    state.expire_next.store(true, Ordering::SeqCst);
    client
        .put_object("b", Bytes::from_static(b"y"), "text/plain", None)
        .await
        .unwrap();
    assert_eq!(state.hits.load(Ordering::SeqCst), before + 2);
    let again = signed(&state);
    assert_eq!(again.len(), 2);
    assert_eq!(again[0], first[0]);
    assert_ne!(again[1], first[0]);
}

/// IMDSv2 as EC2 serves it: a session token from a PUT first, required on every GET (401 without).
#[derive(Default)]
struct Imds {
    tokens: Mutex<Vec<String>>,
    unauthorized: AtomicUsize,
    credential_hits: AtomicUsize,
    expires_in: AtomicI64,
    no_role: AtomicBool,
}

async fn imds_token(State(s): State<Arc<Imds>>, headers: HeaderMap) -> Response {
    let ttl = header(&headers, "x-aws-ec2-metadata-token-ttl-seconds")
        .and_then(|t| t.parse::<u32>().ok());
    if !ttl.is_some_and(|t| (1..=21600).contains(&t)) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let mut tokens = s.tokens.lock().unwrap();
    let token = format!("imds-session-{}", tokens.len() + 1);
    tokens.push(token.clone());
    token.into_response()
}

fn imds_authorized(s: &Imds, headers: &HeaderMap) -> bool {
    let ok = header(headers, "x-aws-ec2-metadata-token")
        .is_some_and(|t| s.tokens.lock().unwrap().contains(&t));
    if !ok {
        s.unauthorized.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

async fn imds_roles(State(s): State<Arc<Imds>>, headers: HeaderMap) -> Response {
    if !imds_authorized(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if s.no_role.load(Ordering::SeqCst) {
        return StatusCode::NOT_FOUND.into_response();
    }
    "kubetrail-node\n".into_response()
}

async fn imds_role(State(s): State<Arc<Imds>>, headers: HeaderMap) -> Response {
    if !imds_authorized(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let n = s.credential_hits.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(serde_json::json!({
        "Code": "Success",
        "LastUpdated": in_secs(0),
        "Type": "AWS-HMAC",
        "AccessKeyId": format!("ASIAIMDS{n}"),
        "SecretAccessKey": format!("imds-secret-{n}"),
        "Token": format!("imds-session-token-{n}"),
        "Expiration": in_secs(s.expires_in.load(Ordering::SeqCst)),
    }))
    .into_response()
}

#[tokio::test]
async fn instance_metadata_v2_is_the_last_resort() {
    let state = Arc::new(Imds::default());
    state.expires_in.store(6 * 3600, Ordering::SeqCst);
    let app = Router::new()
        .route("/latest/api/token", put(imds_token))
        .route(
            "/latest/meta-data/iam/security-credentials/",
            get(imds_roles),
        )
        .route(
            "/latest/meta-data/iam/security-credentials/kubetrail-node",
            get(imds_role),
        )
        .with_state(state.clone());
    let port = serve(app).await;
    let endpoint = format!("http://127.0.0.1:{port}");

    // The fake is as strict as EC2: no session token, no metadata.
    let plain = kubetrail_sinks::http::HttpClient::new(&endpoint, &HttpConfig::default()).unwrap();
    let resp = plain
        .send(kubetrail_sinks::http::Request::new(
            axum::http::Method::GET,
            "/latest/meta-data/iam/security-credentials/",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    state.unauthorized.store(0, Ordering::SeqCst);

    let p = provider(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str())]).unwrap();
    assert!(
        p.source().starts_with("EC2 instance metadata (IMDSv2)"),
        "{}",
        p.source()
    );
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAIMDS1");
    assert_eq!(c.secret_access_key.expose(), "imds-secret-1");
    assert_eq!(c.session_token.unwrap().expose(), "imds-session-token-1");
    assert_eq!(state.tokens.lock().unwrap().len(), 1);
    assert_eq!(state.unauthorized.load(Ordering::SeqCst), 0);
    // Valid for hours: cached.
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAIMDS1");
    assert_eq!(state.credential_hits.load(Ordering::SeqCst), 1);

    // Expiring within 5 minutes: fetched again, with a new session token.
    state.expires_in.store(240, Ordering::SeqCst);
    let p = provider(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str())]).unwrap();
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAIMDS2");
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIAIMDS3");
    assert_eq!(state.tokens.lock().unwrap().len(), 3);
    assert_eq!(state.unauthorized.load(Ordering::SeqCst), 0);

    // An instance without a role says so.
    state.no_role.store(true, Ordering::SeqCst);
    let p = provider(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str())]).unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(
        e.contains("no IAM role") && e.contains("instance profile"),
        "{e}"
    );

    // Anything else configured comes first.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = s\n",
    )
    .unwrap();
    let p = provider(&[
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
        ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
    ])
    .unwrap();
    assert_eq!(p.credentials().await.unwrap().access_key_id, "AKIAFILE");
    assert!(
        provider(&[
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ])
        .is_err()
    );
}

#[tokio::test]
async fn without_instance_metadata_the_chain_fails_fast_and_says_what_to_set() {
    // Nothing listens: refused at once.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let p = provider(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed.as_str())]).unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(
        e.starts_with("AWS credentials from EC2 instance metadata (IMDSv2)"),
        "{e}"
    );
    assert!(
        e.contains("no AWS credentials") && e.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{e}"
    );
    assert!(e.contains("AWS_EC2_METADATA_DISABLED=true"), "{e}");
    assert!(e.contains("credential_process are not supported"), "{e}");

    // Something accepts connections but never answers (a filtered link-local address): the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let p = provider(&[
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", silent_url.as_str()),
        ("AWS_METADATA_SERVICE_TIMEOUT", "0.5"),
    ])
    .unwrap();
    let start = Instant::now();
    let e = p.credentials().await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        e.contains("did not answer") && e.contains("no answer within"),
        "{e}"
    );
    drop(silent);

    // The default address, with the default timeout, fails within seconds off EC2 (or answers on it).
    let p = provider(&[]).unwrap();
    let start = Instant::now();
    let _ = p.credentials().await;
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

/// A fake STS: the form fields of each `AssumeRoleWithWebIdentity`, answered with credentials expiring within
/// 5 minutes, or an `AccessDenied` for the role `arn:aws:iam::123456789012:role/denied`.
#[derive(Default)]
struct Sts {
    forms: Mutex<Vec<HashMap<String, String>>>,
}

async fn fake_sts(State(s): State<Arc<Sts>>, body: String) -> Response {
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect();
    let denied =
        form.get("RoleArn").map(String::as_str) == Some("arn:aws:iam::123456789012:role/denied");
    let n = {
        let mut forms = s.forms.lock().unwrap();
        forms.push(form);
        forms.len()
    };
    if denied {
        return (
            StatusCode::FORBIDDEN,
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
             <Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>\
             </Error><RequestId>r</RequestId></ErrorResponse>",
        )
            .into_response();
    }
    format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleWithWebIdentityResult><Credentials><SessionToken>sts-session-{n}</SessionToken>\
         <SecretAccessKey>sts-secret-{n}</SecretAccessKey><Expiration>{}</Expiration>\
         <AccessKeyId>ASIASTS{n}</AccessKeyId></Credentials></AssumeRoleWithWebIdentityResult>\
         </AssumeRoleWithWebIdentityResponse>",
        in_secs(60)
    )
    .into_response()
}

#[tokio::test]
async fn web_identity_rereads_the_rotated_token_and_reports_sts_errors() {
    let state = Arc::new(Sts::default());
    let port = serve(
        Router::new()
            .route("/", post(fake_sts))
            .with_state(state.clone()),
    )
    .await;
    let sts = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "jwt-one\n").unwrap();
    let token_path = token_file.to_str().unwrap();
    let vars = |role: &'static str| {
        vec![
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path),
            ("AWS_ROLE_ARN", role),
            ("AWS_ENDPOINT_URL_STS", sts.as_str()),
            // Web identity comes before the container credentials and keys in a file.
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials"),
        ]
    };
    let p = provider(&vars("arn:aws:iam::123456789012:role/kubetrail")).unwrap();
    assert_eq!(p.credentials().await.unwrap().access_key_id, "ASIASTS1");
    std::fs::write(&token_file, "jwt-two").unwrap();
    let c = p.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIASTS2");
    assert_eq!(c.session_token.unwrap().expose(), "sts-session-2");
    {
        let forms = state.forms.lock().unwrap();
        let f = &forms[0];
        assert_eq!(f["Action"], "AssumeRoleWithWebIdentity");
        assert_eq!(f["Version"], "2011-06-15");
        assert_eq!(f["RoleArn"], "arn:aws:iam::123456789012:role/kubetrail");
        assert_eq!(f["RoleSessionName"], "kubetrail");
        assert_eq!(f["WebIdentityToken"], "jwt-one");
        assert_eq!(forms[1]["WebIdentityToken"], "jwt-two");
    }

    let p = provider(&vars("arn:aws:iam::123456789012:role/denied")).unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(
        e.contains("web identity (role `arn:aws:iam::123456789012:role/denied`"),
        "{e}"
    );
    assert!(e.contains("HTTP 403 AccessDenied"), "{e}");
    assert!(!e.contains("jwt-two"), "{e}");

    std::fs::remove_file(&token_file).unwrap();
    let p = provider(&vars("arn:aws:iam::123456789012:role/kubetrail")).unwrap();
    let e = p.credentials().await.unwrap_err();
    assert!(
        e.contains(token_path) && e.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{e}"
    );
}

#[tokio::test]
async fn web_identity_credentials_from_moto_sign_s3_requests() {
    // moto checks signatures and permissions after the first three requests: the role, its policy, and the
    // unsigned AssumeRoleWithWebIdentity (which moto's checker would refuse for lacking a signature).
    let server = Server::moto(Some(3));
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/iam/aws4_request, \
                SignedHeaders=host, Signature=00\r\n";
    let created = post_form(
        server.port,
        auth,
        "Action=CreateRole&RoleName=kubetrail&AssumeRolePolicyDocument=%7B%7D&Version=2010-05-08",
    );
    assert!(
        created.contains("arn:aws:iam::123456789012:role/kubetrail"),
        "{created}"
    );
    let policy = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C\
                  %22Action%22%3A%22%2A%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D";
    post_form(
        server.port,
        auth,
        &format!(
            "Action=PutRolePolicy&RoleName=kubetrail&PolicyName=all&PolicyDocument={policy}&Version=2010-05-08"
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2ln",
    )
    .unwrap();
    let sts = format!("http://127.0.0.1:{}", server.port);
    let p = Arc::new(
        provider(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kubetrail"),
            ("AWS_ENDPOINT_URL_STS", sts.as_str()),
        ])
        .unwrap(),
    );
    let client = s3(server.port, &p);
    client.create_bucket(false).await.unwrap();
    let c = p.credentials().await.unwrap();
    assert!(c.access_key_id.starts_with("ASIA"), "{}", c.access_key_id);
    assert!(c.session_token.is_some());
    client
        .put_object(
            "audit/one.json",
            Bytes::from_static(b"{\"a\":1}"),
            "application/json",
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        client.get_object("audit/one.json", None).await.unwrap(),
        Bytes::from_static(b"{\"a\":1}")
    );

    // moto really checks: other keys are refused.
    let other = S3::new(S3Config {
        endpoint: Some(sts.clone()),
        region: "us-east-1".into(),
        bucket: "kubetrail-archive".into(),
        path_style: None,
        credentials: Some(kubetrail_sinks::s3::Credentials::new("AKIAUNKNOWN", "nope")),
        http: HttpConfig::default(),
    })
    .unwrap();
    let e = other.get_object("audit/one.json", None).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            Some("InvalidAccessKeyId" | "AccessDenied" | "SignatureDoesNotMatch")
        ),
        "{e}"
    );
}
