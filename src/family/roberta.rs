//! RoBERTa and XLM-RoBERTa (`model_type: roberta | xlm-roberta`): BERT's layers and names under a
//! `roberta.` prefix; position ids start after the padding id (HF's
//! `create_position_ids_from_input_ids`: token i of a right-padded text is at `pad_token_id + 1 + i`).

use super::{parse, EncoderFamily};
use crate::bert::config::{BertConfig, ConfigError};
use std::path::Path;

/// The registry's entry.
pub fn family() -> EncoderFamily {
    EncoderFamily {
        name: "roberta",
        model_types: &["roberta", "xlm-roberta"],
        architectures: &["Roberta", "XLMRoberta"],
        prefix: "roberta",
        read_config,
        file_name: |name| name.to_string(),
    }
}

fn read_config(value: &serde_json::Value, path: &Path) -> Result<BertConfig, ConfigError> {
    let mut cfg: BertConfig = parse(value, path)?;
    let model_type = value.get("model_type").and_then(|t| t.as_str());
    cfg.model_type = model_type.unwrap_or("roberta").to_string();
    // HF's default padding id for the family is 1 (`<pad>`).
    let pad = value.get("pad_token_id").and_then(|p| p.as_u64()).unwrap_or(1);
    cfg.position_offset = usize::try_from(pad).unwrap_or(usize::MAX).saturating_add(1);
    cfg.embedding_size = None;
    cfg.attention_output_dropout = true;
    Ok(cfg)
}
