//! The run, read top to bottom in [`train`]: check the inputs, start (a fresh model or the
//! interrupted run's, its samples, optimizer and schedule), then per epoch: train on shuffled
//! length-bucketed batches (saving the resume state every `checkpoint_every` steps), evaluate on
//! the dev set, keep the best model and the resume state.

use super::build::build_model;
use super::error::TrainError;
use super::options::{Event, TrainOptions};
use super::prepare::prepare;
use super::record::{EpochRecord, TrainingRecord};
use super::resume::{restore, restore_optimizer, resume_paths, save_resume, EpochProgress, ResumeState};
use crate::answer::evaluate_reader;
use crate::batch::{bucketed_batches, make_batch};
use crate::data::Dataset;
use crate::evaluate::evaluate_dataset;
use crate::model_dir;
use crate::optim::adamw::AdamWConfig;
use crate::optim::schedule::LinearSchedule;
use crate::precision::Precision;
use crate::predict::PredictOptions;
use crate::sample::Sample;
use crate::tokenize::Tokenizer;
use crate::trainer::Trainer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::Instant;

/// Trains a model on `train`, evaluating on `dev` after each epoch and keeping the best model
/// (by dev F1; the last one without dev data) in `out`. With `resume`, continues the run whose
/// state is in `out` from its last completed epoch or checkpoint.
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
        // The steps' products in the run's precision; dev evaluation in f32, as the saved f32
        // model will be used.
        let stats = crate::matmul::products_in(opts.precision, || run.epoch(epoch, on_event))?;
        let report = run.evaluate(dev)?;
        run.save(epoch, stats, report, on_event)?;
    }
    Ok(run.record)
}

/// Refuses a run that cannot start: no entities, dev labels the training data lacks, zero sizes.
fn check_inputs(opts: &TrainOptions, train: &Dataset, dev: Option<&Dataset>) -> Result<(), TrainError> {
    if train.labels.is_empty() {
        return Err(TrainError::NoEntities {
            path: train.path.clone(),
        });
    }
    if let Some(d) = dev {
        d.check_labels(&train.labels)?;
    }
    for (option, value) in [
        ("--batch-size", opts.batch_size),
        ("--epochs", opts.epochs),
        ("--stop-after", opts.stop_after.unwrap_or(1)),
        ("--checkpoint-every", opts.checkpoint_every.unwrap_or(1)),
    ] {
        if value == 0 {
            return Err(TrainError::option(option, 0, "must be positive"));
        }
    }
    if opts.precision == Precision::Int8 {
        return Err(TrainError::option(
            "--precision",
            opts.precision,
            "training runs in f32 or bf16 (int8 is for a trained model: `gp-lite quantize`)",
        ));
    }
    let positive = |l: f64| l.is_finite() && l > 0.0;
    for (option, lr) in [("--lr", Some(opts.lr)), ("--head-lr", opts.head_lr)] {
        if lr.is_some_and(|l| !positive(l)) {
            return Err(TrainError::option(
                option,
                lr.unwrap_or_default(),
                "learning rates must be positive",
            ));
        }
    }
    Ok(())
}

/// The dev figures of an epoch (0-1): entity precision, recall and F1, or a reader's CMRC
/// 2018 F1 and exact match.
struct Dev {
    precision: Option<f64>,
    recall: Option<f64>,
    f1: f64,
    em: Option<f64>,
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
    /// The part of `first_epoch` done before an interruption (taken by its [`Run::epoch`]).
    in_epoch: EpochProgress,
    step: usize,
    best_f1: Option<f64>,
    record: TrainingRecord,
}

