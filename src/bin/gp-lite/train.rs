//! `gp-lite train`: the command line's options into [`TrainOptions`], the bundled sample when no
//! data is given, progress on stderr.

use crate::args::{tokenization_choice, tokenization_values, BoundariesArg, DataArgs};
use crate::progress::Progress;
use crate::{pool, Res};
use clap::Args;
use gp_lite::data::{cluener, read_dataset_with, Dataset};
use gp_lite::head::{self, HeadOptions};
use gp_lite::out_dir::{is_nonempty_dir, Replacement};
use gp_lite::train::{EncoderSource, TrainOptions, TrainingRecord};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The bundled sample: 800 training and 200 dev lines of CLUENER (fixtures/cluener-sample).
const SAMPLE_TRAIN: &str = include_str!("../../../fixtures/cluener-sample/train.json");
const SAMPLE_DEV: &str = include_str!("../../../fixtures/cluener-sample/dev.json");

/// `--head`'s values, each with its help line, from the head registry.
fn head_names() -> clap::builder::PossibleValuesParser {
    let kinds = head::kinds::<f32>();
    clap::builder::PossibleValuesParser::new(
        kinds
            .iter()
            .map(|k| clap::builder::PossibleValue::new(k.name).help(k.help)),
    )
}

#[derive(Args)]
pub struct TrainArgs {
    /// Training data (format detected from the content unless --format is given); repeat it to
    /// train on several files (read as one data set).
    #[arg(long)]
    train: Vec<PathBuf>,
    /// Dev data, evaluated after each epoch; the best epoch's model is kept.
    #[arg(long)]
    dev: Option<PathBuf>,
    /// Model directory to write [default: gp-lite-sample-model for the bundled sample].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Fine-tune a pretrained HF BERT directory (config.json, model.safetensors, tokenizer).
    #[arg(long, conflicts_with = "config")]
    init: Option<PathBuf>,
    /// Train from scratch: a preset (tiny, small, minilm, base) or an HF config.json [default: tiny].
    #[arg(long)]
    config: Option<String>,
    /// From scratch: a tokenizer.json, vocab.txt or model directory instead of a character
    /// vocabulary built from the training texts.
    #[arg(long, requires = "config")]
    vocab: Option<PathBuf>,
    /// The head (of nested gold spans a tagger learns the outermost).
    #[arg(long, default_value = "gp", value_parser = head_names())]
    head: String,
    /// Turn RoPE off (the ablation of method.md).
    #[arg(long)]
    no_rope: bool,
    #[arg(long, default_value_t = HeadOptions::default().head_size)]
    head_size: usize,
    /// CRF head: the transitions' learning rate over the model's (bert4keras uses 1000 at lr 2e-5).
    #[arg(long, default_value_t = HeadOptions::default().crf_lr_multiplier)]
    crf_lr_multiplier: f64,
    /// Reader: the loss, softmax cross-entropy of the gold span (ce) or minus the expected F1
    /// plus --lambda times sum p log p (expected-f1).
    #[arg(long, default_value = "ce", value_parser = ["ce", "expected-f1"])]
    loss: String,
    /// Reader: the weight of sum p log p in the expected-F1 loss.
    #[arg(long, default_value_t = HeadOptions::default().lambda, allow_negative_numbers = true)]
    lambda: f64,
    /// Reader: the longest answer, in characters.
    #[arg(long, default_value_t = HeadOptions::default().max_answer_len)]
    max_answer_len: usize,
    /// How texts are tokenized for a pretrained encoder (--init, or --vocab from scratch).
    #[arg(long, default_value = "auto", value_parser = tokenization_values())]
    tokenization: String,
    /// Where entities may begin and end.
    #[arg(long, value_enum, default_value = "auto")]
    boundaries: BoundariesArg,
    /// [default: 3 fine-tuning, 20 from scratch, 30 on the bundled sample]
    #[arg(long)]
    epochs: Option<usize>,
    /// [default: 16 fine-tuning, 32 from scratch]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate [default: 5e-5 fine-tuning, 1e-3 from scratch]
    #[arg(long)]
    lr: Option<f64>,
    /// Peak learning rate of the head [default: --lr]
    #[arg(long)]
    head_lr: Option<f64>,
    /// Fraction of steps with linear warmup (then linear decay to 0).
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Longest token sequence, [CLS]/[SEP] included; longer texts are split into windows.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Dropout probability (overrides the encoder configuration's).
    #[arg(long)]
    dropout: Option<f64>,
    /// Characters seen fewer times become [UNK] (character vocabulary).
    #[arg(long, default_value_t = 1)]
    min_char_count: usize,
    /// Worker threads for everything [default: all cores].
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue the interrupted run in --out from its last completed epoch or checkpoint (same
    /// arguments).
    #[arg(long)]
    resume: bool,
    /// Stop after this many epochs of this invocation, to be continued with --resume (e.g. one
    /// epoch at a time across several runs on a shared machine).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Also save the resume state every STEPS optimizer steps inside an epoch, so that --resume
    /// continues from there (a copy of the weights and optimizer state, replaced each time).
    #[arg(long, value_name = "STEPS")]
    checkpoint_every: Option<usize>,
    /// Number format of the training products: f32, or bf16 (both operands of every forward and
    /// backward product rounded to bf16, sums in f32; weights, optimizer state and everything
    /// else stay f32, and the model is saved in f32)
    #[arg(long, default_value = "f32")]
    precision: gp_lite::precision::Precision,
    /// Replace an existing --out directory.
    #[arg(long)]
    overwrite: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// `gp-lite train`.
pub fn run(a: TrainArgs) -> Res<()> {
    let read = a.data.options()?;
    let sample = a.train.is_empty();
    if sample && a.dev.is_some() {
        return Err("--dev needs --train".into());
    }
    let (train, dev): (Dataset, Option<Dataset>) = if sample {
        let t = cluener::parse(Path::new("<bundled>/cluener-sample/train.json"), SAMPLE_TRAIN)?;
        let d = cluener::parse(Path::new("<bundled>/cluener-sample/dev.json"), SAMPLE_DEV)?;
        (t, Some(d))
    } else {
        let parts = a
            .train
            .iter()
            .map(|p| read_dataset_with(p, read))
            .collect::<Result<Vec<_>, _>>()?;
        let t = if parts.len() == 1 {
            parts.into_iter().next().expect("one")
        } else {
            Dataset::concat(parts)?
        };
        let d = match &a.dev {
            Some(p) => Some(read_dataset_with(p, read)?),
            None => None,
        };
        (t, d)
    };
    let out = match (&a.out, sample) {
        (Some(o), _) => o.clone(),
        (None, true) => PathBuf::from("gp-lite-sample-model"),
        (None, false) => return Err("--out DIR is required with --train".into()),
    };
    // An existing model replaced by --overwrite is moved aside until the new one is written, so
    // a run that fails (a bad --init checkpoint, say) leaves the old model in place.
    let mut replaced = None;
    if !a.resume && is_nonempty_dir(&out)? {
        if a.overwrite || (sample && a.out.is_none()) {
            replaced = Some(Replacement::begin(&out)?);
        } else {
            return Err(format!(
                "{} exists and is not empty (use --overwrite, or --resume to continue it)",
                out.display()
            )
            .into());
        }
    }
    let defaults = match &a.init {
        Some(dir) => TrainOptions::fine_tune(dir),
        // The bundled sample is small: 30 epochs take about half a minute on 2 cores.
        None if sample => TrainOptions {
            epochs: 30,
            ..TrainOptions::default()
        },
        None => TrainOptions::default(),
    };
    let head_options = HeadOptions {
        head_size: a.head_size,
        rope: !a.no_rope,
        crf_lr_multiplier: a.crf_lr_multiplier,
        loss: a.loss.clone(),
        lambda: a.lambda,
        max_answer_len: a.max_answer_len,
    };
    let opts = TrainOptions {
        encoder: match &a.init {
            Some(dir) => EncoderSource::Pretrained(dir.clone()),
            None => EncoderSource::Scratch {
                config: a.config.clone().unwrap_or_else(|| "tiny".into()),
                vocab: a.vocab.clone(),
            },
        },
        head: head::from_options(&a.head, &head_options)?,
        tokenization: tokenization_choice(&a.tokenization),
        boundaries: a.boundaries.boundaries(),
        epochs: a.epochs.unwrap_or(defaults.epochs),
        batch_size: a.batch_size.unwrap_or(defaults.batch_size),
        lr: a.lr.unwrap_or(defaults.lr),
        head_lr: a.head_lr,
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        max_len: a.max_len,
        dropout: a.dropout,
        seed: a.seed,
        min_char_count: a.min_char_count,
        stop_after: a.stop_after,
        checkpoint_every: a.checkpoint_every,
        precision: a.precision,
    };
    let pool = pool(a.threads)?;
    let record = TrainingRecord {
        command: std::env::args().collect(),
        seed: a.seed,
        threads: pool.current_num_threads(),
        train_file: train.path.display().to_string(),
        dev_file: dev.as_ref().map(|d| d.path.display().to_string()),
        ..Default::default()
    };
    let mut progress = Progress::new(a.quiet);
    let started = Instant::now();
    let result = pool.install(|| {
        gp_lite::train::train(&opts, &train, dev.as_ref(), &out, a.resume, record, &mut |e| {
            progress.event(e)
        })
    });
    progress.finish();
    if let Some(r) = replaced {
        if result.is_ok() {
            r.commit()?;
        } else {
            r.roll_back()?;
        }
    }
    let record = result?;
    let secs = started.elapsed().as_secs_f64();
    match (record.best_epoch, record.best_dev_f1) {
        (Some(ep), Some(f1)) => println!(
            "best dev F1 {:.2} (epoch {ep}); model written to {} in {secs:.1} s",
            100.0 * f1,
            out.display()
        ),
        _ => println!("model written to {} in {secs:.1} s", out.display()),
    }
    Ok(())
}
