//! `gp-lite eval`: precision, recall and F1 of a model on labelled data, as a table or JSON (a
//! reader's EM and F1: `reader_eval.rs`).

use crate::args::{DataArgs, ModeArgs, PrecisionArgs, WindowArgs};
use crate::{pool, Res};
use clap::Args;
use gp_lite::data::read_dataset_with;
use gp_lite::predict::{PredictOptions, Predictor};
use std::path::PathBuf;

#[derive(Args)]
pub struct EvalArgs {
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
    #[command(flatten)]
    precision: PrecisionArgs,
}

/// `gp-lite eval`.
pub fn run(a: EvalArgs) -> Res<()> {
    let read = a.data_opts.options()?;
    let pool = pool(a.threads)?;
    let mut predictor: Predictor<f32> = gp_lite::model_dir::load_model(&a.model)?;
    a.precision.apply(&mut predictor);
    let data = read_dataset_with(&a.data, read)?;
    if predictor.model.config.head.kind == "reader" {
        return crate::reader_eval::run(&predictor, &pool, &data, a.json);
    }
    data.check_labels(&predictor.model.config.labels)?;
    let opts = PredictOptions {
        mode: a.mode.mode(),
        window: a.windows.window,
        overlap: a.windows.overlap,
        ..Default::default()
    };
    let report = pool.install(|| {
        gp_lite::evaluate::evaluate_dataset(&predictor.model, &predictor.tokenizer, &data, &opts)
    })?;
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
