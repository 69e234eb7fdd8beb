//! The gp-lite command line: train, eval, predict, bench, one file a subcommand (argument types
//! shared by several in `args.rs`). The work is the library's; this turns arguments into its
//! options and its results and errors into output and exit codes.

mod answer;
mod args;
mod bench;
mod eval;
mod predict;
mod progress;
mod quantize;
mod reader_eval;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    Train(train::TrainArgs),
    /// Entity-level precision, recall and F1 of a model on labelled data (a reader: CMRC 2018 EM
    /// and F1 on SQuAD-format data).
    Eval(eval::EvalArgs),
    /// Extract entities from texts (JSON lines {"text"} or plain lines) as JSON lines (a reader:
    /// answer JSON lines {"id", "question", "context"} with {"id", "answer", "start", "end", "score"}).
    #[command(after_help = predict::PREDICT_HELP)]
    Predict(predict::PredictArgs),
    /// The PyTorch baseline's workload (../shared/bench/bench_torch.py), one JSON line per run.
    Bench(bench::BenchArgs),
    /// Rewrite a model directory with int8 (a scale per row) or bf16 weights, which runs in that
    /// precision when loaded.
    Quantize(quantize::QuantizeArgs),
}

/// A subcommand's result (the error printed by `main`).
type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[global_allocator]
static ALLOC: gp_lite::alloc::CachingAlloc = gp_lite::alloc::CachingAlloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = gp_lite::cpu::Ceiling::from_env() {
        // a misspelt kernel would otherwise run the default paths unnoticed
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Quantize(a) => quantize::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Exit codes: 0 done, 1 failed, 2 bad command line (clap), 3 a bad input line
            // under `predict --on-error fail`.
            if e.is::<predict::BadLine>() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The worker pool of `threads` threads (0: all cores).
fn pool(threads: usize) -> Res<rayon::ThreadPool> {
    Ok(gp_lite::matmul::thread_pool(threads)?)
}