impl<'a> Run<'a> {
    /// A fresh model (or, with `resume`, the interrupted one of `out`), its prepared data and
    /// optimizer.
    fn start(
        opts: &'a TrainOptions,
        train: &Dataset,
        out: &'a Path,
        resume: bool,
        mut record: TrainingRecord,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Run<'a>, TrainError> {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let (model, tokenizer, restored) = if resume {
            let r = restore(out)?;
            (
                r.predictor.model,
                r.predictor.tokenizer,
                Some((r.state, r.optimizer)),
            )
        } else {
            let (model, tokenizer) = build_model(opts, train, train.labels.clone(), &mut rng, on_event)?;
            (model, tokenizer, None)
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
            model.config.head.kind,
        )));
        record.precision = opts.precision;
        record.train_examples = train.examples.len();
        record.train_windows = prepared.samples.len();
        record.unaligned_spans = prepared.unaligned;
        record.head_left_out_spans = prepared.left_out;
        if let Some(a) = train.answers {
            on_event(Event::Info(format!(
                "answers: {} as published, {} repaired (answer_start moved to the nearest occurrence of the text), {} skipped (text not in the context)",
                a.kept, a.repaired, a.skipped
            )));
            record.answers_repaired = Some(a.repaired);
            record.answers_skipped = Some(a.skipped);
        }
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
            in_epoch: EpochProgress::default(),
            step: 0,
            best_f1: None,
            record,
        };
        if let Some((state, optimizer)) = restored {
            restore_optimizer(&mut run.trainer, &optimizer)?;
            run.continue_from(state, on_event)?;
        }
        Ok(run)
    }

    /// Takes over the progress of the interrupted run (`state`, restored by [`restore`]): the
    /// epochs done, and the batches done of the next one.
    fn continue_from(
        &mut self,
        state: ResumeState,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), TrainError> {
        if state.record.precision != self.opts.precision {
            return Err(TrainError::ResumePrecision {
                out: self.out.to_path_buf(),
                was: state.record.precision,
                now: self.opts.precision,
            });
        }
        (self.first_epoch, self.step, self.best_f1) = (state.epochs_done, state.step, state.best_f1);
        self.in_epoch = state.in_epoch;
        // The figures of the epochs already done, so that training.json and the final
        // "best dev F1" line describe the whole run, not only the resumed part.
        self.record.epochs = state.record.epochs;
        self.record.best_epoch = state.record.best_epoch;
        self.record.best_dev_f1 = state.record.best_dev_f1;
        self.record.total_seconds = state.record.total_seconds;
        on_event(Event::Info(match self.in_epoch.batches {
            0 => format!("resuming after epoch {} (step {})", self.first_epoch, self.step),
            b => format!(
                "resuming epoch {} after its step {b} (step {} of the run)",
                self.first_epoch + 1,
                self.step
            ),
        }));
        if self.first_epoch >= self.opts.epochs {
            return Err(TrainError::AlreadyDone {
                out: self.out.to_path_buf(),
                done: self.first_epoch,
                epochs: self.opts.epochs,
            });
        }
        Ok(())
    }

    /// One pass over the shuffled, length-bucketed training samples (the rest of it, in a run
    /// resumed inside the epoch): (mean loss, tokens, seconds) of the whole epoch.
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
        // A run resumed inside this epoch skips the batches done before the interruption (the
        // order is the same: it depends on the seed and the epoch alone) and carries their sums.
        let done = std::mem::take(&mut self.in_epoch);
        if done.batches > 0 && done.batches >= batches.len() {
            return Err(TrainError::ResumePosition {
                path: resume_paths(self.out, epoch, &done).0,
                epoch: epoch + 1,
                done: done.batches,
                steps: batches.len(),
            });
        }
        on_event(Event::EpochStart {
            epoch: epoch + 1,
            steps: batches.len(),
        });
        let (mut loss_sum, mut tokens) = (done.loss_sum, done.tokens);
        for (i, idx) in batches.iter().enumerate().skip(done.batches) {
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
            // The last batch's state is the epoch's end, saved by `save` after the dev figures.
            let due = opts.checkpoint_every.is_some_and(|n| self.step.is_multiple_of(n));
            if due && i + 1 < batches.len() {
                let progress = EpochProgress {
                    batches: i + 1,
                    loss_sum,
                    tokens,
                    seconds: done.seconds + start.elapsed().as_secs_f64(),
                };
                self.checkpoint(epoch, progress)?;
                on_event(Event::Checkpoint {
                    epoch: epoch + 1,
                    step: i + 1,
                    steps: batches.len(),
                });
            }
        }
        Ok((
            loss_sum / batches.len() as f64,
            tokens,
            done.seconds + start.elapsed().as_secs_f64(),
        ))
    }

    /// Saves the resume state inside the epoch `epoch` (0-based), `in_epoch` of it done. The
    /// record and best F1 are those of the epochs completed; OUT's model is left as it is.
    fn checkpoint(&self, epoch: usize, in_epoch: EpochProgress) -> Result<(), TrainError> {
        let state = ResumeState {
            epochs_done: epoch,
            step: self.step,
            best_f1: self.best_f1,
            record: self.record.clone(),
            in_epoch,
        };
        save_resume(self.out, &self.trainer, &self.tokenizer, &state)
    }

    /// Dev figures of the current model (None without dev data): entity P/R/F1, or a reader's
    /// CMRC 2018 EM/F1.
    fn evaluate(&self, dev: Option<&Dataset>) -> Result<Option<Dev>, TrainError> {
        let Some(d) = dev else {
            return Ok(None);
        };
        let model = &self.trainer.model;
        if model.config.head.kind == "reader" {
            let (s, _) = evaluate_reader(model, &self.tokenizer, d)?;
            return Ok(Some(Dev {
                precision: None,
                recall: None,
                f1: s.f1 / 100.0,
                em: Some(s.em / 100.0),
            }));
        }
        let r = evaluate_dataset(model, &self.tokenizer, d, &PredictOptions::default())?;
        Ok(Some(Dev {
            precision: Some(r.micro.precision),
            recall: Some(r.micro.recall),
            f1: r.micro.f1,
            em: None,
        }))
    }

    /// Records the epoch, keeps the model when it is the best so far (by dev F1; the last one
    /// without dev data), and writes the resume state and training.json.
    fn save(
        &mut self,
        epoch: usize,
        (loss, tokens, seconds): (f64, usize, f64),
        dev: Option<Dev>,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), TrainError> {
        let f1 = dev.as_ref().map(|r| r.f1);
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
            dev_precision: dev.as_ref().and_then(|r| r.precision),
            dev_recall: dev.as_ref().and_then(|r| r.recall),
            dev_f1: f1,
            dev_em: dev.as_ref().and_then(|r| r.em),
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
            in_epoch: EpochProgress::default(),
        };
        save_resume(self.out, &self.trainer, &self.tokenizer, &state)?;
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
