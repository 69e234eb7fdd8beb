//! Text to token ids with character offsets.
//!
//! Two kinds of tokenizer: an HF `tokenizers` tokenizer (from a pretrained model's tokenizer.json,
//! or a BERT WordPiece built from a vocab.txt) and a per-character vocabulary for training from
//! scratch on Chinese. Both produce an [`Encoding`] with `[CLS] ... [SEP]` and offsets in
//! characters (Unicode code points) of the input text.

mod align;
mod char_vocab;
mod error;
mod hf;
mod window;

use std::path::Path;

pub use align::{char_span_to_tokens, token_span_to_chars};
pub use char_vocab::CharVocab;
pub use error::TokenizeError;
pub use hf::HfTokenizer;
pub use window::{windows, Window};

/// One encoded text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, `[CLS]` first and `[SEP]` last.
    pub ids: Vec<u32>,
    /// Per token, `[start, end)` in characters of the text; `(0, 0)` for special tokens.
    pub offsets: Vec<(usize, usize)>,
    /// Per token, whether it is a special token (`[CLS]`, `[SEP]`, ...).
    pub special: Vec<bool>,
}

impl Encoding {
    /// Number of tokens, specials included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens at all (never the case for a [`Tokenizer`]'s output).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A tokenizer of either kind.
#[derive(Clone, Debug)]
pub enum Tokenizer {
    /// HF `tokenizers` (tokenizer.json, or WordPiece built from vocab.txt).
    Hf(HfTokenizer),
    /// One token per non-whitespace character.
    Char(CharVocab),
}

impl Tokenizer {
    /// An HF tokenizer.json, with its padding and truncation turned off.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizeError> {
        HfTokenizer::from_tokenizer_json(path).map(Tokenizer::Hf)
    }

    /// BERT WordPiece over a vocab.txt (BertNormalizer lower-casing when `lowercase`,
    /// BertPreTokenizer, `[CLS] ... [SEP]`).
    pub fn from_vocab_txt(path: impl AsRef<Path>, lowercase: bool) -> Result<Tokenizer, TokenizeError> {
        HfTokenizer::from_vocab_txt(path, lowercase).map(Tokenizer::Hf)
    }

    /// The tokenizer of a model directory: tokenizer.json when present; otherwise vocab.txt,
    /// read as a [`CharVocab`] when it has that layout (see [`CharVocab::is_char_vocab_file`]),
    /// else as BERT WordPiece, lower-casing unless tokenizer_config.json says
    /// `"do_lower_case": false`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizeError> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if json.exists() {
            return Tokenizer::from_tokenizer_json(json);
        }
        let vocab = dir.join("vocab.txt");
        if !vocab.exists() {
            return Err(TokenizeError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        if CharVocab::is_char_vocab_file(&vocab)? {
            return CharVocab::read(&vocab).map(Tokenizer::Char);
        }
        let lowercase = hf::do_lower_case(dir)?;
        Tokenizer::from_vocab_txt(vocab, lowercase)
    }

    /// Writes the tokenizer into a model directory: tokenizer.json (HF) or vocab.txt (characters).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), TokenizeError> {
        match self {
            Tokenizer::Hf(t) => t.save(dir),
            Tokenizer::Char(v) => v.write(dir.as_ref().join("vocab.txt")),
        }
    }

    /// Encodes one text as `[CLS] tokens [SEP]`, never truncated or padded.
    pub fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        match self {
            Tokenizer::Hf(t) => t.encode(text),
            Tokenizer::Char(v) => Ok(v.encode(text)),
        }
    }

    /// Number of token ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Hf(t) => t.vocab_size(),
            Tokenizer::Char(v) => v.len(),
        }
    }

    /// The id used to pad a batch.
    pub fn pad_id(&self) -> u32 {
        match self {
            Tokenizer::Hf(t) => t.pad_id(),
            Tokenizer::Char(_) => char_vocab::PAD,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gp-lite-tokenize-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn wordpiece_save_load_round_trip() {
        let tok = Tokenizer::from_vocab_txt(fixture("tiny-vocab/vocab.txt"), true).unwrap();
        let dir = temp_dir("wp");
        tok.save(&dir).unwrap();
        let back = Tokenizer::load(&dir).unwrap();
        let text = "Playing the game, unplayable!";
        assert_eq!(tok.encode(text).unwrap(), back.encode(text).unwrap());
        assert_eq!(back.vocab_size(), tok.vocab_size());
        assert_eq!(back.pad_id(), 0);
    }

    #[test]
    fn load_reads_plain_vocab_dir_as_wordpiece() {
        let tok = Tokenizer::load(fixture("tiny-vocab")).unwrap();
        assert!(matches!(tok, Tokenizer::Hf(_)));
        let e = tok.encode("the game").unwrap();
        assert_eq!(e.ids, vec![2, 5, 7, 3]);
    }

    #[test]
    fn char_vocab_save_load_round_trip() {
        let vocab = CharVocab::build(["北京 欢迎你", "北京大学"], 1);
        let tok = Tokenizer::Char(vocab);
        let dir = temp_dir("char");
        tok.save(&dir).unwrap();
        let back = Tokenizer::load(&dir).unwrap();
        assert!(matches!(back, Tokenizer::Char(_)));
        let text = "欢迎 北大!";
        assert_eq!(tok.encode(text).unwrap(), back.encode(text).unwrap());
        assert_eq!(back.vocab_size(), 4 + 7);
        assert_eq!(back.pad_id(), 0);
    }

    #[test]
    fn load_without_vocab_is_an_error() {
        let dir = temp_dir("empty");
        let err = Tokenizer::load(&dir).unwrap_err();
        assert!(err.to_string().contains("no tokenizer.json or vocab.txt"));
    }
}
