//! A reader model answering questions: each (question, context) pair in windows of the model's
//! `max_len` ([`pair_windows`]), every window's best spans from the head, the best span over all
//! windows of at most `max_answer_len` characters as the answer, in character offsets of the
//! context. And the CMRC 2018 EM/F1 of the answers to labelled questions ([`evaluate_reader`]).

use crate::batch::make_batch;
use crate::cmrc::{score, MrcScores};
use crate::data::Dataset;
use crate::head::reader::ReaderConfig;
use crate::head::HeadError;
use crate::infer::{decode_batch, Workspace};
use crate::model::{encode_for, NerModel};
use crate::predict::PredictError;
use crate::scalar::Scalar;
use crate::tokenize::{pair_windows, token_span_to_chars, Tokenizer};
use serde::Serialize;

/// Pairs per forward pass (each a window of up to `max_len` tokens).
pub const ANSWER_BATCH: usize = 8;

/// An answer: characters `[start, end)` of the context (code points) and the head's score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// The answer's text, `context[start..end]`.
    pub answer: String,
    /// First character (inclusive), in code points.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// The span's score (a logit).
    pub score: f64,
}

/// Why questions could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The model is not a reader.
    #[error("the model's head is `{0}`, not a reader (train with --head reader)")]
    NotAReader(String),
    /// The reader's settings do not parse.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Tokenizing, windowing or the encoder failed.
    #[error(transparent)]
    Predict(#[from] PredictError),
}

/// The reader settings of `model`, or why it is not a reader.
pub fn reader_config<T: Scalar>(model: &NerModel<T>) -> Result<ReaderConfig, AnswerError> {
    if model.config.head.kind != "reader" {
        return Err(AnswerError::NotAReader(model.config.head.kind.clone()));
    }
    Ok(ReaderConfig::checked(&model.config.head.settings)?)
}

/// The best answer to each `(question, context)` pair (None when the context has no span of at
/// most `max_answer_len` characters, e.g. an empty context).
pub fn answer<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    pairs: &[(&str, &str)],
    ws: &mut Workspace,
) -> Result<Vec<Option<Answer>>, AnswerError> {
    let config = reader_config(model)?;
    let mut best: Vec<Option<Answer>> = vec![None; pairs.len()];
    // Pairs a few at a time, so that their windows need not all be in memory.
    for (chunk, pairs) in pairs.chunks(ANSWER_BATCH).enumerate() {
        let mut windows = Vec::new();
        let mut contexts = Vec::new();
        for (k, (question, context)) in pairs.iter().enumerate() {
            let index = chunk * ANSWER_BATCH + k;
            let tokenize = |source| PredictError::Tokenize { index, source };
            let q = encode_for(model, tokenizer, question).map_err(tokenize)?;
            let c = encode_for(model, tokenizer, context).map_err(tokenize)?;
            let ws = pair_windows(&q, &c, model.config.max_len, config.max_question_len).map_err(tokenize)?;
            windows.extend(ws.into_iter().map(|w| (k, w)));
            contexts.push((c, context.chars().collect::<Vec<char>>()));
        }
        for group in windows.chunks(ANSWER_BATCH) {
            let batch = make_batch(group.iter().map(|(_, w)| (&w.encoding, &[][..])));
            let spans = decode_batch(model, &batch, 0.0, ws).map_err(PredictError::from)?;
            for ((k, w), preds) in group.iter().zip(spans) {
                let (enc, chars) = &contexts[*k];
                for p in preds {
                    let (start, end) = token_span_to_chars(enc, w.to_context(p.start), w.to_context(p.end));
                    let slot = &mut best[chunk * ANSWER_BATCH + k];
                    if end - start > config.max_answer_len
                        || slot.as_ref().is_some_and(|a| a.score >= p.score)
                    {
                        continue;
                    }
                    *slot = Some(Answer {
                        answer: chars[start..end].iter().collect(),
                        start,
                        end,
                        score: p.score,
                    });
                }
            }
        }
    }
    Ok(best)
}

/// CMRC 2018 EM/F1 of `model`'s answers to the questions of `data` (against every published
/// reference of each), with the answers.
pub fn evaluate_reader<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    data: &Dataset,
) -> Result<(MrcScores, Vec<Option<Answer>>), AnswerError> {
    let (pairs, refs) = questions(data);
    let answers = answer(model, tokenizer, &pairs, &mut Workspace::new())?;
    let scores = score(
        refs.iter()
            .zip(&answers)
            .map(|(r, a)| (&r[..], a.as_ref().map(|a| a.answer.as_str()))),
    );
    Ok((scores, answers))
}

/// The `(question, context)` pairs of `data` and each one's references (examples without a
/// question are not questions and are left out).
pub fn questions(data: &Dataset) -> (Vec<(&str, &str)>, Vec<Vec<String>>) {
    data.examples
        .iter()
        .filter_map(|e| {
            let q = e.question.as_ref()?;
            Some(((q.text.as_str(), e.text.as_str()), q.answers.clone()))
        })
        .unzip()
}
