//! What goes wrong, as callers see it: one field of one row ([`FieldError`], always printed as
//! `FILE:LINE: field: what is wrong`), or the manifest as a whole ([`ManifestError`]).

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with one field of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub file: String,
    pub line: u64,
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

/// A problem with the manifest as a whole; no row is usable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be opened or read.
    #[error("cannot read manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither `.csv` nor `.toml`.
    #[error("manifest {path} must be a .csv or a .toml file")]
    Extension { path: PathBuf },
    /// The TOML does not parse.
    #[error("{file}:{line}: toml: {message}")]
    Syntax {
        file: String,
        line: u64,
        message: String,
    },
    /// Problems with a place in the file that affect every row: CSV header columns, the TOML
    /// layout, `[defaults]`. All of them, one per line.
    #[error("{}", join_lines(.0))]
    Fields(Vec<FieldError>),
    /// A `--set PATH=VALUE` that names no field or whose value is invalid.
    #[error("--set {arg}: {message}")]
    Set { arg: String, message: String },
}

fn join_lines(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ManifestError {
    /// The individual `FILE:LINE: field: message` lines this error stands for.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ManifestError::Fields(errors) => errors.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}
