//! Encoder families: the HF model types whose checkpoints gp-lite loads, trains and saves back.
//! All of them are BERT's post-LN encoder ([`crate::bert::BertEncoder`]); a family says how its
//! config.json reads into a [`BertConfig`] (refusing what the encoder does not compute) and what
//! its tensors are called in files.
//!
//! A family is one file that defines its [`EncoderFamily`] in a `family()` function, plus its name
//! in the `families!` line below.

mod kind;

pub use kind::EncoderFamily;

use crate::bert::config::{BertConfig, ConfigError};
use std::path::Path;

/// Declares the family modules and lists them in [`all`].
macro_rules! families {
    ($($family:ident),* $(,)?) => {
        $(pub mod $family;)*

        /// Every registered family.
        pub fn all() -> Vec<EncoderFamily> {
            vec![$($family::family()),*]
        }
    };
}

// The registry: one name a family.
families!(bert, roberta, electra, distilbert);

/// The `model_type` values gp-lite loads, comma-separated (for messages).
pub fn known_model_types() -> String {
    all()
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The family of an encoder whose `model_type` is `model_type`.
pub fn by_model_type(model_type: &str) -> Option<EncoderFamily> {
    all().into_iter().find(|f| f.model_types.contains(&model_type))
}

/// The family of `cfg` (a [`BertConfig`] is only ever made with a registered `model_type`; one
/// read from a file is checked by `crate::model_limits`).
pub fn of(cfg: &BertConfig) -> Result<EncoderFamily, ConfigError> {
    by_model_type(&cfg.model_type).ok_or_else(|| ConfigError::UnknownFamily {
        origin: "<encoder config>".into(),
        model_type: cfg.model_type.clone(),
        known: known_model_types(),
    })
}

/// Reads an HF config.json of any registered family: the family from `model_type` (else from
/// `architectures`, else BERT, as HF's oldest BERT configs name neither), then the family's
/// reader. A model type gp-lite does not compute, or a setting it does not implement, is refused
/// with the field named, before anything is allocated.
pub fn read_config(path: &Path) -> Result<BertConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let family = detect(&value, &origin)?;
    for field in ["is_decoder", "add_cross_attention"] {
        if value.get(field).and_then(|v| v.as_bool()) == Some(true) {
            return Err(ConfigError::Unsupported {
                origin,
                field,
                value: "true".into(),
                reason: "gp-lite runs encoders only",
            });
        }
    }
    let cfg = (family.read_config)(&value, path)?;
    cfg.validate_from(&origin)?;
    Ok(cfg)
}

/// The family a config.json's `model_type` (or first `architectures` entry) names.
fn detect(value: &serde_json::Value, origin: &str) -> Result<EncoderFamily, ConfigError> {
    let unknown = |model_type: String| ConfigError::UnknownFamily {
        origin: origin.to_string(),
        model_type,
        known: known_model_types(),
    };
    match value.get("model_type") {
        Some(serde_json::Value::String(t)) => by_model_type(t).ok_or_else(|| unknown(t.clone())),
        Some(other) => Err(unknown(other.to_string())),
        None => {
            let arch = value
                .get("architectures")
                .and_then(|a| a.get(0))
                .and_then(|a| a.as_str());
            match arch {
                None => Ok(bert::family()),
                Some(a) => all()
                    .into_iter()
                    .find(|f| f.architectures.iter().any(|p| a.starts_with(p)))
                    .ok_or_else(|| unknown(format!("(none; architectures[0] = {a:?})"))),
            }
        }
    }
}

/// Parses `value` as `C`, naming `path` in the error.
pub fn parse<C: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
    path: &Path,
) -> Result<C, ConfigError> {
    C::deserialize(value).map_err(|source| ConfigError::Json {
        path: path.to_path_buf(),
        source,
    })
}
