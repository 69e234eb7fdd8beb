//! training.json: how a model was made, epoch by epoch.

use serde::{Deserialize, Serialize};

/// Figures of one epoch (kept in training.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub dev_precision: Option<f64>,
    pub dev_recall: Option<f64>,
    pub dev_f1: Option<f64>,
}

/// training.json: how the model was made.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub command: Vec<String>,
    pub seed: u64,
    pub threads: usize,
    pub train_file: String,
    pub dev_file: Option<String>,
    pub train_examples: usize,
    pub train_windows: usize,
    /// Gold spans whose boundaries fall inside a token (or, with word boundaries, a word).
    pub unaligned_spans: usize,
    /// Gold spans the head cannot learn (overlapping spans for a tagger).
    #[serde(default)]
    pub head_left_out_spans: usize,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub best_dev_f1: Option<f64>,
    pub total_seconds: f64,
}
