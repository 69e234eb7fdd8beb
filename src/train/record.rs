//! training.json: how a model was made, epoch by epoch.

use crate::precision::Precision;
use serde::{Deserialize, Serialize};

/// Figures of one epoch (kept in training.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean of the batch losses over the epoch.
    pub train_loss: f64,
    /// Real (unpadded) tokens trained on.
    pub train_tokens: usize,
    /// Wall time of the training pass (dev evaluation not included).
    pub seconds: f64,
    /// `train_tokens / seconds`.
    pub tokens_per_s: f64,
    /// Micro precision on the dev data after the epoch (None without dev data).
    pub dev_precision: Option<f64>,
    /// Micro recall on the dev data (None without dev data).
    pub dev_recall: Option<f64>,
    /// Micro F1 on the dev data (None without dev data); a reader's CMRC 2018 F1 (0-1).
    pub dev_f1: Option<f64>,
    /// A reader's CMRC 2018 exact match on the dev data (0-1; None for NER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev_em: Option<f64>,
}

/// training.json: how the model was made.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// The command line that ran the training, program name first.
    pub command: Vec<String>,
    /// The random seed (initialisation, shuffling, dropout).
    pub seed: u64,
    /// Worker threads used.
    pub threads: usize,
    /// The number format of the training products (f32 when absent, as before bf16 training).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The training data file.
    pub train_file: String,
    /// The dev data file, if any.
    pub dev_file: Option<String>,
    /// Texts in the training data.
    pub train_examples: usize,
    /// Training samples after windowing texts longer than `max_len`.
    pub train_windows: usize,
    /// Gold spans whose boundaries fall inside a token (or, with word boundaries, a word).
    pub unaligned_spans: usize,
    /// Gold spans the head cannot learn (overlapping spans for a tagger).
    #[serde(default)]
    pub head_left_out_spans: usize,
    /// Reading comprehension: published answers moved to the nearest occurrence of their text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_repaired: Option<usize>,
    /// Reading comprehension: published answers not found in their context (left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_skipped: Option<usize>,
    /// One record per epoch done, resumed runs included.
    pub epochs: Vec<EpochRecord>,
    /// 1-based epoch of the saved model: best dev F1, or the last without dev data.
    pub best_epoch: Option<usize>,
    /// Dev F1 of that epoch (None without dev data).
    pub best_dev_f1: Option<f64>,
    /// Sum of the epochs' `seconds`.
    pub total_seconds: f64,
}
