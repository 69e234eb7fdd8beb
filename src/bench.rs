//! The workload of ../shared/bench/bench_torch.py, run by gp-lite: BERT + GlobalPointer (RoPE,
//! 10 types, head size 64) + multilabel cross-entropy + AdamW(lr 2e-5, wd 0.01), f32, vocabulary
//! 21128, dropout 0.1; a training step on batch 16 x 64 random tokens with about 2 gold spans per
//! (text, type); inference (dropout off, scores only) at batch 1 x 50 and batch 32 x 64.

use crate::batch::{make_batch, Batch};
use crate::bert::{BertConfig, BertEncoder};
use crate::head::{Buffer, GlobalPointer, GlobalPointerConfig, HeadConfig, ScoreCache, ScoreHead};
use crate::model::{ModelConfig, NerModel};
use crate::optim::adamw::AdamWConfig;
use crate::precision::Precision;
use crate::tokenize::Encoding;
use crate::trainer::Trainer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// Vocabulary size of the workload (bert-base-chinese's).
pub const VOCAB: usize = 21128;
/// Number of entity types `C`.
pub const TYPES: usize = 10;
/// GlobalPointer head size (per-type query/key width).
pub const HEAD_SIZE: usize = 64;

/// One line of output, with the same fields as bench_torch.py's.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// Which implementation ran: `"gp-lite"` (serialized as `impl`).
    #[serde(rename = "impl")]
    pub implementation: String,
    /// The crate version.
    pub version: String,
    /// The encoder preset: tiny, small, minilm or base.
    pub config: String,
    /// Threads the run used (recorded, not set, by [`run`]).
    pub threads: usize,
    /// The precision of the products (`f32`, `int8` or `bf16`): of training's too for f32 and
    /// bf16; int8 (inference only) is measured after f32 training steps.
    pub precision: String,
    /// The product kernel that ran them ([`crate::matmul::kernel_name`]).
    pub kernel: String,
    /// Median wall time of one training step on batch 16 x 64, in milliseconds.
    pub train_step_ms: f64,
    /// Training throughput: 16 * 64 tokens per median step, in tokens per second.
    pub train_tokens_per_s: f64,
    /// Median inference latency at batch 1 x 50, in milliseconds.
    pub infer_b1_n50_ms: f64,
    /// Inference throughput at batch 32 x 64, in tokens per second.
    pub infer_b32_n64_tokens_per_s: f64,
}

