//! BERT (`model_type: bert`): the encoder's own names, as HF's `BertModel` has them.

use super::{parse, EncoderFamily};
use crate::bert::config::{BertConfig, ConfigError};
use std::path::Path;

/// The registry's entry.
pub fn family() -> EncoderFamily {
    EncoderFamily {
        name: "bert",
        model_types: &["bert"],
        architectures: &["Bert"],
        prefix: "bert",
        read_config,
        file_name: |name| name.to_string(),
    }
}

fn read_config(value: &serde_json::Value, path: &Path) -> Result<BertConfig, ConfigError> {
    let mut cfg: BertConfig = parse(value, path)?;
    cfg.model_type = "bert".into();
    // gp-lite's own fields are not HF BERT's: a config.json cannot set them.
    cfg.position_offset = 0;
    cfg.embedding_size = None;
    cfg.attention_output_dropout = true;
    Ok(cfg)
}
