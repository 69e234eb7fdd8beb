//! ELECTRA discriminators (`model_type: electra`): BERT's layers and names under an `electra.`
//! prefix, with embedding tables of width `embedding_size` (HF's default 128) mapped to
//! `hidden_size` by `embeddings_project` where the two differ.

use super::{parse, EncoderFamily};
use crate::bert::config::{BertConfig, ConfigError};
use std::path::Path;

/// The registry's entry.
pub fn family() -> EncoderFamily {
    EncoderFamily {
        name: "electra",
        model_types: &["electra"],
        architectures: &["Electra"],
        prefix: "electra",
        read_config,
        file_name: |name| name.to_string(),
    }
}

/// HF `ElectraConfig`'s default `embedding_size`.
const DEFAULT_EMBEDDING_SIZE: usize = 128;

fn read_config(value: &serde_json::Value, path: &Path) -> Result<BertConfig, ConfigError> {
    let mut cfg: BertConfig = parse(value, path)?;
    cfg.model_type = "electra".into();
    cfg.position_offset = 0;
    cfg.attention_output_dropout = true;
    let e = cfg.embedding_size.unwrap_or(DEFAULT_EMBEDDING_SIZE);
    cfg.embedding_size = (e != cfg.hidden_size).then_some(e);
    Ok(cfg)
}
