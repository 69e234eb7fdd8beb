//! A bf16 product split over threads: each thread rounds its own rows of A, or, split by
//! columns, the threads share A's rows rounded once.

use super::{gemm_rounded, gemm_serial, Bf16A, Bf16B, Kernel, LANES};
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// `c = alpha a·B + beta c (+ bias)` on a bf16 weight (for `gemm_packed` in matmul.rs), split
/// over rayon's threads like the int8 one: blocks of rows, or of whole panels of columns when
/// `c` has more columns than rows; on one thread below `min_macs` multiply-adds.
pub fn gemm_parallel(
    alpha: f32,
    a: ArrayView2<f32>,
    b: &Bf16B,
    beta: f32,
    bias: Option<&[f32]>,
    mut c: ArrayViewMut2<f32>,
    min_macs: usize,
) {
    let kernel = Kernel::best();
    let (m, n) = c.dim();
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * a.ncols() < min_macs {
        return gemm_serial(kernel, alpha, a, b, 0, beta, bias, c);
    }
    if m >= n {
        // whole AMX tiles of rows where the rows allow it
        let rows = m.div_ceil(threads).next_multiple_of(16).min(m);
        c.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), rows).into_par_iter())
            .for_each(|(cb, ab)| gemm_serial(kernel, alpha, ab, b, 0, beta, bias, cb));
    } else {
        // A's rows are rounded once, here, and shared by the column blocks.
        let rows = Bf16A::new(a, b.kp());
        let cols = n.div_ceil(threads).next_multiple_of(4 * LANES);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .enumerate()
            .for_each(|(q, cb)| {
                let j0 = q * cols;
                let bias = bias.map(|v| &v[j0..j0 + cb.ncols()]);
                gemm_rounded(kernel, alpha, &rows, b, j0, beta, bias, cb)
            });
    }
}
