//! BERT encoder configuration: HF's config.json fields, plus named presets for training from scratch.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a configuration could not be read or is not supported.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config.json could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config.json does not parse as a BERT configuration.
    #[error("{}: malformed config: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// `model_type` names no registered encoder family (`crate::family`).
    #[error("{origin}: field `model_type` = {model_type:?}: not an encoder family gp-lite computes (it loads {known})")]
    UnknownFamily {
        /// The file the configuration came from.
        origin: String,
        /// The `model_type` (or what stood for it) as declared.
        model_type: String,
        /// The model types gp-lite loads, comma-separated.
        known: String,
    },
    /// A field has a value the encoder does not support.
    #[error("{origin}: field `{field}` = {value}: {reason}")]
    Unsupported {
        /// The file the configuration came from (or `<in-memory config>`).
        origin: String,
        /// The field's HF name.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it is not supported.
        reason: &'static str,
    },
}

/// Activations the encoder implements (all three are GELU; the tanh forms share one code path).
pub const SUPPORTED_ACTS: [&str; 3] = ["gelu", "gelu_new", "gelu_pytorch_tanh"];

/// Name used in errors for a configuration that did not come from a file.
const IN_MEMORY: &str = "<in-memory config>";

/// The encoder hyper-parameters (field names as in HF's config.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Rows of the word-embedding table (token ids are below it).
    pub vocab_size: usize,
    /// H: the width of every token's hidden vector.
    pub hidden_size: usize,
    /// The number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; each has `hidden_size / num_attention_heads` dimensions.
    pub num_attention_heads: usize,
    /// The feed-forward block's inner width.
    pub intermediate_size: usize,
    /// The feed-forward activation, one of [`SUPPORTED_ACTS`] (default `gelu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Rows of the position-embedding table: the longest sequence, specials included (default 512).
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) table (default 2).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// The epsilon of every layer norm (default 1e-12).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Dropout after the embeddings, attention output and feed-forward output (default 0.1).
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on the attention probabilities (default 0.1).
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Only `absolute` (learned position embeddings) is supported (the default).
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
    /// The standard deviation of the normal initialisation from scratch (default 0.02).
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    /// The encoder family (HF's `model_type`: bert, roberta, xlm-roberta, electra, distilbert);
    /// it decides the tensor names in files (see `crate::family`).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Position ids start here (RoBERTa's `pad_token_id + 1`; 0 for BERT).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub position_offset: usize,
    /// Width of the embedding tables when it differs from `hidden_size` (ELECTRA): then
    /// `embeddings_project` maps them to `hidden_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// Dropout after each attention block's output projection (BERT has it, DistilBERT not).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub attention_output_dropout: bool,
}

