//! Data errors: `FILE:LINE: what is wrong`.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// A problem reading a data file.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file's content is wrong at a line.
    #[error("{}:{line}: {problem}", path.display())]
    At {
        /// The file read.
        path: PathBuf,
        /// The 1-based line where the problem is.
        line: usize,
        /// What is wrong there.
        problem: Box<Problem>,
    },
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A data format name parsed with `FromStr` is none of the known ones; holds the name given.
    #[error("unknown data format `{name}` (expected {known})")]
    UnknownFormat {
        /// The name given.
        name: String,
        /// The registered names and aliases, as a list for a person.
        known: String,
    },
    /// A column-join name parsed with `FromStr` is not `auto`, `space` or `none`; holds the name.
    #[error("unknown column join `{0}` (expected auto, space or none)")]
    UnknownJoin(String),
}

impl DataError {
    /// A [`DataError::At`] for `problem` at 1-based `line` of `path`.
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
    /// A JSON line (or document) does not parse, or is not an object; holds serde_json's
    /// message (with the column) or what was expected.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A required field is absent; holds its path, e.g. `entities[0].start`.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// A field has the wrong JSON type or shape (e.g. a negative index, a span not a pair).
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// Path of the field, e.g. `entities[0].start`.
        field: String,
        /// What it must be, e.g. `"a string"`.
        expected: &'static str,
    },
    /// A span's start is after its end.
    #[error("`{field}`: start {start} > end {end}")]
    StartAfterEnd {
        /// Path of the span in the record, e.g. `entities[0]` or `label.PER.Alice[0]`.
        field: String,
        /// The start as the file gives it.
        start: usize,
        /// The end as the file gives it.
        end: usize,
    },
    /// An end-exclusive span with start == end (no characters).
    #[error("`{field}`: empty span {span}")]
    EmptySpan {
        /// Path of the span in the record, e.g. `entities[0]` or `label.PER.Alice[0]`.
        field: String,
        /// The span in the file's convention, e.g. `[3, 3)`.
        span: String,
    },
    /// A span ends past the last character of the text.
    #[error("`{field}`: span {span} is outside the text ({len} characters)")]
    SpanOutsideText {
        /// Path of the span in the record, e.g. `entities[0]` or `label.PER.Alice[0]`.
        field: String,
        /// The span in the file's convention.
        span: String,
        /// Length of the text in characters (code points).
        len: usize,
    },
    /// The file gives the mention's text, and the text at the span differs from it.
    #[error("`{field}`: the text at {span} is \"{found}\", not \"{expected}\"")]
    MentionMismatch {
        /// Path of the span in the record, e.g. `entities[0]` or `label.PER.Alice[0]`.
        field: String,
        /// The span in the file's convention.
        span: String,
        /// The text's characters at the span.
        found: String,
        /// The mention the file gives.
        expected: String,
    },
    /// The file holds no examples (reported at line 1).
    #[error("no examples")]
    Empty,
    /// An entity's label is not in the model's label set (e.g. evaluation data with a type the
    /// model was not trained on).
    #[error("label `{label}` is not one of the known labels ({known})")]
    UnknownLabel {
        /// The unknown label.
        label: String,
        /// The known labels, joined with `, `.
        known: String,
    },
    /// A column file's tag is neither `O` nor a known prefix and a type; holds the tag.
    #[error("malformed tag `{0}` (expected O, or B-, I-, E-, S-, L- or U- and a type)")]
    BadTag(String),
    /// A column file's line has a token but no tag column; holds the (trimmed) line.
    #[error("expected at least two columns (token ... tag), found `{0}`")]
    MissingTag(String),
    /// Format detection found no known format; holds why.
    #[error("cannot detect the data format: {0}; name the format explicitly")]
    Undetected(&'static str),
}
