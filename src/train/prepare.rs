//! The training data as the model sees it: each example through its head's
//! [`SpanHead::samples`](crate::head::SpanHead::samples).

use super::error::TrainError;
use crate::data::Dataset;
use crate::model::{encode_for, NerModel};
use crate::sample::{label_index, Sample};
use crate::scalar::Scalar;
use crate::tokenize::Tokenizer;

/// Tokenized training samples and what could not be used as is.
#[derive(Debug)]
pub struct Prepared {
    /// Every sample, in example order.
    pub samples: Vec<Sample>,
    /// Gold spans whose boundaries fall inside a token, or outside the allowed boundaries
    /// (left out of training).
    pub unaligned: usize,
    /// Gold spans the head cannot learn (left out of training).
    pub left_out: usize,
    /// Texts longer than `max_len` tokens, split into windows.
    pub windowed: usize,
}

/// The samples of every example of `data`, as `model`'s head builds them.
pub fn prepare<T: Scalar>(
    data: &Dataset,
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
) -> Result<Prepared, TrainError> {
    let labels = label_index(&model.config.labels);
    let encode = |text: &str| encode_for(model, tokenizer, text);
    let mut out = Prepared {
        samples: Vec::new(),
        unaligned: 0,
        left_out: 0,
        windowed: 0,
    };
    for (ex, &line) in data.examples.iter().zip(&data.lines) {
        let s = model
            .head
            .samples(ex, &encode, &labels, model.config.max_len)
            .map_err(|source| TrainError::Tokenize {
                path: data.path.clone(),
                line,
                source,
            })?;
        out.samples.extend(s.samples);
        out.unaligned += s.unaligned;
        out.left_out += s.left_out;
        out.windowed += usize::from(s.windowed);
    }
    Ok(out)
}
