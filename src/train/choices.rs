//! What a run decides from its data when the options leave it open: entity boundaries, the
//! default output (nested or flat) and the tokenization of a pretrained tokenizer.

use super::error::TrainError;
use super::options::{TokenizationChoice, TrainOptions};
use crate::batch::Boundaries;
use crate::data::{Dataset, Example};
use crate::decode::DecodeMode;
use crate::tokenize::{mostly_cjk, Tokenization, Tokenizer};

/// Word boundaries when the texts are not mostly CJK and every gold span starts at a word start
/// and ends at a word end (whitespace-separated: column files, tokenized corpora); token
/// boundaries otherwise (raw text where an entity may end inside a word, as in "Google's").
pub fn choose_boundaries(data: &Dataset) -> Boundaries {
    let on_words = |ex: &Example| {
        let space: Vec<bool> = ex.text.chars().map(char::is_whitespace).collect();
        ex.entities
            .iter()
            .all(|e| (e.start == 0 || space[e.start - 1]) && space.get(e.end).copied().unwrap_or(true))
    };
    let any_space = data.examples.iter().any(|e| e.text.contains(char::is_whitespace));
    let cjk = mostly_cjk(data.examples.iter().map(|e| e.text.as_str()));
    if any_space && !cjk && data.examples.iter().all(on_words) {
        Boundaries::Words
    } else {
        Boundaries::Tokens
    }
}

/// Flat output by default when no two gold entities of a text overlap.
pub fn choose_decode(data: &Dataset) -> DecodeMode {
    let overlapping = data.examples.iter().any(|ex| {
        // entities are sorted by start: one overlaps an earlier one when it starts before the
        // furthest end seen so far
        let mut end = 0;
        ex.entities.iter().any(|e| {
            let overlaps = e.start < end;
            end = end.max(e.end);
            overlaps
        })
    });
    if overlapping {
        DecodeMode::Nested
    } else {
        DecodeMode::Flat
    }
}

/// A pretrained tokenizer as `opts` asks, or one token per character when the texts are mostly CJK.
pub fn choose_tokenization(
    opts: &TrainOptions,
    train: &Dataset,
    tokenizer: Tokenizer,
) -> Result<Tokenizer, TrainError> {
    let chars = match opts.tokenization {
        TokenizationChoice::Fixed(Tokenization::Chars) => true,
        TokenizationChoice::Fixed(Tokenization::Subwords) => false,
        TokenizationChoice::Fixed(Tokenization::CharVocab) => {
            return Err(TrainError::option(
                "--tokenization",
                "char_vocab",
                "is for training from scratch without --vocab",
            ))
        }
        TokenizationChoice::Auto => mostly_cjk(train.examples.iter().map(|e| e.text.as_str())),
    };
    if chars {
        tokenizer.per_char().map_err(|source| TrainError::Tokenizer {
            path: "per-character tokenizer".into(),
            source,
        })
    } else {
        Ok(tokenizer)
    }
}
