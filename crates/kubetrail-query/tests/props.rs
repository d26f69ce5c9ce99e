//! Properties that must hold for every input: `parse` is total, and no value escapes its SQL string literal.

use kubetrail_query::{Expr, Op, Value, parse};
use proptest::prelude::*;

/// Splits generic-dialect SQL into its string literals (decoded) and the rest, with each literal replaced by
/// `'_'`; `None` when a literal is not closed.
fn split_literals(sql: &str) -> Option<(String, Vec<String>)> {
    let mut rest = String::new();
    let mut literals = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            rest.push(c);
            continue;
        }
        let mut literal = String::new();
        loop {
            match chars.next()? {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    literal.push('\'');
                }
                '\'' => break,
                c => literal.push(c),
            }
        }
        rest.push_str("'_'");
        literals.push(literal);
    }
    Some((rest, literals))
}

/// Every word the SQL may contain outside string literals.
const SQL_WORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "IS",
    "TRUE",
    "IN",
    "LIKE",
    "ESCAPE",
    "DISTINCT",
    "FROM",
    "CAST",
    "AS",
    "VARCHAR",
    "array_has",
    "array_has_any",
    "make_array",
    "regexp_like",
    "concat",
    "chr",
    "array_to_string",
    "cardinality",
    "kt_json_match",
    "\"user\"",
    "\"groups\"",
    "\"verb\"",
    "\"resource\"",
    "\"subresource\"",
    "\"namespace\"",
    "\"name\"",
    "\"api_group\"",
    "\"code\"",
    "\"source_ips\"",
    "\"user_agent\"",
    "\"stage\"",
    "\"level\"",
    "\"audit_id\"",
    "\"uri\"",
    "\"decision\"",
    "\"impersonated_user\"",
    "\"cluster\"",
    "\"event\"",
];

/// Whether the SQL outside its literals is made only of the words above, integers and punctuation.
fn only_known_tokens(rest: &str) -> Result<(), String> {
    let spaced: String = rest
        .chars()
        .flat_map(|c| {
            if "(),".contains(c) {
                vec![' ', c, ' ']
            } else {
                vec![c]
            }
        })
        .collect();
    for word in spaced.split_whitespace() {
        let known = SQL_WORDS.contains(&word)
            || ["'_'", "(", ")", ",", "=", "<>", ">"].contains(&word)
            || word
                .strip_prefix('-')
                .unwrap_or(word)
                .chars()
                .all(|c| c.is_ascii_digit())
                && !word.is_empty();
        if !known {
            return Err(format!(
                "unexpected `{word}` outside string literals in {rest}"
            ));
        }
    }
    Ok(())
}

/// A value as a quoted expression literal, escaping what needs it.
fn quote(value: &str) -> String {
    let mut out = String::from('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x' or 1=1 --".to_owned()),
        Just("'; drop table events; --".to_owned()),
        Just("\\'".to_owned()),
        "[a-z*?%_'\"\\\\;\\- ]{0,12}",
        any::<String>(),
    ]
}

fn comparison() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("user"),
        Just("group"),
        Just("verb"),
        Just("namespace"),
        Just("ip"),
        Just("decision"),
        Just("impersonated"),
        Just("cluster"),
        Just("objectRef.name"),
        Just("requestObject.spec.containers.image"),
    ];
    prop_oneof![
        (
            field.clone(),
            prop_oneof![Just("="), Just("!="), Just("~")],
            value()
        )
            .prop_map(|(f, op, v)| format!("{f} {op} {}", quote(&v))),
        (field, prop::collection::vec(value(), 1..4)).prop_map(|(f, vs)| format!(
            "{f} in ({})",
            vs.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")
        )),
        (any::<i32>(), prop_oneof![Just("="), Just("!=")])
            .prop_map(|(n, op)| format!("code {op} {n}")),
        "[0-9*?]{1,4}".prop_map(|g| format!("code ~ {g}")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    comparison().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} and {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) or {b}")),
            inner.prop_map(|a| format!("not ({a})")),
        ]
    })
}

/// The text values the expression compares for equality (globs reach the SQL transformed).
fn equality_values(expr: &Expr, out: &mut Vec<String>) {
    match expr {
        Expr::And(terms) | Expr::Or(terms) => terms.iter().for_each(|t| equality_values(t, out)),
        Expr::Not(inner) => equality_values(inner, out),
        Expr::Cmp { op: Op::Glob, .. } => {}
        Expr::Cmp { values, .. } => out.extend(values.iter().filter_map(|v| match v {
            Value::Text(s) => Some(s.clone()),
            Value::Int(_) => None,
        })),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics(input in any::<String>()) {
        let _ = parse(&input).map_err(|e| e.to_string());
    }

    #[test]
    fn parse_never_panics_on_near_expressions(
        input in r#"[a-z.()'"\\,=!~ *?\n]{0,40}|((user|code|verb|not|and|or|in|\(|\)|,|=|!=|~|'a|"b c"|4\?\?|x\.y) ?){0,16}"#,
    ) {
        if let Err(e) = parse(&input) {
            prop_assert!(e.offset <= input.len() && input.is_char_boundary(e.offset));
            let _ = e.to_string();
        }
    }

    #[test]
    fn values_stay_inside_sql_literals(input in expression()) {
        let expr = parse(&input).map_err(|e| TestCaseError::fail(format!("{input}\n{e}")))?;
        let sql = expr.to_sql();
        let (rest, literals) = split_literals(&sql).ok_or_else(|| TestCaseError::fail(format!("unclosed literal: {sql}")))?;
        only_known_tokens(&rest).map_err(TestCaseError::fail)?;
        // An equality's value is one whole literal, never split.
        let mut expected = Vec::new();
        equality_values(&expr, &mut expected);
        for value in expected {
            prop_assert!(literals.contains(&value), "{value:?} is not a literal of {sql}");
        }
    }
}
