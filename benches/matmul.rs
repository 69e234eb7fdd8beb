//! GFLOP/s of the matmul module on BERT-shaped products at 1 and 2 threads.
//! Run: `cargo bench --bench matmul`. Prints a table of medians over repeated runs. Environment:
//! `GP_LITE_BENCH_THREADS`, `GP_LITE_BENCH_H`, `GP_LITE_BENCH_T` (comma lists) choose the cases;
//! `benches/torch_matmul.py` runs this binary interleaved with torch.matmul on the same shapes.

use gp_lite::matmul::{gemm, thread_pool};
use ndarray::Array2;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let threads: Vec<usize> = std::env::var("GP_LITE_BENCH_THREADS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    let hs: Vec<usize> = std::env::var("GP_LITE_BENCH_H")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![128, 256, 384, 768]);
    println!(
        "{:>5} {:>5} {:<26} {:>9} {}",
        "T",
        "H",
        "product",
        "shape",
        threads
            .iter()
            .map(|t| format!("{:>10}", format!("{t} thr")))
            .collect::<String>()
    );
    let ts: Vec<usize> = std::env::var("GP_LITE_BENCH_T")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1024, 2048]);
    for &t in &ts {
        for &h in &hs {
            // (name, m, k, n, transpose a, transpose b): forward x·Wᵀ, backward dy·W and dyᵀ·x.
            let cases = [
                ("fwd [TxH]·[HxH]", t, h, h, false, true),
                ("fwd [TxH]·[Hx4H]", t, h, 4 * h, false, true),
                ("fwd [Tx4H]·[4HxH]", t, 4 * h, h, false, true),
                ("bwd dx [Tx4H]·[4HxH]", t, 4 * h, h, false, false),
                ("bwd dW [4HxT]·[TxH]", 4 * h, t, h, true, false),
                ("bwd dW [HxT]·[TxH]", h, t, h, true, false),
            ];
            for (name, m, k, n, ta, tb) in cases {
                let a = Array2::<f32>::from_shape_fn(if ta { (k, m) } else { (m, k) }, |(i, j)| {
                    ((i + 3 * j) % 17) as f32 * 0.01
                });
                let b = Array2::<f32>::from_shape_fn(if tb { (n, k) } else { (k, n) }, |(i, j)| {
                    ((2 * i + j) % 13) as f32 * 0.01
                });
                let mut c = Array2::<f32>::zeros((m, n));
                let mut row = format!("{t:>5} {h:>5} {name:<26} {:>9}", format!("{m}x{k}x{n}"));
                for &th in &threads {
                    let pool = thread_pool(th).unwrap();
                    let flops = 2.0 * (m * k * n) as f64;
                    let reps = ((2e10 / flops) as usize).clamp(3, 50);
                    let times: Vec<f64> = pool.install(|| {
                        (0..reps + 1)
                            .map(|_| {
                                let av = if ta { a.t() } else { a.view() };
                                let bv = if tb { b.t() } else { b.view() };
                                let s = Instant::now();
                                gemm(1.0, av, bv, 0.0, c.view_mut());
                                s.elapsed().as_secs_f64()
                            })
                            .skip(1)
                            .collect()
                    });
                    row += &format!("{:>10.1}", flops / median(times) / 1e9);
                }
                println!("{row} GFLOP/s");
            }
        }
    }
}
