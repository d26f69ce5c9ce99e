//! Output formats shared by the commands.

use clap::ValueEnum;

/// `--format` of every command that prints for people or for machines: `table` for people (`text` is the
/// same), `json` (one object per line) for machines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
}

/// `--format` of the commands whose answer is rows: [`Format`]'s, and `csv` (formulas defused, see
/// [`csv_field`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RowFormat {
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
    Csv,
}

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
}
