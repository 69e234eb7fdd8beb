//! Inference on raw text: tokenize, window texts longer than the model's maximum, score, decode,
//! and map token spans back to character offsets.

use crate::batch::{make_batch, Boundaries};
use crate::bert::EncoderError;
use crate::decode::{flatten, DecodeMode, SpanPred, DEFAULT_THRESHOLD};
use crate::model::NerModel;
use crate::scalar::Scalar;
use crate::tokenize::{token_span_to_chars, window, window_ranges, Encoding, TokenizeError, Tokenizer};
use crate::trainer::{decode_batch, Workspace};
use serde::Serialize;
use std::borrow::Cow;
use std::ops::Range;

/// An entity found in a text: characters `[start, end)` (Unicode code points), its type and score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PredEntity {
    pub start: usize,
    pub end: usize,
    #[serde(rename = "type")]
    pub label: String,
    /// Index of `label` in the model's labels.
    #[serde(skip)]
    pub ty: usize,
    pub score: f64,
}

/// Why prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("text {index}: {source}")]
    Tokenize { index: usize, source: TokenizeError },
    #[error(transparent)]
    Encoder(#[from] EncoderError),
}

/// How texts are decoded.
#[derive(Clone, Copy, Debug)]
pub struct PredictOptions {
    /// Nested or flat output; `None`: the model's default (config.json `decode`).
    pub mode: Option<DecodeMode>,
    pub threshold: f64,
    /// Texts per forward pass.
    pub batch_size: usize,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            mode: None,
            threshold: DEFAULT_THRESHOLD,
            batch_size: 32,
        }
    }
}

/// A trained model with its tokenizer. Immutable: share it between threads, one [`Workspace`]
/// per thread.
pub struct Predictor<T> {
    pub model: NerModel<T>,
    pub tokenizer: Tokenizer,
}

/// One window of one text, ready to batch: its encoding is built only when its batch is scored,
/// so that a long text's windows do not all sit in memory at once.
struct Unit {
    text: usize,
    /// Content tokens of the text's encoding in this window; `None`: the whole encoding.
    tokens: Option<Range<usize>>,
    /// Tokens, specials included.
    len: usize,
}

impl Unit {
    /// Full-encoding index of window token 0 minus 1 (window token i is full token offset + i).
    fn offset(&self) -> usize {
        self.tokens.as_ref().map_or(0, |r| r.start - 1)
    }

    fn encoding<'a>(&self, encs: &'a [Encoding]) -> Cow<'a, Encoding> {
        match &self.tokens {
            None => Cow::Borrowed(&encs[self.text]),
            Some(r) => Cow::Owned(window(&encs[self.text], r.clone()).encoding),
        }
    }
}

/// Most token pairs (`B·n²`, the size of one type's score matrices) one batch may hold: 32 texts
/// of 128 tokens. A batch's scores are `[B, C, n, n]`, so this bounds its memory whatever the
/// length of the texts: windows of 256 tokens go 8 at a time (32 at a time, one 1 MB line
/// peaked at 410 MB against 41 MB for a 1 KB line).
const MAX_BATCH_PAIRS: usize = 32 * 128 * 128;

/// Batches of at most `batch_size` units and [`MAX_BATCH_PAIRS`] token pairs (at least one unit),
/// units sorted by length for the least padding.
fn batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // sorted: the unit joining is the longest, so it sets the padded width
        let n = lengths[i];
        let full = current.len() >= batch_size.max(1) || (current.len() + 1) * n * n > MAX_BATCH_PAIRS;
        if full && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl<T: Scalar> Predictor<T> {
    /// Longest token sequence the model runs on, specials included.
    pub fn max_len(&self) -> usize {
        self.model.config.max_len
    }

    /// Entities of each text; see [`predict_texts`].
    pub fn predict(
        &self,
        texts: &[&str],
        opts: &PredictOptions,
        ws: &mut Workspace,
    ) -> Result<Vec<Vec<PredEntity>>, PredictError> {
        predict_texts(&self.model, &self.tokenizer, texts, opts, ws)
    }
}

