//! What an untrusted model directory may declare, checked before anything is allocated.
//!
//! A config.json is read from a file nobody vouched for: `num_hidden_layers: 1000000000` or a
//! vocabulary of 10^12 must be refused with an error naming the field, not by an allocation that
//! aborts the process. Every parameter of a model lives in model.safetensors in at least two bytes
//! (f16 / bf16, the narrowest float dtype read), so a configuration whose parameters cannot fit in
//! the weights file is refused by comparing a lower bound of its parameter count with the file's
//! length (computed with checked arithmetic: an overflow is itself a refusal).

use crate::head::{self, HeadError};
use crate::model::ModelConfig;

/// Why a model configuration cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// A field of config.json has a value out of limits or at odds with another field.
    #[error("field `{field}` = {value}: {reason}")]
    Field {
        /// The field's name, e.g. `max_len` (`encoder` for an encoder error with no one field).
        field: &'static str,
        /// Its value as declared (empty when no one field is at fault).
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The weights file is too short to hold the parameters config.json declares.
    #[error(
        "{file_len} bytes cannot hold the {params} or more parameters config.json declares (2 bytes each at the least): the file is cut short or config.json is wrong"
    )]
    TooLarge {
        /// Lower bound of the declared parameter count.
        params: u128,
        /// Length of model.safetensors, in bytes.
        file_len: u64,
    },
    /// The head's kind is unknown or its settings are invalid.
    #[error(transparent)]
    Head(#[from] HeadError),
}

/// Narrowest stored parameter: f16 / bf16 (an f32 directory may hold either; a bf16 one holds
/// its matrices in bf16), or int8 in an int8 model directory.
fn min_bytes_per_param(config: &ModelConfig) -> u128 {
    match config.precision {
        crate::precision::Precision::F32 => 2,
        crate::precision::Precision::Int8 => 1,
        crate::precision::Precision::Bf16 => 2,
    }
}

/// A lower bound of the number of parameters `config` describes (the weight matrices and
/// embedding tables; biases and LayerNorms left out), in u128 so that no declared size overflows;
/// the head's share comes from the head (which also checks its settings).
pub fn min_params(config: &ModelConfig) -> Result<u128, HeadError> {
    Ok(config.encoder.min_params() + head::check(&config.head, config.head_shape())?)
}

/// Checks the sizes of `config` against each other and against `weights_len`, the length in
/// bytes of the model.safetensors they are to be read from.
pub fn check(config: &ModelConfig, weights_len: u64) -> Result<(), LimitError> {
    let field = |field: &'static str, value: usize, reason: &str| LimitError::Field {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    };
    config.encoder.validate_from("").map_err(|e| match e {
        crate::bert::config::ConfigError::Unsupported {
            field, value, reason, ..
        } => LimitError::Field {
            field,
            value,
            reason: reason.to_string(),
        },
        other => LimitError::Field {
            field: "encoder",
            value: String::new(),
            reason: other.to_string(),
        },
    })?;
    if crate::family::by_model_type(&config.encoder.model_type).is_none() {
        return Err(LimitError::Field {
            field: "model_type",
            value: format!("{:?}", config.encoder.model_type),
            reason: format!(
                "not an encoder family gp-lite computes (it loads {})",
                crate::family::known_model_types()
            ),
        });
    }
    if config.max_len < 3 {
        return Err(field(
            "max_len",
            config.max_len,
            "must be at least 3 ([CLS], a token, [SEP])",
        ));
    }
    if config.max_len > config.encoder.max_tokens() {
        return Err(LimitError::Field {
            field: "max_len",
            value: config.max_len.to_string(),
            reason: format!(
                "more than the encoder's max_position_embeddings ({})",
                config.encoder.max_tokens()
            ),
        });
    }
    let params = min_params(config)?;
    if params.saturating_mul(min_bytes_per_param(config)) > weights_len as u128 {
        return Err(LimitError::TooLarge {
            params,
            file_len: weights_len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bert::BertConfig;
    use crate::head::{CrfConfig, GlobalPointerConfig, HeadConfig};
    use crate::model::NerModel;
    use crate::param::Params;

    fn gp() -> GlobalPointerConfig {
        GlobalPointerConfig {
            head_size: 16,
            rope: true,
        }
    }

    fn heads() -> Vec<HeadConfig> {
        vec![
            HeadConfig::new("gp", &gp()),
            HeadConfig::new("egp", &gp()),
            HeadConfig::new(
                "crf",
                &CrfConfig {
                    transition_lr_multiplier: 1.0,
                },
            ),
        ]
    }

    fn config(head: HeadConfig) -> ModelConfig {
        ModelConfig {
            encoder: BertConfig::preset("tiny", 300).unwrap(),
            head,
            labels: vec!["a".into(), "b".into(), "c".into()],
            max_len: 64,
            tokenization: None,
            boundaries: Default::default(),
            decode: Default::default(),
            precision: Default::default(),
        }
    }

    fn count(config: &ModelConfig) -> u128 {
        let model = NerModel::<f32>::zeroed(config.clone()).unwrap();
        let mut n = 0u128;
        model.visit("", &mut |_, v| n += v.len() as u128);
        n
    }

    #[test]
    fn the_bound_is_below_the_true_count_and_close_to_it() {
        for head in heads() {
            let c = config(head.clone());
            let (bound, real) = (min_params(&c).unwrap(), count(&c));
            assert!(bound <= real, "{head:?}: bound {bound} > {real} parameters");
            assert!(
                bound * 100 >= real * 98,
                "{head:?}: bound {bound} far below {real}"
            );
            assert!(check(&c, real as u64 * 2).is_ok());
        }
    }

    #[test]
    fn absurd_sizes_are_refused_without_allocating() {
        let c = config(HeadConfig::new("gp", &gp()));
        let real = count(&c) as u64 * 4;
        let mut huge = c.clone();
        huge.encoder.num_hidden_layers = 1_000_000_000;
        let e = check(&huge, real).unwrap_err();
        assert!(matches!(e, LimitError::TooLarge { .. }), "{e}");
        for set in [
            (|c: &mut ModelConfig| c.encoder.vocab_size = usize::MAX) as fn(&mut ModelConfig),
            |c| c.encoder.hidden_size = 1 << 40,
            |c| c.encoder.intermediate_size = usize::MAX,
            |c| {
                c.head = HeadConfig::new(
                    "egp",
                    &GlobalPointerConfig {
                        head_size: usize::MAX - 1,
                        rope: false,
                    },
                )
            },
            |c| c.labels = vec!["x".into(); 100_000],
        ] {
            let mut bad = c.clone();
            set(&mut bad);
            assert!(check(&bad, real).is_err(), "{bad:?}");
        }
        let mut zero = c.clone();
        zero.encoder.num_attention_heads = 0;
        assert!(
            check(&zero, real)
                .unwrap_err()
                .to_string()
                .contains("num_attention_heads"),
            "zero heads"
        );
        let mut odd = c.clone();
        odd.head = HeadConfig::new(
            "gp",
            &GlobalPointerConfig {
                head_size: 15,
                rope: true,
            },
        );
        assert!(check(&odd, real).unwrap_err().to_string().contains("even"));
        let mut long = c.clone();
        long.max_len = 513;
        assert!(check(&long, real)
            .unwrap_err()
            .to_string()
            .contains("max_position_embeddings"));
        let mut short = c;
        short.max_len = 2;
        assert!(check(&short, real).is_err());
    }
}
