//! `gp-lite bench`: the PyTorch baseline's workload, one JSON line per preset and thread count.

use crate::{pool, Res};
use clap::Args;
use gp_lite::precision::Precision;

#[derive(Args)]
pub struct BenchArgs {
    /// Presets to run: tiny, small, minilm, base.
    #[arg(long, num_args = 1.., default_values = ["tiny", "small", "minilm"])]
    config: Vec<String>,
    /// Thread counts to run.
    #[arg(long, num_args = 1.., default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Timed training steps (inference: 3x as many batch-1 calls).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Precisions of the inference products to run (f32, int8, bf16), each after the same training
    /// steps; a JSON line each.
    #[arg(long, num_args = 1.., default_values = ["f32"])]
    precision: Vec<Precision>,
}

/// `gp-lite bench`.
pub fn run(a: BenchArgs) -> Res<()> {
    for config in &a.config {
        for &t in &a.threads {
            let pool = pool(t)?;
            let results = pool
                .install(|| gp_lite::bench::run(config, t, a.steps, &a.precision))
                .ok_or_else(|| format!("unknown config `{config}` (tiny, small, minilm, base)"))?;
            for r in results {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
    }
    Ok(())
}
