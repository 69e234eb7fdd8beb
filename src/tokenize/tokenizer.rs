//! A tokenizer of any kind, and the name of each kind as config.json records it.

use super::char_vocab::{self, CharVocab};
use super::encoding::Encoding;
use super::error::TokenizeError;
use super::hf::{self, HfTokenizer};
use super::per_char::PerChar;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How a model tokenizes (recorded in its config.json, so that predict, eval and the C API
/// tokenize as training did).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenization {
    /// The pretrained tokenizer as it is: its own (subword) pieces.
    Subwords,
    /// One token per character, looked up in the pretrained tokenizer's vocabulary ([`PerChar`]).
    Chars,
    /// gp-lite's character vocabulary built from the training texts ([`CharVocab`]).
    CharVocab,
}

impl Tokenization {
    /// The name used on the command line and in config.json.
    pub fn name(self) -> &'static str {
        match self {
            Tokenization::Subwords => "subwords",
            Tokenization::Chars => "chars",
            Tokenization::CharVocab => "char_vocab",
        }
    }
}

/// A tokenizer of any kind.
#[derive(Clone, Debug)]
pub enum Tokenizer {
    /// HF `tokenizers` (tokenizer.json, or WordPiece built from vocab.txt).
    Hf(HfTokenizer),
    /// One token per non-whitespace character, from a pretrained vocabulary.
    PerChar(PerChar),
    /// One token per non-whitespace character, from a vocabulary built on the training data.
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

    /// The tokenizer of a model directory trained with `tokenization` (config.json says which).
    pub fn load_as(dir: impl AsRef<Path>, tokenization: Tokenization) -> Result<Tokenizer, TokenizeError> {
        let dir = dir.as_ref();
        match (tokenization, Tokenizer::load(dir)?) {
            (Tokenization::CharVocab, t @ Tokenizer::Char(_)) => Ok(t),
            (Tokenization::Subwords, t @ Tokenizer::Hf(_)) => Ok(t),
            (Tokenization::Chars, t @ Tokenizer::Hf(_)) => t.per_char(),
            (want, found) => Err(TokenizeError::Encode(format!(
                "{}: config.json asks for `{}` tokenization but the directory holds a {} tokenizer",
                dir.display(),
                want.name(),
                found.tokenization().name()
            ))),
        }
    }

    /// This tokenizer, one token per character of its vocabulary (a pretrained tokenizer only).
    pub fn per_char(self) -> Result<Tokenizer, TokenizeError> {
        match self {
            Tokenizer::Hf(t) => PerChar::new(t).map(Tokenizer::PerChar),
            t @ (Tokenizer::PerChar(_) | Tokenizer::Char(_)) => Ok(t),
        }
    }

    /// Which tokenization this is.
    pub fn tokenization(&self) -> Tokenization {
        match self {
            Tokenizer::Hf(_) => Tokenization::Subwords,
            Tokenizer::PerChar(_) => Tokenization::Chars,
            Tokenizer::Char(_) => Tokenization::CharVocab,
        }
    }

    /// Writes the tokenizer into a model directory: tokenizer.json (HF) or vocab.txt (characters).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), TokenizeError> {
        match self {
            Tokenizer::Hf(t) => t.save(dir),
            Tokenizer::PerChar(t) => t.hf().save(dir),
            Tokenizer::Char(v) => v.write(dir.as_ref().join("vocab.txt")),
        }
    }

    /// Encodes one text as `[CLS] tokens [SEP]`, never truncated or padded.
    pub fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        match self {
            Tokenizer::Hf(t) => t.encode(text),
            Tokenizer::PerChar(t) => Ok(t.encode(text)),
            Tokenizer::Char(v) => Ok(v.encode(text)),
        }
    }

    /// Number of token ids (added tokens included).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Hf(t) => t.vocab_size(),
            Tokenizer::PerChar(t) => t.hf().vocab_size(),
            Tokenizer::Char(v) => v.len(),
        }
    }

    /// The id used to pad a batch.
    pub fn pad_id(&self) -> u32 {
        match self {
            Tokenizer::Hf(t) => t.pad_id(),
            Tokenizer::PerChar(t) => t.hf().pad_id(),
            Tokenizer::Char(_) => char_vocab::PAD,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

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
