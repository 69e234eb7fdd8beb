//! Training samples: an example's text encoded as the model sees it, its entities mapped onto
//! tokens, and texts longer than the model's `max_len` split into overlapping windows.

use crate::data::Example;
use crate::span::GoldSpan;
use crate::tokenize::{char_span_to_tokens, windows, Encoding, TokenizeError};
use std::collections::HashMap;

/// One tokenized text (or window of a text, or segment pair) with its gold spans in token
/// indices.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The encoder's input for this sample.
    pub enc: Encoding,
    /// `(type, first token, last token)`, inclusive.
    pub gold: Vec<GoldSpan>,
}

/// Label name to type index.
pub type LabelIndex = HashMap<String, usize>;

/// The samples of one example and what could not be used as is.
#[derive(Clone, Debug, Default)]
pub struct ExampleSamples {
    /// The encoder inputs with their gold spans.
    pub samples: Vec<Sample>,
    /// Gold spans whose boundaries fall inside a token, or outside the allowed boundaries.
    pub unaligned: usize,
    /// Gold spans the head cannot learn.
    pub left_out: usize,
    /// Whether the text was longer than `max_len` tokens and split into windows.
    pub windowed: bool,
}

/// The index of each label.
pub fn label_index(labels: &[String]) -> LabelIndex {
    labels.iter().enumerate().map(|(i, l)| (l.clone(), i)).collect()
}

/// The default samples of an example: its text encoded by `encode`, each entity mapped onto
/// tokens (those falling inside a token or off the allowed boundaries counted as unaligned),
/// `trainable` keeping what the head can learn, and a text longer than `max_len` tokens split
/// into windows of `max_len` sharing half of theirs (each window keeping the spans inside it).
pub fn text_samples(
    example: &Example,
    encode: &dyn Fn(&str) -> Result<Encoding, TokenizeError>,
    labels: &LabelIndex,
    max_len: usize,
    trainable: &dyn Fn(Vec<GoldSpan>) -> (Vec<GoldSpan>, usize),
) -> Result<ExampleSamples, TokenizeError> {
    let enc = encode(&example.text)?;
    let mut out = ExampleSamples::default();
    let mut gold = Vec::new();
    for e in &example.entities {
        match char_span_to_tokens(&enc, e.start, e.end) {
            Some((s, t)) if enc.may_start[s] && enc.may_end[t] => gold.push((labels[&e.label], s, t)),
            _ => out.unaligned += 1,
        }
    }
    let (gold, left_out) = trainable(gold);
    out.left_out = left_out;
    if enc.len() <= max_len {
        out.samples.push(Sample { enc, gold });
        return Ok(out);
    }
    out.windowed = true;
    let stride = ((max_len - 2) / 2).max(1);
    for w in windows(&enc, max_len, stride)? {
        let (lo, hi) = (w.tokens.start, w.tokens.end);
        let g = gold
            .iter()
            .filter(|&&(_, s, t)| s >= lo && t < hi)
            .map(|&(a, s, t)| (a, s - lo + 1, t - lo + 1))
            .collect();
        out.samples.push(Sample {
            enc: w.encoding,
            gold: g,
        });
    }
    Ok(out)
}
