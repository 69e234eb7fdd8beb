//! The training run: data preparation, epochs of shuffled length-bucketed batches, evaluation on
//! the dev set after each epoch, the best model kept, and resumable state.
//!
//! Reproducibility: batch order comes from `(seed, epoch)`, dropout from `(seed, step)`, and every
//! parallel computation splits work by the thread count alone, so the same data, seed and thread
//! count give the same model bit for bit, also across `--resume`.

use crate::batch::{bucketed_batches, make_batch, Boundaries, Sample};
use crate::bert::checkpoint::{load_encoder, CheckpointError};
use crate::bert::{BertConfig, EncoderError};
use crate::data::{DataError, Dataset, Example};
use crate::decode::DecodeMode;
use crate::head::{GlobalPointerConfig, HeadConfig};
use crate::metrics::{evaluate, Report};
use crate::model::{ModelConfig, NerModel};
use crate::model_dir::{self, ModelDirError};
use crate::optim::adamw::AdamWConfig;
use crate::optim::schedule::LinearSchedule;
use crate::predict::{encode_for, predict_texts, PredictError, PredictOptions};
use crate::tensor_io;
use crate::tokenize::{
    char_span_to_tokens, mostly_cjk, windows, CharVocab, Tokenization, TokenizeError, Tokenizer,
};
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

/// How to tokenize a pretrained encoder's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenizationChoice {
    /// One token per character when the training texts are mostly CJK (more than half of their
    /// non-whitespace characters), the tokenizer's own pieces otherwise.
    #[default]
    Auto,
    /// This one.
    Fixed(Tokenization),
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub encoder: EncoderSource,
    pub head: HeadConfig,
    pub tokenization: TokenizationChoice,
    /// Entity boundaries; `None`: words when the training data is whitespace-separated and every
    /// gold span is on word boundaries, tokens otherwise (see [`choose_boundaries`]).
    pub boundaries: Option<Boundaries>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Peak learning rate of the head (`None`: `lr`).
    pub head_lr: Option<f64>,
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
    /// Stop (resumably) after this many epochs of this invocation, `None`: run to `epochs`.
    pub stop_after: Option<usize>,
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
    /// Gold spans whose boundaries fall inside a token (or, with word boundaries, a word).
    pub unaligned_spans: usize,
    /// Gold spans the head cannot learn (overlapping spans for a tagger).
    #[serde(default)]
    pub head_left_out_spans: usize,
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
    /// Gold spans whose boundaries fall inside a token, or outside the allowed boundaries
    /// (left out of training).
    pub unaligned: usize,
    /// Gold spans the head cannot learn (left out of training).
    pub left_out: usize,
    /// Texts longer than `max_len` tokens, split into windows.
    pub windowed: usize,
}

