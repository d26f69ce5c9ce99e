//! Text helpers shared by the service and the command line: CSV fields safe for spreadsheets, shell words,
//! `*` wildcards.

/// One CSV field (RFC 4180 quoting), defused for spreadsheets: a field starting with `=`, `+`, `-`, `@`, a
/// tab or a carriage return is a formula to Excel or Sheets, so it gets a leading apostrophe; audit events
/// carry attacker-chosen text (user agents, names), which must not run in an analyst's spreadsheet. Every
/// CSV kubetrail writes (the CLI's `--format csv`, the API's export) goes through here.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) || s.starts_with('\'') {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// A value quoted for a shell when it needs to be (control and invisible characters escaped, so a command
/// printed for an analyst shows what would run): `kubetrail_history`'s, the one quoting every command
/// kubetrail prints goes through.
pub use kubetrail_history::shell_word;

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(
            shell_word("system:serviceaccount:kube-system:x"),
            "system:serviceaccount:kube-system:x"
        );
        assert_eq!(shell_word("it's me"), "'it'\\''s me'");
    }
}
