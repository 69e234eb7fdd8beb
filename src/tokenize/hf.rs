//! HF `tokenizers` tokenizers: a pretrained model's tokenizer.json, or BERT WordPiece built from a
//! vocab.txt, both encoding without padding or truncation.

use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::AddedToken;

use super::{Encoding, TokenizeError};

/// Special tokens of a BERT vocabulary, registered as added tokens so that they are never split.
const BERT_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// An HF tokenizer and the id it pads with.
#[derive(Clone, Debug)]
pub struct HfTokenizer {
    inner: Box<tokenizers::Tokenizer>,
    pad_id: u32,
}

fn hf_error(path: &Path, e: impl std::fmt::Display) -> TokenizeError {
    TokenizeError::Hf {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl HfTokenizer {
    /// Reads tokenizer.json and turns off the padding and truncation it may ask for. The pad id is
    /// the file's padding id, else the id of `[PAD]` (or `<pad>`).
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<HfTokenizer, TokenizeError> {
        let path = path.as_ref();
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| hf_error(path, e))?;
        let pad_id = match inner.get_padding() {
            Some(p) => p.pad_id,
            None => ["[PAD]", "<pad>"]
                .iter()
                .find_map(|t| inner.token_to_id(t))
                .ok_or_else(|| TokenizeError::MissingToken {
                    path: path.to_path_buf(),
                    token: "[PAD]".into(),
                })?,
        };
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| hf_error(path, e))?;
        Ok(HfTokenizer {
            inner: Box::new(inner),
            pad_id,
        })
    }

    /// BERT WordPiece over `vocab.txt`: BertNormalizer (clean text, CJK characters split, accents
    /// stripped and text lower-cased when `lowercase`), BertPreTokenizer, `[CLS] ... [SEP]`.
    pub fn from_vocab_txt(path: impl AsRef<Path>, lowercase: bool) -> Result<HfTokenizer, TokenizeError> {
        let path = path.as_ref();
        let path_str = path.to_str().ok_or_else(|| hf_error(path, "path is not UTF-8"))?;
        let model = WordPiece::from_file(path_str)
            .unk_token("[UNK]".into())
            .build()
            .map_err(|e| hf_error(path, e))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| TokenizeError::MissingToken {
                    path: path.to_path_buf(),
                    token: token.into(),
                })
        };
        let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        id("[UNK]")?;
        let specials: Vec<AddedToken> = BERT_SPECIALS
            .iter()
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| AddedToken::from(*t, true))
            .collect();
        inner.add_special_tokens(&specials);
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        Ok(HfTokenizer {
            inner: Box::new(inner),
            pad_id: pad,
        })
    }

    /// Writes `dir/tokenizer.json`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<(), TokenizeError> {
        let path = dir.as_ref().join("tokenizer.json");
        self.inner.save(&path, true).map_err(|e| hf_error(&path, e))
    }

    /// `[CLS] tokens [SEP]` with character offsets.
    pub fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        let e = self
            .inner
            .encode_char_offsets(text, true)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        Ok(Encoding::new(
            e.get_ids().to_vec(),
            e.get_offsets().to_vec(),
            e.get_special_tokens_mask().iter().map(|&m| m == 1).collect(),
        ))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id used to pad a batch: tokenizer.json's padding id, else that of `[PAD]` / `<pad>`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The wrapped `tokenizers` tokenizer (for token strings, decoding, ...).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// `do_lower_case` from `dir/tokenizer_config.json`, true when the file or the field is absent.
pub(super) fn do_lower_case(dir: &Path) -> Result<bool, TokenizeError> {
    let path: PathBuf = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(true);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| TokenizeError::Io {
        path: path.clone(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| hf_error(&path, e))?;
    Ok(value
        .get("do_lower_case")
        .and_then(|v| v.as_bool())
        .unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::tests::fixture;

    #[test]
    fn wordpiece_splits_and_offsets_in_characters() {
        let t = HfTokenizer::from_vocab_txt(fixture("tiny-vocab/vocab.txt"), true).unwrap();
        // "é" lower-cases and loses its accent to "e", which the vocabulary lacks: [UNK].
        let e = t.encode("Games, é playing!").unwrap();
        // [CLS] game ##s , [UNK] play ##ing ! [SEP]
        assert_eq!(e.ids, vec![2, 7, 6, 13, 1, 8, 9, 12, 3]);
        assert_eq!(
            e.offsets,
            vec![
                (0, 0),
                (0, 4),
                (4, 5),
                (5, 6),
                (7, 8),
                (9, 13),
                (13, 16),
                (16, 17),
                (0, 0)
            ]
        );
        assert_eq!(
            e.special,
            vec![true, false, false, false, false, false, false, false, true]
        );
    }

    #[test]
    fn case_is_kept_without_lowercase() {
        let t = HfTokenizer::from_vocab_txt(fixture("tiny-vocab/vocab.txt"), false).unwrap();
        assert_eq!(t.encode("The the").unwrap().ids, vec![2, 1, 5, 3]);
    }

    #[test]
    fn special_tokens_in_text_are_not_split() {
        let t = HfTokenizer::from_vocab_txt(fixture("tiny-vocab/vocab.txt"), true).unwrap();
        assert_eq!(t.encode("the [MASK]").unwrap().ids, vec![2, 5, 4, 3]);
    }

    #[test]
    fn vocab_without_cls_is_refused() {
        let dir = std::env::temp_dir().join(format!("gp-lite-hf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vocab.txt");
        std::fs::write(&path, "[PAD]\n[UNK]\n[SEP]\nthe\n").unwrap();
        let err = HfTokenizer::from_vocab_txt(&path, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: the vocabulary has no `[CLS]` token", path.display())
        );
    }
}
