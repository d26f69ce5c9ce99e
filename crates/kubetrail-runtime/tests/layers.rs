//! The runtime's modules form layers (lib.rs lists them): a module uses only modules of lower layers or of
//! its own group, so no import circles can form. A `crate::` path that climbs up fails here, naming the file.

use std::path::Path;

/// Lowest first. A module may use those in earlier entries and its own entry.
const LAYERS: &[&[&str]] = &[
    &["text", "duration"],
    &["logging"],
    &["data", "integrity_key", "rbac_base"],
    &["input"],
    &["delivery"],
    &["alerting"],
    &["shipping"],
    &["config"],
    &["service"],
];

/// Inside a group, submodules are ordered too, lowest first.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "alerting",
        &["store", "rules", "suppress", "payload", "outbox", "live"],
    ),
    ("shipping", &["archive", "worker", "config"]),
    (
        "service",
        &["housekeeping", "reload", "api", "console", "collector"],
    ),
];

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/layers.rs"))
}

fn rank(group: &str, sub: &str) -> Option<usize> {
    GROUPS
        .iter()
        .find(|(g, _)| *g == group)
        .and_then(|(_, subs)| subs.iter().position(|s| *s == sub))
}

/// `(top, sub)` of every `crate::top::sub` path in `text` (`sub` empty when there is none).
fn uses(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let top = ident(rest);
        let sub = rest[top.len()..]
            .strip_prefix("::")
            .map(ident)
            .unwrap_or_default();
        out.push((top, sub));
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["lib"] {
            continue;
        }
        let (top, sub) = (parts[0].clone(), parts.get(1).cloned().unwrap_or_default());
        if !sub.is_empty() && sub != "mod" && GROUPS.iter().any(|(g, _)| *g == top) {
            assert!(
                rank(&top, &sub).is_some(),
                "{}: place `{sub}` in the `{top}` group of tests/layers.rs",
                rel.display()
            );
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (used, used_sub) in uses(&text) {
            if used == top {
                // Inside a group: only lower submodules (or the group's mod.rs).
                if let (Some(me), Some(it)) = (rank(&top, &sub), rank(&top, &used_sub))
                    && it > me
                {
                    problems.push(format!("{}: uses crate::{used}::{used_sub}", rel.display()));
                }
            } else if layer(&used) > layer(&top) {
                problems.push(format!("{}: uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "modules reach up a layer:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_a_path_that_climbs() {
    assert_eq!(
        uses("use crate::service::api; x = crate::text::csv_field(y)"),
        [
            ("service".to_string(), "api".to_string()),
            ("text".to_string(), "csv_field".to_string())
        ]
    );
    assert!(layer("service") > layer("alerting"));
    assert!(rank("alerting", "live") > rank("alerting", "store"));
}
