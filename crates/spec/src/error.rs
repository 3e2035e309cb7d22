//! Errors of loading a stack file, each located by file, line, column and key.

use std::fmt;
use std::path::PathBuf;

/// One located problem, printed as `FILE:LINE:COL: key.path: message`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    /// The key path, such as `deploy.steps[1].pause`; empty for a syntax error.
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read; retrying may help if it was a transient I/O error.
    #[error("{file}: cannot read the stack file: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is wrong; it must be edited.
    #[error("{}", render(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Diagnostic>,
    },
}

impl SpecError {
    pub fn problems(&self) -> &[Diagnostic] {
        match self {
            SpecError::Read { .. } => &[],
            SpecError::Invalid { problems, .. } => problems,
        }
    }
}

fn render(file: &std::path::Path, problems: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.to_string_in(file));
    }
    out
}

impl Diagnostic {
    pub fn to_string_in(&self, file: &std::path::Path) -> String {
        if self.key.is_empty() {
            format!(
                "{}:{}:{}: {}",
                file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            format!(
                "{}:{}:{}: {}: {}",
                file.display(),
                self.line,
                self.column,
                self.key,
                self.message
            )
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.key, self.message
        )
    }
}
