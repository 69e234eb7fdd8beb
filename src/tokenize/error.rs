//! Why a tokenizer could not be built, read, written or applied.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenizeError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// An error reported by the `tokenizers` crate while reading or writing `path`.
    #[error("{}: {message}", path.display())]
    Hf { path: PathBuf, message: String },
    #[error("{}: the vocabulary has no `{token}` token", path.display())]
    MissingToken { path: PathBuf, token: String },
    #[error("{}:{line}: {what}", path.display())]
    BadVocab {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("{}: no tokenizer.json or vocab.txt", dir.display())]
    NotFound { dir: PathBuf },
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error(
        "windows need max_len >= 3 and 1 <= stride <= max_len - 2 (got max_len {max_len}, stride {stride})"
    )]
    BadWindow { max_len: usize, stride: usize },
    #[error("the encoding does not start and end with special tokens")]
    NoSpecials,
}
