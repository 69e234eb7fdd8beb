//! One training step (forward, loss, backward, clipping, AdamW) over buffers that persist across
//! steps.

use crate::batch::Batch;
use crate::bert::EncoderError;
use crate::infer::Workspace;
use crate::model::NerModel;
use crate::optim::adamw::{AdamW, AdamWConfig};
use crate::optim::clip::clip_grad_norm;
use crate::param::Params;
use crate::scalar::Scalar;
use rand::Rng;

/// What one step reports.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// The head's loss on the batch (before the update).
    pub loss: f64,
    /// Global gradient norm before clipping; computed only when clipping (None otherwise).
    pub grad_norm: Option<f64>,
}

/// A model with its optimizer and step buffers.
pub struct Trainer<T> {
    /// The model being trained.
    pub model: NerModel<T>,
    /// AdamW over the model's parameters.
    pub opt: AdamW<T>,
    /// The head's scratch, kept across steps.
    pub ws: Workspace,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f64>,
    /// The head's learning rate over the encoder's.
    pub head_lr_scale: f64,
    /// Parameters whose rate differs from the encoder's (the head's, a CRF's transitions),
    /// computed at the first step for the `head_lr_scale` it saw.
    lr_scales: Option<(f64, Vec<(String, f64)>)>,
}

impl<T: Scalar> Trainer<T> {
    /// A trainer for `model` with AdamW (`adamw`, default decay predicate) and optional
    /// gradient-norm clipping; the head learns at the encoder's rate until `head_lr_scale` is set.
    pub fn new(model: NerModel<T>, adamw: AdamWConfig, max_grad_norm: Option<f64>) -> Self {
        Trainer {
            model,
            opt: AdamW::new(adamw),
            ws: Workspace::new(),
            max_grad_norm,
            head_lr_scale: 1.0,
            lr_scales: None,
        }
    }

    /// Forward, the head's loss, backward, clip, AdamW update at learning rate `lr` (each
    /// parameter scaled by [`NerModel::lr_scale`]). `dropout` drives dropout masks.
    pub fn step(
        &mut self,
        batch: &Batch,
        lr: f64,
        dropout: &mut impl Rng,
    ) -> Result<StepStats, EncoderError> {
        let n = batch.input.width();
        let model = &mut self.model;
        model.zero_grad();
        let (h, cache) = model.encoder.forward(&batch.input, Some(dropout))?;
        let loss = model
            .head
            .loss(h.view(), n, batch.bounds(), &batch.gold, &mut self.ws.head);
        let dh = model.head.backward(h.view(), &mut self.ws.head);
        model.encoder.backward(&batch.input, &cache, dh.view());
        // The norm is a full pass over every gradient: only clipping needs it.
        let grad_norm = self.max_grad_norm.map(|max| clip_grad_norm(model, max));
        let head_lr_scale = self.head_lr_scale;
        if self.lr_scales.as_ref().is_none_or(|(h, _)| *h != head_lr_scale) {
            let mut scaled: Vec<(String, f64)> = Vec::new();
            model.visit("", &mut |name, _| {
                let s = model.lr_scale(name, head_lr_scale);
                if s != 1.0 {
                    scaled.push((name.to_string(), s));
                }
            });
            self.lr_scales = Some((head_lr_scale, scaled));
        }
        let scaled = &self.lr_scales.as_ref().expect("set above").1;
        let scale = |name: &str| scaled.iter().find(|(n, _)| n == name).map_or(1.0, |&(_, s)| s);
        self.opt
            .step_scaled(model, lr, &scale)
            .expect("optimizer state is built from this model");
        Ok(StepStats { loss, grad_norm })
    }
}
