//! Who is behind an authenticated identity, as far as its authenticator said in `user.extra`:
//!
//! - an EKS identity's AWS principal and session (aws-iam-authenticator and EKS access entries set `arn`,
//!   `canonicalArn`, `sessionName`, `accessKeyId`, `principalId`);
//! - the pod and node a service account's bound token was issued for (`authentication.kubernetes.io/pod-name`,
//!   `pod-uid`, `node-name`, `node-uid`);
//! - the credential itself (`authentication.kubernetes.io/credential-id`: `JTI=` of a token, `X509SHA256=` of a
//!   client certificate; EKS's `accessKeyId`).
//!
//! An assumed role's session name is chosen by whoever called `sts:AssumeRole` unless the role's trust policy
//! pins it (`sts:RoleSessionName`, `sts:SourceIdentity`): it names the human behind the role only as far as
//! that caller is trusted, and [`Principal::summary`] says "session", never "user". Pure and total: values
//! that are not strings are ignored, and every value is cut at [`MAX_VALUE`] characters (an authenticator
//! may map a client's claims into `extra`).

use serde::Serialize;
use serde_json::{Map, Value};

/// Kubernetes' credential identifier (`JTI=…` of a service-account token, `X509SHA256=…` of a certificate).
pub const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
/// The pod a bound service-account token was issued for.
pub const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// The node of the pod a bound token was issued for.
pub const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const NODE_UID: &str = "authentication.kubernetes.io/node-uid";

/// The `extra` keys read here; every other key is listed as it is by whoever shows an identity.
pub const KNOWN_KEYS: [&str; 10] = [
    CREDENTIAL_ID,
    POD_NAME,
    POD_UID,
    NODE_NAME,
    NODE_UID,
    "arn",
    "canonicalArn",
    "sessionName",
    "accessKeyId",
    "principalId",
];

/// The longest value kept, in characters.
pub const MAX_VALUE: usize = 512;

/// What `user.extra` says about who is behind an identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The credential the request was made with: `credential-id`, else EKS's `accessKeyId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSession>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<BoundPod>,
}

/// An AWS principal as EKS names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AwsSession {
    /// The session's ARN (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`) or an IAM user's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// The role or user itself (`arn:aws:iam::ACCOUNT:role/ROLE`).
    #[serde(rename = "canonicalArn", skip_serializing_if = "Option::is_none")]
    pub canonical_arn: Option<String>,
    /// The session name its assumer chose.
    #[serde(rename = "sessionName", skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    #[serde(rename = "accessKeyId", skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(rename = "principalId", skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
}

/// The pod (and node) a service account's bound token was issued for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BoundPod {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(rename = "nodeUid", skip_serializing_if = "Option::is_none")]
    pub node_uid: Option<String>,
}

/// The first string of `extra[key]` (a list of strings, or a string), cut at [`MAX_VALUE`] characters.
pub fn first(extra: &Map<String, Value>, key: &str) -> Option<String> {
    let v = match extra.get(key)? {
        Value::Array(items) => items.iter().find_map(Value::as_str)?,
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    (!v.is_empty()).then(|| v.chars().take(MAX_VALUE).collect())
}

impl Principal {
    /// What `extra` (the `user.extra` object) says.
    pub fn from_extra(extra: &Map<String, Value>) -> Principal {
        Principal::from_lookup(|k| first(extra, k))
    }

    /// What the first values of `user.extra`'s keys say, as `get` gives them (already cut).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Principal {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let aws = AwsSession {
            arn: get("arn"),
            canonical_arn: get("canonicalArn"),
            session_name: get("sessionName"),
            access_key_id: get("accessKeyId"),
            principal_id: get("principalId"),
        };
        let pod = get(POD_NAME).map(|name| BoundPod {
            name,
            uid: get(POD_UID),
            node: get(NODE_NAME),
            node_uid: get(NODE_UID),
        });
        Principal {
            credential: get(CREDENTIAL_ID).or_else(|| aws.access_key_id.clone()),
            aws: (aws != AwsSession::default()).then_some(aws),
            pod,
        }
    }

    /// What a stored `user` object's `extra` says (nothing when it has none or is not an object).
    pub fn from_user(user: &Value) -> Principal {
        match user.get("extra") {
            Some(Value::Object(extra)) => Principal::from_extra(extra),
            _ => Principal::default(),
        }
    }

    /// What a raw `user.extra` says.
    pub fn from_raw(extra: Option<&serde_json::value::RawValue>) -> Principal {
        extra
            .and_then(|raw| serde_json::from_str::<Map<String, Value>>(raw.get()).ok())
            .map(|m| Principal::from_extra(&m))
            .unwrap_or_default()
    }

    /// One line on who is behind `username`, when `extra` says more than the username: `AWS role
    /// eks-admins (account 111122223333), session dana@example.com` or `token of pod staging/web-7d9 on node
    /// ip-10-0-1-5`.
    pub fn summary(&self, username: &str) -> Option<String> {
        if let Some(aws) = &self.aws {
            return Some(aws.summary());
        }
        let pod = self.pod.as_ref()?;
        let ns = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .map(|(ns, _)| ns);
        let mut s = match ns {
            Some(ns) => format!("token of pod {ns}/{}", pod.name),
            None => format!("token of pod {}", pod.name),
        };
        if let Some(node) = &pod.node {
            s.push_str(&format!(" on node {node}"));
        }
        Some(s)
    }
}

