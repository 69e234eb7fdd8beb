//! One training step (forward, loss, backward, clipping, AdamW) and the inference forward, over
//! buffers that persist across steps.

use crate::batch::Batch;
use crate::bert::EncoderError;
use crate::head::{Buffer, HeadCache};
use crate::loss::{mcce_sparse, SpanSet};
use crate::model::NerModel;
use crate::optim::adamw::{AdamW, AdamWConfig};
use crate::optim::clip::clip_grad_norm;
use crate::param::Params;
use crate::scalar::Scalar;
use rand::Rng;

/// Scratch a model reuses across calls: the head's activations and the `[B, C, n, n]` scores.
#[derive(Clone, Debug, Default)]
pub struct Workspace<T> {
    pub head: HeadCache<T>,
    pub scores: Buffer<T>,
    pub dscores: Buffer<T>,
}

impl<T: Scalar> Workspace<T> {
    pub fn new() -> Self {
        Workspace {
            head: HeadCache::new(),
            scores: Buffer::new(),
            dscores: Buffer::new(),
        }
    }
}

/// Inference: span scores `[B, C, n, n]` of `batch` into `ws.scores` (dropout off).
pub fn score<T: Scalar>(
    model: &NerModel<T>,
    batch: &Batch,
    ws: &mut Workspace<T>,
) -> Result<(), EncoderError> {
    let h = model.encoder.encode(&batch.input)?;
    model.head.forward(
        h.view(),
        batch.input.width(),
        batch.valid.view(),
        &mut ws.head,
        &mut ws.scores,
    );
    Ok(())
}

/// What one step reports.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f64,
    /// Global gradient norm before clipping; computed only when clipping (None otherwise).
    pub grad_norm: Option<f64>,
}

/// A model with its optimizer and step buffers.
pub struct Trainer<T> {
    pub model: NerModel<T>,
    pub opt: AdamW<T>,
    pub ws: Workspace<T>,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl<T: Scalar> Trainer<T> {
    pub fn new(model: NerModel<T>, adamw: AdamWConfig, max_grad_norm: Option<f64>) -> Self {
        Trainer {
            model,
            opt: AdamW::new(adamw),
            ws: Workspace::new(),
            max_grad_norm,
        }
    }

    /// Forward, mean multilabel cross-entropy, backward, clip, AdamW update at learning rate `lr`.
    /// `dropout` drives dropout masks (training mode).
    pub fn step(
        &mut self,
        batch: &Batch,
        lr: f64,
        dropout: &mut impl Rng,
    ) -> Result<StepStats, EncoderError> {
        let n = batch.input.width();
        let model = &mut self.model;
        let ws = &mut self.ws;
        model.zero_grad();
        let (h, cache) = model.encoder.forward(&batch.input, Some(dropout))?;
        model
            .head
            .forward(h.view(), n, batch.valid.view(), &mut ws.head, &mut ws.scores);
        ws.dscores.reshape(ws.scores.shape());
        let loss = mcce_sparse(
            ws.scores.view4(),
            &batch.gold,
            SpanSet::Valid(batch.valid.view()),
            ws.dscores.view4_mut(),
        );
        let dh = model.head.backward(h.view(), &mut ws.head, ws.dscores.view4());
        model.encoder.backward(&batch.input, &cache, dh.view());
        // The norm is a full pass over every gradient: only clipping needs it.
        let grad_norm = self.max_grad_norm.map(|max| clip_grad_norm(model, max));
        self.opt
            .step(model, lr)
            .expect("optimizer state is built from this model");
        Ok(StepStats { loss, grad_norm })
    }
}
