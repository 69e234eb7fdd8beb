//! GFLOP/s of the matmul module on BERT-shaped products at 1 and 2 threads (wall clock), and at
//! one thread per CPU-second (`1 thr cpu`).
//! Run: `cargo bench --bench matmul`. Prints a table of medians over repeated runs. Environment:
//! `GP_LITE_BENCH_THREADS`, `GP_LITE_BENCH_H`, `GP_LITE_BENCH_T` (comma lists) choose the cases;
//! `benches/torch_matmul.py` runs this binary interleaved with torch.matmul on the same shapes.

use gp_lite::matmul::{gemm, thread_pool};
use ndarray::Array2;
use std::time::Instant;

/// CPU seconds this thread has run (not counting time other processes held the core).
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

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
            + &format!("{:>10}", "1 thr cpu")
    );
    let ts: Vec<usize> = std::env::var("GP_LITE_BENCH_T")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1024, 2048]);
    for &t in &ts {
        for &h in &hs {
            // (name, m, k, n, transpose a, transpose b), in the layouts the layers use: forward
            // x·Wᵀ (Wᵀ contiguous: Linear keeps W column-major), backward dx = dy·W (W column-
            // major, so a transposed operand) and dWᵀ = xᵀ·dy; attention's per-(text, head)
            // S = Q·Kᵀ and C = P·V at n = d = 64.
            let cases = [
                ("fwd [TxH]·[HxH]", t, h, h, false, false),
                ("fwd [TxH]·[Hx4H]", t, h, 4 * h, false, false),
                ("fwd [Tx4H]·[4HxH]", t, 4 * h, h, false, false),
                ("bwd dx [Tx4H]·[4HxH]", t, 4 * h, h, false, true),
                ("bwd dW [4HxT]·[TxH]", 4 * h, t, h, true, false),
                ("bwd dW [HxT]·[TxH]", h, t, h, true, false),
                ("attn S [nxd]·[dxn]", 64, 64, 64, false, true),
                ("attn C [nxn]·[nxd]", 64, 64, 64, false, false),
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
                // One thread, GFLOP per CPU-second of the calling thread: what the kernel does
                // while it runs, whatever the neighbours take (they still share the caches).
                let flops = 2.0 * (m * k * n) as f64;
                let reps = ((2e10 / flops) as usize).clamp(3, 50);
                let pool = thread_pool(1).unwrap();
                let cpu: Vec<f64> = pool.install(|| {
                    (0..reps + 1)
                        .map(|_| {
                            let av = if ta { a.t() } else { a.view() };
                            let bv = if tb { b.t() } else { b.view() };
                            let s = thread_cpu_s();
                            gemm(1.0, av, bv, 0.0, c.view_mut());
                            thread_cpu_s() - s
                        })
                        .skip(1)
                        .collect()
                });
                row += &format!("{:>10.1}", flops / median(cpu) / 1e9);
                println!("{row} GFLOP/s");
            }
        }
    }
}
