//! Training steps of a bench preset at a given batch shape, for measuring peak memory:
//! `/usr/bin/time -v target/release/examples/train_peak minilm 16 128 5` (config, texts, tokens,
//! steps); `benches/train_peak_torch.py` does the same in PyTorch. Uses the binary's caching
//! allocator, as `gp-lite train` does.

use gp_lite::bench::{bench_model, random_batch};
use gp_lite::optim::adamw::AdamWConfig;
use gp_lite::trainer::Trainer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

#[global_allocator]
static ALLOC: gp_lite::alloc::CachingAlloc = gp_lite::alloc::CachingAlloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let config = arg(1, "minilm");
    let b: usize = arg(2, "16").parse().expect("texts");
    let n: usize = arg(3, "128").parse().expect("tokens");
    let steps: usize = arg(4, "5").parse().expect("steps");
    let model = bench_model(&config, 0).expect("a preset: tiny, small, minilm or base");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let batch = random_batch(b, n, &mut rng);
    let adamw = AdamWConfig {
        lr: 2e-5,
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    let mut trainer = Trainer::new(model, adamw, Some(1.0));
    let t = Instant::now();
    for _ in 0..steps {
        trainer.step(&batch, 2e-5, &mut rng).expect("valid batch");
    }
    println!(
        "{{\"impl\":\"gp-lite\",\"config\":\"{config}\",\"batch\":[{b},{n}],\"steps\":{steps},\"s\":{:.2}}}",
        t.elapsed().as_secs_f64()
    );
}
