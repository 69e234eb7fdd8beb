//! Why a tokenizer could not be built, read, written or applied.

use std::path::PathBuf;

use thiserror::Error;

/// Why a tokenizer could not be built, read, written or applied.
#[derive(Debug, Error)]
pub enum TokenizeError {
    /// A tokenizer file (vocab.txt, tokenizer_config.json, ...) could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An error reported by the `tokenizers` crate while reading or writing `path`.
    #[error("{}: {message}", path.display())]
    Hf {
        /// The file (tokenizer.json, vocab.txt or tokenizer_config.json).
        path: PathBuf,
        /// The crate's message.
        message: String,
    },
    /// A WordPiece vocabulary lacks a token BERT needs (`[CLS]`, `[SEP]`, `[PAD]`, `[UNK]`), or
    /// a tokenizer.json with no padding has no `[PAD]` / `<pad>`.
    #[error("{}: the vocabulary has no `{token}` token", path.display())]
    MissingToken {
        /// The vocabulary file.
        path: PathBuf,
        /// The token missing.
        token: String,
    },
    /// A character vocab.txt is malformed: the specials out of order, a line that is not one
    /// character, or a character listed twice.
    #[error("{}:{line}: {what}", path.display())]
    BadVocab {
        /// The vocabulary file.
        path: PathBuf,
        /// The 1-based line at fault.
        line: usize,
        /// What is wrong with it.
        what: String,
    },
    /// A directory holds neither tokenizer.json nor vocab.txt.
    #[error("{}: no tokenizer.json or vocab.txt", dir.display())]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
    },
    /// Encoding failed in the `tokenizers` crate, or a tokenizer cannot serve one token per
    /// character (no specials or unknown token); holds the message.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// No tokenizer kind of this name is registered.
    #[error("unknown tokenization `{name}` (known: {known})")]
    UnknownKind {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The kind is built from training texts, not made from a pretrained tokenizer.
    #[error(
        "tokenization `{kind}` is for training from scratch without --vocab, not for a pretrained tokenizer"
    )]
    NotPretrained {
        /// The kind.
        kind: &'static str,
    },
    /// config.json's tokenization differs from what the directory holds.
    #[error("{}: config.json asks for `{want}` tokenization but the directory holds a {found} tokenizer", dir.display())]
    Mismatch {
        /// The model directory.
        dir: PathBuf,
        /// config.json's tokenization.
        want: String,
        /// The kind the directory's files are.
        found: &'static str,
    },
    /// Window sizes out of range: `max_len < 3`, or `stride` not in `1..=max_len - 2`.
    #[error(
        "windows need max_len >= 3 and 1 <= stride <= max_len - 2 (got max_len {max_len}, stride {stride})"
    )]
    BadWindow {
        /// Tokens per window, specials included.
        max_len: usize,
        /// Content tokens between the starts of consecutive windows.
        stride: usize,
    },
    /// An encoding to be windowed does not start and end with special tokens (`[CLS]`/`[SEP]`).
    #[error("the encoding does not start and end with special tokens")]
    NoSpecials,
    /// A question and context pair leaves no room for the context in a window.
    #[error("a window of {max_len} tokens leaves no room for a context after a question of {question} tokens, [CLS] and two [SEP]")]
    NoRoomForContext {
        /// Tokens per window, specials included.
        max_len: usize,
        /// The question's tokens (after truncation).
        question: usize,
    },
    /// A reader was given an example without a question (NER data instead of reading
    /// comprehension).
    #[error("the reader needs a question with each text (reading-comprehension data, SQuAD format)")]
    NoQuestion,
}
