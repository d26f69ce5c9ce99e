//! The `--where` expression language of `kubetrail query`.
//!
//! Owns the grammar ([`parse`] into an [`Expr`], with errors that point at the offending token), its
//! translation into a SQL predicate over the store's Parquet columns for Apache DataFusion
//! ([`Expr::to_sql`]), and its reference semantics on one event's JSON ([`Expr::matches`], also used
//! over the write-ahead log's recent tail). It does not run queries, read files or register anything: the
//! store does, and must register the `kt_json_match` UDF described below. Pure: no IO, no async, total on
//! any input (property-tested).
//!
//! # Grammar
//!
//! ```text
//! expr    := or
//! or      := and ( "or" and )*
//! and     := unary ( "and" unary )*
//! unary   := "not" unary | "(" expr ")" | compare
//! compare := FIELD "=" VALUE | FIELD "!=" VALUE | FIELD "~" VALUE
//!          | FIELD "in" "(" VALUE ( "," VALUE )* ")"
//!          | FIELD "not" "in" "(" VALUE ( "," VALUE )* ")"     (sugar for: not FIELD in (...))
//! FIELD   := a short name (below, case-insensitive), a top-level key of the event (`requestURI`,
//!            `objectRef`, `annotations`...) or a dotted path into the event (`objectRef.namespace`,
//!            `requestObject.spec.containers.image`, `user.extra`); segments are bare characters without
//!            `*` and `?`
//! VALUE   := bare | 'single quoted' | "double quoted"
//! bare    := [A-Za-z0-9_.:/@*?-]+      (so `system:serviceaccount:kube-system:foo`, `a@b.com`, `::1`)
//! ```
//!
//! Precedence is `not` > `and` > `or`; the keywords `and`, `or`, `not` and `in` are case-insensitive;
//! whitespace is free. Quoted values take the escapes `\\`, `\'`, `\"`, `\n`, `\r` and `\t`; a quoted value
//! is needed for any other character and for the words `and`, `or` and `not` themselves. Nesting is limited
//! to 64 levels.
//!
//! # Semantics
//!
//! - `=` equality, `in` equality with any listed value, `~` a glob over the whole value (`*` any run of
//!   characters, `?` exactly one; there is no escape: `?` also matches a literal `*` or `?`), all
//!   case-sensitive.
//! - `!=` is exactly `not (FIELD = VALUE)`: true when the field is missing or null.
//! - Array fields (`group`, `ip`, and any path that crosses or ends at a JSON array) match when any element
//!   matches; `!=` when none does.
//! - `code` is an integer: values of `=`, `!=` and `in` must be integers, and a glob may use only digits,
//!   `*` and `?` (`code ~ 4??`).
//! - At the end of a JSON path, strings match as themselves, numbers and booleans as their JSON text
//!   (`201`, `true`), `null` never, arrays by element and objects as their compact JSON text.
//! - A segment that is not a key of the object is joined with the following ones, shortest key first:
//!   `annotations.authorization.k8s.io/decision` finds the annotation `authorization.k8s.io/decision`.
//!
//! # Short names
//!
//! | name | column | in the event |
//! | --- | --- | --- |
//! | `user` | `user` | `user.username` (the authenticated user, before impersonation) |
//! | `group` | `groups` (array) | `user.groups` |
//! | `verb` | `verb` | `verb` |
//! | `resource`, `subresource`, `namespace`, `name` | same | `objectRef.*` |
//! | `apigroup` | `api_group` | `objectRef.apiGroup` |
//! | `code` | `code` (integer) | `responseStatus.code` |
//! | `ip` | `source_ips` (array) | `sourceIPs` |
//! | `useragent` | `user_agent` | `userAgent` |
//! | `stage`, `level` | same | same |
//! | `auditid` | `audit_id` | `auditID` |
//! | `uri` | `uri` | `requestURI` |
//! | `decision` | `decision` | `annotations["authorization.k8s.io/decision"]` |
//! | `impersonated` | `impersonated_user` | `impersonatedUser.username` |
//! | `cluster` | `cluster` | not in the event: given to [`Expr::matches`] |
//!
//! # SQL
//!
//! [`Expr::to_sql`] writes a predicate for DataFusion's default `generic` dialect, in which a backslash in
//! a string literal is an ordinary character: string values are single-quoted with `'` doubled, and that is
//! the only escaping a value needs (a value such as `x' or 1=1 --` stays one literal; property-tested).
//! Column names are double-quoted (`"user"` is a keyword). The forms, for `v` a value:
//!
//! | expression | SQL |
//! | --- | --- |
//! | `f = v`, `f in (v, w)` | `"col" = 'v'`, `"col" IN ('v', 'w')` |
//! | `f != v` | `"col" <> 'v'` on columns that are never null (`verb`, `stage`, `level`, `audit_id`, `uri`, `cluster`), else `("col" IS DISTINCT FROM 'v')` (parenthesized: the parser reads all that follows `FROM` as its operand) |
//! | `f ~ a*b?` | `"col" LIKE 'a%b_' ESCAPE '\'` (`%`, `_` and `\` in the value escaped with `\`) |
//! | `code ~ 4??` | `CAST("code" AS VARCHAR) LIKE '4__' ESCAPE '\'` |
//! | `group = v`, `group in (v, w)` | `array_has("groups", 'v')`, `array_has_any("groups", make_array('v', 'w'))` |
//! | `group != v` | `(array_has("groups", 'v')) IS NOT TRUE` |
//! | `group ~ a*` | `regexp_like(concat(chr(31), array_to_string("groups", chr(31)), chr(31)), '\x1fa[^\x1f]*\x1f')` |
//! | `group ~ *` | `cardinality("groups") > 0` |
//! | `a.b = v`, `a.b in (v, w)` | `kt_json_match("event", 'a.b', '=', 'v')`, `kt_json_match("event", 'a.b', '=', 'v', 'w')` |
//! | `a.b ~ v` | `kt_json_match("event", 'a.b', '~', 'v')` |
//! | `a.b != v` | `NOT kt_json_match("event", 'a.b', '=', 'v')` |
//! | `not e` | `(e) IS NOT TRUE` |
//!
//! DataFusion has no lambdas, so a glob over an array column joins the elements with the unit separator
//! U+001F and matches a regular expression in which a wildcard cannot cross it: exact unless an element
//! itself contains U+001F. `not` is `IS NOT TRUE` because the comparisons above are null on null columns
//! (SQL's third value) where `matches` says false; with it, SQL and [`Expr::matches`] agree on every row.
//!
//! The query engine must register `kt_json_match(event Utf8, path Utf8, op Utf8, values Utf8...) ->
//! Boolean` as a scalar UDF whose value on each row is [`json_match_str`]`(event, path, op, values)`: never
//! null (a null or malformed event is false), `op` `=` (any leaf equals any value) or `~` (any leaf matches
//! any glob).
//!
//! These forms were run in DataFusion 55.2 (with `Utf8` and with `Utf8View` string columns, as Parquet reads
//! them) over rows built from the falco corpus's events, and selected exactly the rows [`Expr::matches`]
//! selects for each of 68 expressions; the store's query tests are the place to keep that check.

