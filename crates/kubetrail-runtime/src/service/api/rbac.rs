//! `/api/v1/rbac/who-can` (`verb`, `resource`, `namespace`, `name`, `at`), `/api/v1/rbac/grants` (`user`:
//! what an identity was granted at `until`, and the changes to its grants from `since`), `/api/v1/rbac/diff`
//! (`since`, `until`: the grants added and removed, by whom) and `/api/v1/rbac/unused` (`user`, `since`: granted
//! against used, with the least-privilege Roles): RBAC at any moment, from the base snapshot
//! (`rbac_base`) that answers the moment and the RBAC writes recorded after it, as `kubetrail rbac` answers.
//! The handler chooses the base (the data directory is the collector's); the job reads it in the worker.

use serde::{Deserialize, Serialize};

use super::job::{Job, to_json};
use super::{ApiError, Params, QueryApi, answer, params};
use crate::rbac_base::{self, BaseFile};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use kubetrail_engine::{Engine, rbac};
use std::sync::Arc;

/// What is asked of RBAC at a moment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub(super) enum Ask {
    WhoCan {
        verb: String,
        resource: String,
        namespace: Option<String>,
        name: Option<String>,
    },
    Grants {
        user: String,
        since_us: Option<i64>,
    },
    Diff {
        since_us: i64,
    },
    Unused {
        user: String,
        since_us: i64,
    },
}

/// The job: the base chosen, the moment, the question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RbacJob {
    base: std::path::PathBuf,
    cluster: Option<String>,
    taken_us: i64,
    at_us: i64,
    ask: Ask,
}

/// Answers `job` on an engine opened over its base's scope (and, for an identity's groups and requests, one
/// over the store up to the moment).
pub(super) async fn run(
    engine: &Engine,
    source: &kubetrail_engine::Source,
    resources: &kubetrail_engine::Resources,
    job: RbacJob,
) -> Result<Vec<u8>, ApiError> {
    let cluster = job.cluster.clone();
    // The identity's requests from `since_us` to the moment; with neither, the whole store (its groups).
    let usage = |since_us: Option<i64>| {
        let scope = kubetrail_engine::Scope {
            cluster: cluster.clone(),
            since: since_us.and_then(|us| jiff::Timestamp::from_microsecond(us).ok()),
            until: since_us.and_then(|_| jiff::Timestamp::from_microsecond(job.at_us).ok()),
        };
        async move { Engine::open_any(source, &scope, resources).await }
    };
    let file = BaseFile {
        path: job.base,
        cluster: job.cluster,
        taken_us: job.taken_us,
    };
    let base = rbac_base::load(&file).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
        )
    })?;
    Ok(match job.ask {
        Ask::WhoCan {
            verb,
            resource,
            namespace,
            name,
        } => {
            let mut access = kubetrail_rbac::parse_access(&verb, &resource, namespace.as_deref())
                .map_err(|e| ApiError::bad(e.to_string()))?;
            if let Some(n) = &name {
                access = access.with_name(n);
            }
            to_json(&rbac::who_can(engine, &base, &access, job.at_us).await?)
        }
        Ask::Grants { user, since_us } => {
            let groups = rbac::groups_of(&usage(None).await?, &user, job.at_us).await?;
            let who = kubetrail_rbac::UserRef { name: user, groups };
            to_json(&rbac::grants(engine, &base, &who, since_us, job.at_us).await?)
        }
        Ask::Diff { since_us } => to_json(&rbac::diff(engine, &base, since_us, job.at_us).await?),
        Ask::Unused { user, since_us } => {
            let groups = rbac::groups_of(&usage(None).await?, &user, job.at_us).await?;
            let used = usage(Some(since_us)).await?;
            let who = kubetrail_rbac::UserRef { name: user, groups };
            to_json(&rbac::unused(engine, &used, &base, &who, since_us, job.at_us).await?)
        }
    })
}

fn time(name: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    v.as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(|s| crate::duration::parse_time(s).map(|t| t.as_microsecond()))
        .transpose()
        .map_err(|e| ApiError::bad(format!("`{name}`: {e}")))
}

/// Chooses the base for `at_us` and runs `ask` on it.
async fn ask(api: &QueryApi, p: &Params, at_us: i64, ask: Ask) -> Result<Response, ApiError> {
    let bases = rbac_base::list(&api.data).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{e:#}"),
        )
    })?;
    let file = rbac_base::choose(&bases, p.cluster.as_deref(), at_us)
        .map_err(|e| ApiError::new(axum::http::StatusCode::NOT_FOUND, e))?;
    let base_scope = rbac::Base {
        cluster: file.cluster.clone(),
        taken_us: file.taken_us,
        snapshot: kubetrail_rbac::Snapshot::default(),
    }
    .scope(at_us);
    let job = Job::Rbac(RbacJob {
        base: file.path.clone(),
        cluster: file.cluster.clone(),
        taken_us: file.taken_us,
        at_us,
        ask,
    });
    answer(api, base_scope, job).await
}

fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

/// `/api/v1/rbac/who-can`.
pub(super) async fn who_can(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only_rbac(
        "/api/v1/rbac/who-can",
        &["verb", "resource", "namespace", "name", "at"],
    )?;
    let at_us = time("at", &p.at)?.unwrap_or_else(now_us);
    let a = Ask::WhoCan {
        verb: p.required("verb", &p.verb)?.to_string(),
        resource: p.required("resource", &p.resource)?.to_string(),
        namespace: p.namespace.clone().filter(|n| !n.is_empty()),
        name: p.name.clone().filter(|n| !n.is_empty()),
    };
    // Refused here, before a slot is taken.
    if let Ask::WhoCan {
        verb,
        resource,
        namespace,
        ..
    } = &a
    {
        kubetrail_rbac::parse_access(verb, resource, namespace.as_deref())
            .map_err(|e| ApiError::bad(e.to_string()))?;
    }
    ask(&api, &p, at_us, a).await
}

/// `/api/v1/rbac/grants`: `user`'s grants at `until` (now), and their changes from `since`.
pub(super) async fn grants(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only_rbac("/api/v1/rbac/grants", &["user", "since", "until"])?;
    let user = p.required("user", &p.user)?.to_string();
    let at_us = time("until", &p.until)?.unwrap_or_else(now_us);
    let since_us = time("since", &p.since)?;
    ask(&api, &p, at_us, Ask::Grants { user, since_us }).await
}

/// `/api/v1/rbac/diff`: the grants added and removed from `since` (required) to `until` (now).
pub(super) async fn diff(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only_rbac("/api/v1/rbac/diff", &["since", "until"])?;
    let since_us = time("since", &p.since)?.ok_or_else(|| ApiError::bad("`since` is required"))?;
    let at_us = time("until", &p.until)?.unwrap_or_else(now_us);
    ask(&api, &p, at_us, Ask::Diff { since_us }).await
}

/// `/api/v1/rbac/unused`: `user`'s grants at `until` (now) against its requests from `since` (30 days ago).
pub(super) async fn unused(
    State(api): State<Arc<QueryApi>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let p = params(req).await?;
    p.only_rbac("/api/v1/rbac/unused", &["user", "since", "until"])?;
    let user = p.required("user", &p.user)?.to_string();
    let at_us = time("until", &p.until)?.unwrap_or_else(now_us);
    let since_us = time("since", &p.since)?.unwrap_or(at_us - 30 * 86_400 * 1_000_000);
    ask(&api, &p, at_us, Ask::Unused { user, since_us }).await
}
