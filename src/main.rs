//! The gp-lite command line: train, eval, predict, bench.

use clap::{Args, Parser, Subcommand, ValueEnum};
use gp_lite::batch::Boundaries;
use gp_lite::data::bio::Join;
use gp_lite::data::{cluener, read_dataset_with, Dataset, Format, ReadOptions};
use gp_lite::decode::DecodeMode;
use gp_lite::head::{crf::DEFAULT_TRANSITION_LR_MULTIPLIER, HeadConfig, HeadOptions};
use gp_lite::predict::{PredictError, PredictOptions, Predictor};
use gp_lite::tokenize::Tokenization;
use gp_lite::train::{EncoderSource, Event, TokenizationChoice, TrainOptions, TrainingRecord};
use gp_lite::trainer::Workspace;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// The bundled sample: 800 training and 200 dev lines of CLUENER (fixtures/cluener-sample).
const SAMPLE_TRAIN: &str = include_str!("../fixtures/cluener-sample/train.json");
const SAMPLE_DEV: &str = include_str!("../fixtures/cluener-sample/dev.json");

/// `gp-lite predict --help`: how it behaves as a filter.
const PREDICT_HELP: &str = "\
A filter (Spark RDD.pipe, Hadoop Streaming, shell pipes): output line k answers input line k,
in input order, flushed after each chunk of --batch-size lines; stdout carries only results
and error records, messages go to stderr as FILE:LINE: what; memory holds one chunk.

Exit codes: 0 every line answered (bad lines with error records under --on-error record);
1 a failure that is not one line's (model directory, input or output file, read or write
error), after the results of the lines read so far; 2 a bad command line; 3 a bad input line
under --on-error fail, after the results of every line before it.";

