//! The model and tokenizer a run starts from: a pretrained encoder with a fresh head, or an
//! encoder from scratch over a character vocabulary built from the training texts.

use super::choices::{choose_boundaries, choose_decode, choose_tokenization};
use super::error::TrainError;
use super::options::{EncoderSource, Event, TrainOptions};
use crate::batch::Boundaries;
use crate::bert::checkpoint::load_encoder;
use crate::bert::BertConfig;
use crate::data::Dataset;
use crate::decode::DecodeMode;
use crate::head;
use crate::model::{ModelConfig, NerModel};
use crate::model_dir::{load_unpacked, load_weights, CONFIG_FILE, WEIGHTS_FILE};
use crate::predict::Predictor;
use crate::tokenize::{CharVocab, Tokenizer};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The tokenizer and model a run starts from, with the choices made from the data reported.
pub fn build_model(
    opts: &TrainOptions,
    train: &Dataset,
    labels: Vec<String>,
    rng: &mut ChaCha8Rng,
    info: &mut dyn FnMut(Event),
) -> Result<(NerModel<f32>, Tokenizer), TrainError> {
    let (cfg, encoder, tokenizer) = match &opts.encoder {
        EncoderSource::Pretrained(dir) if is_model_dir(dir) => {
            return from_trained(opts, dir, train, labels, rng, info);
        }
        EncoderSource::Pretrained(dir) => {
            let mut cfg = crate::family::read_config(&dir.join("config.json"))?;
            apply_dropout(&mut cfg, opts.dropout);
            let (encoder, report) = load_encoder::<f32>(&cfg, &dir.join("model.safetensors"))?;
            if !report.skipped.is_empty() {
                info(Event::Info(format!(
                    "skipped checkpoint tensors not used: {}",
                    report.skipped.join(", ")
                )));
            }
            let tokenizer = Tokenizer::load(dir).map_err(|source| TrainError::Tokenizer {
                path: dir.clone(),
                source,
            })?;
            let tokenizer = choose_tokenization(opts, train, tokenizer)?;
            (cfg, Some(encoder), tokenizer)
        }
        EncoderSource::Scratch { config, vocab } => {
            let tokenizer = match vocab {
                Some(p) => {
                    let t = if p.is_dir() {
                        Tokenizer::load(p)
                    } else if p.extension().is_some_and(|e| e == "json") {
                        Tokenizer::from_tokenizer_json(p)
                    } else {
                        Tokenizer::from_vocab_txt(p, true)
                    };
                    let t = t.map_err(|source| TrainError::Tokenizer {
                        path: p.clone(),
                        source,
                    })?;
                    choose_tokenization(opts, train, t)?
                }
                None => Tokenizer::new(CharVocab::build(
                    train.examples.iter().map(|e| e.text.as_str()),
                    opts.min_char_count,
                )),
            };
            let vocab_size = tokenizer.vocab_size();
            let mut cfg = match BertConfig::preset(config, vocab_size) {
                Some(c) => c,
                None => {
                    let mut c = crate::family::read_config(std::path::Path::new(config))?;
                    c.vocab_size = vocab_size;
                    c
                }
            };
            apply_dropout(&mut cfg, opts.dropout);
            info(Event::Info(format!(
                "from scratch: {} layers, hidden {}, vocabulary {vocab_size}",
                cfg.num_hidden_layers, cfg.hidden_size
            )));
            (cfg, None, tokenizer)
        }
    };
    check_max_len(opts.max_len, &cfg)?;
    let config = model_config(opts, train, cfg, labels, &tokenizer, info)?;
    let model = match encoder {
        Some(encoder) => NerModel::with_encoder(config, encoder, rng)?,
        None => NerModel::new(config, rng)?,
    };
    Ok((model, tokenizer))
}

/// Whether `dir` is a model directory gp-lite wrote (its config.json has an `encoder` and a
/// `head`), rather than an HF checkpoint.
fn is_model_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(CONFIG_FILE)) else {
        return false;
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .is_ok_and(|v| v.get("encoder").is_some() && v.get("head").is_some())
}

