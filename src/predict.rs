//! Inference on raw text: tokenize, window texts longer than the model's maximum, score, decode,
//! and map token spans back to character offsets.

use crate::batch::{make_batch, sorted_batches, Boundaries};
use crate::bert::EncoderError;
use crate::decode::{flatten, DecodeMode, SpanPred, DEFAULT_THRESHOLD};
use crate::model::NerModel;
use crate::scalar::Scalar;
use crate::tokenize::{token_span_to_chars, windows, Encoding, TokenizeError, Tokenizer};
use crate::trainer::{decode_batch, Workspace};
use serde::Serialize;

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

/// One window of one text, ready to batch.
struct Unit {
    text: usize,
    enc: Encoding,
    /// full-encoding index of window token 0 minus 1 (window token i is full token offset + i)
    offset: usize,
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
                enc: enc.clone(),
                offset: 0,
            });
            continue;
        }
        let ws =
            windows(enc, max_len, stride).map_err(|source| PredictError::Tokenize { index: text, source })?;
        for w in ws {
            units.push(Unit {
                text,
                offset: w.to_full(1) - 1,
                enc: w.encoding,
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
    let lengths: Vec<usize> = units.iter().map(|u| u.enc.len()).collect();
    for idx in sorted_batches(&lengths, opts.batch_size) {
        let batch = make_batch(idx.iter().map(|&i| (&units[i].enc, &[][..])));
        let spans = decode_batch(model, &batch, opts.threshold, ws)?;
        for (&i, preds) in idx.iter().zip(spans) {
            let u = &units[i];
            found[u.text].extend(preds.into_iter().map(|p| SpanPred {
                start: p.start + u.offset,
                end: p.end + u.offset,
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
