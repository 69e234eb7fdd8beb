//! One token per character over a pretrained vocabulary (Chinese NER on a pretrained encoder):
//! every non-whitespace character of the text is its own token, looked up after the
//! tokenizer's own normalizer, between the tokenizer's own special tokens.
//!
//! Lookup of a character `c`: `norm = normalizer(c)` trimmed of whitespace (BERT's normalizer
//! pads CJK characters with spaces; sentencepiece's NFKC maps full-width forms to ASCII), then
//! the piece `norm`, else `▁norm` (a sentencepiece word-initial piece), else the unknown token.
//! A character that normalizes to nothing (a zero-width joiner, a control character) is the
//! unknown token too; whitespace gets no token. Token `k` covers exactly character `offsets[k]`,
//! so offsets never shift, whatever the normalizer does.

use std::collections::HashMap;

use tokenizers::{NormalizedString, Normalizer};

use super::encoding::Encoding;
use super::error::TokenizeError;
use super::hf::HfTokenizer;
use super::subwords::load_pretrained;
use super::tokenizer::{TextTokenizer, Tokenizer, TokenizerKind};
use std::path::Path;

/// A pretrained tokenizer's vocabulary, one token per character.
#[derive(Clone, Debug)]
pub struct PerChar {
    hf: HfTokenizer,
    cls: u32,
    sep: u32,
    unk: u32,
}

impl PerChar {
    /// Wraps `hf`, taking its special tokens from its post-processor (the tokens it puts around
    /// an empty text) and its unknown token (`[UNK]` or `<unk>`).
    pub fn new(hf: HfTokenizer) -> Result<PerChar, TokenizeError> {
        let inner = hf.inner();
        let empty = inner
            .encode("", true)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        let specials: Vec<u32> = empty
            .get_ids()
            .iter()
            .zip(empty.get_special_tokens_mask())
            .filter(|(_, &m)| m == 1)
            .map(|(&id, _)| id)
            .collect();
        let (Some(&cls), Some(&sep)) = (specials.first(), specials.last()) else {
            return Err(TokenizeError::Encode(
                "the tokenizer adds no special tokens around a text (one token per character needs [CLS]/[SEP] or <s>/</s>)"
                    .into(),
            ));
        };
        let unk = ["[UNK]", "<unk>"]
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .ok_or_else(|| TokenizeError::Encode("the vocabulary has no `[UNK]` or `<unk>` token".into()))?;
        Ok(PerChar { hf, cls, sep, unk })
    }

    /// The wrapped tokenizer (saved as the model directory's tokenizer).
    pub fn hf(&self) -> &HfTokenizer {
        &self.hf
    }

    /// The id of character `c` (see the module docs).
    pub fn lookup(&self, c: char) -> u32 {
        let inner = self.hf.inner();
        let mut s = NormalizedString::from(c.to_string());
        let norm = match inner.get_normalizer() {
            Some(n) if n.normalize(&mut s).is_ok() => s.get().trim().to_string(),
            _ => c.to_string(),
        };
        if norm.is_empty() {
            return self.unk;
        }
        inner
            .token_to_id(&norm)
            .or_else(|| inner.token_to_id(&format!("\u{2581}{norm}")))
            .unwrap_or(self.unk)
    }

    /// `[CLS]`, one token per non-whitespace character with offsets `(i, i + 1)`, `[SEP]`.
    pub fn encode(&self, text: &str) -> Encoding {
        let mut e = Encoding::new(Vec::new(), Vec::new(), Vec::new());
        let mut seen: HashMap<char, u32> = HashMap::new();
        e.push(self.cls, (0, 0), true);
        for (i, c) in text.chars().enumerate() {
            if !c.is_whitespace() {
                let id = *seen.entry(c).or_insert_with(|| self.lookup(c));
                e.push(id, (i, i + 1), false);
            }
        }
        e.push(self.sep, (0, 0), true);
        e
    }
}

impl TextTokenizer for PerChar {
    fn kind(&self) -> &'static str {
        "chars"
    }
    fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        Ok(PerChar::encode(self, text))
    }
    fn vocab_size(&self) -> usize {
        self.hf().vocab_size()
    }
    fn pad_id(&self) -> u32 {
        self.hf().pad_id()
    }
    fn save(&self, dir: &Path) -> Result<(), TokenizeError> {
        self.hf().save(dir)
    }
    fn unknown_id(&self) -> Option<u32> {
        Some(self.unk)
    }
}

/// The registry's entry: `--tokenization chars`.
pub fn kind() -> TokenizerKind {
    TokenizerKind {
        name: "chars",
        help: "one token per character, looked up in the pretrained vocabulary after its normalizer",
        from_pretrained: Some(|hf| PerChar::new(hf).map(Tokenizer::new)),
        load: |dir| PerChar::new(load_pretrained(dir)?).map(Tokenizer::new),
    }
}

/// True for characters of scripts written without spaces between words (Han, kana, Hangul)
/// and their punctuation and full-width forms.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF       // Hangul Jamo
        | 0x2E80..=0x2FDF     // CJK radicals, Kangxi radicals
        | 0x3000..=0x303F     // CJK symbols and punctuation
        | 0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3100..=0x31FF     // Bopomofo, Hangul compatibility Jamo, Katakana extensions
        | 0x3400..=0x4DBF     // CJK extension A
        | 0x4E00..=0x9FFF     // CJK unified ideographs
        | 0xAC00..=0xD7AF     // Hangul syllables
        | 0xF900..=0xFAFF     // CJK compatibility ideographs
        | 0xFE30..=0xFE4F     // CJK compatibility forms
        | 0xFF00..=0xFFEF     // half-width and full-width forms
        | 0x20000..=0x3134F   // CJK extensions B-G
    )
}

/// True when more than half of the non-whitespace characters of `texts` are CJK: the rule that
/// chooses one token per character (and joins character-per-line files without spaces).
pub fn mostly_cjk<'a>(texts: impl IntoIterator<Item = &'a str>) -> bool {
    let (mut cjk, mut all) = (0usize, 0usize);
    for c in texts
        .into_iter()
        .flat_map(str::chars)
        .filter(|c| !c.is_whitespace())
    {
        all += 1;
        cjk += is_cjk(c) as usize;
    }
    2 * cjk > all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::tests::fixture;

    #[test]
    fn wordpiece_vocab_one_token_per_character() {
        let hf = HfTokenizer::from_vocab_txt(fixture("tiny-vocab/vocab.txt"), true).unwrap();
        let t = PerChar::new(hf).unwrap();
        // [CLS]=2, [SEP]=3, [UNK]=1: the tiny vocabulary has no single letters ("s" only as
        // "##s"), so these characters are [UNK]; the ideographic space gets no token, and every
        // other character is one token covering exactly it.
        let text = "a\u{3000}é\u{200b}s";
        let e = t.encode(text);
        assert_eq!(e.ids.first(), Some(&2));
        assert_eq!(e.ids.last(), Some(&3));
        assert_eq!(e.offsets, vec![(0, 0), (0, 1), (2, 3), (3, 4), (4, 5), (0, 0)]);
        assert_eq!(e.special, vec![true, false, false, false, false, true]);
        // The zero-width space normalizes to nothing: the unknown token.
        assert_eq!(e.ids[3], 1);
    }

    #[test]
    fn cjk_detection() {
        assert!(mostly_cjk(["我爱北京天安门", "ok"]));
        assert!(!mostly_cjk(["EU rejects German call", "北京"]));
        assert!(is_cjk('，') && is_cjk('ア') && is_cjk('한') && !is_cjk('a'));
    }
}
