//! What a run decides from its data when the options leave it open: entity boundaries, the
//! default output (nested or flat) and the tokenization of a pretrained tokenizer.

use super::error::TrainError;
use super::options::{TokenizationChoice, TrainOptions};
use crate::batch::Boundaries;
use crate::data::{Dataset, Example};
use crate::decode::DecodeMode;
use crate::tokenize::{mostly_cjk, TokenizeError, Tokenizer};

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

/// The share of training texts with overlapping gold entities from which a model's default
/// output is nested: CMeEE has overlaps in 11% of its texts and GENIA in 21%, while CLUENER's
/// one overlapping pair in 10,748 texts (0.009%) is an annotation slip in a flat dataset.
pub const NESTED_SHARE: f64 = 0.01;

/// Whether two gold entities of `ex` overlap.
pub fn has_overlap(ex: &Example) -> bool {
    // entities are sorted by start: one overlaps an earlier one when it starts before the
    // furthest end seen so far
    let mut end = 0;
    ex.entities.iter().any(|e| {
        let overlaps = e.start < end;
        end = end.max(e.end);
        overlaps
    })
}

/// Nested output by default when at least [`NESTED_SHARE`] of the training texts have
/// overlapping gold entities, flat otherwise.
pub fn choose_decode(data: &Dataset) -> DecodeMode {
    let overlapping = data.examples.iter().filter(|ex| has_overlap(ex)).count();
    if overlapping as f64 >= NESTED_SHARE * data.examples.len() as f64 && overlapping > 0 {
        DecodeMode::Nested
    } else {
        DecodeMode::Flat
    }
}

/// Mostly-CJK training texts get one token per character only where the pretrained vocabulary
/// knows at least this share of their characters (a byte-level BPE's knows almost none: its
/// pieces are bytes).
pub const MIN_KNOWN_CHARS: f64 = 0.9;

/// Share of the non-special tokens of (up to the first 1000) training texts that are not the
/// tokenizer's unknown token (1 for a kind without one).
fn known_share(tokenizer: &Tokenizer, train: &Dataset) -> f64 {
    let Some(unk) = tokenizer.unknown_id() else {
        return 1.0;
    };
    let (mut known, mut all) = (0usize, 0usize);
    for e in train.examples.iter().take(1000) {
        let Ok(enc) = tokenizer.encode(&e.text) else {
            continue;
        };
        for (&id, &special) in enc.ids.iter().zip(&enc.special) {
            if !special {
                all += 1;
                known += usize::from(id != unk);
            }
        }
    }
    if all == 0 {
        1.0
    } else {
        known as f64 / all as f64
    }
}

/// The tokenizer kind for this run: `--tokenization`, or for `auto` one token per character on
/// mostly-CJK texts whose characters the vocabulary knows (see [`MIN_KNOWN_CHARS`]) and the
/// pretrained tokenizer's subwords otherwise.
pub fn choose_tokenization(
    opts: &TrainOptions,
    train: &Dataset,
    tokenizer: Tokenizer,
) -> Result<Tokenizer, TrainError> {
    let name = match &opts.tokenization {
        TokenizationChoice::Fixed(name) => name.as_str(),
        TokenizationChoice::Auto if mostly_cjk(train.examples.iter().map(|e| e.text.as_str())) => {
            // One token per character, where the vocabulary knows the characters.
            if let Ok(chars) = tokenizer.clone().made_into("chars") {
                if known_share(&chars, train) >= MIN_KNOWN_CHARS {
                    return Ok(chars);
                }
            }
            "subwords"
        }
        TokenizationChoice::Auto => "subwords",
    };
    tokenizer.made_into(name).map_err(|e| match e {
        TokenizeError::NotPretrained { .. } | TokenizeError::UnknownKind { .. } => {
            TrainError::option("--tokenization", name, e.to_string())
        }
        source => TrainError::Tokenizer {
            path: format!("{name} tokenizer").into(),
            source,
        },
    })
}
