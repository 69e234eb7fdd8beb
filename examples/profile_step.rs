//! Runs the bench workload's pieces in a loop for profilers (callgrind, perf):
//! `profile_step CONFIG MODE BATCH LEN ITERS [THREADS]`, MODE = train | train-bf16 | infer |
//! infer-int8 | infer-bf16.
//! E.g. `valgrind --tool=callgrind --toggle-collect='gp_lite::bench::ScoreOnly::run*' \
//!   target/release/examples/profile_step small infer 1 50 3`.

use gp_lite::bench::{bench_model, random_batch, ScoreOnly};
use gp_lite::matmul::products_in;
use gp_lite::optim::adamw::AdamWConfig;
use gp_lite::precision::Precision;
use gp_lite::trainer::Trainer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[global_allocator]
static ALLOC: gp_lite::alloc::CachingAlloc = gp_lite::alloc::CachingAlloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: profile_step CONFIG train|train-bf16|infer|infer-int8|infer-bf16 BATCH LEN ITERS [THREADS]";
    assert!(args.len() >= 6, "{usage}");
    let (config, mode) = (args[1].as_str(), args[2].as_str());
    let num = |i: usize| args[i].parse::<usize>().expect(usage);
    let (b, n, iters) = (num(3), num(4), num(5));
    let threads = if args.len() > 6 { num(6) } else { 1 };
    let pool = gp_lite::matmul::thread_pool(threads).expect("thread pool");
    let model = bench_model(config, 0).expect("config: tiny, small, minilm or base");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let batch = random_batch(b, n, &mut rng);
    pool.install(|| match mode {
        "train" | "train-bf16" => {
            let mut t = Trainer::new(model, AdamWConfig::default(), None);
            let mut drop = ChaCha8Rng::seed_from_u64(1);
            let precision = if mode == "train" {
                Precision::F32
            } else {
                Precision::Bf16
            };
            let start = std::time::Instant::now();
            products_in(precision, || {
                for _ in 0..iters {
                    t.step(&batch, 2e-5, &mut drop).expect("valid batch");
                }
            });
            println!(
                "{:.3} ms/step",
                start.elapsed().as_secs_f64() * 1e3 / iters as f64
            );
        }
        "infer" | "infer-int8" | "infer-bf16" => {
            let precision = match mode {
                "infer" => Precision::F32,
                "infer-int8" => Precision::Int8,
                _ => Precision::Bf16,
            };
            let mut infer = ScoreOnly::new(model.config.encoder.hidden_size, &mut rng);
            let mut model = model;
            model.encoder.prepack(precision); // as `gp-lite predict` packs a loaded model
            let start = std::time::Instant::now();
            for _ in 0..iters {
                infer.run(&model.encoder, &batch);
            }
            println!(
                "{:.3} ms/call",
                start.elapsed().as_secs_f64() * 1e3 / iters as f64
            );
        }
        _ => panic!("{usage}"),
    });
}
