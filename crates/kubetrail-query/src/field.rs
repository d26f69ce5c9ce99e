//! Fields: the short names and their store columns, and paths into the event.

use kubetrail_model::EVENT_KEYS;

/// What an expression compares: a column of the store, or a path into the event's JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A column of the store, by its column name (`groups`, `api_group`...); see [`Column`].
    Column(&'static str),
    /// A dotted path into the event (`objectRef.namespace` is `["objectRef", "namespace"]`).
    JsonPath(Vec<String>),
}

/// How a column is typed in the store, which decides its SQL form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// `Utf8`; `nullable` when the store may leave it null (missing in the event).
    Text { nullable: bool },
    /// `List<Utf8>`: a comparison holds when it holds for any element.
    List,
    /// `Int32`, nullable.
    Int,
}

/// A short name of the expression language and the column and event path it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The name written in expressions (`group`).
    pub short: &'static str,
    /// The store's column (`groups`).
    pub column: &'static str,
    pub kind: ColumnKind,
    /// Where the value is in the event's JSON, one key per element; empty for `cluster`, which is not in
    /// the event.
    pub event_path: &'static [&'static str],
}

const fn text(short: &'static str, column: &'static str, path: &'static [&'static str]) -> Column {
    Column {
        short,
        column,
        kind: ColumnKind::Text { nullable: true },
        event_path: path,
    }
}

const fn always(
    short: &'static str,
    column: &'static str,
    path: &'static [&'static str],
) -> Column {
    Column {
        short,
        column,
        kind: ColumnKind::Text { nullable: false },
        event_path: path,
    }
}

impl Column {
    /// Every short name, in the order of the documentation.
    pub const ALL: &'static [Column] = &[
        text("user", "user", &["user", "username"]),
        Column {
            short: "group",
            column: "groups",
            kind: ColumnKind::List,
            event_path: &["user", "groups"],
        },
        always("verb", "verb", &["verb"]),
        text("resource", "resource", &["objectRef", "resource"]),
        text("subresource", "subresource", &["objectRef", "subresource"]),
        text("namespace", "namespace", &["objectRef", "namespace"]),
        text("name", "name", &["objectRef", "name"]),
        text("apigroup", "api_group", &["objectRef", "apiGroup"]),
        Column {
            short: "code",
            column: "code",
            kind: ColumnKind::Int,
            event_path: &["responseStatus", "code"],
        },
        Column {
            short: "ip",
            column: "source_ips",
            kind: ColumnKind::List,
            event_path: &["sourceIPs"],
        },
        text("useragent", "user_agent", &["userAgent"]),
        always("stage", "stage", &["stage"]),
        always("level", "level", &["level"]),
        always("auditid", "audit_id", &["auditID"]),
        always("uri", "uri", &["requestURI"]),
        text(
            "decision",
            "decision",
            &["annotations", "authorization.k8s.io/decision"],
        ),
        text(
            "impersonated",
            "impersonated_user",
            &["impersonatedUser", "username"],
        ),
        always("cluster", "cluster", &[]),
    ];

    /// The short name `name` stands for, ASCII case-insensitively.
    pub fn by_short(name: &str) -> Option<&'static Column> {
        Column::ALL
            .iter()
            .find(|c| c.short.eq_ignore_ascii_case(name))
    }

    /// The short name of a store column.
    pub fn by_column(column: &str) -> Option<&'static Column> {
        Column::ALL.iter().find(|c| c.column == column)
    }
}

impl Field {
    /// The column's description, for a [`Field::Column`].
    pub fn column(&self) -> Option<&'static Column> {
        match self {
            Field::Column(name) => Column::by_column(name),
            Field::JsonPath(_) => None,
        }
    }
}

/// Why a word is not a field.
pub(crate) enum FieldError {
    Unknown { suggestion: Option<&'static str> },
    EmptySegment,
    Wildcard,
}

/// The field a word names: a short name, an event key, or a dotted path.
pub(crate) fn resolve(word: &str) -> Result<Field, FieldError> {
    if let Some(column) = Column::by_short(word) {
        return Ok(Field::Column(column.column));
    }
    if word.contains(['*', '?']) {
        return Err(FieldError::Wildcard);
    }
    if word.contains('.') {
        let segments: Vec<String> = word.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(FieldError::EmptySegment);
        }
        return Ok(path_or_column(segments));
    }
    if EVENT_KEYS.contains(&word) {
        return Ok(path_or_column(vec![word.to_owned()]));
    }
    Err(FieldError::Unknown {
        suggestion: suggest(word),
    })
}

/// A path the store keeps as a column (`objectRef.name` is `name`) reads the column, which statistics and
/// bloom filters prune, instead of every event's JSON; the column's semantics are the path's (the short names
/// are defined by these paths).
fn path_or_column(segments: Vec<String>) -> Field {
    match Column::ALL.iter().find(|c| {
        // Not `code`: a path compares text with text, an integer column would refuse `code = "x"`.
        c.kind != ColumnKind::Int
            && !c.event_path.is_empty()
            && c.event_path.iter().eq(segments.iter())
    }) {
        Some(c) => Field::Column(c.column),
        None => Field::JsonPath(segments),
    }
}

/// The short name closest to a mistyped one, if any is close: within an edit distance of a third of the
/// length (at least 1), or a prefix of it (`username` -> `user`).
fn suggest(word: &str) -> Option<&'static str> {
    let word = word.to_ascii_lowercase().replace(['_', '-'], "");
    let mut best: Option<(usize, &'static str)> = None;
    for column in Column::ALL {
        let distance = levenshtein(&word, column.short);
        let close = distance <= (word.chars().count() / 3).max(1)
            || (column.short.len() >= 3 && word.starts_with(column.short));
        if close && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, column.short));
        }
    }
    best.map(|(_, short)| short)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let check = |word: &str, expect: Option<&str>| assert_eq!(suggest(word), expect, "{word}");
        check("usr", Some("user"));
        check("users", Some("user"));
        check("groups", Some("group"));
        check("namesapce", Some("namespace"));
        check("api_group", Some("apigroup"));
        check("user_agent", Some("useragent"));
        check("username", Some("user"));
        check("verbs", Some("verb"));
        check("status", None);
        check("x", None);
    }

    #[test]
    fn every_column_resolves_by_its_short_name() {
        for column in Column::ALL {
            assert_eq!(Column::by_column(column.column), Some(column));
            assert!(matches!(resolve(column.short), Ok(Field::Column(c)) if c == column.column));
            assert!(matches!(
                resolve(&column.short.to_uppercase()),
                Ok(Field::Column(_))
            ));
        }
    }
}
