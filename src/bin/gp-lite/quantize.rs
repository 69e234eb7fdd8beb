//! `gp-lite quantize`: a model directory rewritten in another precision (int8: the encoder's
//! dense weights and word embeddings in int8 with a scale per row; bf16: the same matrices in
//! bf16), which `predict`, `eval`, the
//! C API and Python load as they load any model, running its products in that precision.

use crate::Res;
use clap::Args;
use gp_lite::precision::Precision;
use gp_lite::predict::Predictor;
use std::path::PathBuf;

#[derive(Args)]
pub struct QuantizeArgs {
    /// The model directory to read (written by `train`, or by `quantize`)
    #[arg(long)]
    model: PathBuf,
    /// The directory to write; an existing non-empty one is refused
    #[arg(long)]
    out: PathBuf,
    /// The precision to write: int8, bf16 (or f32, which writes an int8 or bf16 model's weights
    /// back in f32)
    #[arg(long, default_value = "int8")]
    precision: Precision,
}

/// `gp-lite quantize`.
pub fn run(a: QuantizeArgs) -> Res<()> {
    let nonempty = std::fs::read_dir(&a.out).is_ok_and(|mut d| d.next().is_some());
    if nonempty {
        return Err(format!(
            "{}: exists and is not empty; choose another --out",
            a.out.display()
        )
        .into());
    }
    let mut predictor: Predictor<f32> = gp_lite::model_dir::load_model(&a.model)?;
    predictor.model.config.precision = a.precision;
    gp_lite::model_dir::save_model(&a.out, &predictor.model, &predictor.tokenizer)?;
    let size = |d: &PathBuf| std::fs::metadata(d.join(gp_lite::model_dir::WEIGHTS_FILE)).map(|m| m.len());
    let (from, to) = (size(&a.model)?, size(&a.out)?);
    eprintln!(
        "{} written in {}: weights {:.1} MB ({:.0}% of {:.1} MB)",
        a.out.display(),
        a.precision,
        to as f64 / 1e6,
        100.0 * to as f64 / from as f64,
        from as f64 / 1e6
    );
    Ok(())
}
