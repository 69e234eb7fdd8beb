//! BERT encoder configuration: HF's config.json fields, plus named presets for training from scratch.

use serde::{Deserialize, Serialize};

/// The encoder hyper-parameters (field names as in HF's config.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_pos_type() -> String {
    "absolute".into()
}
fn default_init_range() -> f64 {
    0.02
}

impl BertConfig {
    /// A preset by name: tiny (2 layers, hidden 128, 2 heads, FFN 512), small (4, 256, 4, 1024),
    /// minilm (6, 384, 12, 1536), base (12, 768, 12, 3072). Vocabulary size is set by the caller.
    pub fn preset(name: &str, vocab_size: usize) -> Option<BertConfig> {
        let (layers, hidden, heads, ffn) = match name {
            "tiny" => (2, 128, 2, 512),
            "small" => (4, 256, 4, 1024),
            "minilm" => (6, 384, 12, 1536),
            "base" => (12, 768, 12, 3072),
            _ => return None,
        };
        Some(BertConfig {
            vocab_size,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: ffn,
            hidden_act: default_act(),
            max_position_embeddings: default_max_pos(),
            type_vocab_size: default_type_vocab(),
            layer_norm_eps: default_eps(),
            hidden_dropout_prob: default_dropout(),
            attention_probs_dropout_prob: default_dropout(),
            position_embedding_type: default_pos_type(),
            initializer_range: default_init_range(),
        })
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
