//! The SQL predicate for DataFusion (forms and the reasons for them in the crate documentation).

use std::fmt::Write as _;

use crate::{ColumnKind, Expr, Field, Op, Value};

impl Expr {
    /// A SQL predicate over the store's columns for DataFusion's default (`generic`) dialect, true exactly on
    /// the rows whose event [`Expr::matches`]. JSON paths call the `kt_json_match` UDF, which the query
    /// engine must register (see the crate documentation).
    pub fn to_sql(&self) -> String {
        let mut out = String::new();
        write_expr(self, &mut out);
        out
    }
}

fn write_expr(expr: &Expr, out: &mut String) {
    match expr {
        Expr::And(terms) => write_joined(terms, " AND ", out),
        Expr::Or(terms) => write_joined(terms, " OR ", out),
        // The comparisons are null where a column is; `NOT NULL` is null, which would drop the row.
        Expr::Not(inner) => {
            out.push('(');
            write_expr(inner, out);
            out.push_str(") IS NOT TRUE");
        }
        Expr::Cmp { field, op, values } => write_cmp(field, *op, values, out),
    }
}

/// Terms joined flat up to this many; longer runs are split in halves, each parenthesized.
const FLAT_TERMS: usize = 4;

/// `a OR b OR c` parses as `(a OR b) OR c`: a run of n terms is a tree n deep, and the engine walks its trees
/// recursively. Long runs are written as balanced trees instead, about log2(n) deep.
fn write_joined(terms: &[Expr], separator: &str, out: &mut String) {
    if terms.len() > FLAT_TERMS {
        let (left, right) = terms.split_at(terms.len() / 2);
        for (i, half) in [left, right].into_iter().enumerate() {
            if i > 0 {
                out.push_str(separator);
            }
            out.push('(');
            write_joined(half, separator, out);
            out.push(')');
        }
        return;
    }
    for (i, term) in terms.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        if matches!(term, Expr::And(_) | Expr::Or(_)) {
            out.push('(');
            write_expr(term, out);
            out.push(')');
        } else {
            write_expr(term, out);
        }
    }
}

fn write_cmp(field: &Field, op: Op, values: &[Value], out: &mut String) {
    let column = match field {
        Field::JsonPath(segments) => return write_json(&segments.join("."), op, values, out),
        Field::Column(name) => *name,
    };
    let kind = field
        .column()
        .map_or(ColumnKind::Text { nullable: true }, |c| c.kind);
    let ident = format!("\"{}\"", column.replace('"', "\"\""));
    let literal = |value: &Value| match (kind, value) {
        (ColumnKind::Int, Value::Int(n)) => n.to_string(),
        (_, value) => string_literal(&value.text()),
    };
    let first = values
        .first()
        .map(literal)
        .unwrap_or_else(|| "NULL".to_owned());
    let list = || values.iter().map(literal).collect::<Vec<_>>().join(", ");
    let glob = || {
        values
            .first()
            .map(|v| v.text().into_owned())
            .unwrap_or_default()
    };
    let _ = match (kind, op) {
        (ColumnKind::List, Op::Eq) => write!(out, "array_has({ident}, {first})"),
        (ColumnKind::List, Op::In) if values.len() == 1 => {
            write!(out, "array_has({ident}, {first})")
        }
        (ColumnKind::List, Op::In) => write!(out, "array_has_any({ident}, make_array({}))", list()),
        (ColumnKind::List, Op::Ne) => write!(out, "(array_has({ident}, {first})) IS NOT TRUE"),
        (ColumnKind::List, Op::Glob) if glob().chars().all(|c| c == '*') => {
            write!(out, "cardinality({ident}) > 0")
        }
        (ColumnKind::List, Op::Glob) => write!(
            out,
            "regexp_like(concat(chr(31), array_to_string({ident}, chr(31)), chr(31)), {})",
            string_literal(&format!("\\x1f{}\\x1f", glob_to_element_regex(&glob())))
        ),
        (_, Op::Eq) => write!(out, "{ident} = {first}"),
        (_, Op::In) => write!(out, "{ident} IN ({})", list()),
        (ColumnKind::Text { nullable: false }, Op::Ne) => write!(out, "{ident} <> {first}"),
        // Parenthesized: the parser reads a whole expression after `IS DISTINCT FROM`, `AND` and `OR`
        // included (`a IS DISTINCT FROM 'x' AND b` is `a IS DISTINCT FROM ('x' AND b)`).
        (_, Op::Ne) => write!(out, "({ident} IS DISTINCT FROM {first})"),
        (ColumnKind::Int, Op::Glob) => {
            write!(
                out,
                "CAST({ident} AS VARCHAR) LIKE {} ESCAPE '\\'",
                string_literal(&glob_to_like(&glob()))
            )
        }
        (_, Op::Glob) => write!(
            out,
            "{ident} LIKE {} ESCAPE '\\'",
            string_literal(&glob_to_like(&glob()))
        ),
    };
}

