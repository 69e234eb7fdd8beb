//! The `subwords` kind: a pretrained tokenizer's own pieces (HF tokenizer.json, or BERT
//! WordPiece over a vocab.txt).

use super::encoding::Encoding;
use super::error::TokenizeError;
use super::hf::{self, HfTokenizer};
use super::tokenizer::{TextTokenizer, Tokenizer, TokenizerKind};
use std::path::Path;

impl TextTokenizer for HfTokenizer {
    fn kind(&self) -> &'static str {
        "subwords"
    }
    fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        HfTokenizer::encode(self, text)
    }
    fn vocab_size(&self) -> usize {
        HfTokenizer::vocab_size(self)
    }
    fn pad_id(&self) -> u32 {
        HfTokenizer::pad_id(self)
    }
    fn save(&self, dir: &Path) -> Result<(), TokenizeError> {
        HfTokenizer::save(self, dir)
    }
    fn pretrained(&self) -> Option<&HfTokenizer> {
        Some(self)
    }
}

/// The pretrained tokenizer of directory `dir`: tokenizer.json when present, else BERT
/// WordPiece over vocab.txt, lower-casing unless tokenizer_config.json says
/// `"do_lower_case": false`.
pub fn load_pretrained(dir: &Path) -> Result<HfTokenizer, TokenizeError> {
    let json = dir.join("tokenizer.json");
    if json.exists() {
        return HfTokenizer::from_tokenizer_json(json);
    }
    let vocab = dir.join("vocab.txt");
    if !vocab.exists() {
        return Err(TokenizeError::NotFound {
            dir: dir.to_path_buf(),
        });
    }
    HfTokenizer::from_vocab_txt(vocab, hf::do_lower_case(dir)?)
}

/// The registry's entry: `--tokenization subwords`.
pub fn kind() -> TokenizerKind {
    TokenizerKind {
        name: "subwords",
        help: "the pretrained tokenizer's own pieces",
        from_pretrained: Some(|hf| Ok(Tokenizer::new(hf))),
        load: |dir| load_pretrained(dir).map(Tokenizer::new),
    }
}
