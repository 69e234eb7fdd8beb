//! The NER model: a BERT encoder, a head and the label set, with its configuration.
//!
//! Parameters walk as the encoder's HF names (`embeddings.*`, `encoder.layer.N.*`) followed by the
//! head's under `head.`, so one model.safetensors holds both and HF can still load the encoder.

use crate::batch::Boundaries;
use crate::bert::{BertConfig, BertEncoder, EncoderError};
use crate::decode::DecodeMode;
use crate::head::{self, HeadConfig, HeadError, HeadShape, SpanHead};
use crate::param::{join, ParamMut, Params};
use crate::precision::Precision;
use crate::scalar::Scalar;
use crate::tokenize::{Encoding, Tokenization, TokenizeError, Tokenizer};
use ndarray::ArrayViewD;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Why a model cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The encoder's configuration.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// The head's configuration.
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// Everything needed to rebuild a model (written as config.json in a model directory).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The BERT encoder's sizes (HF config.json fields).
    pub encoder: BertConfig,
    /// Which head and its settings (`{"kind": ..., ...}`).
    pub head: HeadConfig,
    /// Entity types; type index = position.
    pub labels: Vec<String>,
    /// Longest token sequence (specials included) the model is run on; longer texts are windowed.
    pub max_len: usize,
    /// How texts are tokenized (absent in directories written before it was recorded: then the
    /// tokenizer files present decide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenization: Option<Tokenization>,
    /// Where entities may begin and end.
    #[serde(default)]
    pub boundaries: Boundaries,
    /// Output when neither `--flat` nor `--nested` is asked for: flat when the training data had
    /// no overlapping entities.
    #[serde(default)]
    pub decode: DecodeMode,
    /// The precision of the weights file and of the encoder's products when loaded: `int8` for a
    /// directory written by `gp-lite quantize` (absent: f32).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// Encoder + head.
#[derive(Debug)]
pub struct NerModel<T> {
    /// The configuration it was built from.
    pub config: ModelConfig,
    /// The BERT encoder: token ids to hidden states `[B*n, H]`.
    pub encoder: BertEncoder<T>,
    /// The span head over the hidden states, built from `config.head`.
    pub head: Box<dyn SpanHead<T>>,
}

impl ModelConfig {
    /// The sizes its head is built for.
    pub fn head_shape(&self) -> HeadShape {
        HeadShape {
            hidden: self.encoder.hidden_size,
            types: self.labels.len(),
            std: self.encoder.initializer_range,
        }
    }
}

impl<T: Scalar> Clone for NerModel<T> {
    fn clone(&self) -> Self {
        NerModel {
            config: self.config.clone(),
            encoder: self.encoder.clone(),
            head: self.head.boxed_clone(),
        }
    }
}

impl<T: Scalar> NerModel<T> {
    /// Packs the encoder's and the head's weights once for inference (`Linear::prepack`): a
    /// loaded model's products then stop packing them on every call. Training, loading and any
    /// other mutable walk of the parameters drop the packed copies.
    pub fn prepack(&mut self) {
        self.prepack_as(Precision::F32);
    }

    /// [`NerModel::prepack`] with the encoder's dense layers in `precision` (int8: see
    /// `matmul::int8`); the head stays f32. The f32 weights are kept, so a model can be packed
    /// again in another precision.
    pub fn prepack_as(&mut self, precision: Precision) {
        self.encoder.prepack(precision);
        self.head.prepack();
    }

    /// Whether the parameter `name` (a matrix) is stored in the model's precision in an int8 or
    /// bf16 model directory: the word embeddings (a lookup reads its rows) and the weights of the
    /// encoder's dense layers (the ones [`NerModel::prepack_as`] runs in that precision);
    /// position and token-type tables, LayerNorm, biases and the head stay f32.
    pub fn stored_narrow(name: &str) -> bool {
        name == "embeddings.word_embeddings.weight"
            || name == "embeddings_project.weight"
            || (name.starts_with("encoder.layer.")
                && name.ends_with(".weight")
                && !name.contains("LayerNorm"))
    }

    /// The precision of the encoder's products after [`NerModel::prepack_as`] (f32 before).
    pub fn precision(&self) -> Precision {
        self.encoder.precision()
    }

    /// A freshly initialised model (BERT initialisation for encoder and head).
    pub fn new(config: ModelConfig, rng: &mut impl RngCore) -> Result<Self, ModelError> {
        let encoder = BertEncoder::new(&config.encoder, rng)?;
        Ok(NerModel::with_encoder(config, encoder, rng)?)
    }

    /// A model with every weight 0, to be filled from a checkpoint. The encoder's tensors are
    /// built as zeros with no write (`init::normal` at std 0), so their memory is only taken as
    /// a load fills them.
    pub fn zeroed(config: ModelConfig) -> Result<Self, ModelError> {
        let mut zero = rand::rngs::mock::StepRng::new(0, 0);
        let mut built = config.clone();
        built.encoder.initializer_range = 0.0;
        let mut model = NerModel::new(built, &mut zero)?;
        model.config = config;
        model.zero_all();
        Ok(model)
    }

    /// Sets every weight to 0; one already 0 is read, not written.
    fn zero_all(&mut self) {
        self.visit_mut("", &mut |_, mut p| {
            if p.value.iter().any(|v| *v != T::zero()) {
                p.value.fill(T::zero());
            }
        });
    }

    /// A model around an existing (e.g. pretrained) encoder, with a fresh head.
    pub fn with_encoder(
        config: ModelConfig,
        encoder: BertEncoder<T>,
        rng: &mut impl RngCore,
    ) -> Result<Self, HeadError> {
        let head = head::build(&config.head, config.head_shape(), rng)?;
        Ok(NerModel {
            config,
            encoder,
            head,
        })
    }

    /// Learning-rate multiplier of parameter `name` (a walk name): the head's own for its
    /// parameters times `head_lr_scale`, 1 for the encoder's.
    pub fn lr_scale(&self, name: &str, head_lr_scale: f64) -> f64 {
        match name.strip_prefix("head.") {
            Some(rest) => head_lr_scale * self.head.lr_scale(rest),
            None => 1.0,
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