fn write_json(path: &str, op: Op, values: &[Value], out: &mut String) {
    let (json_op, negate) = match op {
        Op::Eq | Op::In => ("=", false),
        Op::Ne => ("=", true),
        Op::Glob => ("~", false),
    };
    if negate {
        out.push_str("NOT ");
    }
    let _ = write!(
        out,
        "kt_json_match(\"event\", {}, '{json_op}'",
        string_literal(path)
    );
    for value in values {
        out.push_str(", ");
        out.push_str(&string_literal(&value.text()));
    }
    out.push(')');
}

/// A SQL string literal: in the generic dialect a backslash is an ordinary character, so doubling the
/// single quote is the only escaping there is.
fn string_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A glob as a LIKE pattern with `\` as its escape character.
fn glob_to_like(glob: &str) -> String {
    let mut like = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.push(c),
        }
    }
    like
}

/// A glob as a regular expression (Rust `regex` syntax) over one element of a list joined by U+001F: the
/// wildcards do not cross the separator.
fn glob_to_element_regex(glob: &str) -> String {
    let mut regex = String::with_capacity(glob.len());
    for c in glob.chars() {
        match c {
            '*' => regex.push_str("[^\\x1f]*"),
            '?' => regex.push_str("[^\\x1f]"),
            '\\' | '.' | '+' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' | '#' | '&'
            | '-' | '~' => {
                regex.push('\\');
                regex.push(c);
            }
            c => regex.push(c),
        }
    }
    regex
}

#[cfg(test)]
mod tests {
    use crate::parse;

    #[track_caller]
    fn check(input: &str, expect: &str) {
        let expr = parse(input).unwrap_or_else(|e| panic!("{input}:\n{e}"));
        assert_eq!(expr.to_sql(), expect, "{input}");
    }

    #[test]
    fn text_columns() {
        check("user = alice", r#""user" = 'alice'"#);
        check(
            "user = system:serviceaccount:kube-system:foo",
            r#""user" = 'system:serviceaccount:kube-system:foo'"#,
        );
        check(
            "user = alice@example.com",
            r#""user" = 'alice@example.com'"#,
        );
        check("USER = Alice", r#""user" = 'Alice'"#);
        check("verb != get", r#""verb" <> 'get'"#);
        check(
            "namespace != kube-system",
            r#"("namespace" IS DISTINCT FROM 'kube-system')"#,
        );
        check(
            "verb in (get, list, watch)",
            r#""verb" IN ('get', 'list', 'watch')"#,
        );
        check("resource in (secrets)", r#""resource" IN ('secrets')"#);
        check(
            "apigroup = rbac.authorization.k8s.io",
            r#""api_group" = 'rbac.authorization.k8s.io'"#,
        );
        check(
            "useragent ~ 'kubectl/*'",
            r#""user_agent" LIKE 'kubectl/%' ESCAPE '\'"#,
        );
        check("auditid = 841d3e6d", r#""audit_id" = '841d3e6d'"#);
        check("uri ~ */exec?*", r#""uri" LIKE '%/exec_%' ESCAPE '\'"#);
        check("decision = forbid", r#""decision" = 'forbid'"#);
        check(
            "impersonated != alice",
            r#"("impersonated_user" IS DISTINCT FROM 'alice')"#,
        );
        check("cluster = prod-eu", r#""cluster" = 'prod-eu'"#);
        check(
            "stage = ResponseComplete",
            r#""stage" = 'ResponseComplete'"#,
        );
        check("level != None", r#""level" <> 'None'"#);
        check("subresource = exec", r#""subresource" = 'exec'"#);
        check("name = ''", r#""name" = ''"#);
    }

    #[test]
    fn quoting_and_escaping() {
        check(r#"user = "b c""#, r#""user" = 'b c'"#);
        check(r#"user = 'o\'brien'"#, r#""user" = 'o''brien'"#);
        check(r#"user = "x' or 1=1 --""#, r#""user" = 'x'' or 1=1 --'"#);
        check(r#"user = 'a\\b'"#, r#""user" = 'a\b'"#);
        check(r#"user = "tab\there""#, "\"user\" = 'tab\there'");
        check(
            r#"name ~ "100%_sure\\*""#,
            r#""name" LIKE '100\%\_sure\\%' ESCAPE '\'"#,
        );
        check(r#"name ~ "it's*""#, r#""name" LIKE 'it''s%' ESCAPE '\'"#);
        check(r#"verb = "and""#, r#""verb" = 'and'"#);
    }

    #[test]
    fn code_is_an_integer() {
        check("code = 403", r#""code" = 403"#);
        check("code = '404'", r#""code" = 404"#);
        check("code != 200", r#"("code" IS DISTINCT FROM 200)"#);
        check("code in (401, 403)", r#""code" IN (401, 403)"#);
        check(
            "code ~ 4??",
            r#"CAST("code" AS VARCHAR) LIKE '4__' ESCAPE '\'"#,
        );
        check(
            "code ~ 5*",
            r#"CAST("code" AS VARCHAR) LIKE '5%' ESCAPE '\'"#,
        );
    }

    #[test]
    fn array_columns() {
        check(
            "group = system:masters",
            r#"array_has("groups", 'system:masters')"#,
        );
        check(
            "group in (system:masters)",
            r#"array_has("groups", 'system:masters')"#,
        );
        check(
            "group in (system:masters, \"o'k\")",
            r#"array_has_any("groups", make_array('system:masters', 'o''k'))"#,
        );
        check(
            "group != system:masters",
            r#"(array_has("groups", 'system:masters')) IS NOT TRUE"#,
        );
        check(
            "group ~ system:serviceaccounts:*",
            r#"regexp_like(concat(chr(31), array_to_string("groups", chr(31)), chr(31)), '\x1fsystem:serviceaccounts:[^\x1f]*\x1f')"#,
        );
        check(
            "ip ~ 10.0.?.*",
            r#"regexp_like(concat(chr(31), array_to_string("source_ips", chr(31)), chr(31)), '\x1f10\.0\.[^\x1f]\.[^\x1f]*\x1f')"#,
        );
        check(
            r#"group ~ "a(b)|c[d]+e$\\""#,
            r#"regexp_like(concat(chr(31), array_to_string("groups", chr(31)), chr(31)), '\x1fa\(b\)\|c\[d\]\+e\$\\\x1f')"#,
        );
        check("group ~ *", r#"cardinality("groups") > 0"#);
        check("ip = ::1", r#"array_has("source_ips", '::1')"#);
    }

    #[test]
    fn json_paths() {
        check(
            "requestObject.spec.containers.image ~ '*:latest'",
            r#"kt_json_match("event", 'requestObject.spec.containers.image', '~', '*:latest')"#,
        );
        // Paths the store keeps as columns read the columns.
        check(
            "objectRef.namespace = default",
            r#""namespace" = 'default'"#,
        );
        check("user.groups = dev", r#"array_has("groups", 'dev')"#);
        check(
            "user.extra != x",
            r#"NOT kt_json_match("event", 'user.extra', '=', 'x')"#,
        );
        check(
            "responseStatus.code in (403, \"it's\")",
            r#"kt_json_match("event", 'responseStatus.code', '=', '403', 'it''s')"#,
        );
        check("requestURI = /healthz", r#""uri" = '/healthz'"#);
        check(
            "annotations.authorization.k8s.io/decision = forbid",
            r#"kt_json_match("event", 'annotations.authorization.k8s.io/decision', '=', 'forbid')"#,
        );
    }

    #[test]
    fn boolean_structure() {
        check(
            "user = a and verb = get",
            r#""user" = 'a' AND "verb" = 'get'"#,
        );
        check(
            "user = a or verb = get and code = 1",
            r#""user" = 'a' OR ("verb" = 'get' AND "code" = 1)"#,
        );
        check(
            "(user = a or verb = get) and code = 1",
            r#"("user" = 'a' OR "verb" = 'get') AND "code" = 1"#,
        );
        check(
            "user = a and verb = b and name = c",
            r#""user" = 'a' AND "verb" = 'b' AND "name" = 'c'"#,
        );
        check(
            "user = a and (verb = b and name = c)",
            r#""user" = 'a' AND "verb" = 'b' AND "name" = 'c'"#,
        );
        check("not user = a", r#"("user" = 'a') IS NOT TRUE"#);
        check(
            "not not user = a",
            r#"(("user" = 'a') IS NOT TRUE) IS NOT TRUE"#,
        );
        check(
            "not (user = a or verb = b)",
            r#"("user" = 'a' OR "verb" = 'b') IS NOT TRUE"#,
        );
        check(
            "not user = a and verb = b",
            r#"("user" = 'a') IS NOT TRUE AND "verb" = 'b'"#,
        );
        check(
            "verb NOT IN (get, list)",
            r#"("verb" IN ('get', 'list')) IS NOT TRUE"#,
        );
        check(
            "user=a AND(verb=b OR verb=c)",
            r#""user" = 'a' AND ("verb" = 'b' OR "verb" = 'c')"#,
        );
        check("  user\t=\n a  ", r#""user" = 'a'"#);
    }

    #[test]
    fn long_runs_are_balanced() {
        check(
            "user = a or user = b or user = c or user = d or user = e",
            r#"("user" = 'a' OR "user" = 'b') OR ("user" = 'c' OR "user" = 'd' OR "user" = 'e')"#,
        );
        // 1,000 terms: about log2(1000) parentheses deep, never a chain of 1,000.
        let run = (0..1000)
            .map(|i| format!("verb = v{i}"))
            .collect::<Vec<_>>()
            .join(" and ");
        let sql = parse(&run).unwrap().to_sql();
        let (mut depth, mut deepest) = (0usize, 0usize);
        for c in sql.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            deepest = deepest.max(depth);
        }
        assert_eq!(deepest, 8, "{sql}");
        assert_eq!(sql.matches(" AND ").count(), 999);
    }
}