fn default_model_type() -> String {
    "bert".into()
}
fn is_zero(v: &usize) -> bool {
    *v == 0
}
fn yes() -> bool {
    true
}
fn is_true(v: &bool) -> bool {
    *v
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
            model_type: default_model_type(),
            position_offset: 0,
            embedding_size: None,
            attention_output_dropout: true,
        })
    }

    /// Reads HF's config.json (unknown fields are ignored, missing optional ones take HF's
    /// defaults) and validates it, naming `path` in every error.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<BertConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate_from(&path.display().to_string())?;
        Ok(config)
    }

    /// Refuses settings the encoder does not implement (see [`BertConfig::validate_from`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_from(IN_MEMORY)
    }

    /// As [`BertConfig::validate`], naming `origin` (usually the file) in the error: refuses zero
    /// sizes, `hidden_act` other than GELU, `position_embedding_type` other than `absolute`, and a
    /// `hidden_size` not divisible by `num_attention_heads`.
    pub fn validate_from(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: &'static str, value: String, reason: &'static str| {
            Err(ConfigError::Unsupported {
                origin: origin.to_string(),
                field,
                value,
                reason,
            })
        };
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, value) in sizes {
            if value == 0 {
                return bad(field, "0".into(), "must be positive");
            }
        }
        if !SUPPORTED_ACTS.contains(&self.hidden_act.as_str()) {
            return bad(
                "hidden_act",
                format!("{:?}", self.hidden_act),
                "only gelu, gelu_new and gelu_pytorch_tanh are supported",
            );
        }
        if self.position_embedding_type != "absolute" {
            return bad(
                "position_embedding_type",
                format!("{:?}", self.position_embedding_type),
                "only absolute position embeddings are supported",
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "hidden_size",
                self.hidden_size.to_string(),
                "must be divisible by num_attention_heads",
            );
        }
        if self.position_offset >= self.max_position_embeddings {
            return bad(
                "max_position_embeddings",
                self.max_position_embeddings.to_string(),
                "leaves no position after the family's offset (pad_token_id + 1)",
            );
        }
        if self.embedding_size == Some(0) {
            return bad("embedding_size", "0".into(), "must be positive");
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return bad(
                "layer_norm_eps",
                self.layer_norm_eps.to_string(),
                "must be positive",
            );
        }
        Ok(())
    }

    /// A lower bound of the encoder's parameter count (embedding tables and weight matrices;
    /// biases and LayerNorms left out), in u128 so that no declared size overflows. Loading
    /// compares it with the weights file before allocating anything.
    pub fn min_params(&self) -> u128 {
        let (v, h, l, i) = (
            self.vocab_size as u128,
            self.hidden_size as u128,
            self.num_hidden_layers as u128,
            self.intermediate_size as u128,
        );
        let (p, t) = (self.max_position_embeddings as u128, self.type_vocab_size as u128);
        let e = self.embedding_width() as u128;
        let project = if e == h { 0 } else { e * h };
        // embeddings (and ELECTRA's projection), then per layer Q, K, V, O (H x H each) and the
        // FFN (H x I, I x H)
        (v + p + t) * e + project + l * (4 * h * h + 2 * h * i)
    }

    /// Width of the embedding tables: `embedding_size`, else `hidden_size`.
    pub fn embedding_width(&self) -> usize {
        self.embedding_size.unwrap_or(self.hidden_size)
    }

    /// The longest input in tokens: the position table less the family's offset.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings.saturating_sub(self.position_offset)
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gp-lite-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const BASE: &str = r#"{"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 128, "model_type": "bert", "extra": [1, 2]}"#;

    #[test]
    fn minimal_config_takes_defaults_and_ignores_unknown_fields() {
        let path = write_temp("ok.json", BASE);
        let c = BertConfig::from_json_file(&path).unwrap();
        assert_eq!(c.hidden_act, "gelu");
        assert_eq!(c.max_position_embeddings, 512);
        assert_eq!(c.type_vocab_size, 2);
        assert_eq!(c.layer_norm_eps, 1e-12);
        assert_eq!(c.position_embedding_type, "absolute");
        assert_eq!(c.head_dim(), 16);
    }

    fn error_for(name: &str, replace: (&str, &str)) -> String {
        let text = BASE.replace(replace.0, replace.1);
        assert_ne!(text, BASE, "replacement {replace:?} did not apply");
        let path = write_temp(name, &text);
        let err = BertConfig::from_json_file(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&path.display().to_string()),
            "error does not name the file: {msg}"
        );
        msg
    }

    #[test]
    fn unsupported_settings_are_refused_by_field() {
        let msg = error_for(
            "act.json",
            ("\"model_type\"", "\"hidden_act\": \"relu\", \"model_type\""),
        );
        assert!(
            msg.ends_with(
                "field `hidden_act` = \"relu\": only gelu, gelu_new and gelu_pytorch_tanh are supported"
            ),
            "{msg}"
        );
        let msg = error_for(
            "pos.json",
            (
                "\"model_type\"",
                "\"position_embedding_type\": \"relative_key\", \"model_type\"",
            ),
        );
        assert!(
            msg.contains("field `position_embedding_type` = \"relative_key\""),
            "{msg}"
        );
        let msg = error_for(
            "heads.json",
            ("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"),
        );
        assert!(
            msg.ends_with("field `hidden_size` = 64: must be divisible by num_attention_heads"),
            "{msg}"
        );
        let msg = error_for(
            "zero.json",
            ("\"intermediate_size\": 128", "\"intermediate_size\": 0"),
        );
        assert!(
            msg.ends_with("field `intermediate_size` = 0: must be positive"),
            "{msg}"
        );
        let msg = error_for("missing.json", ("\"vocab_size\": 100,", ""));
        assert!(msg.contains("missing field `vocab_size`"), "{msg}");
        let msg = error_for("type.json", ("\"hidden_size\": 64", "\"hidden_size\": \"64\""));
        assert!(msg.contains("malformed config"), "{msg}");
    }

    #[test]
    fn gelu_variants_are_accepted() {
        for act in SUPPORTED_ACTS {
            let mut c = BertConfig::preset("tiny", 10).unwrap();
            c.hidden_act = act.into();
            c.validate().unwrap();
        }
    }
}
