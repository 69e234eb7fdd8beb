//! Data errors: `FILE:LINE: what is wrong`.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// A problem reading a data file.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{}:{line}: {problem}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        problem: Box<Problem>,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("unknown data format `{0}` (expected cluener, cmeee, conll, bio, jsonl or gp)")]
    UnknownFormat(String),
    #[error("unknown column join `{0}` (expected auto, space or none)")]
    UnknownJoin(String),
}

impl DataError {
    pub fn at(path: &Path, line: usize, problem: Problem) -> DataError {
        DataError::At {
            path: path.to_path_buf(),
            line,
            problem: Box::new(problem),
        }
    }
}

/// What is wrong at a line. Spans are shown in the file's own convention: `[s, e]` when its end
/// is inclusive, `[s, e)` when exclusive.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Problem {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("missing field `{0}`")]
    MissingField(String),
    #[error("field `{field}` must be {expected}")]
    WrongType { field: String, expected: &'static str },
    #[error("`{field}`: start {start} > end {end}")]
    StartAfterEnd { field: String, start: usize, end: usize },
    #[error("`{field}`: empty span {span}")]
    EmptySpan { field: String, span: String },
    #[error("`{field}`: span {span} is outside the text ({len} characters)")]
    SpanOutsideText { field: String, span: String, len: usize },
    #[error("`{field}`: the text at {span} is \"{found}\", not \"{expected}\"")]
    MentionMismatch {
        field: String,
        span: String,
        found: String,
        expected: String,
    },
    #[error("no examples")]
    Empty,
    #[error("label `{label}` is not one of the known labels ({known})")]
    UnknownLabel { label: String, known: String },
    #[error("malformed tag `{0}` (expected O, or B-, I-, E-, S-, L- or U- and a type)")]
    BadTag(String),
    #[error("expected at least two columns (token ... tag), found `{0}`")]
    MissingTag(String),
    #[error("cannot detect the data format: {0}; name the format explicitly")]
    Undetected(&'static str),
}
