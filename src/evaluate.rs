//! Entity-level precision, recall and F1 of a model on labelled data (what `gp-lite eval` and
//! the dev evaluation after each epoch report).

use crate::data::Dataset;
use crate::infer::Workspace;
use crate::metrics::{evaluate, Report};
use crate::model::NerModel;
use crate::predict::{predict_texts, PredictError, PredictOptions};
use crate::sample::label_index;
use crate::scalar::Scalar;
use crate::tokenize::Tokenizer;

/// Entity-level P/R/F1 of `model` on `data` (character spans).
pub fn evaluate_dataset<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    data: &Dataset,
    opts: &PredictOptions,
) -> Result<Report, PredictError> {
    let labels = &model.config.labels;
    let index = label_index(labels);
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    let mut ws = Workspace::new();
    let preds = predict_texts(model, tokenizer, &texts, opts, &mut ws)?;
    let gold: Vec<_> = data
        .examples
        .iter()
        .enumerate()
        .flat_map(|(t, ex)| ex.entities.iter().map(move |e| (t, e)))
        .map(|(t, e)| (t, index[&e.label], e.start, e.end))
        .collect();
    let pred: Vec<_> = preds
        .iter()
        .enumerate()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t, p.ty, p.start, p.end)))
        .collect();
    Ok(evaluate(&gold, &pred, labels.len()))
}
