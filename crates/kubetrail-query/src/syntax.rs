//! The lexer and the recursive-descent parser, and errors that point at the offending token.

use std::fmt;

use serde::Serialize;

use crate::field::{self, Column, ColumnKind, FieldError};
use crate::{Expr, Field, Op, Value};

/// Deeper than any expression a person writes; bounds the recursion of parse, `to_sql` and `matches`.
const MAX_DEPTH: usize = 64;

/// A `--where` expression that does not parse, with the offending token's place in the input.
///
/// Its `Display` is the input's line with a caret under the token and the message after the caret:
///
/// ```text
///   user = alice and verb ~
///                          ^ expected a value after `~`
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ParseError {
    pub message: String,
    /// Byte offset of the offending token in the input (the input's length at its end).
    pub offset: usize,
    /// Its length in bytes (0 at the end of the input; one caret is drawn at least).
    pub len: usize,
    /// The expression as given.
    pub input: String,
}

/// Characters of context an error shows on each side of the offending token (a long expression is shown as
/// a window around it, never whole).
const CONTEXT_CHARS: usize = 60;

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = self.offset.min(self.input.len());
        let start = self.input[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.input[offset..]
            .find('\n')
            .map_or(self.input.len(), |i| offset + i);
        let line: Vec<char> = self.input[start..end]
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let column = self.input[start..offset].chars().count();
        let token_end = (offset + self.len).min(end);
        let carets = self
            .input
            .get(offset..token_end)
            .map_or(0, |t| t.chars().count())
            .clamp(1, CONTEXT_CHARS);
        let from = column.saturating_sub(CONTEXT_CHARS);
        let to = (column + carets + CONTEXT_CHARS).min(line.len());
        let before = if from > 0 { "…" } else { "" };
        let after = if to < line.len() { "…" } else { "" };
        let shown: String = line[from..to.max(from)].iter().collect();
        writeln!(f, "  {before}{shown}{after}")?;
        write!(
            f,
            "  {}{}{} {}",
            " ".repeat(before.chars().count()),
            " ".repeat(column - from),
            "^".repeat(carets),
            self.message
        )
    }
}