/// A batch of `b` random texts of `n` tokens, every token a valid boundary, with `2*b*C` random
/// gold spans of length 1..=5 (as bench_torch.py draws them).
pub fn random_batch(b: usize, n: usize, rng: &mut impl Rng) -> Batch {
    let encs: Vec<Encoding> = (0..b)
        .map(|_| {
            Encoding::new(
                (0..n).map(|_| rng.gen_range(1..VOCAB as u32)).collect(),
                vec![(0, 0); n],
                vec![false; n],
            )
        })
        .collect();
    let mut gold = vec![Vec::new(); b];
    for _ in 0..2 * b * TYPES {
        let i = rng.gen_range(0..n);
        let j = (i + rng.gen_range(0..5)).min(n - 1);
        gold[rng.gen_range(0..b)].push((rng.gen_range(0..TYPES), i, j));
    }
    make_batch(encs.iter().zip(&gold).map(|(e, g)| (e, &g[..])))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn timed(steps: usize, warmup: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..steps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// The model of a preset: tiny, small, minilm or base.
pub fn bench_model(config: &str, seed: u64) -> Option<NerModel<f32>> {
    let encoder = BertConfig::preset(config, VOCAB)?;
    let cfg = ModelConfig {
        encoder,
        head: HeadConfig::new(
            "gp",
            &GlobalPointerConfig {
                head_size: HEAD_SIZE,
                rope: true,
            },
        ),
        labels: (0..TYPES).map(|i| format!("T{i}")).collect(),
        max_len: 512,
        tokenization: None,
        boundaries: Default::default(),
        decode: Default::default(),
        precision: Default::default(),
    };
    Some(NerModel::new(cfg, &mut ChaCha8Rng::seed_from_u64(seed)).expect("presets are valid"))
}

/// Inference as the baseline measures it: the GlobalPointer span scores of a batch (no decoding).
pub struct ScoreOnly {
    head: GlobalPointer<f32>,
    cache: ScoreCache<f32>,
    scores: Buffer<f32>,
}

impl ScoreOnly {
    /// The workload's head over hidden size `hidden`.
    pub fn new(hidden: usize, rng: &mut impl Rng) -> Self {
        let mut head = GlobalPointer::new(hidden, TYPES, HEAD_SIZE, true, 0.02, rng);
        head.prepack(); // as a model loaded for inference
        ScoreOnly {
            head,
            cache: ScoreCache::new(),
            scores: Buffer::new(),
        }
    }

    /// Encodes `batch` (dropout off) and scores its spans.
    pub fn run(&mut self, encoder: &BertEncoder<f32>, batch: &Batch) {
        let h = encoder.encode(&batch.input).expect("bench batch is valid");
        self.head.forward_scores(
            h.view(),
            batch.input.width(),
            batch.bounds(),
            &mut self.cache,
            &mut self.scores,
        );
    }
}

/// The median training step of one preset in milliseconds, its products in `precision` (f32 or
/// bf16), and the trained model.
fn train_steps(
    config: &str,
    steps: usize,
    precision: Precision,
    rng: &mut ChaCha8Rng,
) -> Option<(f64, NerModel<f32>)> {
    let model = bench_model(config, 0)?;
    let batch = random_batch(16, 64, rng);
    let adamw = AdamWConfig {
        lr: 2e-5,
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    let mut trainer = Trainer::new(model, adamw, None);
    let mut dropout = ChaCha8Rng::seed_from_u64(1);
    let train_ms = crate::matmul::products_in(precision, || {
        timed(steps, 3, || {
            trainer
                .step(&batch, 2e-5, &mut dropout)
                .expect("bench batch is valid");
        })
    });
    Some((train_ms, trainer.model))
}

/// Runs the workload for one preset in the current thread pool (`threads` is only recorded):
/// for each of `precisions`, training steps in it (f32 steps for int8, which only infers; steps
/// of one precision are run once), then inference, one result each.
pub fn run(config: &str, threads: usize, steps: usize, precisions: &[Precision]) -> Option<Vec<BenchResult>> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut trained: Vec<(Precision, f64, NerModel<f32>)> = Vec::new();
    for &p in precisions {
        let p = if p == Precision::Bf16 { p } else { Precision::F32 };
        if !trained.iter().any(|t| t.0 == p) {
            let (ms, model) = train_steps(config, steps, p, &mut ChaCha8Rng::seed_from_u64(0))?;
            trained.push((p, ms, model));
        }
    }
    let trainer_hidden = trained.first()?.2.config.encoder.hidden_size;
    let _ = random_batch(16, 64, &mut rng); // the training batch, drawn as before
    let mut infer = ScoreOnly::new(trainer_hidden, &mut rng);
    let b1 = random_batch(1, 50, &mut rng);
    let b32 = random_batch(32, 64, &mut rng);
    let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
    let mut out = Vec::new();
    for &precision in precisions {
        let steps_in = if precision == Precision::Bf16 {
            precision
        } else {
            Precision::F32
        };
        let i = trained.iter().position(|t| t.0 == steps_in)?;
        let train_ms = trained[i].1;
        // Inference runs on the trained encoder packed as `gp-lite predict` packs a loaded model.
        let encoder = &mut trained[i].2.encoder;
        encoder.prepack(precision);
        let lat_ms = timed(steps * 3, 3, || infer.run(encoder, &b1));
        let thr_ms = timed(steps, 2, || infer.run(encoder, &b32));
        out.push(BenchResult {
            implementation: "gp-lite".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: config.into(),
            threads,
            precision: precision.name().into(),
            kernel: crate::matmul::kernel_name(precision).into(),
            train_step_ms: round(train_ms, 2),
            train_tokens_per_s: round(16.0 * 64.0 / train_ms * 1e3, 1),
            infer_b1_n50_ms: round(lat_ms, 3),
            infer_b32_n64_tokens_per_s: round(32.0 * 64.0 / thr_ms * 1e3, 1),
        });
    }
    Some(out)
}
