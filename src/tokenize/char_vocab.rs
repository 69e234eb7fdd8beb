//! A per-character vocabulary for training from scratch (Chinese): one token per non-whitespace
//! character, whitespace produces no token.

use std::collections::HashMap;
use std::path::Path;

use super::encoding::Encoding;
use super::error::TokenizeError;
use super::tokenizer::{TextTokenizer, Tokenizer, TokenizerKind};

/// The id of `[PAD]` (padding).
pub const PAD: u32 = 0;
/// The id of `[UNK]` (a character outside the vocabulary).
pub const UNK: u32 = 1;
/// The id of `[CLS]` (before every text).
pub const CLS: u32 = 2;
/// The id of `[SEP]` (after every text).
pub const SEP: u32 = 3;
/// The special tokens, in id order.
pub const SPECIALS: [&str; 4] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];

/// Characters and their ids; ids 0..4 are the specials `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl CharVocab {
    /// Every non-whitespace character seen at least `min_count` times in `texts`, most frequent
    /// first (ties by code point), after the four specials.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>, min_count: usize) -> CharVocab {
        let mut counts: HashMap<char, usize> = HashMap::new();
        for text in texts {
            for c in text.chars().filter(|c| !c.is_whitespace()) {
                *counts.entry(c).or_insert(0) += 1;
            }
        }
        let mut kept: Vec<(char, usize)> = counts.into_iter().filter(|&(_, n)| n >= min_count).collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        CharVocab::from_chars(kept.into_iter().map(|(c, _)| c).collect())
    }

    fn from_chars(chars: Vec<char>) -> CharVocab {
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, (i + SPECIALS.len()) as u32))
            .collect();
        CharVocab { chars, index }
    }

    /// Number of ids, specials included.
    pub fn len(&self) -> usize {
        SPECIALS.len() + self.chars.len()
    }

    /// Never true: the specials are always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The id of a character (`UNK` when unknown).
    pub fn id(&self, c: char) -> u32 {
        self.index.get(&c).copied().unwrap_or(UNK)
    }

    /// The token string of an id.
    pub fn token(&self, id: u32) -> Option<String> {
        let id = id as usize;
        match SPECIALS.get(id) {
            Some(s) => Some(s.to_string()),
            None => self.chars.get(id - SPECIALS.len()).map(|c| c.to_string()),
        }
    }

    /// `[CLS]`, one token per non-whitespace character with offsets `(i, i + 1)`, `[SEP]`.
    pub fn encode(&self, text: &str) -> Encoding {
        let mut e = Encoding::new(Vec::new(), Vec::new(), Vec::new());
        e.push(CLS, (0, 0), true);
        for (i, c) in text.chars().enumerate() {
            if !c.is_whitespace() {
                e.push(self.id(c), (i, i + 1), false);
            }
        }
        e.push(SEP, (0, 0), true);
        e
    }

    /// Writes the vocabulary as one token per line, in id order.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), TokenizeError> {
        let path = path.as_ref();
        let mut text = String::with_capacity(self.len() * 4);
        for s in SPECIALS {
            text.push_str(s);
            text.push('\n');
        }
        for c in &self.chars {
            text.push(*c);
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|source| TokenizeError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a file written by [`CharVocab::write`]: the four specials in order, then one
    /// non-whitespace character per line, each once.
    pub fn read(path: impl AsRef<Path>) -> Result<CharVocab, TokenizeError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let bad = |line: usize, what: String| TokenizeError::BadVocab {
            path: path.to_path_buf(),
            line,
            what,
        };
        let lines: Vec<&str> = text.lines().collect();
        for (i, s) in SPECIALS.iter().enumerate() {
            if lines.get(i) != Some(s) {
                return Err(bad(i + 1, format!("expected `{s}`")));
            }
        }
        let mut chars = Vec::with_capacity(lines.len());
        let mut seen = HashMap::new();
        for (i, line) in lines.iter().enumerate().skip(SPECIALS.len()) {
            let c = single_char(line).ok_or_else(|| bad(i + 1, format!("`{line}` is not one character")))?;
            if let Some(first) = seen.insert(c, i + 1) {
                return Err(bad(i + 1, format!("`{c}` repeats line {first}")));
            }
            chars.push(c);
        }
        Ok(CharVocab::from_chars(chars))
    }

    /// Whether a vocab.txt has the layout [`CharVocab::read`] expects (as opposed to WordPiece).
    pub fn is_char_vocab_file(path: impl AsRef<Path>) -> Result<bool, TokenizeError> {
        let text = read_text(path.as_ref())?;
        let mut lines = text.lines();
        let specials_first = SPECIALS.iter().all(|s| lines.next() == Some(*s));
        Ok(specials_first && lines.all(|l| single_char(l).is_some()))
    }
}

/// The character of a one-character, non-whitespace line.
fn single_char(line: &str) -> Option<char> {
    let mut it = line.chars();
    match (it.next(), it.next()) {
        (Some(c), None) if !c.is_whitespace() => Some(c),
        _ => None,
    }
}

fn read_text(path: &Path) -> Result<String, TokenizeError> {
    std::fs::read_to_string(path).map_err(|source| TokenizeError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl TextTokenizer for CharVocab {
    fn kind(&self) -> &'static str {
        "char_vocab"
    }
    fn encode(&self, text: &str) -> Result<Encoding, TokenizeError> {
        Ok(CharVocab::encode(self, text))
    }
    fn vocab_size(&self) -> usize {
        self.len()
    }
    fn pad_id(&self) -> u32 {
        PAD
    }
    fn save(&self, dir: &Path) -> Result<(), TokenizeError> {
        self.write(dir.join("vocab.txt"))
    }
}

/// The registry's entry: `char_vocab`, built from the training texts (no pretrained tokenizer).
pub fn kind() -> TokenizerKind {
    TokenizerKind {
        name: "char_vocab",
        help: "a character vocabulary built from the training texts (training from scratch)",
        from_pretrained: None,
        load: |dir| CharVocab::read(dir.join("vocab.txt")).map(Tokenizer::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_orders_by_count_and_applies_min_count() {
        // counts: 京 3, 北 2, 人 1, 大 1
        let v = CharVocab::build(["北京 京", "北京\t人大"], 2);
        assert_eq!(v.len(), 6);
        assert_eq!(v.id('京'), 4);
        assert_eq!(v.id('北'), 5);
        assert_eq!(v.id('人'), UNK);
        assert_eq!(v.token(4).as_deref(), Some("京"));
        assert_eq!(v.token(0).as_deref(), Some("[PAD]"));
        assert_eq!(v.token(6), None);
    }

    #[test]
    fn encode_skips_whitespace_and_keeps_character_offsets() {
        let v = CharVocab::build(["北京 京"], 1);
        let e = v.encode("京 x北");
        assert_eq!(e.ids, vec![CLS, 4, UNK, 5, SEP]);
        assert_eq!(e.offsets, vec![(0, 0), (0, 1), (2, 3), (3, 4), (0, 0)]);
        assert_eq!(e.special, vec![true, false, false, false, true]);
    }

    #[test]
    fn read_rejects_a_wordpiece_vocab_by_line() {
        let path = std::env::temp_dir().join(format!("gp-lite-charvocab-{}.txt", std::process::id()));
        std::fs::write(&path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n北\nthe\n").unwrap();
        let err = CharVocab::read(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:6: `the` is not one character", path.display())
        );
        assert!(!CharVocab::is_char_vocab_file(&path).unwrap());
    }
}