/// Parses a `--where` expression (grammar in the crate documentation).
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let mut parser = Parser {
        lexer: Lexer { input, pos: 0 },
        peeked: None,
        depth: 0,
    };
    let first = parser.peek()?;
    if first.kind == Kind::End {
        return Err(parser.error(
            "empty expression: expected a comparison such as `user = alice`",
            first.span,
        ));
    }
    let expr = parser.or()?;
    let next = parser.next()?;
    match next.kind {
        Kind::End => Ok(expr),
        Kind::Close => Err(parser.error("unexpected `)`: there is no `(` to close", next.span)),
        _ => Err(parser.error(
            format!(
                "expected `and`, `or` or the end of the expression, found {}",
                parser.describe(&next)
            ),
            next.span,
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    offset: usize,
    len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word,
    Quoted(String),
    Open,
    Close,
    Comma,
    Eq,
    Ne,
    Tilde,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    span: Span,
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '@' | '*' | '?' | '-')
}

impl Lexer<'_> {
    fn error(&self, message: impl Into<String>, offset: usize, len: usize) -> ParseError {
        ParseError {
            message: message.into(),
            offset,
            len,
            input: self.input.to_owned(),
        }
    }

    fn next(&mut self) -> Result<Token, ParseError> {
        let rest = &self.input[self.pos..];
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
        let start = self.pos;
        let Some(c) = trimmed.chars().next() else {
            return Ok(Token {
                kind: Kind::End,
                span: Span {
                    offset: start,
                    len: 0,
                },
            });
        };
        let single = |kind| Token {
            kind,
            span: Span {
                offset: start,
                len: 1,
            },
        };
        let token = match c {
            '(' => single(Kind::Open),
            ')' => single(Kind::Close),
            ',' => single(Kind::Comma),
            '=' => single(Kind::Eq),
            '~' => single(Kind::Tilde),
            '!' if trimmed[1..].starts_with('=') => Token {
                kind: Kind::Ne,
                span: Span {
                    offset: start,
                    len: 2,
                },
            },
            '\'' | '"' => return self.quoted(c),
            c if is_bare(c) => {
                let len = trimmed.find(|c| !is_bare(c)).unwrap_or(trimmed.len());
                Token {
                    kind: Kind::Word,
                    span: Span { offset: start, len },
                }
            }
            c => {
                let hint = match c {
                    '!' => "; did you mean `!=`?",
                    '&' => "; use `and`",
                    '|' => "; use `or`",
                    '<' | '>' => "; the operators are `=`, `!=`, `~` and `in`",
                    _ => "; quote a value that contains it",
                };
                return Err(self.error(
                    format!("unexpected character `{c}`{hint}"),
                    start,
                    c.len_utf8(),
                ));
            }
        };
        self.pos += token.span.len;
        Ok(token)
    }

    fn quoted(&mut self, quote: char) -> Result<Token, ParseError> {
        let start = self.pos;
        let mut value = String::new();
        let mut chars = self.input[start + 1..]
            .char_indices()
            .map(|(i, c)| (start + 1 + i, c));
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.pos = i + 1;
                    return Ok(Token {
                        kind: Kind::Quoted(value),
                        span: Span {
                            offset: start,
                            len: i + 1 - start,
                        },
                    });
                }
                '\\' => match chars.next() {
                    Some((_, c @ ('\\' | '\'' | '"'))) => value.push(c),
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, c)) => {
                        return Err(self.error(
                            format!("unknown escape `\\{c}`: the escapes are \\\\, \\', \\\", \\n, \\r and \\t"),
                            i,
                            1 + c.len_utf8(),
                        ));
                    }
                    None => break,
                },
                c => value.push(c),
            }
        }
        Err(self.error(
            format!("unclosed quote: expected a closing {quote} before the end"),
            start,
            1,
        ))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<Token, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.clone().expect("peeked above"))
    }

    fn next(&mut self) -> Result<Token, ParseError> {
        match self.peeked.take() {
            Some(token) => Ok(token),
            None => self.lexer.next(),
        }
    }

    fn text(&self, span: Span) -> &str {
        &self.lexer.input[span.offset..span.offset + span.len]
    }

    /// Whether the token is the keyword `keyword` (case-insensitive).
    fn is_keyword(&self, token: &Token, keyword: &str) -> bool {
        token.kind == Kind::Word && self.text(token.span).eq_ignore_ascii_case(keyword)
    }

    fn peek_keyword(&mut self, keyword: &str) -> Result<bool, ParseError> {
        let token = self.peek()?;
        Ok(self.is_keyword(&token, keyword))
    }

    fn describe(&self, token: &Token) -> String {
        match &token.kind {
            Kind::End => "the end of the expression".to_owned(),
            Kind::Quoted(_) => format!("the quoted value {}", self.text(token.span)),
            _ => format!("`{}`", self.text(token.span)),
        }
    }

    fn error(&self, message: impl Into<String>, span: Span) -> ParseError {
        self.lexer.error(message, span.offset, span.len)
    }

    fn descend(&mut self, span: Span) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(
                format!("expression nested too deeply: at most {MAX_DEPTH} levels"),
                span,
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.and()?];
        while self.peek_keyword("or")? {
            self.next()?;
            terms.push(self.and()?);
        }
        Ok(flatten(terms, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut terms = vec![self.unary()?];
        while self.peek_keyword("and")? {
            self.next()?;
            terms.push(self.unary()?);
        }
        Ok(flatten(terms, Expr::And))
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        let token = self.next()?;
        match token.kind {
            Kind::Word if self.is_keyword(&token, "not") => {
                self.descend(token.span)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Kind::Open => {
                self.descend(token.span)?;
                let inner = self.or()?;
                self.depth -= 1;
                let close = self.next()?;
                match close.kind {
                    Kind::Close => Ok(inner),
                    Kind::End => Err(self.error("unclosed `(`: expected a `)` to match it", token.span)),
                    _ => Err(self.error(
                        format!("expected `and`, `or` or `)`, found {}", self.describe(&close)),
                        close.span,
                    )),
                }
            }
            Kind::Word if ["and", "or", "in"].iter().any(|k| self.is_keyword(&token, k)) => Err(self.error(
                format!("expected a field before `{}`", self.text(token.span)),
                token.span,
            )),
            Kind::Word => self.compare(token),
            Kind::Quoted(_) => Err(self.error(
                "expected a field, found a quoted value: a field is a short name such as `user` or a path such as \
                 `objectRef.namespace`",
                token.span,
            )),
            _ => Err(self.error(format!("expected a field, found {}", self.describe(&token)), token.span)),
        }
    }

    fn compare(&mut self, field_token: Token) -> Result<Expr, ParseError> {
        let name = self.text(field_token.span).to_owned();
        let field = field::resolve(&name).map_err(|e| {
            let message = match e {
                FieldError::Unknown { suggestion: Some(s) } => format!("unknown field `{name}`; did you mean `{s}`?"),
                FieldError::Unknown { suggestion: None } => format!(
                    "unknown field `{name}`; expected one of {} or a dotted path into the event such as \
                     `objectRef.namespace`",
                    Column::ALL.iter().map(|c| c.short).collect::<Vec<_>>().join(", ")
                ),
                FieldError::EmptySegment => format!("empty segment in the field path `{name}`"),
                FieldError::Wildcard => format!(
                    "`*` and `?` are not allowed in the field `{name}`: a path through an array already matches any \
                     element"
                ),
            };
            self.error(message, field_token.span)
        })?;
        let op_token = self.next()?;
        let (op, negate) = match op_token.kind {
            Kind::Eq => (Op::Eq, false),
            Kind::Ne => (Op::Ne, false),
            Kind::Tilde => (Op::Glob, false),
            Kind::Word if self.is_keyword(&op_token, "in") => (Op::In, false),
            Kind::Word if self.is_keyword(&op_token, "not") => {
                let in_token = self.next()?;
                if !self.is_keyword(&in_token, "in") {
                    return Err(self.error(
                        format!(
                            "expected `in` after `{name} not`, found {}",
                            self.describe(&in_token)
                        ),
                        in_token.span,
                    ));
                }
                (Op::In, true)
            }
            _ => {
                return Err(self.error(
                    format!(
                        "expected `=`, `!=`, `~` or `in` after the field `{name}`, found {}",
                        self.describe(&op_token)
                    ),
                    op_token.span,
                ));
            }
        };
        let values = if op == Op::In {
            self.list(&field)?
        } else {
            let after = format!("after `{}`", self.text(op_token.span));
            vec![self.value(&field, op, &after)?]
        };
        let cmp = Expr::Cmp { field, op, values };
        Ok(if negate {
            Expr::Not(Box::new(cmp))
        } else {
            cmp
        })
    }

    fn list(&mut self, field: &Field) -> Result<Vec<Value>, ParseError> {
        let open = self.next()?;
        if open.kind != Kind::Open {
            return Err(self.error(
                format!("expected `(` after `in`, found {}", self.describe(&open)),
                open.span,
            ));
        }
        if let Token {
            kind: Kind::Close,
            span,
        } = self.peek()?
        {
            return Err(self.error("empty list: `in` needs at least one value", span));
        }
        let mut values = vec![self.value(field, Op::In, "in the list")?];
        loop {
            let token = self.next()?;
            match token.kind {
                Kind::Close => return Ok(values),
                Kind::Comma => values.push(self.value(field, Op::In, "after `,`")?),
                Kind::End => {
                    return Err(self.error(
                        "unclosed `(`: expected a `)` to end the `in` list",
                        open.span,
                    ));
                }
                _ => {
                    return Err(self.error(
                        format!(
                            "expected `,` or `)` in the `in` list, found {}",
                            self.describe(&token)
                        ),
                        token.span,
                    ));
                }
            }
        }
    }

    /// One value, checked against the field (`code` takes integers).
    fn value(&mut self, field: &Field, op: Op, after: &str) -> Result<Value, ParseError> {
        let token = self.next()?;
        let text = match token.kind {
            Kind::Quoted(ref s) => s.clone(),
            Kind::Word => {
                let word = self.text(token.span);
                if ["and", "or", "not"]
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k))
                {
                    return Err(self.error(
                        format!("expected a value {after}, found the keyword `{word}`; quote it to mean the word: \"{word}\""),
                        token.span,
                    ));
                }
                word.to_owned()
            }
            _ => {
                return Err(self.error(
                    format!("expected a value {after}, found {}", self.describe(&token)),
                    token.span,
                ));
            }
        };
        let is_int = matches!(field.column(), Some(c) if c.kind == ColumnKind::Int);
        if !is_int {
            return Ok(Value::Text(text));
        }
        let name = field.column().map_or("code", |c| c.short);
        if op == Op::Glob {
            if text.is_empty()
                || !text
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '?')
            {
                return Err(self.error(
                    format!("`{name}` is an integer: a glob on it may use only digits, `*` and `?` (such as `4??`)"),
                    token.span,
                ));
            }
            return Ok(Value::Text(text));
        }
        text.trim().parse::<i64>().map(Value::Int).map_err(|_| {
            self.error(
                format!("`{name}` is an integer: `{text}` is not one"),
                token.span,
            )
        })
    }
}

