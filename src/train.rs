//! The training run: data preparation, epochs of shuffled length-bucketed batches, evaluation on
//! the dev set after each epoch, the best model kept, and resumable state.
//!
//! Reproducibility: batch order comes from `(seed, epoch)`, dropout from `(seed, step)`, and every
//! parallel computation splits work by the thread count alone, so the same data, seed and thread
//! count give the same model bit for bit, also across `--resume`.

use crate::batch::{bucketed_batches, make_batch, Sample};
use crate::bert::checkpoint::{load_encoder, CheckpointError};
use crate::bert::{BertConfig, EncoderError};
use crate::data::{DataError, Dataset};
use crate::metrics::{evaluate, Report};
use crate::model::{HeadConfig, HeadKind, ModelConfig, NerModel};
use crate::model_dir::{self, ModelDirError};
use crate::optim::adamw::AdamWConfig;
use crate::optim::schedule::LinearSchedule;
use crate::predict::{predict_texts, PredictError, PredictOptions};
use crate::tensor_io;
use crate::tokenize::{char_span_to_tokens, windows, CharVocab, TokenizeError, Tokenizer};
use crate::trainer::{Trainer, Workspace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the encoder comes from.
#[derive(Clone, Debug)]
pub enum EncoderSource {
    /// A preset (tiny, small, minilm, base) or an HF config.json, trained from scratch on a
    /// character vocabulary built from the training texts (or the tokenizer in `vocab`).
    Scratch { config: String, vocab: Option<PathBuf> },
    /// A pretrained HF model directory (config.json, model.safetensors, tokenizer).
    Pretrained(PathBuf),
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub encoder: EncoderSource,
    pub head: HeadConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Fraction of all steps spent warming up linearly.
    pub warmup: f64,
    pub weight_decay: f64,
    pub max_grad_norm: Option<f64>,
    /// Longest token sequence, specials included; longer texts are split into windows.
    pub max_len: usize,
    /// Overrides both dropout probabilities of the encoder configuration.
    pub dropout: Option<f64>,
    pub seed: u64,
    /// Characters seen fewer times are [UNK] (character vocabulary only).
    pub min_char_count: usize,
}

/// Progress reported to the caller (the library never prints).
#[derive(Clone, Debug)]
pub enum Event {
    /// A line of information (data statistics, what was loaded).
    Info(String),
    /// An epoch starts with this many steps.
    EpochStart { epoch: usize, steps: usize },
    /// A step finished.
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
        tokens: usize,
        lr: f64,
    },
    /// An epoch finished; `dev` is None without a dev set.
    EpochEnd { record: EpochRecord, best: bool },
}

/// Figures of one epoch (kept in training.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub dev_precision: Option<f64>,
    pub dev_recall: Option<f64>,
    pub dev_f1: Option<f64>,
}

/// training.json: how the model was made.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainingRecord {
    pub command: Vec<String>,
    pub seed: u64,
    pub threads: usize,
    pub train_file: String,
    pub dev_file: Option<String>,
    pub train_examples: usize,
    pub train_windows: usize,
    pub unaligned_spans: usize,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: Option<usize>,
    pub best_dev_f1: Option<f64>,
    pub total_seconds: f64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    ModelDir(#[from] ModelDirError),
    #[error("{}: {source}", path.display())]
    Tokenizer { path: PathBuf, source: TokenizeError },
    #[error("{0}")]
    Tokenize(TokenizeError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Predict(#[from] PredictError),
    #[error("{0}")]
    Invalid(String),
}

/// Tokenized training samples and what could not be used as is.
pub struct Prepared {
    pub samples: Vec<Sample>,
    /// Gold spans whose boundaries fall inside a token (left out of training).
    pub unaligned: usize,
    /// Texts longer than `max_len` tokens, split into windows.
    pub windowed: usize,
}

/// Tokenizes `data`, maps its spans onto tokens and windows texts longer than `max_len`.
pub fn prepare(
    data: &Dataset,
    tokenizer: &Tokenizer,
    labels: &[String],
    max_len: usize,
) -> Result<Prepared, TrainError> {
    let index: HashMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let mut out = Prepared {
        samples: Vec::new(),
        unaligned: 0,
        windowed: 0,
    };
    for (ex, &line) in data.examples.iter().zip(&data.lines) {
        let enc = tokenizer
            .encode(&ex.text)
            .map_err(|source| TrainError::Tokenizer {
                path: PathBuf::from(format!("{}:{line}", data.path.display())),
                source,
            })?;
        let mut gold = Vec::new();
        for e in &ex.entities {
            match char_span_to_tokens(&enc, e.start, e.end) {
                Some((s, t)) => gold.push((index[e.label.as_str()], s, t)),
                None => out.unaligned += 1,
            }
        }
        if enc.len() <= max_len {
            out.samples.push(Sample { enc, gold });
            continue;
        }
        out.windowed += 1;
        let stride = ((max_len - 2) / 2).max(1);
        for w in windows(&enc, max_len, stride).map_err(TrainError::Tokenize)? {
            let (lo, hi) = (w.tokens.start, w.tokens.end);
            let g = gold
                .iter()
                .filter(|&&(_, s, t)| s >= lo && t < hi)
                .map(|&(a, s, t)| (a, s - lo + 1, t - lo + 1))
                .collect();
            out.samples.push(Sample {
                enc: w.encoding,
                gold: g,
            });
        }
    }
    Ok(out)
}

/// Entity-level P/R/F1 of `model` on `data` (character spans).
pub fn evaluate_dataset<T: crate::Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    data: &Dataset,
    opts: &PredictOptions,
) -> Result<Report, TrainError> {
    let labels = &model.config.labels;
    let index: HashMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    let mut ws = Workspace::new();
    let preds = predict_texts(model, tokenizer, &texts, opts, &mut ws)?;
    let gold: Vec<_> = data
        .examples
        .iter()
        .enumerate()
        .flat_map(|(t, ex)| ex.entities.iter().map(move |e| (t, e)))
        .map(|(t, e)| (t, index[e.label.as_str()], e.start, e.end))
        .collect();
    let pred: Vec<_> = preds
        .iter()
        .enumerate()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t, p.ty, p.start, p.end)))
        .collect();
    Ok(evaluate(&gold, &pred, labels.len()))
}

