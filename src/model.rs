//! The NER model: a BERT encoder, a span-scoring head and the label set, with its configuration.
//!
//! Parameters walk as the encoder's HF names (`embeddings.*`, `encoder.layer.N.*`) followed by the
//! head's under `head.`, so one model.safetensors holds both and HF can still load the encoder.

use crate::bert::{BertConfig, BertEncoder, EncoderError};
use crate::head::{EfficientGlobalPointer, GlobalPointer, Head};
use crate::param::{join, ParamMut, Params};
use crate::scalar::Scalar;
use ndarray::ArrayViewD;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which span-scoring head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// GlobalPointer (method.md §2): dense H -> C*2d.
    Gp,
    /// Efficient GlobalPointer (method.md §6): shared H -> 2d plus per-type boundary scores.
    Egp,
}

/// The head's hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    pub kind: HeadKind,
    pub head_size: usize,
    pub rope: bool,
}

/// Everything needed to rebuild a model (written as config.json in a model directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub encoder: BertConfig,
    pub head: HeadConfig,
    /// Entity types; type index = position.
    pub labels: Vec<String>,
    /// Longest token sequence (specials included) the model is run on; longer texts are windowed.
    pub max_len: usize,
}

/// Encoder + head.
#[derive(Clone, Debug)]
pub struct NerModel<T> {
    pub config: ModelConfig,
    pub encoder: BertEncoder<T>,
    pub head: Head<T>,
}

/// Builds the head described by `cfg` over hidden size `hidden`.
pub fn new_head<T: Scalar>(
    cfg: &HeadConfig,
    hidden: usize,
    types: usize,
    std: f64,
    rng: &mut impl Rng,
) -> Head<T> {
    match cfg.kind {
        HeadKind::Gp => Head::GlobalPointer(GlobalPointer::new(
            hidden,
            types,
            cfg.head_size,
            cfg.rope,
            std,
            rng,
        )),
        HeadKind::Egp => Head::Efficient(EfficientGlobalPointer::new(
            hidden,
            types,
            cfg.head_size,
            cfg.rope,
            std,
            rng,
        )),
    }
}

impl<T: Scalar> NerModel<T> {
    /// A freshly initialised model (BERT initialisation for encoder and head).
    pub fn new(config: ModelConfig, rng: &mut impl Rng) -> Result<Self, EncoderError> {
        let encoder = BertEncoder::new(&config.encoder, rng)?;
        Ok(NerModel::with_encoder(config, encoder, rng))
    }

    /// A model with every weight 0, to be filled from a checkpoint.
    pub fn zeroed(config: ModelConfig) -> Result<Self, EncoderError> {
        let mut zero = rand::rngs::mock::StepRng::new(0, 0);
        let mut model = NerModel::new(config, &mut zero)?;
        model.zero_all();
        Ok(model)
    }

    fn zero_all(&mut self) {
        self.visit_mut("", &mut |_, mut p| p.value.fill(T::zero()));
    }

    /// A model around an existing (e.g. pretrained) encoder, with a fresh head.
    pub fn with_encoder(config: ModelConfig, encoder: BertEncoder<T>, rng: &mut impl Rng) -> Self {
        let head = new_head(
            &config.head,
            config.encoder.hidden_size,
            config.labels.len(),
            config.encoder.initializer_range,
            rng,
        );
        NerModel {
            config,
            encoder,
            head,
        }
    }
}

impl<T: Scalar> Params<T> for NerModel<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.encoder.visit(prefix, f);
        self.head.visit(&join(prefix, "head"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.encoder.visit_mut(prefix, f);
        self.head.visit_mut(&join(prefix, "head"), f);
    }
}
