//! The web console, served by `kubetrail serve` at `/`: one HTML page and its script, style and chart
//! library, embedded in the binary at build time (`crates/kubetrail-runtime/console/`), no CDN. The page routes
//! (`/`, `/alerts`, `/alerts/{id}`, `/search`, `/events/{auditID}`, `/timeline`, `/scope`, `/history`, `/sessions`, `/identity`, `/rbac`, `/volume`) all
//! answer the same page, which reads its route from the URL and everything else from the API, so a link
//! such as an alert's `console` URL opens straight on its view.
//!
//! The server puts these routes behind the API's authentication: without a session a page redirects to
//! `/login`. Every answer carries the strict Content-Security-Policy (scripts and styles from this origin
//! only, no inline script), and the script writes attacker-controlled text (user agents, names, annotations)
//! only as text nodes, never as HTML.

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/vendor/uPlot.min.css"),
    ),
];

const INDEX: &str = include_str!("../../console/index.html");

/// The page routes and `/assets/{file}`.
pub fn router() -> Router {
    let mut r = Router::new().route("/assets/{file}", get(asset));
    for path in [
        "/",
        "/alerts",
        "/alerts/{id}",
        "/search",
        "/events/{id}",
        "/timeline",
        "/scope",
        "/history",
        "/sessions",
        "/identity",
        "/rbac",
        "/volume",
        "/clusters",
    ] {
        r = r.route(path, get(page));
    }
    r
}

async fn page() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, kind, bytes)) => (
            [
                (CONTENT_TYPE, *kind),
                (CACHE_CONTROL, "private, max-age=300"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_files_and_no_inline_script() {
        for src in [
            "/assets/app.js",
            "/assets/app.css",
            "/assets/uPlot.iife.min.js",
        ] {
            assert!(INDEX.contains(src), "{src}");
            let name = src.trim_start_matches("/assets/");
            assert!(
                ASSETS.iter().any(|(n, ..)| *n == name),
                "{name} is embedded"
            );
        }
        // Every <script> has a src: the CSP allows no inline script.
        for part in INDEX.split("<script").skip(1) {
            assert!(
                part.trim_start().starts_with("src="),
                "inline script: {part}"
            );
        }
        assert!(
            !INDEX.contains("style=\""),
            "inline style attributes break the CSP"
        );
    }
}
