//! AWS credentials from the parts of the standard chain that need no SDK: explicit configuration, the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), and static keys in the
//! shared credentials file (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile `AWS_PROFILE` or
//! `default`).
//!
//! Not supported, and named in the error when nothing else is found: the EC2 instance metadata service (IMDS),
//! ECS/EKS container credentials, IAM Roles for Service Accounts and other web identity tokens, SSO, profiles
//! that assume a role or run a `credential_process`. Credentials are read once, when the client is made:
//! temporary ones need a restart when they expire.

use std::path::{Path, PathBuf};

use crate::{Error, Secret};

/// An access key.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The access key id (not secret: it names the key).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

impl Credentials {
    /// Static credentials.
    pub fn new(access_key_id: &str, secret_access_key: &str) -> Credentials {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: Secret::new(secret_access_key),
            session_token: None,
        }
    }

    /// The first of: the environment, the shared credentials file's profile.
    pub fn from_chain() -> Result<Credentials, Error> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: Secret::new(secret),
                session_token: env("AWS_SESSION_TOKEN").map(Secret::new),
            });
        }
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let file = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".aws/credentials")));
        if let Some(file) = file
            && let Ok(text) = std::fs::read_to_string(&file)
        {
            return from_profile(&text, &profile).map_err(|why| {
                Error::Config(format!(
                    "AWS credentials file `{}`, profile `{profile}`: {why}",
                    file.display()
                ))
            });
        }
        let hint = if env("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() {
            " (AWS_WEB_IDENTITY_TOKEN_FILE is set: web identity / IRSA is not supported)"
        } else if env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || env("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        {
            " (container credentials are set: ECS/EKS Pod Identity is not supported)"
        } else {
            ""
        };
        Err(Error::Config(format!(
            "no AWS credentials: set them in the sink's config, in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (and AWS_SESSION_TOKEN), or as static keys in ~/.aws/credentials (AWS_PROFILE, \
             AWS_SHARED_CREDENTIALS_FILE); instance metadata (IMDS), container credentials, web identity, SSO, \
             assumed roles and credential_process are not supported{hint}"
        )))
    }
}

/// The static keys of `[profile]` in a credentials file.
fn from_profile(text: &str, profile: &str) -> Result<Credentials, String> {
    let mut in_section = false;
    let mut found = false;
    let (mut id, mut secret, mut token) = (None, None, None);
    let mut unsupported = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_section =
                name == profile || name.strip_prefix("profile ").map(str::trim) == Some(profile);
            found |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().to_string());
        match k {
            "aws_access_key_id" => id = Some(v),
            "aws_secret_access_key" => secret = Some(v),
            "aws_session_token" => token = Some(v),
            "role_arn"
            | "source_profile"
            | "credential_process"
            | "sso_session"
            | "sso_start_url"
            | "web_identity_token_file" => unsupported = Some(k.to_string()),
            _ => {}
        }
    }
    match (found, id, secret) {
        (false, ..) => Err("no such profile".into()),
        (true, Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: token.map(Secret::new),
        }),
        (true, ..) => Err(match unsupported {
            Some(k) => format!(
                "`{k}` is not supported: only static aws_access_key_id/aws_secret_access_key"
            ),
            None => "no aws_access_key_id and aws_secret_access_key".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_of_the_credentials_file() {
        let text = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s1\n\n# comment\n[archive]\n\
                    aws_access_key_id=AKIA2\naws_secret_access_key=s2\naws_session_token = t2\n[role]\nrole_arn = arn:x\n";
        let c = from_profile(text, "default").unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.expose()),
            ("AKIA1", "s1")
        );
        assert!(c.session_token.is_none());
        let c = from_profile(text, "archive").unwrap();
        assert_eq!(c.session_token.unwrap().expose(), "t2");
        assert!(
            from_profile(text, "role")
                .unwrap_err()
                .contains("`role_arn` is not supported")
        );
        assert_eq!(from_profile(text, "nope").unwrap_err(), "no such profile");
        let shown = format!("{:?}", from_profile(text, "archive").unwrap());
        assert!(!shown.contains("s2") && !shown.contains("t2"), "{shown}");
    }
}