/// The parts of an AWS ARN: `(account, resource)` of `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`.
fn arn_parts(arn: &str) -> Option<(&str, &str)> {
    let mut it = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some(_), Some(_), Some(account), Some(resource)) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) else {
        return None;
    };
    Some((account, resource))
}

impl AwsSession {
    /// `AWS role NAME (account N), session S`, `AWS IAM user NAME (account N)`, or the ARN as it is.
    pub fn summary(&self) -> String {
        // The role from the canonical ARN (`role/PATH/NAME`), else from the session ARN
        // (`assumed-role/NAME/SESSION`).
        let role = self
            .canonical_arn
            .as_deref()
            .and_then(arn_parts)
            .and_then(|(account, res)| {
                let (kind, path) = res.split_once('/')?;
                let name = path.rsplit('/').next()?;
                Some((account, kind, name))
            })
            .or_else(|| {
                let (account, res) = arn_parts(self.arn.as_deref()?)?;
                let mut parts = res.split('/');
                let kind = parts.next()?;
                let name = parts.next()?;
                Some((
                    account,
                    if kind == "assumed-role" { "role" } else { kind },
                    name,
                ))
            });
        let session = self.session_name.clone().or_else(|| {
            let (_, res) = arn_parts(self.arn.as_deref()?)?;
            let rest = res.strip_prefix("assumed-role/")?;
            rest.split_once('/').map(|(_, s)| s.to_string())
        });
        let mut s = match role {
            Some((account, "role", name)) => format!("AWS role {name} (account {account})"),
            Some((account, "user", name)) => format!("AWS IAM user {name} (account {account})"),
            Some((account, kind, name)) => format!("AWS {kind} {name} (account {account})"),
            None => match self.arn.as_deref().or(self.canonical_arn.as_deref()) {
                Some(arn) => format!("AWS principal {arn}"),
                None => "AWS principal".to_string(),
            },
        };
        if let Some(session) = session {
            s.push_str(&format!(", session {session}"));
        }
        s
    }
}

/// An address outside the private (RFC 1918), loopback, link-local, CGNAT (100.64/10), unspecified and IPv6
/// unique-local ranges; text that is not an address is not public.
pub fn is_public(ip: &str) -> bool {
    use std::net::IpAddr;
    let v4 = |a: std::net::Ipv4Addr| {
        let [o1, o2, ..] = a.octets();
        !(a.is_private()
            || a.is_loopback()
            || a.is_link_local()
            || a.is_unspecified()
            || (o1 == 100 && (64..128).contains(&o2)))
    };
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => v4(a),
        Ok(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(m) => v4(m),
            None => {
                let first = a.segments()[0];
                !(a.is_loopback()
                    || a.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn principal(extra: Value) -> Principal {
        Principal::from_user(&json!({ "extra": extra }))
    }

    #[test]
    fn an_eks_assumed_role_names_role_account_and_session() {
        // The shape of a real EKS event (Panther's test corpus), session name as SSO sets it.
        let p = principal(json!({
            "accessKeyId": ["ASIARLIVEKVNN6Y6J5UW"],
            "arn": ["arn:aws:sts::123412341234:assumed-role/DevAdministrator/dana@example.com"],
            "canonicalArn": ["arn:aws:iam::123412341234:role/DevAdministrator"],
            "sessionName": ["dana@example.com"],
        }));
        assert_eq!(p.credential.as_deref(), Some("ASIARLIVEKVNN6Y6J5UW"));
        assert_eq!(
            p.summary("kubernetes-admin").as_deref(),
            Some("AWS role DevAdministrator (account 123412341234), session dana@example.com")
        );
        // Without canonicalArn and sessionName, both come from the session ARN.
        let p = principal(json!({
            "arn": ["arn:aws:sts::123412341234:assumed-role/Ops/jo"],
        }));
        assert_eq!(
            p.summary("x").as_deref(),
            Some("AWS role Ops (account 123412341234), session jo")
        );
        let p = principal(json!({ "canonicalArn": ["arn:aws:iam::9:user/ci"] }));
        assert_eq!(
            p.summary("x").as_deref(),
            Some("AWS IAM user ci (account 9)")
        );
    }

    #[test]
    fn a_bound_token_names_its_pod_and_node() {
        let p = principal(json!({
            CREDENTIAL_ID: ["JTI=1b2c"],
            POD_NAME: ["web-7d9-abcde"],
            POD_UID: ["u1"],
            NODE_NAME: ["ip-10-0-1-5"],
        }));
        assert_eq!(p.credential.as_deref(), Some("JTI=1b2c"));
        assert_eq!(
            p.summary("system:serviceaccount:staging:web").as_deref(),
            Some("token of pod staging/web-7d9-abcde on node ip-10-0-1-5")
        );
        // A credential alone says nothing more than the username.
        let p = principal(json!({ CREDENTIAL_ID: ["X509SHA256=ab"] }));
        assert_eq!(p.summary("alice"), None);
        assert_eq!(p.credential.as_deref(), Some("X509SHA256=ab"));
    }

    #[test]
    fn odd_values_are_ignored_or_cut() {
        let p = principal(json!({ "arn": [1, {"a": 2}], POD_NAME: "x".repeat(5000) }));
        assert!(p.aws.is_none());
        assert_eq!(p.pod.map(|p| p.name.len()), Some(MAX_VALUE));
        assert_eq!(
            Principal::from_user(&json!({"extra": 3})),
            Principal::default()
        );
        assert_eq!(Principal::from_raw(None), Principal::default());
    }
}