mod eval;
mod field;
mod sql;
mod syntax;

pub use eval::{JsonOp, glob_match, json_match, json_match_str};
pub use field::{Column, ColumnKind, Field};
pub use syntax::{ParseError, parse};

/// A parsed `--where` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// All must hold (two or more, none of them an `And`).
    And(Vec<Expr>),
    /// Any must hold (two or more, none of them an `Or`).
    Or(Vec<Expr>),
    Not(Box<Expr>),
    /// `values` has exactly one element, except for [`Op::In`] (one or more).
    Cmp {
        field: Field,
        op: Op,
        values: Vec<Value>,
    },
}

impl Expr {
    /// The terms: one per compared value (a comparison has one, `in (a, b, c)` three).
    pub fn terms(&self) -> usize {
        match self {
            Expr::And(terms) | Expr::Or(terms) => terms.iter().map(Expr::terms).sum(),
            Expr::Not(inner) => inner.terms(),
            Expr::Cmp { values, .. } => values.len(),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `~`: a glob.
    Glob,
    /// `in (a, b, ...)`
    In,
}

impl Op {
    /// The operator as written in an expression.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Glob => "~",
            Op::In => "in",
        }
    }
}

/// A value to compare with: text, or an integer for the `code` field (except in a glob, which is text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
}

impl Value {
    /// The value as text, as it is compared with a JSON leaf.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Value::Text(s) => std::borrow::Cow::Borrowed(s),
            Value::Int(n) => std::borrow::Cow::Owned(n.to_string()),
        }
    }
}