/// Tokenizes `data` as `model` will see it, maps its spans onto tokens, keeps those the head can
/// learn and windows texts longer than the model's `max_len`.
pub fn prepare<T: crate::Scalar>(
    data: &Dataset,
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
) -> Result<Prepared, TrainError> {
    let labels = &model.config.labels;
    let max_len = model.config.max_len;
    let index: HashMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let mut out = Prepared {
        samples: Vec::new(),
        unaligned: 0,
        left_out: 0,
        windowed: 0,
    };
    for (ex, &line) in data.examples.iter().zip(&data.lines) {
        let enc = encode_for(model, tokenizer, &ex.text).map_err(|source| TrainError::Tokenizer {
            path: PathBuf::from(format!("{}:{line}", data.path.display())),
            source,
        })?;
        let mut gold = Vec::new();
        for e in &ex.entities {
            match char_span_to_tokens(&enc, e.start, e.end) {
                Some((s, t)) if enc.may_start[s] && enc.may_end[t] => {
                    gold.push((index[e.label.as_str()], s, t))
                }
                _ => out.unaligned += 1,
            }
        }
        let (gold, left_out) = model.head.trainable_gold(gold);
        out.left_out += left_out;
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

/// Word boundaries when the texts are not mostly CJK and every gold span starts at a word start
/// and ends at a word end (whitespace-separated: column files, tokenized corpora); token
/// boundaries otherwise (raw text where an entity may end inside a word, as in "Google's").
pub fn choose_boundaries(data: &Dataset) -> Boundaries {
    let on_words = |ex: &Example| {
        let space: Vec<bool> = ex.text.chars().map(char::is_whitespace).collect();
        ex.entities
            .iter()
            .all(|e| (e.start == 0 || space[e.start - 1]) && space.get(e.end).copied().unwrap_or(true))
    };
    let any_space = data.examples.iter().any(|e| e.text.contains(char::is_whitespace));
    let cjk = mostly_cjk(data.examples.iter().map(|e| e.text.as_str()));
    if any_space && !cjk && data.examples.iter().all(on_words) {
        Boundaries::Words
    } else {
        Boundaries::Tokens
    }
}

/// Flat output by default when no two gold entities of a text overlap.
pub fn choose_decode(data: &Dataset) -> DecodeMode {
    let overlapping = data.examples.iter().any(|ex| {
        // entities are sorted by start: one overlaps an earlier one when it starts before the
        // furthest end seen so far
        let mut end = 0;
        ex.entities.iter().any(|e| {
            let overlaps = e.start < end;
            end = end.max(e.end);
            overlaps
        })
    });
    if overlapping {
        DecodeMode::Nested
    } else {
        DecodeMode::Flat
    }
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

/// The tokenizer and model a run starts from, with the choices made from the data reported.
fn build_model(
    opts: &TrainOptions,
    train: &Dataset,
    labels: Vec<String>,
    rng: &mut ChaCha8Rng,
    info: &mut dyn FnMut(Event),
) -> Result<(NerModel<f32>, Tokenizer), TrainError> {
    let (cfg, encoder, tokenizer) = match &opts.encoder {
        EncoderSource::Pretrained(dir) => {
            let mut cfg = BertConfig::from_json_file(dir.join("config.json"))
                .map_err(|e| TrainError::Invalid(e.to_string()))?;
            apply_dropout(&mut cfg, opts.dropout);
            let (encoder, report) = load_encoder::<f32>(&cfg, &dir.join("model.safetensors"))?;
            if !report.skipped.is_empty() {
                info(Event::Info(format!(
                    "skipped checkpoint tensors not used: {}",
                    report.skipped.join(", ")
                )));
            }
            let tokenizer =
                choose_tokenization(opts, train, Tokenizer::load(dir).map_err(TrainError::Tokenize)?)?;
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
                    choose_tokenization(opts, train, t.map_err(TrainError::Tokenize)?)?
                }
                None => Tokenizer::Char(CharVocab::build(
                    train.examples.iter().map(|e| e.text.as_str()),
                    opts.min_char_count,
                )),
            };
            let vocab_size = tokenizer.vocab_size();
            let mut cfg = match BertConfig::preset(config, vocab_size) {
                Some(c) => c,
                None => {
                    let mut c =
                        BertConfig::from_json_file(config).map_err(|e| TrainError::Invalid(e.to_string()))?;
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
    let boundaries = opts.boundaries.unwrap_or_else(|| choose_boundaries(train));
    let decode = if opts.head.nested() {
        choose_decode(train)
    } else {
        DecodeMode::Flat
    };
    info(Event::Info(format!(
        "tokenization {}, entity boundaries at {}, {} output by default",
        tokenizer.tokenization().name(),
        match boundaries {
            Boundaries::Words => "words",
            Boundaries::Tokens => "tokens",
        },
        match decode {
            DecodeMode::Flat => "flat",
            DecodeMode::Nested => "nested",
        }
    )));
    let config = ModelConfig {
        encoder: cfg,
        head: opts.head.clone(),
        labels,
        max_len: opts.max_len,
        tokenization: Some(tokenizer.tokenization()),
        boundaries,
        decode,
    };
    let model = match encoder {
        Some(encoder) => NerModel::with_encoder(config, encoder, rng),
        None => NerModel::new(config, rng)?,
    };
    Ok((model, tokenizer))
}

/// A pretrained tokenizer as `opts` asks, or one token per character when the texts are mostly CJK.
fn choose_tokenization(
    opts: &TrainOptions,
    train: &Dataset,
    tokenizer: Tokenizer,
) -> Result<Tokenizer, TrainError> {
    let chars = match opts.tokenization {
        TokenizationChoice::Fixed(Tokenization::Chars) => true,
        TokenizationChoice::Fixed(Tokenization::Subwords) => false,
        TokenizationChoice::Fixed(Tokenization::CharVocab) => {
            return Err(TrainError::Invalid(
                "--tokenization char_vocab is for training from scratch without --vocab".into(),
            ))
        }
        TokenizationChoice::Auto => mostly_cjk(train.examples.iter().map(|e| e.text.as_str())),
    };
    if chars {
        tokenizer.per_char().map_err(TrainError::Tokenize)
    } else {
        Ok(tokenizer)
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

/// Refuses a run that cannot start: no entities, dev labels the training data lacks, zero sizes.
fn check_inputs(opts: &TrainOptions, train: &Dataset, dev: Option<&Dataset>) -> Result<(), TrainError> {
    if train.labels.is_empty() {
        return Err(TrainError::Invalid(format!(
            "{}: no entities to learn from",
            train.path.display()
        )));
    }
    if let Some(d) = dev {
        d.check_labels(&train.labels)?;
    }
    if opts.batch_size == 0 || opts.epochs == 0 || opts.stop_after == Some(0) {
        return Err(TrainError::Invalid(
            "--batch-size, --epochs and --stop-after must be positive".into(),
        ));
    }
    let positive = |l: f64| l.is_finite() && l > 0.0;
    if !positive(opts.lr) || opts.head_lr.is_some_and(|l| !positive(l)) {
        return Err(TrainError::Invalid("learning rates must be positive".into()));
    }
    Ok(())
}

/// A run in progress: the trainer, its data and schedule, and where it stands.
struct Run<'a> {
    opts: &'a TrainOptions,
    out: &'a Path,
    trainer: Trainer<f32>,
    tokenizer: Tokenizer,
    samples: Vec<Sample>,
    schedule: LinearSchedule,
    first_epoch: usize,
    step: usize,
    best_f1: Option<f64>,
    record: TrainingRecord,
}

impl<'a> Run<'a> {
    /// A fresh model (or, with `resume`, the one in `out`), its prepared data and optimizer.
    fn start(
        opts: &'a TrainOptions,
        train: &Dataset,
        out: &'a Path,
        resume: bool,
        mut record: TrainingRecord,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Run<'a>, TrainError> {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let (model, tokenizer) = if resume {
            let predictor = model_dir::load_model::<f32>(out)?;
            (predictor.model, predictor.tokenizer)
        } else {
            build_model(opts, train, train.labels.clone(), &mut rng, on_event)?
        };
        let prepared = prepare(train, &model, &tokenizer)?;
        on_event(Event::Info(format!(
            "{} training texts ({} samples after windowing {} long texts), {} labels; {} gold spans not on token boundaries and {} the {} head cannot learn (left out)",
            train.examples.len(),
            prepared.samples.len(),
            prepared.windowed,
            model.config.labels.len(),
            prepared.unaligned,
            prepared.left_out,
            model.config.head.name(),
        )));
        record.train_examples = train.examples.len();
        record.train_windows = prepared.samples.len();
        record.unaligned_spans = prepared.unaligned;
        record.head_left_out_spans = prepared.left_out;
        let adamw = AdamWConfig {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..AdamWConfig::default()
        };
        let mut trainer = Trainer::new(model, adamw, opts.max_grad_norm);
        trainer.head_lr_scale = opts.head_lr.map_or(1.0, |h| h / opts.lr);
        let total_steps = prepared.samples.len().div_ceil(opts.batch_size) * opts.epochs;
        let schedule = LinearSchedule {
            warmup_steps: (opts.warmup * total_steps as f64).round() as usize,
            total_steps,
        };
        let mut run = Run {
            opts,
            out,
            trainer,
            tokenizer,
            samples: prepared.samples,
            schedule,
            first_epoch: 0,
            step: 0,
            best_f1: None,
            record,
        };
        if resume {
            run.restore(on_event)?;
        }
        Ok(run)
    }

    /// Weights, optimizer state and progress from `OUT/resume/`.
    fn restore(&mut self, on_event: &mut dyn FnMut(Event)) -> Result<(), TrainError> {
        let (state_p, _, _) = resume_paths(self.out, 0);
        let text = std::fs::read_to_string(&state_p).map_err(|source| ModelDirError::Io {
            path: state_p.clone(),
            source,
        })?;
        let state: ResumeState = serde_json::from_str(&text).map_err(|source| ModelDirError::Config {
            path: state_p.clone(),
            source,
        })?;
        let (_, mut model_p, mut opt_p) = resume_paths(self.out, state.epochs_done);
        let legacy = self.out.join(RESUME_DIR);
        if !model_p.exists() && legacy.join("model.safetensors").exists() {
            // The layout before epoch-named files (model.safetensors, optimizer.safetensors).
            (model_p, opt_p) = (
                legacy.join("model.safetensors"),
                legacy.join("optimizer.safetensors"),
            );
        }
        model_dir::load_weights(&model_p, &mut self.trainer.model)?;
        let bytes = std::fs::read(&opt_p).map_err(|source| ModelDirError::Io {
            path: opt_p.clone(),
            source,
        })?;
        let tensors = tensor_io::named_from_bytes::<f32>(&bytes, &opt_p).map_err(CheckpointError::from)?;
        self.trainer
            .opt
            .load_state(&self.trainer.model, &tensors)
            .map_err(|e| TrainError::Invalid(format!("{}: {e}", opt_p.display())))?;
        (self.first_epoch, self.step, self.best_f1) = (state.epochs_done, state.step, state.best_f1);
        // The figures of the epochs already done, so that training.json and the final
        // "best dev F1" line describe the whole run, not only the resumed part.
        self.record.epochs = state.record.epochs;
        self.record.best_epoch = state.record.best_epoch;
        self.record.best_dev_f1 = state.record.best_dev_f1;
        self.record.total_seconds = state.record.total_seconds;
        on_event(Event::Info(format!(
            "resuming after epoch {} (step {})",
            self.first_epoch, self.step
        )));
        if self.first_epoch >= self.opts.epochs {
            return Err(TrainError::Invalid(format!(
                "{}: the run already completed {} of {} epochs",
                self.out.display(),
                self.first_epoch,
                self.opts.epochs
            )));
        }
        Ok(())
    }

    /// One pass over the shuffled, length-bucketed training samples: (mean loss, tokens, seconds).
    fn epoch(
        &mut self,
        epoch: usize,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(f64, usize, f64), TrainError> {
        let start = Instant::now();
        let opts = self.opts;
        let lengths: Vec<usize> = self.samples.iter().map(|s| s.enc.len()).collect();
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
                    .map(|&k| (&self.samples[k].enc, &self.samples[k].gold[..])),
            );
            let lr = self.schedule.lr(opts.lr, self.step);
            let mut dropout_rng =
                ChaCha8Rng::seed_from_u64(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.step as u64);
            let stats = self.trainer.step(&batch, lr, &mut dropout_rng)?;
            self.step += 1;
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
        Ok((
            loss_sum / batches.len() as f64,
            tokens,
            start.elapsed().as_secs_f64(),
        ))
    }

    /// Dev P/R/F1 of the current model (None without dev data).
    fn evaluate(&self, dev: Option<&Dataset>) -> Result<Option<Report>, TrainError> {
        dev.map(|d| {
            evaluate_dataset(
                &self.trainer.model,
                &self.tokenizer,
                d,
                &PredictOptions::default(),
            )
        })
        .transpose()
    }

    /// Records the epoch, keeps the model when it is the best so far (by dev F1; the last one
    /// without dev data), and writes the resume state and training.json.
    fn save(
        &mut self,
        epoch: usize,
        (loss, tokens, seconds): (f64, usize, f64),
        dev: Option<Report>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), TrainError> {
        let f1 = dev.as_ref().map(|r| r.micro.f1);
        let better = match (f1, self.best_f1) {
            (Some(f), Some(b)) => f > b,
            _ => true,
        };
        let rec = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss,
            train_tokens: tokens,
            seconds,
            tokens_per_s: tokens as f64 / seconds,
            dev_precision: dev.as_ref().map(|r| r.micro.precision),
            dev_recall: dev.as_ref().map(|r| r.micro.recall),
            dev_f1: f1,
        };
        self.record.epochs.push(rec.clone());
        if better {
            self.best_f1 = f1.or(self.best_f1);
            self.record.best_epoch = Some(epoch + 1);
            self.record.best_dev_f1 = f1;
            model_dir::save_model(self.out, &self.trainer.model, &self.tokenizer)?;
        }
        self.record.total_seconds += seconds;
        let state = ResumeState {
            epochs_done: epoch + 1,
            step: self.step,
            best_f1: self.best_f1,
            record: self.record.clone(),
        };
        save_resume(self.out, &self.trainer, &state)?;
        model_dir::write_atomic(
            &self.out.join(model_dir::RECORD_FILE),
            &serde_json::to_vec_pretty(&self.record).expect("the record serialises"),
        )?;
        on_event(Event::EpochEnd {
            record: rec,
            best: better,
        });
        Ok(())
    }
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
    record: TrainingRecord,
    on_event: &mut dyn FnMut(Event),
) -> Result<TrainingRecord, TrainError> {
    check_inputs(opts, train, dev)?;
    let mut run = Run::start(opts, train, out, resume, record, on_event)?;
    let last = match opts.stop_after {
        Some(k) => opts.epochs.min(run.first_epoch + k),
        None => opts.epochs,
    };
    for epoch in run.first_epoch..last {
        let stats = run.epoch(epoch, on_event)?;
        let report = run.evaluate(dev)?;
        run.save(epoch, stats, report, on_event)?;
    }
    Ok(run.record)
}

/// The default head: GlobalPointer with RoPE, head size 64.
pub fn default_head() -> HeadConfig {
    HeadConfig::Gp(GlobalPointerConfig {
        head_size: 64,
        rope: true,
    })
}
