//! A head's configuration as config.json keeps it: `{"kind": NAME, ...settings}`. The settings
//! are the head's own (each head file reads them into its typed config, refusing fields it does
//! not know), so this type knows no head.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A head's settings: config.json's `head` object without `kind`.
pub type Settings = serde_json::Map<String, serde_json::Value>;

/// The head of a model (config.json's `head`: `{"kind": "gp", "head_size": 64, "rope": true}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// The head's name (`--head`).
    pub kind: String,
    /// The head's own settings.
    #[serde(flatten)]
    pub settings: Settings,
}

/// Head settings from the command line; each head takes the ones it uses.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadOptions {
    /// Size of each per-span projection (q and k of the GlobalPointer heads).
    pub head_size: usize,
    /// Rotary position embeddings on the projections.
    pub rope: bool,
    /// The CRF transitions' learning rate over the model's.
    pub crf_lr_multiplier: f64,
    /// Reader: the loss, `ce` or `expected-f1`.
    pub loss: String,
    /// Reader: the entropy weight of the expected-F1 loss.
    pub lambda: f64,
    /// Reader: the longest answer, in characters.
    pub max_answer_len: usize,
}

impl Default for HeadOptions {
    /// The command line's defaults: head size 64, RoPE on, transitions at 100x; the reader's
    /// cross-entropy, lambda 0, answers up to 64 characters.
    fn default() -> Self {
        HeadOptions {
            head_size: 64,
            rope: true,
            crf_lr_multiplier: 100.0,
            loss: "ce".into(),
            lambda: 0.0,
            max_answer_len: 64,
        }
    }
}

/// Why a head configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// No head of this name is registered.
    #[error("unknown head `{kind}` (known: {known})")]
    Unknown {
        /// The name asked for.
        kind: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// The settings do not parse as the head's configuration (a missing, mistyped or unknown
    /// field).
    #[error("head `{kind}`: {source}")]
    Settings {
        /// The head.
        kind: String,
        /// What serde found.
        source: serde_json::Error,
    },
    /// A setting parses but cannot be used.
    #[error("field `head.{field}` = {value}: {reason}")]
    Field {
        /// The setting's name.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

impl HeadConfig {
    /// A head called `kind` with the settings `config` serialises to (a JSON object).
    pub fn new(kind: &str, config: &impl Serialize) -> HeadConfig {
        let settings = match serde_json::to_value(config).expect("head settings serialise") {
            serde_json::Value::Object(map) => map,
            other => panic!("head settings must serialise to an object, not {other}"),
        };
        HeadConfig {
            kind: kind.to_string(),
            settings,
        }
    }

    /// The settings read as the head's typed configuration `C`.
    pub fn parse<C: DeserializeOwned>(&self) -> Result<C, HeadError> {
        parse_settings(&self.kind, &self.settings)
    }
}

/// `settings` read as head `kind`'s typed configuration `C`.
pub fn parse_settings<C: DeserializeOwned>(kind: &str, settings: &Settings) -> Result<C, HeadError> {
    serde_json::from_value(serde_json::Value::Object(settings.clone())).map_err(|source| {
        HeadError::Settings {
            kind: kind.to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        size: usize,
    }

    #[test]
    fn settings_round_trip_flat_beside_kind() {
        let c = HeadConfig::new("demo", &Demo { size: 3 });
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"kind":"demo","size":3}"#);
        let back: HeadConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.parse::<Demo>().unwrap(), Demo { size: 3 });
    }

    #[test]
    fn unknown_and_mistyped_settings_are_refused() {
        let extra: HeadConfig = serde_json::from_str(r#"{"kind":"demo","size":3,"other":1}"#).unwrap();
        let e = extra.parse::<Demo>().unwrap_err().to_string();
        assert!(e.contains("head `demo`") && e.contains("other"), "{e}");
        let wrong: HeadConfig = serde_json::from_str(r#"{"kind":"demo","size":"3"}"#).unwrap();
        assert!(wrong.parse::<Demo>().is_err());
    }
}
