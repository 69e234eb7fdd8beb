//! Text to token ids with character offsets.
//!
//! Every tokenizer produces an [`Encoding`] with `[CLS] ... [SEP]` and offsets in characters
//! (Unicode code points) of the input text. The kinds (a pretrained tokenizer's own pieces, one
//! token per character over its vocabulary, a character vocabulary built from the training
//! texts) are registered below, one file each: a new kind is a file defining its tokenizer (a
//! [`TextTokenizer`]) and a `kind()` function, plus its name in the `tokenizers!` line.

mod align;
mod encoding;
mod error;
mod hf;
mod pair;
mod tokenizer;
mod window;

pub use align::{char_span_to_tokens, token_span_to_chars};
pub use char_vocab::CharVocab;
pub use encoding::Encoding;
pub use error::TokenizeError;
pub use hf::HfTokenizer;
pub use pair::{pair_windows, PairWindow};
pub use per_char::{is_cjk, mostly_cjk, PerChar};
pub use tokenizer::{TextTokenizer, Tokenization, Tokenizer, TokenizerKind};
pub use window::{window, window_ranges, windows, Window};

use std::path::Path;

/// Declares the tokenizer-kind modules and lists them in [`kinds`].
macro_rules! tokenizers {
    ($($kind:ident),* $(,)?) => {
        $(pub mod $kind;)*

        /// Every registered tokenizer kind.
        pub fn kinds() -> Vec<TokenizerKind> {
            vec![$($kind::kind()),*]
        }
    };
}

// The registry: one name a kind.
tokenizers!(subwords, per_char, char_vocab);

/// The registered kind called `name`.
pub fn kind(name: &str) -> Result<TokenizerKind, TokenizeError> {
    kinds()
        .into_iter()
        .find(|k| k.name == name)
        .ok_or_else(|| TokenizeError::UnknownKind {
            name: name.to_string(),
            known: kinds().iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
        })
}

impl Tokenizer {
    /// An HF tokenizer.json, with its padding and truncation turned off (`subwords`).
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Tokenizer, TokenizeError> {
        HfTokenizer::from_tokenizer_json(path).map(Tokenizer::new)
    }

    /// BERT WordPiece over a vocab.txt (BertNormalizer lower-casing when `lowercase`,
    /// BertPreTokenizer, `[CLS] ... [SEP]`; `subwords`).
    pub fn from_vocab_txt(path: impl AsRef<Path>, lowercase: bool) -> Result<Tokenizer, TokenizeError> {
        HfTokenizer::from_vocab_txt(path, lowercase).map(Tokenizer::new)
    }

    /// The tokenizer of a directory whose tokenization is not recorded: tokenizer.json when
    /// present; otherwise vocab.txt, read as a [`CharVocab`] when it has that layout (see
    /// [`CharVocab::is_char_vocab_file`]), else as BERT WordPiece.
    pub fn load(dir: impl AsRef<Path>) -> Result<Tokenizer, TokenizeError> {
        let dir = dir.as_ref();
        let vocab = dir.join("vocab.txt");
        if !dir.join("tokenizer.json").exists() && vocab.exists() && CharVocab::is_char_vocab_file(&vocab)? {
            return (char_vocab::kind().load)(dir);
        }
        (subwords::kind().load)(dir)
    }

    /// The tokenizer of a model directory trained with `tokenization` (config.json says which).
    pub fn load_as(dir: impl AsRef<Path>, tokenization: &str) -> Result<Tokenizer, TokenizeError> {
        let dir = dir.as_ref();
        let want = kind(tokenization)?;
        let found = Tokenizer::load(dir)?.kind();
        // A directory of a pretrained tokenizer serves every kind made from one.
        let compatible = match want.from_pretrained {
            Some(_) => found == "subwords",
            None => found == want.name,
        };
        if !compatible {
            return Err(TokenizeError::Mismatch {
                dir: dir.to_path_buf(),
                want: tokenization.to_string(),
                found,
            });
        }
        (want.load)(dir)
    }

    /// This pretrained tokenizer made into kind `name` (`subwords` keeps it as it is; `chars`
    /// gives one token per character of its vocabulary). A tokenizer that is not a pretrained
    /// one is returned as it is.
    pub fn made_into(self, name: &str) -> Result<Tokenizer, TokenizeError> {
        let k = kind(name)?;
        let make = k
            .from_pretrained
            .ok_or(TokenizeError::NotPretrained { kind: k.name })?;
        match self.pretrained() {
            Some(hf) => make(hf.clone()),
            None => Ok(self),
        }
    }

    /// This tokenizer, one token per character of its vocabulary (a pretrained tokenizer only).
    pub fn per_char(self) -> Result<Tokenizer, TokenizeError> {
        self.made_into("chars")
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
        assert_eq!(tok.kind(), "subwords");
        let e = tok.encode("the game").unwrap();
        assert_eq!(e.ids, vec![2, 5, 7, 3]);
    }

    #[test]
    fn char_vocab_save_load_round_trip() {
        let vocab = CharVocab::build(["北京 欢迎你", "北京大学"], 1);
        let tok = Tokenizer::new(vocab);
        let dir = temp_dir("char");
        tok.save(&dir).unwrap();
        let back = Tokenizer::load(&dir).unwrap();
        assert_eq!(back.kind(), "char_vocab");
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

    #[test]
    fn registry_kinds_load_what_they_save_and_refuse_mismatches() {
        let names: Vec<&str> = kinds().iter().map(|k| k.name).collect();
        assert_eq!(names, vec!["subwords", "chars", "char_vocab"]);
        let wp = Tokenizer::from_vocab_txt(fixture("tiny-vocab/vocab.txt"), true).unwrap();
        let chars = wp.clone().made_into("chars").unwrap();
        assert_eq!(chars.kind(), "chars");
        let dir = temp_dir("registry");
        chars.save(&dir).unwrap();
        let back = Tokenizer::load_as(&dir, "chars").unwrap();
        assert_eq!(
            back.encode("the game").unwrap(),
            chars.encode("the game").unwrap()
        );
        assert_eq!(Tokenizer::load_as(&dir, "subwords").unwrap().kind(), "subwords");
        let e = Tokenizer::load_as(&dir, "char_vocab").unwrap_err().to_string();
        assert!(
            e.contains("asks for `char_vocab`") && e.contains("subwords"),
            "{e}"
        );
        let e = wp.made_into("char_vocab").unwrap_err().to_string();
        assert!(e.contains("training from scratch"), "{e}");
        assert!(kind("bytes")
            .unwrap_err()
            .to_string()
            .contains("subwords, chars, char_vocab"));
    }
}