#[derive(Parser)]
#[command(
    name = "gp-lite",
    version,
    about = "GlobalPointer named-entity recognition on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size difference between the variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train a model. With no --train, trains a tiny model on the bundled CLUENER sample.
    Train(TrainArgs),
    /// Entity-level precision, recall and F1 of a model on labelled data.
    Eval(EvalArgs),
    /// Extract entities from texts (JSON lines {"text"} or plain lines) as JSON lines.
    #[command(after_help = PREDICT_HELP)]
    Predict(PredictArgs),
    /// The PyTorch baseline's workload (../shared/bench/bench_torch.py), one JSON line per run.
    Bench(BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum TokenizationArg {
    /// chars when more than half of the training texts' non-whitespace characters are CJK
    /// (Han, kana, Hangul, CJK punctuation), subwords otherwise
    Auto,
    /// the pretrained tokenizer's own pieces
    Subwords,
    /// one token per character, looked up in the pretrained vocabulary after its normalizer
    Chars,
}

#[derive(Clone, Copy, ValueEnum)]
enum BoundariesArg {
    /// words when the training texts are not mostly CJK and every gold span starts and ends at
    /// whitespace (column files, tokenized corpora), tokens otherwise
    Auto,
    /// entities may start and end at any token
    Tokens,
    /// entities start at word starts and end at word ends (words are whitespace-separated)
    Words,
}

#[derive(Clone, Copy, ValueEnum)]
enum JoinArg {
    /// none when most token characters are CJK or every token is one character, space otherwise
    Auto,
    Space,
    None,
}

/// Column-file and format options shared by train and eval.
#[derive(Args)]
struct DataArgs {
    /// Data format: cluener, cmeee, conll (bio), jsonl (gp) [default: detected from the content].
    #[arg(long)]
    format: Option<String>,
    /// How a column file's tokens are joined into the sentence text.
    #[arg(long, value_enum, default_value = "auto")]
    column_join: JoinArg,
}

impl DataArgs {
    fn options(&self) -> Res<ReadOptions> {
        Ok(ReadOptions {
            format: parse_format(&self.format)?,
            join: match self.column_join {
                JoinArg::Auto => Join::Auto,
                JoinArg::Space => Join::Space,
                JoinArg::None => Join::None,
            },
        })
    }
}

/// `--flat` / `--nested` (neither: the model's default, flat when its training data had no
/// overlapping entities).
#[derive(Args)]
struct ModeArgs {
    /// Non-overlapping output (keep the best of overlapping spans).
    #[arg(long, conflicts_with = "nested")]
    flat: bool,
    /// Every span above the threshold, overlapping or not.
    #[arg(long)]
    nested: bool,
}

impl ModeArgs {
    fn mode(&self) -> Option<DecodeMode> {
        match (self.flat, self.nested) {
            (true, _) => Some(DecodeMode::Flat),
            (_, true) => Some(DecodeMode::Nested),
            _ => None,
        }
    }
}

/// How texts longer than the model's `max_len` are cut into windows.
#[derive(Args)]
struct WindowArgs {
    /// Tokens per window of a text longer than the model's max length, [CLS]/[SEP] included
    /// [default: 128, or the model's max length if smaller]
    #[arg(long, value_parser = window_len)]
    window: Option<usize>,
    /// Tokens shared by consecutive windows (an entity up to this long always lies whole in one)
    #[arg(long, default_value_t = gp_lite::predict::DEFAULT_OVERLAP)]
    overlap: usize,
}

/// A window length: [CLS], [SEP] and at least one token.
fn window_len(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 3 => Ok(n),
        Ok(_) => Err("a window holds [CLS], [SEP] and at least one token: 3 or more".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Args)]
struct TrainArgs {
    /// Training data (format detected from the content unless --format is given).
    #[arg(long)]
    train: Option<PathBuf>,
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
    /// The head: gp (GlobalPointer), egp (Efficient GlobalPointer), crf (BIO tagger with a
    /// linear-chain CRF, the published baseline; flat output, of nested gold spans it learns the
    /// outermost).
    #[arg(long, default_value = "gp", value_parser = clap::builder::PossibleValuesParser::new(HeadConfig::NAMES))]
    head: String,
    /// Turn RoPE off (the ablation of method.md).
    #[arg(long)]
    no_rope: bool,
    #[arg(long, default_value_t = 64)]
    head_size: usize,
    /// CRF head: the transitions' learning rate over the model's (bert4keras uses 1000 at lr 2e-5).
    #[arg(long, default_value_t = DEFAULT_TRANSITION_LR_MULTIPLIER)]
    crf_lr_multiplier: f64,
    /// How texts are tokenized for a pretrained encoder (--init, or --vocab from scratch).
    #[arg(long, value_enum, default_value = "auto")]
    tokenization: TokenizationArg,
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
    /// Continue the interrupted run in --out from its last completed epoch (same arguments).
    #[arg(long)]
    resume: bool,
    /// Stop after this many epochs of this invocation, to be continued with --resume (e.g. one
    /// epoch at a time across several runs on a shared machine).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Replace an existing --out directory.
    #[arg(long)]
    overwrite: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    data_opts: DataArgs,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    mode: ModeArgs,
    #[command(flatten)]
    windows: WindowArgs,
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    /// Input file [default: stdin]
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output file [default: stdout]
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    mode: ModeArgs,
    /// Score above which a span is an entity.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    threshold: f64,
    /// Texts per forward pass (and per chunk read from the input).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    windows: WindowArgs,
    /// Worker threads (0: all cores); under a task scheduler, the cores one task owns.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// What a bad input line (invalid UTF-8, malformed JSON, no string "text") does.
    #[arg(long, value_enum, default_value = "record")]
    on_error: OnError,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum OnError {
    /// Answer it in its place with {"error", "line"}, report FILE:LINE on stderr, go on (exit 0)
    Record,
    /// Stop there, after the results of every line before it (exit 3; no --output file)
    Fail,
}

#[derive(Args)]
struct BenchArgs {
    /// Presets to run: tiny, small, minilm, base.
    #[arg(long, num_args = 1.., default_values = ["tiny", "small", "minilm"])]
    config: Vec<String>,
    /// Thread counts to run.
    #[arg(long, num_args = 1.., default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Timed training steps (inference: 3x as many batch-1 calls).
    #[arg(long, default_value_t = 10)]
    steps: usize,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[global_allocator]
static ALLOC: gp_lite::alloc::CachingAlloc = gp_lite::alloc::CachingAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Predict(a) => cmd_predict(a),
        Command::Bench(a) => cmd_bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Exit codes: 0 done, 1 failed, 2 bad command line (clap), 3 a bad input line
            // under `predict --on-error fail`.
            if e.is::<BadLine>() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn pool(threads: usize) -> Res<rayon::ThreadPool> {
    Ok(gp_lite::matmul::thread_pool(threads)?)
}

fn parse_format(f: &Option<String>) -> Res<Option<Format>> {
    Ok(match f {
        Some(s) => Some(s.parse::<Format>()?),
        None => None,
    })
}

fn cmd_train(a: TrainArgs) -> Res<()> {
    let read = a.data.options()?;
    let sample = a.train.is_none();
    if sample && a.dev.is_some() {
        return Err("--dev needs --train".into());
    }
    let (train, dev): (Dataset, Option<Dataset>) = if sample {
        let t = cluener::parse(Path::new("<bundled>/cluener-sample/train.json"), SAMPLE_TRAIN)?;
        let d = cluener::parse(Path::new("<bundled>/cluener-sample/dev.json"), SAMPLE_DEV)?;
        (t, Some(d))
    } else {
        let t = read_dataset_with(a.train.as_ref().unwrap(), read)?;
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
    let mut replaced: Option<PathBuf> = None;
    if !a.resume && out.exists() && std::fs::read_dir(&out)?.next().is_some() {
        if a.overwrite || (sample && a.out.is_none()) {
            let name = out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let aside = out.with_file_name(format!(".{name}.replaced-{}", std::process::id()));
            std::fs::rename(&out, &aside).map_err(|e| format!("{}: {e}", out.display()))?;
            replaced = Some(aside);
        } else {
            return Err(format!(
                "{} exists and is not empty (use --overwrite, or --resume to continue it)",
                out.display()
            )
            .into());
        }
    }
    let fine_tune = a.init.is_some();
    let encoder = match &a.init {
        Some(dir) => EncoderSource::Pretrained(dir.clone()),
        None => EncoderSource::Scratch {
            config: a.config.clone().unwrap_or_else(|| "tiny".into()),
            vocab: a.vocab.clone(),
        },
    };
    let opts = TrainOptions {
        encoder,
        head: HeadConfig::from_name(
            &a.head,
            &HeadOptions {
                head_size: a.head_size,
                rope: !a.no_rope,
                crf_lr_multiplier: a.crf_lr_multiplier,
            },
        )
        .ok_or_else(|| format!("unknown head `{}`", a.head))?,
        tokenization: match a.tokenization {
            TokenizationArg::Auto => TokenizationChoice::Auto,
            TokenizationArg::Subwords => TokenizationChoice::Fixed(Tokenization::Subwords),
            TokenizationArg::Chars => TokenizationChoice::Fixed(Tokenization::Chars),
        },
        boundaries: match a.boundaries {
            BoundariesArg::Auto => None,
            BoundariesArg::Tokens => Some(Boundaries::Tokens),
            BoundariesArg::Words => Some(Boundaries::Words),
        },
        head_lr: a.head_lr,
        // The bundled sample is small: 30 epochs take about half a minute on 2 cores.
        epochs: a.epochs.unwrap_or(if fine_tune {
            3
        } else if sample {
            30
        } else {
            20
        }),
        batch_size: a.batch_size.unwrap_or(if fine_tune { 16 } else { 32 }),
        lr: a.lr.unwrap_or(if fine_tune { 5e-5 } else { 1e-3 }),
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        max_len: a.max_len,
        dropout: a.dropout,
        seed: a.seed,
        min_char_count: a.min_char_count,
        stop_after: a.stop_after,
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
    if let Some(aside) = replaced {
        if result.is_ok() {
            std::fs::remove_dir_all(&aside)?;
        } else {
            // Whatever the failed run wrote (a model cut short by a full disk, say) gives way
            // to the old model.
            if out.exists() {
                std::fs::remove_dir_all(&out)?;
            }
            std::fs::rename(&aside, &out)?;
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

/// Terminal progress bar, or plain log lines when stderr is not a terminal.
struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
    tty: bool,
    epoch_start: Instant,
    tokens: usize,
    loss: f64,
    steps_done: usize,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            bar: None,
            tty: std::io::stderr().is_terminal(),
            epoch_start: Instant::now(),
            tokens: 0,
            loss: 0.0,
            steps_done: 0,
        }
    }

    fn event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::Info(s) => self.line(&s),
            Event::EpochStart { epoch, steps } => {
                (self.epoch_start, self.tokens, self.loss, self.steps_done) = (Instant::now(), 0, 0.0, 0);
                if self.tty {
                    let bar = ProgressBar::new(steps as u64);
                    bar.set_style(
                        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                            .unwrap()
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(epoch.to_string());
                    self.bar = Some(bar);
                }
            }
            Event::Step {
                epoch,
                step,
                steps,
                loss,
                tokens,
                lr,
            } => {
                self.tokens += tokens;
                self.loss += loss;
                self.steps_done += 1;
                let tps = self.tokens as f64 / self.epoch_start.elapsed().as_secs_f64();
                let mean = self.loss / self.steps_done as f64;
                if let Some(bar) = &self.bar {
                    bar.set_message(format!("loss {mean:.4} {tps:.0} tok/s lr {lr:.2e}"));
                    bar.inc(1);
                } else if step % 100 == 0 || step == steps {
                    eprintln!("epoch {epoch} step {step}/{steps} loss {mean:.4} {tps:.0} tok/s lr {lr:.2e}");
                }
            }
            Event::EpochEnd { record, best } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                let dev = match (record.dev_precision, record.dev_recall, record.dev_f1) {
                    (Some(p), Some(r), Some(f)) => {
                        format!(" dev P {:.2} R {:.2} F1 {:.2}", 100.0 * p, 100.0 * r, 100.0 * f)
                    }
                    _ => String::new(),
                };
                self.line(&format!(
                    "epoch {} loss {:.4} {:.0} tok/s {:.1} s{dev}{}",
                    record.epoch,
                    record.train_loss,
                    record.tokens_per_s,
                    record.seconds,
                    if best { " (saved)" } else { "" }
                ));
            }
        }
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(bar) => bar.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn cmd_eval(a: EvalArgs) -> Res<()> {
    let read = a.data_opts.options()?;
    let pool = pool(a.threads)?;
    let predictor: Predictor<f32> = gp_lite::model_dir::load_model(&a.model)?;
    let data = read_dataset_with(&a.data, read)?;
    data.check_labels(&predictor.model.config.labels)?;
    let opts = PredictOptions {
        mode: a.mode.mode(),
        window: a.windows.window,
        overlap: a.windows.overlap,
        ..Default::default()
    };
    let report = pool
        .install(|| gp_lite::train::evaluate_dataset(&predictor.model, &predictor.tokenizer, &data, &opts))?;
    let labels = &predictor.model.config.labels;
    if a.json {
        let per_type: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .zip(&report.per_type)
            .map(|(l, p)| (l.clone(), serde_json::to_value(p).unwrap()))
            .collect();
        let m = &report.micro;
        let obj = serde_json::json!({
            "precision": m.precision, "recall": m.recall, "f1": m.f1,
            "gold": m.gold, "predicted": m.predicted, "correct": m.correct,
            "per_type": per_type,
        });
        println!("{obj}");
    } else {
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7}",
            "type", "precision", "recall", "f1", "gold", "predicted", "correct"
        );
        let row = |name: &str, p: &gp_lite::metrics::Prf| {
            println!(
                "{name:<16} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>9} {:>7}",
                100.0 * p.precision,
                100.0 * p.recall,
                100.0 * p.f1,
                p.gold,
                p.predicted,
                p.correct
            )
        };
        for (l, p) in labels.iter().zip(&report.per_type) {
            row(l, p);
        }
        row("micro", &report.micro);
    }
    Ok(())
}

/// A text from an input line: a JSON object with a string "text", or the line itself.
/// Err: what is wrong with the line.
fn input_text(line: &[u8]) -> Result<String, String> {
    let line = std::str::from_utf8(line).map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    if !line.trim_start().starts_with('{') {
        return Ok(line.to_string());
    }
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    match v.get("text").and_then(|t| t.as_str()) {
        Some(t) => Ok(t.to_string()),
        None => Err("missing string field `text`".into()),
    }
}

/// One output line of `predict`, serialized straight from the text and its entities (no copy of
/// either: a 1 MB text with its entities costs no more than its own size to write). Keys in
/// alphabetical order.
#[derive(serde::Serialize)]
struct OutputLine<'a> {
    entities: Vec<OutputEntity<'a>>,
    text: &'a str,
}

#[derive(serde::Serialize)]
struct OutputEntity<'a> {
    end: usize,
    score: f64,
    start: usize,
    text: &'a str,
    #[serde(rename = "type")]
    label: &'a str,
}

impl<'a> OutputLine<'a> {
    fn new(text: &'a str, ents: &'a [gp_lite::predict::PredEntity]) -> Self {
        // byte offset of every character offset an entity names, in one pass over the text
        let mut marks: Vec<usize> = ents.iter().flat_map(|e| [e.start, e.end]).collect();
        marks.sort_unstable();
        marks.dedup();
        let mut bytes = Vec::with_capacity(marks.len());
        let mut at = marks.iter().peekable();
        for (c, (b, _)) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
            .enumerate()
        {
            while at.next_if(|&&m| m == c).is_some() {
                bytes.push(b);
            }
        }
        let byte = |c: usize| bytes[marks.binary_search(&c).expect("marked above")];
        let entities = ents
            .iter()
            .map(|e| OutputEntity {
                end: e.end,
                score: e.score,
                start: e.start,
                text: &text[byte(e.start)..byte(e.end)],
                label: &e.label,
            })
            .collect();
        OutputLine { entities, text }
    }
}

/// A bad input line under `--on-error fail`: the run stops with exit code 3.
#[derive(Debug)]
struct BadLine(String);

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadLine {}

fn cmd_predict(a: PredictArgs) -> Res<()> {
    let pool = pool(a.threads)?;
    let predictor: Predictor<f32> = gp_lite::model_dir::load_model(&a.model)?;
    let (reader, source): (Box<dyn BufRead>, String) = match &a.input {
        Some(p) => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?,
            )),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin().lock()), "<stdin>".into()),
    };
    // A file output is written under a temporary name and renamed when complete.
    let tmp_output = a.output.as_ref().map(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        p.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
    });
    let out: Box<dyn Write> = match (&tmp_output, &a.output) {
        (Some(p), Some(named)) => Box::new(NamedWriter {
            inner: BufWriter::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
            path: named.clone(),
        }),
        _ => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let opts = PredictOptions {
        mode: a.mode.mode(),
        threshold: a.threshold,
        batch_size: a.batch_size.max(1),
        window: a.windows.window,
        overlap: a.windows.overlap,
    };
    let mut stream = PredictStream {
        predictor: &predictor,
        pool: &pool,
        opts,
        ws: Workspace::new(),
        source: &source,
        on_error: a.on_error,
        out,
        bad: 0,
    };
    let result = stream.run(reader);
    let bad = stream.bad;
    drop(stream);
    match (&tmp_output, &a.output) {
        (Some(tmp), Some(path)) if result.is_ok() => std::fs::rename(tmp, path)?,
        (Some(tmp), _) => {
            let _ = std::fs::remove_file(tmp);
        }
        _ => {}
    }
    if result.is_ok() && bad > 0 {
        eprintln!("{source}: {bad} bad line(s) answered with error records");
    }
    result
}

