//! What a training run is asked to do, and what it reports while it runs.

use super::record::EpochRecord;
use crate::batch::Boundaries;
use crate::head::{self, HeadConfig, HeadOptions};
use crate::precision::Precision;
use crate::tokenize::Tokenization;
use std::path::PathBuf;

/// Where the encoder comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderSource {
    /// A preset (tiny, small, minilm, base) or an HF config.json, trained from scratch on a
    /// character vocabulary built from the training texts (or the tokenizer in `vocab`).
    Scratch {
        /// Preset name or config.json path.
        config: String,
        /// A tokenizer.json, vocab.txt or model directory to use instead of a character
        /// vocabulary built from the training texts.
        vocab: Option<PathBuf>,
    },
    /// A pretrained HF model directory (config.json, model.safetensors, tokenizer).
    Pretrained(PathBuf),
}

/// How to tokenize a pretrained encoder's input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TokenizationChoice {
    /// One token per character when the training texts are mostly CJK (more than half of their
    /// non-whitespace characters), the tokenizer's own pieces otherwise.
    #[default]
    Auto,
    /// The registered kind of this name, made from the pretrained tokenizer (`subwords`, `chars`).
    Fixed(Tokenization),
}

/// Everything a run needs. [`TrainOptions::default`] trains a `tiny` encoder from scratch;
/// [`TrainOptions::fine_tune`] a pretrained one, with the command line's defaults for each.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// Where the encoder comes from.
    pub encoder: EncoderSource,
    /// The head and its settings.
    pub head: HeadConfig,
    /// How a pretrained tokenizer is used.
    pub tokenization: TokenizationChoice,
    /// Entity boundaries; `None`: words when the training data is whitespace-separated and every
    /// gold span is on word boundaries, tokens otherwise.
    pub boundaries: Option<Boundaries>,
    /// Passes over the training data.
    pub epochs: usize,
    /// Texts (or windows) per step.
    pub batch_size: usize,
    /// Peak learning rate (linear warmup, then linear decay to 0).
    pub lr: f64,
    /// Peak learning rate of the head (`None`: `lr`).
    pub head_lr: Option<f64>,
    /// Fraction of all steps spent warming up linearly.
    pub warmup: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Longest token sequence, specials included; longer texts are split into windows.
    pub max_len: usize,
    /// Overrides both dropout probabilities of the encoder configuration.
    pub dropout: Option<f64>,
    /// Seeds initialisation, batch order and dropout.
    pub seed: u64,
    /// Characters seen fewer times are `[UNK]` (character vocabulary only).
    pub min_char_count: usize,
    /// Stop (resumably) after this many epochs of this invocation, `None`: run to `epochs`.
    pub stop_after: Option<usize>,
    /// Also save the resume state every this many optimizer steps inside an epoch (`None`: at
    /// epochs' ends only), so that `--resume` continues from there.
    pub checkpoint_every: Option<usize>,
    /// The number format of the training products ([`crate::matmul::products_in`]): f32, or
    /// bf16 operands summed in f32 (master weights, optimizer state and everything outside the
    /// products stay f32). Int8 is refused.
    pub precision: Precision,
}

impl Default for TrainOptions {
    /// From scratch: the `tiny` preset on a character vocabulary, GlobalPointer with RoPE,
    /// 20 epochs of batch 32 at lr 1e-3.
    fn default() -> Self {
        TrainOptions {
            encoder: EncoderSource::Scratch {
                config: "tiny".into(),
                vocab: None,
            },
            head: default_head(),
            tokenization: TokenizationChoice::Auto,
            boundaries: None,
            epochs: 20,
            batch_size: 32,
            lr: 1e-3,
            head_lr: None,
            warmup: 0.1,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            max_len: 256,
            dropout: None,
            seed: 42,
            min_char_count: 1,
            stop_after: None,
            checkpoint_every: None,
            precision: Precision::F32,
        }
    }
}

impl TrainOptions {
    /// Fine-tuning the pretrained HF directory `dir`: 3 epochs of batch 16 at lr 5e-5.
    pub fn fine_tune(dir: impl Into<PathBuf>) -> Self {
        TrainOptions {
            encoder: EncoderSource::Pretrained(dir.into()),
            epochs: 3,
            batch_size: 16,
            lr: 5e-5,
            ..TrainOptions::default()
        }
    }
}

/// The default head: GlobalPointer with RoPE, head size 64.
pub fn default_head() -> HeadConfig {
    head::from_options("gp", &HeadOptions::default()).expect("gp is registered")
}

/// Progress reported to the caller (the library never prints).
#[derive(Clone, Debug)]
pub enum Event {
    /// A line of information (data statistics, what was loaded).
    Info(String),
    /// An epoch starts with this many steps.
    EpochStart {
        /// 1-based.
        epoch: usize,
        /// Steps in the epoch.
        steps: usize,
    },
    /// A step finished.
    Step {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// Steps in the epoch.
        steps: usize,
        /// The batch's loss.
        loss: f64,
        /// Real tokens in the batch.
        tokens: usize,
        /// The learning rate used.
        lr: f64,
    },
    /// The resume state was saved inside an epoch (`--checkpoint-every`), after its `step`th
    /// batch: a run killed from here on resumes from this point.
    Checkpoint {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch: the batches done.
        step: usize,
        /// Steps in the epoch.
        steps: usize,
    },
    /// An epoch finished (`best`: its model is the best so far and was saved).
    EpochEnd {
        /// Its figures.
        record: EpochRecord,
        /// Whether it is the best so far.
        best: bool,
    },
}