/// Builds an `And`/`Or` of the terms, merging nested ones of the same kind.
fn flatten(terms: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if terms.len() == 1 {
        return terms.into_iter().next().expect("one term");
    }
    let mut flat = Vec::with_capacity(terms.len());
    for term in terms {
        match (term, make(Vec::new())) {
            (Expr::And(inner), Expr::And(_)) | (Expr::Or(inner), Expr::Or(_)) => flat.extend(inner),
            (term, _) => flat.push(term),
        }
    }
    make(flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the error's display: the input's line, then the caret under the token and the message.
    #[track_caller]
    fn check_err(input: &str, expect: &str) {
        let err = parse(input).expect_err(input);
        assert_eq!(err.to_string(), expect.trim_start_matches('\n'), "{input}");
    }

    #[test]
    fn a_long_expression_is_shown_as_a_window_around_the_error() {
        let head = "user = a or ".repeat(100);
        let input = format!("{head}usr = b{}", " or user = c".repeat(100));
        let err = parse(&input).unwrap_err().to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        // 60 characters each side of the token, with marks where the expression goes on.
        let shown = format!(
            "  …{}usr = b{}…",
            &head[head.len() - 60..],
            &" or user = c".repeat(100)[..56]
        );
        assert_eq!(lines[0], shown);
        assert_eq!(
            lines[1],
            format!(
                "   {}^^^ unknown field `usr`; did you mean `user`?",
                " ".repeat(60)
            )
        );
        assert!(err.len() < 300, "{err}");
    }

    #[test]
    fn errors_point_at_the_token() {
        check_err(
            "user = alice and verb ~",
            r"
  user = alice and verb ~
                         ^ expected a value after `~`, found the end of the expression",
        );
        check_err(
            "usr = alice",
            r"
  usr = alice
  ^^^ unknown field `usr`; did you mean `user`?",
        );
        check_err(
            "verb = get and namesapce = x",
            r"
  verb = get and namesapce = x
                 ^^^^^^^^^ unknown field `namesapce`; did you mean `namespace`?",
        );
        check_err(
            "status = 200",
            r"
  status = 200
  ^^^^^^ unknown field `status`; expected one of user, group, verb, resource, subresource, namespace, name, apigroup, code, ip, useragent, stage, level, auditid, uri, decision, impersonated, cluster or a dotted path into the event such as `objectRef.namespace`",
        );
        check_err(
            "(user = a or verb = b",
            r"
  (user = a or verb = b
  ^ unclosed `(`: expected a `)` to match it",
        );
        check_err(
            "user = a or (verb = b and (name = c)",
            r"
  user = a or (verb = b and (name = c)
              ^ unclosed `(`: expected a `)` to match it",
        );
        check_err(
            "user = 'alice",
            r"
  user = 'alice
         ^ unclosed quote: expected a closing ' before the end",
        );
        check_err(
            r#"user = "alice\""#,
            r#"
  user = "alice\"
         ^ unclosed quote: expected a closing " before the end"#,
        );
        check_err(
            "user = a verb = b",
            r"
  user = a verb = b
           ^^^^ expected `and`, `or` or the end of the expression, found `verb`",
        );
        check_err(
            "user = a)",
            r"
  user = a)
          ^ unexpected `)`: there is no `(` to close",
        );
        check_err(
            "verb in ()",
            r"
  verb in ()
           ^ empty list: `in` needs at least one value",
        );
        check_err(
            "code = abc",
            r"
  code = abc
         ^^^ `code` is an integer: `abc` is not one",
        );
        check_err(
            "code in (200, '4x4')",
            r"
  code in (200, '4x4')
                ^^^^^ `code` is an integer: `4x4` is not one",
        );
        check_err(
            "code ~ 4x*",
            r"
  code ~ 4x*
         ^^^ `code` is an integer: a glob on it may use only digits, `*` and `?` (such as `4??`)",
        );
        check_err(
            "",
            r"
  
  ^ empty expression: expected a comparison such as `user = alice`",
        );
        check_err(
            "user alice",
            r"
  user alice
       ^^^^^ expected `=`, `!=`, `~` or `in` after the field `user`, found `alice`",
        );
        check_err(
            "user == alice",
            r"
  user == alice
        ^ expected a value after `=`, found `=`",
        );
        check_err(
            "user = and",
            r#"
  user = and
         ^^^ expected a value after `=`, found the keyword `and`; quote it to mean the word: "and""#,
        );
        check_err(
            "verb in get",
            r"
  verb in get
          ^^^ expected `(` after `in`, found `get`",
        );
        check_err(
            "verb in (get list)",
            r"
  verb in (get list)
               ^^^^ expected `,` or `)` in the `in` list, found `list`",
        );
        check_err(
            "verb in (get,",
            r"
  verb in (get,
               ^ expected a value after `,`, found the end of the expression",
        );
        check_err(
            "verb in (get",
            r"
  verb in (get
          ^ unclosed `(`: expected a `)` to end the `in` list",
        );
        check_err(
            "verb not get",
            r"
  verb not get
           ^^^ expected `in` after `verb not`, found `get`",
        );
        check_err(
            "user = a && verb = b",
            r"
  user = a && verb = b
           ^ unexpected character `&`; use `and`",
        );
        check_err(
            "code >= 400",
            r"
  code >= 400
       ^ unexpected character `>`; the operators are `=`, `!=`, `~` and `in`",
        );
        check_err(
            "user ! alice",
            r"
  user ! alice
       ^ unexpected character `!`; did you mean `!=`?",
        );
        check_err(
            "user = josé",
            r"
  user = josé
            ^ unexpected character `é`; quote a value that contains it",
        );
        check_err(
            r"user = 'a\qb'",
            r#"
  user = 'a\qb'
           ^^ unknown escape `\q`: the escapes are \\, \', \", \n, \r and \t"#,
        );
        check_err(
            "and user = a",
            r"
  and user = a
  ^^^ expected a field before `and`",
        );
        check_err(
            "user = a and",
            r"
  user = a and
              ^ expected a field, found the end of the expression",
        );
        check_err(
            "'user' = a",
            r"
  'user' = a
  ^^^^^^ expected a field, found a quoted value: a field is a short name such as `user` or a path such as `objectRef.namespace`",
        );
        check_err(
            "objectRef..name = a",
            r"
  objectRef..name = a
  ^^^^^^^^^^^^^^^ empty segment in the field path `objectRef..name`",
        );
        check_err(
            "requestObject.spec.containers.*.image = x",
            r"
  requestObject.spec.containers.*.image = x
  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ `*` and `?` are not allowed in the field `requestObject.spec.containers.*.image`: a path through an array already matches any element",
        );
        check_err(
            "()",
            r"
  ()
   ^ expected a field, found `)`",
        );
    }

    #[test]
    fn errors_on_later_lines_show_that_line() {
        check_err(
            "user = alice\n  and verb ~",
            r"
    and verb ~
              ^ expected a value after `~`, found the end of the expression",
        );
        check_err(
            "verb = get and\n\tusr = é",
            r"
   usr = é
   ^^^ unknown field `usr`; did you mean `user`?",
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}user = a{}", "(".repeat(200), ")".repeat(200));
        let err = parse(&deep).unwrap_err();
        assert_eq!(
            (err.offset, err.message.as_str()),
            (64, "expression nested too deeply: at most 64 levels")
        );
        assert!(parse(&format!("{}user = a{}", "(".repeat(64), ")".repeat(64))).is_ok());
        assert!(parse(&format!("{}user = a", "not ".repeat(100))).is_err());
        // Far deeper: still an error, the recursion stops at the limit.
        let deep = format!("{}user = a{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(parse(&deep).unwrap_err().offset, 64);
        let nots = format!("{}user = a", "not ".repeat(100_000));
        assert_eq!(parse(&nots).unwrap_err().offset, 256);
        let mixed = format!("{}user = a", "not (".repeat(100_000));
        assert!(parse(&mixed).is_err());
    }

    #[test]
    fn terms_count_compared_values() {
        let terms = |input: &str| parse(input).unwrap().terms();
        assert_eq!(terms("user = a"), 1);
        assert_eq!(
            terms("user = a and not (verb in (get, list) or code != 200)"),
            4
        );
        let run = vec!["user = a"; 10_000].join(" or ");
        assert_eq!(terms(&run), 10_000);
    }

    #[test]
    fn keywords_are_case_insensitive_and_flattened() {
        let a = parse("user = a AND verb = b Or NOT name IN (x)").unwrap();
        let b = parse("((user = a and verb = b) or not (name in (x)))").unwrap();
        assert_eq!(a, b);
        assert!(matches!(&a, Expr::Or(terms) if terms.len() == 2));
        assert!(
            matches!(parse("a.b = 1 or c.d = 2 or (e.f = 3 or g.h = 4)").unwrap(), Expr::Or(t) if t.len() == 4)
        );
    }

    #[test]
    fn values() {
        let value = |input: &str| match parse(input).unwrap() {
            Expr::Cmp { values, .. } => values,
            other => panic!("{other:?}"),
        };
        let text = |s: &str| Value::Text(s.to_owned());
        assert_eq!(
            value("user = system:serviceaccount:kube-system:foo"),
            [text("system:serviceaccount:kube-system:foo")]
        );
        assert_eq!(value("ip = ::1"), [text("::1")]);
        assert_eq!(
            value(r#"verb in (a, "b c", 3, 'd\'e', "")"#),
            [text("a"), text("b c"), text("3"), text("d'e"), text("")]
        );
        assert_eq!(
            value("code in (200, '201', -1)"),
            [Value::Int(200), Value::Int(201), Value::Int(-1)]
        );
        assert_eq!(value("code ~ 4??"), [text("4??")]);
        assert_eq!(value(r#"user = "é\n\t\\""#), [text("é\n\t\\")]);
        assert_eq!(value("verb = IN"), [text("IN")]);
    }
}
