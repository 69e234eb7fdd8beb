//! A tokenizer of any kind behind one type, and what the registry knows of a kind.
//!
//! A kind is one file under `tokenize/`: its tokenizer implementing [`TextTokenizer`], and a
//! `kind()` function returning its [`TokenizerKind`] (name, help line, how it is made from a
//! pretrained tokenizer, how it loads from a model directory); `tokenize/mod.rs` lists it.

use super::encoding::Encoding;
use super::error::TokenizeError;
use super::hf::HfTokenizer;
use std::path::Path;
use std::sync::Arc;

/// How a model tokenizes: a registered kind's name (config.json's `tokenization`: `subwords`,
/// `chars`, `char_vocab`), so that predict, eval and the C API tokenize as training did.
pub type Tokenization = String;

/// What every tokenizer kind does.
pub trait TextTokenizer: Send + Sync + std::fmt::Debug {
    /// The kind's registered name.
    fn kind(&self) -> &'static str;
    /// Encodes one text as `[CLS] tokens [SEP]`, never truncated or padded.
    fn encode(&self, text: &str) -> Result<Encoding, TokenizeError>;
    /// Number of token ids (added tokens included).
    fn vocab_size(&self) -> usize;
    /// The id used to pad a batch.
    fn pad_id(&self) -> u32;
    /// Writes the tokenizer into a model directory, as its kind's `load` reads it back.
    fn save(&self, dir: &Path) -> Result<(), TokenizeError>;
    /// The pretrained tokenizer this one is, if it is one as it is (the `subwords` kind): what
    /// other kinds are made from ([`TokenizerKind::from_pretrained`]).
    fn pretrained(&self) -> Option<&HfTokenizer> {
        None
    }
    /// The id of tokens the vocabulary does not know, where the kind maps them to one id of
    /// its own choosing (one token per character: `[UNK]` / `<unk>`).
    fn unknown_id(&self) -> Option<u32> {
        None
    }
}

/// A tokenizer of any kind (cheap to clone: the tokenizer is shared).
#[derive(Clone, Debug)]
pub struct Tokenizer(Arc<dyn TextTokenizer>);

impl Tokenizer {
    /// Wraps a tokenizer of some kind.
    pub fn new(t: impl TextTokenizer + 'static) -> Tokenizer {
        Tokenizer(Arc::new(t))
    }

    /// The id of unknown tokens, where the kind has one ([`TextTokenizer::unknown_id`]).
    pub fn unknown_id(&self) -> Option<u32> {
        self.0.unknown_id()
    }

    /// Which kind it is (the name config.json records).
    pub fn tokenization(&self) -> Tokenization {
        self.0.kind().to_string()
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// The pretrained tokenizer it is, for the `subwords` kind.
    pub fn pretrained(&self) -> Option<&HfTokenizer> {
        self.0.pretrained()
    }

    /// Writes the tokenizer into a model directory.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), TokenizeError> {
        self.0.save(dir.as_ref())
    }

    /// Encodes one text as `[CLS] tokens [SEP]`, never truncated or padded.
    pub fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        self.0.encode(text)
    }

    /// Number of token ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    /// The id used to pad a batch.
    pub fn pad_id(&self) -> u32 {
        self.0.pad_id()
    }
}

/// A registered tokenizer kind.
#[derive(Clone, Copy, Debug)]
pub struct TokenizerKind {
    /// `--tokenization` value and config.json's `tokenization`.
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// Made from a pretrained tokenizer (`None`: built from the training texts instead).
    pub from_pretrained: Option<fn(HfTokenizer) -> Result<Tokenizer, TokenizeError>>,
    /// Reads what [`Tokenizer::save`] wrote into a model directory.
    pub load: fn(&Path) -> Result<Tokenizer, TokenizeError>,
}
