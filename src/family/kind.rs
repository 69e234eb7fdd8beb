//! What an encoder family is: its HF names, its config reader and its tensor names.

use crate::bert::config::{BertConfig, ConfigError};
use std::path::Path;

/// One HF encoder family (see the registry in `crate::family`).
#[derive(Clone, Copy, Debug)]
pub struct EncoderFamily {
    /// Short name, as the docs use it.
    pub name: &'static str,
    /// HF `model_type` values of this family (the first is the canonical one).
    pub model_types: &'static [&'static str],
    /// Prefixes of HF class names (`architectures` in config.json), for configs without `model_type`.
    pub architectures: &'static [&'static str],
    /// The prefix of the encoder's tensors in HF task checkpoints (`bert`, `roberta`, ...).
    pub prefix: &'static str,
    /// HF config.json, parsed, to the encoder's configuration (`path` names the file in errors);
    /// refuses settings the family has that the encoder does not compute.
    pub read_config: fn(&serde_json::Value, &Path) -> Result<BertConfig, ConfigError>,
    /// gp-lite's name of an encoder parameter (BERT's, e.g. `encoder.layer.0.attention.self.query.weight`)
    /// to this family's name in HF files (without [`EncoderFamily::prefix`]); other names unchanged.
    pub file_name: fn(&str) -> String,
}

impl EncoderFamily {
    /// Whether a file tensor (its name without the prefix) lies outside the encoder, in one of
    /// the task or pre-training heads HF saves beside it (`pooler`, `cls`, `lm_head`, ...):
    /// any name whose first part is not one of the encoder's own first parts.
    pub fn outside_encoder(&self, cfg: &BertConfig, name: &str) -> bool {
        let first = name.split('.').next().unwrap_or(name);
        let mut own = vec![(self.file_name)("embeddings.word_embeddings.weight")];
        own.push((self.file_name)("encoder.layer.0.output.dense.weight"));
        if cfg.embedding_width() != cfg.hidden_size {
            own.push("embeddings_project.weight".into());
        }
        !own.iter().any(|o| o.split('.').next() == Some(first))
    }
}
