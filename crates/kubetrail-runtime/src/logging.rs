//! Structured logs on stderr (`RUST_LOG` sets the level; `KUBETRAIL_LOG_FORMAT=json` for machines). Logs
//! never contain event bodies: only counts, locations and reasons.
//!
//! Values logged can come from events (a username, a user agent, a reason quoting input), which anyone with
//! API access chooses: a value holding a newline and a forged `INFO` line must not become a second log line.
//! The fmt layer writes each event with one `write` whose last byte is the line's newline, so any other line
//! break or control character in it came from a value and is escaped here ([`escape`]); tracing-subscriber
//! already escapes ANSI sequences in values. JSON logs escape them by construction.

use std::borrow::Cow;
use std::io::{self, Write};

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_writer(|| OneLine(io::stderr()));
    let _ = if std::env::var("KUBETRAIL_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A writer that keeps one log event on one line.
struct OneLine<W>(W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, newline) = match buf.split_last() {
            Some((b'\n', body)) => (body, true),
            _ => (buf, false),
        };
        let text = String::from_utf8_lossy(body);
        let escaped = escape_keeping_ansi(&text);
        let mut out = Vec::with_capacity(escaped.len() + 1);
        out.extend_from_slice(escaped.as_bytes());
        if newline {
            out.push(b'\n');
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `s` with line breaks and other control characters (but tabs) written as escapes (`\n`, `\r`, `\x1b`,
/// `\u{85}`...), for printing event text on a terminal or in a log. Borrowed when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, |_| false)
}

/// [`escape`], leaving ESC alone: the log's own colours (values' ANSI sequences are escaped upstream).
fn escape_keeping_ansi(s: &str) -> Cow<'_, str> {
    escape_with(s, |c| c == '\x1b')
}

fn escape_with(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let bad =
        |c: char| c != '\t' && !keep(c) && (c.is_control() || c == '\u{2028}' || c == '\u{2029}');
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if bad(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_a_newline_cannot_forge_a_log_line() {
        let mut w = OneLine(Vec::new());
        w.write_all(b"INFO user=alice\n2026-12-05T00:00:00Z INFO forged\x1b[2K\r\x07\n")
            .unwrap();
        let out = String::from_utf8(w.0).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert_eq!(
            out,
            "INFO user=alice\\n2026-12-05T00:00:00Z INFO forged\x1b[2K\\r\\x07\n"
        );
        assert_eq!(escape("a\u{85}b\u{2028}\x1b"), "a\\x85b\\u{2028}\\x1b");
        assert!(matches!(escape("plain\ttext"), Cow::Borrowed(_)));
    }
}