/// State for `--resume`, kept in `OUT/resume/` after each epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ResumeState {
    epochs_done: usize,
    step: usize,
    best_f1: Option<f64>,
    record: TrainingRecord,
}

const RESUME_DIR: &str = "resume";

/// `OUT/resume/state.json`, and the weights and optimizer state of the epoch it names. The two
/// tensor files carry the epoch in their names and state.json is written last: a run killed
/// while saving leaves state.json naming the previous epoch's files, still complete.
fn resume_paths(out: &Path, epochs_done: usize) -> (PathBuf, PathBuf, PathBuf) {
    let d = out.join(RESUME_DIR);
    (
        d.join("state.json"),
        d.join(format!("model-{epochs_done}.safetensors")),
        d.join(format!("optimizer-{epochs_done}.safetensors")),
    )
}

fn save_resume(out: &Path, trainer: &Trainer<f32>, state: &ResumeState) -> Result<(), TrainError> {
    let dir = out.join(RESUME_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| ModelDirError::Io {
        path: dir.clone(),
        source,
    })?;
    let (state_p, model_p, opt_p) = resume_paths(out, state.epochs_done);
    model_dir::save_weights(&model_p, &trainer.model)?;
    let tensors = trainer.opt.state_tensors();
    model_dir::write_atomic(&opt_p, &tensor_io::named_to_bytes(&tensors))?;
    model_dir::write_atomic(
        &state_p,
        &serde_json::to_vec_pretty(state).expect("state serialises"),
    )?;
    // Older epochs' files (and temporary files of a killed run) are no longer named by
    // state.json; the directory holds nothing else.
    let keep = [model_p.file_name(), opt_p.file_name(), state_p.file_name()];
    for entry in std::fs::read_dir(&dir).map_err(|source| ModelDirError::Io {
        path: dir.clone(),
        source,
    })? {
        let Ok(entry) = entry else { continue };
        if !keep.contains(&Some(entry.file_name().as_os_str())) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The tokenizer and model a run starts from.
fn build_model(
    opts: &TrainOptions,
    train: &Dataset,
    labels: Vec<String>,
    rng: &mut ChaCha8Rng,
    info: &mut dyn FnMut(Event),
) -> Result<(NerModel<f32>, Tokenizer), TrainError> {
    match &opts.encoder {
        EncoderSource::Pretrained(dir) => {
            let mut cfg = crate::bert::config::BertConfig::from_json_file(dir.join("config.json"))
                .map_err(|e| TrainError::Invalid(e.to_string()))?;
            apply_dropout(&mut cfg, opts.dropout);
            let (encoder, report) = load_encoder::<f32>(&cfg, &dir.join("model.safetensors"))?;
            if !report.skipped.is_empty() {
                info(Event::Info(format!(
                    "skipped checkpoint tensors not used: {}",
                    report.skipped.join(", ")
                )));
            }
            let tokenizer = Tokenizer::load(dir).map_err(TrainError::Tokenize)?;
            check_max_len(opts.max_len, &cfg)?;
            let config = ModelConfig {
                encoder: cfg,
                head: opts.head.clone(),
                labels,
                max_len: opts.max_len,
            };
            Ok((NerModel::with_encoder(config, encoder, rng), tokenizer))
        }
        EncoderSource::Scratch { config, vocab } => {
            let tokenizer = match vocab {
                Some(p) if p.is_dir() => Tokenizer::load(p).map_err(TrainError::Tokenize)?,
                Some(p) if p.extension().is_some_and(|e| e == "json") => {
                    Tokenizer::from_tokenizer_json(p).map_err(TrainError::Tokenize)?
                }
                Some(p) => Tokenizer::from_vocab_txt(p, true).map_err(TrainError::Tokenize)?,
                None => Tokenizer::Char(CharVocab::build(
                    train.examples.iter().map(|e| e.text.as_str()),
                    opts.min_char_count,
                )),
            };
            let vocab_size = tokenizer.vocab_size();
            let mut cfg = match BertConfig::preset(config, vocab_size) {
                Some(c) => c,
                None => {
                    let mut c = crate::bert::config::BertConfig::from_json_file(config)
                        .map_err(|e| TrainError::Invalid(e.to_string()))?;
                    c.vocab_size = vocab_size;
                    c
                }
            };
            apply_dropout(&mut cfg, opts.dropout);
            check_max_len(opts.max_len, &cfg)?;
            info(Event::Info(format!(
                "from scratch: {} layers, hidden {}, vocabulary {vocab_size}",
                cfg.num_hidden_layers, cfg.hidden_size
            )));
            let config = ModelConfig {
                encoder: cfg,
                head: opts.head.clone(),
                labels,
                max_len: opts.max_len,
            };
            Ok((NerModel::new(config, rng)?, tokenizer))
        }
    }
}

fn apply_dropout(cfg: &mut BertConfig, p: Option<f64>) {
    if let Some(p) = p {
        cfg.hidden_dropout_prob = p;
        cfg.attention_probs_dropout_prob = p;
    }
}

fn check_max_len(max_len: usize, cfg: &BertConfig) -> Result<(), TrainError> {
    if max_len < 3 || max_len > cfg.max_position_embeddings {
        return Err(TrainError::Invalid(format!(
            "--max-len {max_len} must be between 3 and the encoder's max_position_embeddings ({})",
            cfg.max_position_embeddings
        )));
    }
    Ok(())
}

/// Trains a model on `train`, evaluating on `dev` after each epoch and keeping the best model
/// (by dev F1; the last one without dev data) in `out`. With `resume`, continues the run whose
/// state is in `out` from its last completed epoch.
pub fn train(
    opts: &TrainOptions,
    train: &Dataset,
    dev: Option<&Dataset>,
    out: &Path,
    resume: bool,
    mut record: TrainingRecord,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrainingRecord, TrainError> {
    let start_time = Instant::now();
    let labels = train.labels.clone();
    if labels.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{}: no entities to learn from",
            train.path.display()
        )));
    }
    if let Some(d) = dev {
        d.check_labels(&labels)?;
    }
    if opts.batch_size == 0 || opts.epochs == 0 {
        return Err(TrainError::Invalid(
            "--batch-size and --epochs must be positive".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (model, tokenizer) = if resume {
        let predictor = model_dir::load_model::<f32>(out)?;
        (predictor.model, predictor.tokenizer)
    } else {
        build_model(opts, train, labels, &mut rng, on_event)?
    };
    let labels = model.config.labels.clone();
    let prepared = prepare(train, &tokenizer, &labels, model.config.max_len)?;
    on_event(Event::Info(format!(
        "{} training texts ({} samples after windowing {} long texts), {} labels; {} gold spans not on token boundaries (left out)",
        train.examples.len(),
        prepared.samples.len(),
        prepared.windowed,
        labels.len(),
        prepared.unaligned
    )));
    record.train_examples = train.examples.len();
    record.train_windows = prepared.samples.len();
    record.unaligned_spans = prepared.unaligned;
    let adamw = AdamWConfig {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..AdamWConfig::default()
    };
    let mut trainer = Trainer::new(model, adamw, opts.max_grad_norm);
    let batches_per_epoch = prepared.samples.len().div_ceil(opts.batch_size);
    let total_steps = batches_per_epoch * opts.epochs;
    let schedule = LinearSchedule {
        warmup_steps: (opts.warmup * total_steps as f64).round() as usize,
        total_steps,
    };
    let (mut first_epoch, mut step, mut best_f1) = (0, 0, None::<f64>);
    if resume {
        let (state_p, _, _) = resume_paths(out, 0);
        let text = std::fs::read_to_string(&state_p).map_err(|source| ModelDirError::Io {
            path: state_p.clone(),
            source,
        })?;
        let state: ResumeState = serde_json::from_str(&text).map_err(|source| ModelDirError::Config {
            path: state_p.clone(),
            source,
        })?;
        let (_, model_p, opt_p) = resume_paths(out, state.epochs_done);
        model_dir::load_weights(&model_p, &mut trainer.model)?;
        let bytes = std::fs::read(&opt_p).map_err(|source| ModelDirError::Io {
            path: opt_p.clone(),
            source,
        })?;
        let tensors = tensor_io::named_from_bytes::<f32>(&bytes, &opt_p)?;
        trainer
            .opt
            .load_state(&trainer.model, &tensors)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", opt_p.display())))?;
        (first_epoch, step, best_f1) = (state.epochs_done, state.step, state.best_f1);
        // The figures of the epochs already done, so that training.json and the final
        // "best dev F1" line describe the whole run, not only the resumed part.
        record.epochs = state.record.epochs;
        record.best_epoch = state.record.best_epoch;
        record.best_dev_f1 = state.record.best_dev_f1;
        record.total_seconds = state.record.total_seconds;
        on_event(Event::Info(format!(
            "resuming after epoch {first_epoch} (step {step})"
        )));
        if first_epoch >= opts.epochs {
            return Err(TrainError::Invalid(format!(
                "{}: the run already completed {first_epoch} of {} epochs",
                out.display(),
                opts.epochs
            )));
        }
    }
    let lengths: Vec<usize> = prepared.samples.iter().map(|s| s.enc.len()).collect();
    let eval_opts = PredictOptions::default();
    for epoch in first_epoch..opts.epochs {
        let epoch_start = Instant::now();
        let mut order_rng = ChaCha8Rng::seed_from_u64(opts.seed ^ (0x5eed_0000 + epoch as u64));
        let batches = bucketed_batches(&lengths, opts.batch_size, &mut order_rng);
        on_event(Event::EpochStart {
            epoch: epoch + 1,
            steps: batches.len(),
        });
        let (mut loss_sum, mut tokens) = (0.0, 0);
        for (i, idx) in batches.iter().enumerate() {
            let batch = make_batch(
                idx.iter()
                    .map(|&k| (&prepared.samples[k].enc, &prepared.samples[k].gold[..])),
            );
            let lr = schedule.lr(opts.lr, step);
            let mut dropout_rng =
                ChaCha8Rng::seed_from_u64(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step as u64);
            let stats = trainer.step(&batch, lr, &mut dropout_rng)?;
            step += 1;
            loss_sum += stats.loss;
            tokens += batch.tokens();
            on_event(Event::Step {
                epoch: epoch + 1,
                step: i + 1,
                steps: batches.len(),
                loss: stats.loss,
                tokens: batch.tokens(),
                lr,
            });
        }
        let seconds = epoch_start.elapsed().as_secs_f64();
        let dev_report = match dev {
            Some(d) => Some(evaluate_dataset(&trainer.model, &tokenizer, d, &eval_opts)?),
            None => None,
        };
        let f1 = dev_report.as_ref().map(|r| r.micro.f1);
        let better = match (f1, best_f1) {
            (Some(f), Some(b)) => f > b,
            (Some(_), None) => true,
            (None, _) => true,
        };
        let rec = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / batches.len() as f64,
            train_tokens: tokens,
            seconds,
            tokens_per_s: tokens as f64 / seconds,
            dev_precision: dev_report.as_ref().map(|r| r.micro.precision),
            dev_recall: dev_report.as_ref().map(|r| r.micro.recall),
            dev_f1: f1,
        };
        record.epochs.push(rec.clone());
        if better {
            best_f1 = f1.or(best_f1);
            record.best_epoch = Some(epoch + 1);
            record.best_dev_f1 = f1;
            model_dir::save_model(out, &trainer.model, &tokenizer)?;
        }
        record.total_seconds += seconds;
        let state = ResumeState {
            epochs_done: epoch + 1,
            step,
            best_f1,
            record: record.clone(),
        };
        save_resume(out, &trainer, &state)?;
        model_dir::write_atomic(
            &out.join(model_dir::RECORD_FILE),
            &serde_json::to_vec_pretty(&record).unwrap(),
        )?;
        on_event(Event::EpochEnd {
            record: rec,
            best: better,
        });
    }
    let _ = start_time;
    Ok(record)
}

/// The default head: GlobalPointer with RoPE, head size 64.
pub fn default_head() -> HeadConfig {
    HeadConfig {
        kind: HeadKind::Gp,
        head_size: 64,
        rope: true,
    }
}