/// Token windows: texts longer than `max_len` are split into windows overlapping by half.
fn units(encs: &[Encoding], max_len: usize) -> Result<Vec<Unit>, PredictError> {
    let stride = ((max_len - 2) / 2).max(1);
    let mut units = Vec::new();
    for (text, enc) in encs.iter().enumerate() {
        if enc.len() <= max_len {
            units.push(Unit {
                text,
                tokens: None,
                len: enc.len(),
            });
            continue;
        }
        let ranges = window_ranges(enc, max_len, stride)
            .map_err(|source| PredictError::Tokenize { index: text, source })?;
        for r in ranges {
            units.push(Unit {
                text,
                len: r.len() + 2,
                tokens: Some(r),
            });
        }
    }
    Ok(units)
}

/// Tokenizes `text` as `model` was trained: its tokenizer, and entity boundaries restricted to
/// words when the model uses word boundaries.
pub fn encode_for<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    text: &str,
) -> Result<Encoding, TokenizeError> {
    let mut enc = tokenizer.encode(text)?;
    if model.config.boundaries == Boundaries::Words {
        enc.mark_words(text);
    }
    Ok(enc)
}

/// Entities of each text, in character offsets. Texts longer than the model's `max_len` are
/// scored in windows overlapping by half; the head merges what the windows found.
pub fn predict_texts<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    texts: &[&str],
    opts: &PredictOptions,
    ws: &mut Workspace,
) -> Result<Vec<Vec<PredEntity>>, PredictError> {
    let encs = texts
        .iter()
        .enumerate()
        .map(|(index, t)| {
            encode_for(model, tokenizer, t).map_err(|source| PredictError::Tokenize { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let units = units(&encs, model.config.max_len)?;
    // Per text: the spans of all its windows, in full-encoding token indices.
    let mut found: Vec<Vec<SpanPred>> = vec![Vec::new(); texts.len()];
    let lengths: Vec<usize> = units.iter().map(|u| u.len).collect();
    for idx in batches(&lengths, opts.batch_size) {
        let window_encs: Vec<Cow<Encoding>> = idx.iter().map(|&i| units[i].encoding(&encs)).collect();
        let batch = make_batch(window_encs.iter().map(|e| (e.as_ref(), &[][..])));
        let spans = decode_batch(model, &batch, opts.threshold, ws)?;
        for (&i, preds) in idx.iter().zip(spans) {
            let (text, offset) = (units[i].text, units[i].offset());
            found[text].extend(preds.into_iter().map(|p| SpanPred {
                start: p.start + offset,
                end: p.end + offset,
                ..p
            }));
        }
    }
    let labels = &model.config.labels;
    let mode = opts.mode.unwrap_or(model.config.decode);
    Ok(found
        .into_iter()
        .zip(&encs)
        .map(|(spans, enc)| {
            let mut preds = model.head.merge_windows(spans);
            if mode == DecodeMode::Flat {
                preds = flatten(preds);
            }
            preds
                .into_iter()
                .map(|p| {
                    let (start, end) = token_span_to_chars(enc, p.start, p.end);
                    PredEntity {
                        start,
                        end,
                        label: labels[p.ty].clone(),
                        ty: p.ty,
                        score: p.score,
                    }
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_bound_the_token_pairs_of_long_windows() {
        // 100 windows of 256 tokens and 50 texts of 30: windows 8 at a time, texts 32.
        let mut lengths = vec![256; 100];
        lengths.extend([30; 50]);
        let b = batches(&lengths, 32);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..150).collect::<Vec<_>>());
        for batch in &b {
            let n = batch.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(
                batch.len() <= 32 && batch.len() * n * n <= MAX_BATCH_PAIRS,
                "{batch:?}"
            );
        }
        assert_eq!(b.iter().filter(|x| lengths[x[0]] == 256).count(), 13);
        // a unit over the budget on its own still gets a batch
        assert_eq!(batches(&[4096, 4096], 32), vec![vec![0], vec![1]]);
    }
}