/// A run that starts from a model gp-lite trained (`--init M`, M a model directory): its encoder
/// and tokenizer, and its head too when `--head` names the same kind and the training data the
/// same labels (fine-tuning, e.g. a reader trained with `ce` further trained with
/// `expected-f1`); otherwise a fresh head on its encoder.
fn from_trained(
    opts: &TrainOptions,
    dir: &Path,
    train: &Dataset,
    labels: Vec<String>,
    rng: &mut ChaCha8Rng,
    info: &mut dyn FnMut(Event),
) -> Result<(NerModel<f32>, Tokenizer), TrainError> {
    let weights = dir.join(WEIGHTS_FILE);
    let Predictor {
        model: trained,
        tokenizer,
    } = load_unpacked::<f32>(dir, &weights)?;
    if !trained.config.precision.is_f32() {
        return Err(TrainError::option(
            "--init",
            dir.display(),
            format!(
                "is a {} model directory; training starts from f32 weights (the directory `gp-lite quantize` read)",
                trained.config.precision
            ),
        ));
    }
    let mut cfg = trained.config.encoder.clone();
    apply_dropout(&mut cfg, opts.dropout);
    check_max_len(opts.max_len, &cfg)?;
    let old_head = trained.config.head.kind.clone();
    let keep_head = old_head == opts.head.kind && trained.config.labels == labels;
    let old_labels = trained.config.labels.len();
    let config = model_config(opts, train, cfg, labels, &tokenizer, info)?;
    if keep_head {
        // Same head kind and labels: every parameter, the head's included, comes from the file
        // (settings that change the head's shape, such as --head-size, are refused there).
        let mut model = NerModel::zeroed(config)?;
        load_weights(&weights, &mut model)?;
        info(Event::Info(format!(
            "fine-tuning {}: its encoder and its `{old_head}` head are kept",
            dir.display()
        )));
        Ok((model, tokenizer))
    } else {
        info(Event::Info(format!(
            "the encoder of {} is kept; its head (`{old_head}`, {old_labels} labels) is not: a fresh `{}` head",
            dir.display(),
            opts.head.kind
        )));
        let model = NerModel::with_encoder(config, trained.encoder, rng)?;
        Ok((model, tokenizer))
    }
}

/// The configuration of the model a run trains, with the choices made from the data reported.
fn model_config(
    opts: &TrainOptions,
    train: &Dataset,
    cfg: BertConfig,
    labels: Vec<String>,
    tokenizer: &Tokenizer,
    info: &mut dyn FnMut(Event),
) -> Result<ModelConfig, TrainError> {
    let boundaries = opts.boundaries.unwrap_or_else(|| choose_boundaries(train));
    let decode = if head::nested(&opts.head)? {
        choose_decode(train)
    } else {
        DecodeMode::Flat
    };
    info(Event::Info(format!(
        "tokenization {}, entity boundaries at {}, {} output by default",
        tokenizer.kind(),
        match boundaries {
            Boundaries::Words => "words",
            Boundaries::Tokens => "tokens",
        },
        match decode {
            DecodeMode::Flat => "flat",
            DecodeMode::Nested => "nested",
        }
    )));
    Ok(ModelConfig {
        encoder: cfg,
        head: opts.head.clone(),
        labels,
        max_len: opts.max_len,
        tokenization: Some(tokenizer.tokenization()),
        boundaries,
        decode,
        precision: Default::default(),
    })
}

fn apply_dropout(cfg: &mut BertConfig, p: Option<f64>) {
    if let Some(p) = p {
        cfg.hidden_dropout_prob = p;
        cfg.attention_probs_dropout_prob = p;
    }
}

fn check_max_len(max_len: usize, cfg: &BertConfig) -> Result<(), TrainError> {
    if max_len < 3 || max_len > cfg.max_tokens() {
        return Err(TrainError::option(
            "--max-len",
            max_len,
            format!(
                "must be between 3 and the encoder's positions ({}: max_position_embeddings less the family's offset)",
                cfg.max_tokens()
            ),
        ));
    }
    Ok(())
}
