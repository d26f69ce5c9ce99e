//! Findings about a policy file: where, what, and what to change.

use std::fmt;

use serde::Serialize;

/// How bad a finding is. `Error` means kube-apiserver refuses to start with the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding, located in the file (1-based line and column) and in the policy (a field path such as
/// `rules[3].resources[0].verbs`, in kube-apiserver's notation for validation errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub path: String,
    pub message: String,
    /// What to change.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
            help: None,
        }
    }

    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Error, path, message)
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Warning, path, message)
    }

    pub fn info(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic::new(Severity::Info, path, message)
    }

    #[must_use]
    pub fn at(mut self, pos: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = pos {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }

    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `LINE:COL: severity: path: message` (without the file name, which the caller knows).
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{l}:{c}: ")?,
            (Some(l), None) => write!(f, "{l}: ")?,
            _ => {}
        }
        write!(f, "{}: ", self.severity)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}
