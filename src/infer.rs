//! The inference forward of a batch: encoder, then the head's decoding, over scratch reused
//! across calls.

use crate::batch::Batch;
use crate::bert::EncoderError;
use crate::head::HeadCache;
use crate::model::NerModel;
use crate::scalar::Scalar;
use crate::span::SpanPred;

/// Scratch a model reuses across calls: the head's own cache.
#[derive(Debug, Default)]
pub struct Workspace {
    /// The head's scratch.
    pub head: HeadCache,
}

impl Workspace {
    /// An empty workspace.
    pub fn new() -> Self {
        Workspace::default()
    }
}

/// The entities the head finds in each text of `batch` (token indices; dropout off).
pub fn decode_batch<T: Scalar>(
    model: &NerModel<T>,
    batch: &Batch,
    threshold: f64,
    ws: &mut Workspace,
) -> Result<Vec<Vec<SpanPred>>, EncoderError> {
    let h = model.encoder.encode(&batch.input)?;
    Ok(model.head.decode(
        h.view(),
        batch.input.width(),
        batch.bounds(),
        threshold,
        &mut ws.head,
    ))
}
