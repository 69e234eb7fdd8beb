//! DistilBERT (`model_type: distilbert`): BERT's post-LN layers under other names
//! (`transformer.layer.N.attention.q_lin`, `sa_layer_norm`, `ffn.lin1`, `output_layer_norm`, ...),
//! no token types, LayerNorm eps 1e-12, and no dropout after the attention output projection.

use super::{parse, EncoderFamily};
use crate::bert::config::{BertConfig, ConfigError};
use serde::Deserialize;
use std::path::Path;

/// The registry's entry.
pub fn family() -> EncoderFamily {
    EncoderFamily {
        name: "distilbert",
        model_types: &["distilbert"],
        architectures: &["DistilBert"],
        prefix: "distilbert",
        read_config,
        file_name,
    }
}

/// HF's `DistilBertConfig` fields (with its defaults).
#[derive(Deserialize)]
struct DistilBertConfig {
    vocab_size: usize,
    #[serde(default = "d512")]
    max_position_embeddings: usize,
    #[serde(default)]
    sinusoidal_pos_embds: bool,
    #[serde(default = "d6")]
    n_layers: usize,
    #[serde(default = "d12")]
    n_heads: usize,
    #[serde(default = "d768")]
    dim: usize,
    #[serde(default = "d3072")]
    hidden_dim: usize,
    #[serde(default = "p01")]
    dropout: f64,
    #[serde(default = "p01")]
    attention_dropout: f64,
    #[serde(default = "gelu")]
    activation: String,
    #[serde(default = "std002")]
    initializer_range: f64,
}

fn d512() -> usize {
    512
}
fn d6() -> usize {
    6
}
fn d12() -> usize {
    12
}
fn d768() -> usize {
    768
}
fn d3072() -> usize {
    3072
}
fn p01() -> f64 {
    0.1
}
fn gelu() -> String {
    "gelu".into()
}
fn std002() -> f64 {
    0.02
}

fn read_config(value: &serde_json::Value, path: &Path) -> Result<BertConfig, ConfigError> {
    let d: DistilBertConfig = parse(value, path)?;
    if d.sinusoidal_pos_embds {
        return Err(ConfigError::Unsupported {
            origin: path.display().to_string(),
            field: "sinusoidal_pos_embds",
            value: "true".into(),
            reason: "fixed sinusoidal position embeddings are not supported (HF does not train them)",
        });
    }
    let mut cfg = BertConfig::preset("tiny", d.vocab_size).expect("tiny is a preset");
    cfg.hidden_size = d.dim;
    cfg.num_hidden_layers = d.n_layers;
    cfg.num_attention_heads = d.n_heads;
    cfg.intermediate_size = d.hidden_dim;
    cfg.hidden_act = d.activation;
    cfg.max_position_embeddings = d.max_position_embeddings;
    cfg.type_vocab_size = 0;
    cfg.layer_norm_eps = 1e-12;
    cfg.hidden_dropout_prob = d.dropout;
    cfg.attention_probs_dropout_prob = d.attention_dropout;
    cfg.initializer_range = d.initializer_range;
    cfg.model_type = "distilbert".into();
    cfg.attention_output_dropout = false;
    Ok(cfg)
}

/// `encoder.layer.N.<BERT part>` to `transformer.layer.N.<DistilBERT part>`.
fn file_name(name: &str) -> String {
    const PARTS: [(&str, &str); 8] = [
        ("attention.self.query.", "attention.q_lin."),
        ("attention.self.key.", "attention.k_lin."),
        ("attention.self.value.", "attention.v_lin."),
        ("attention.output.dense.", "attention.out_lin."),
        ("attention.output.LayerNorm.", "sa_layer_norm."),
        ("intermediate.dense.", "ffn.lin1."),
        ("output.dense.", "ffn.lin2."),
        ("output.LayerNorm.", "output_layer_norm."),
    ];
    let Some(rest) = name.strip_prefix("encoder.layer.") else {
        return name.to_string();
    };
    let (index, part) = rest.split_once('.').unwrap_or((rest, ""));
    for (bert, distil) in PARTS {
        if let Some(param) = part.strip_prefix(bert) {
            return format!("transformer.layer.{index}.{distil}{param}");
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn layer_names_map_to_distilbert_names() {
        for (bert, distil) in [
            (
                "encoder.layer.3.attention.self.query.weight",
                "transformer.layer.3.attention.q_lin.weight",
            ),
            (
                "encoder.layer.0.attention.output.LayerNorm.bias",
                "transformer.layer.0.sa_layer_norm.bias",
            ),
            (
                "encoder.layer.11.output.dense.weight",
                "transformer.layer.11.ffn.lin2.weight",
            ),
            (
                "encoder.layer.1.output.LayerNorm.weight",
                "transformer.layer.1.output_layer_norm.weight",
            ),
            ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.weight"),
            ("head.dense.weight", "head.dense.weight"),
        ] {
            assert_eq!(file_name(bert), distil);
        }
    }
}