/// A writer whose errors name the file written (the user's `--output`, not the temporary name).
struct NamedWriter<W> {
    inner: W,
    path: PathBuf,
}

impl<W: Write> NamedWriter<W> {
    fn named(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }
}

impl<W: Write> Write for NamedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.named(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.named(e))
    }
}

/// One input line of a chunk: its number and its text, or what is wrong with it.
type Slot = (usize, Result<String, String>);

/// `gp-lite predict` as a filter: reads lines, predicts them in chunks of the batch size, and
/// writes one JSON line per input line, in input order, flushed after each chunk. Memory holds
/// one chunk at a time.
struct PredictStream<'a> {
    predictor: &'a Predictor<f32>,
    pool: &'a rayon::ThreadPool,
    opts: PredictOptions,
    ws: Workspace,
    source: &'a str,
    on_error: OnError,
    out: Box<dyn Write>,
    /// Bad lines answered with error records so far.
    bad: usize,
}

impl PredictStream<'_> {
    fn run(&mut self, mut reader: Box<dyn BufRead>) -> Res<()> {
        let mut chunk: Vec<Slot> = Vec::with_capacity(self.opts.batch_size);
        let mut buf: Vec<u8> = Vec::new();
        let mut lineno = 0;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // The lines read so far are answered before the run stops.
                    self.write_chunk(&mut chunk)?;
                    return Err(format!("{}:{}: {e}", self.source, lineno + 1).into());
                }
            }
            lineno += 1;
            if lineno == 1 && buf.starts_with(b"\xef\xbb\xbf") {
                buf.drain(..3); // a UTF-8 byte order mark
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            // Empty lines are empty texts, so that output line k answers input line k.
            let text = input_text(&buf);
            let stop = text.is_err() && self.on_error == OnError::Fail;
            chunk.push((lineno, text));
            if chunk.len() == self.opts.batch_size || stop {
                self.write_chunk(&mut chunk)?;
            }
        }
        self.write_chunk(&mut chunk)
    }

    /// Predicts the texts of `chunk`, writes one line per slot and flushes. A text the
    /// tokenizer rejects becomes a bad line. Under `--on-error fail` the first bad line ends
    /// the run, after the lines before it are written.
    fn write_chunk(&mut self, chunk: &mut Vec<Slot>) -> Res<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let preds = loop {
            let texts: Vec<&str> = chunk.iter().filter_map(|(_, t)| t.as_deref().ok()).collect();
            let (predictor, opts, ws) = (self.predictor, &self.opts, &mut self.ws);
            match self.pool.install(|| predictor.predict(&texts, opts, ws)) {
                Ok(p) => break p,
                Err(PredictError::Tokenize { index, source }) => {
                    let slot = chunk
                        .iter_mut()
                        .filter(|(_, t)| t.is_ok())
                        .nth(index)
                        .expect("the tokenizer names one of the texts");
                    slot.1 = Err(format!("cannot tokenize: {source}"));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut preds = preds.into_iter();
        for (lineno, text) in chunk.drain(..) {
            match text {
                Ok(text) => {
                    let ents = preds.next().expect("one prediction per text");
                    serde_json::to_writer(&mut self.out, &OutputLine::new(&text, &ents))?;
                    writeln!(self.out)?;
                }
                Err(what) => {
                    let at = format!("{}:{lineno}: {what}", self.source);
                    if self.on_error == OnError::Fail {
                        self.out.flush()?;
                        return Err(BadLine(at).into());
                    }
                    eprintln!("error: {at}");
                    writeln!(self.out, "{}", serde_json::json!({"error": what, "line": lineno}))?;
                    self.bad += 1;
                }
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

fn cmd_bench(a: BenchArgs) -> Res<()> {
    for config in &a.config {
        for &t in &a.threads {
            let pool = pool(t)?;
            let r = pool
                .install(|| gp_lite::bench::run(config, t, a.steps))
                .ok_or_else(|| format!("unknown config `{config}` (tiny, small, minilm, base)"))?;
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}
