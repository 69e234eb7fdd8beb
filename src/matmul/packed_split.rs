//! A packed product (`gemm_packed` in matmul.rs) on its weight's format: split over rayon's
//! threads (blocks of rows, or of whole panels of columns when `c` has more columns than rows),
//! or one block of columns on the calling thread (a lockstep team's share).

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::int8;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Width of an f32 panel: column blocks start on one.
#[cfg(target_arch = "x86_64")]
pub const F32_PANEL: usize = avx512::NR;
#[cfg(not(target_arch = "x86_64"))]
pub const F32_PANEL: usize = 32;

/// `c = alpha a·B + beta c (+ bias)` on f32 panels of a `k`-row B, split over rayon's threads;
/// on one thread below `min_macs` multiply-adds.
#[allow(clippy::too_many_arguments)]
pub fn f32_parallel(
    alpha: f32,
    a: ArrayView2<f32>,
    panels: &[f32],
    beta: f32,
    bias: Option<&[f32]>,
    mut c: ArrayViewMut2<f32>,
    min_macs: usize,
) {
    let (m, k) = a.dim();
    let n = c.ncols();
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < min_macs {
        return packed_serial(alpha, a, panels, beta, bias, c);
    }
    if m >= n {
        let rows = m.div_ceil(threads).next_multiple_of(8).min(m);
        c.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), rows).into_par_iter())
            .for_each(|(cb, ab)| packed_serial(alpha, ab, panels, beta, bias, cb));
    } else {
        let cols = n.div_ceil(threads).next_multiple_of(F32_PANEL);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .enumerate()
            .for_each(|(q, cb)| {
                let bias = bias.map(|v| &v[q * cols..q * cols + cb.ncols()]);
                f32_columns(alpha, a, panels, q * cols, beta, bias, cb)
            });
    }
}

/// Columns `j0..j0 + c.ncols()` of an f32 packed product on this thread (`j0` a multiple of
/// [`F32_PANEL`]; `bias` holds `c`'s columns).
pub fn f32_columns(
    alpha: f32,
    a: ArrayView2<f32>,
    panels: &[f32],
    j0: usize,
    beta: f32,
    bias: Option<&[f32]>,
    c: ArrayViewMut2<f32>,
) {
    assert_eq!(j0 % F32_PANEL, 0, "packed gemm: columns start on a panel");
    let per_panel = a.ncols() * F32_PANEL;
    let first = j0 / F32_PANEL;
    let panels = &panels[first * per_panel..(first + c.ncols().div_ceil(F32_PANEL)) * per_panel];
    packed_serial(alpha, a, panels, beta, bias, c)
}

/// `gemm_packed` on an int8 weight, split over threads like the f32 one: blocks of rows, or of
/// whole panels of columns when `c` has more columns than rows.
pub fn int8_parallel(
    alpha: f32,
    a: ArrayView2<f32>,
    b: &int8::QuantB,
    beta: f32,
    bias: Option<&[f32]>,
    mut c: ArrayViewMut2<f32>,
    min_macs: usize,
) {
    let kernel = int8::Kernel::best();
    let (m, n) = c.dim();
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * a.ncols() < min_macs {
        return int8::gemm_serial(kernel, alpha, a, b, 0, beta, bias, c);
    }
    if m >= n {
        let rows = m.div_ceil(threads).next_multiple_of(4).min(m);
        c.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), rows).into_par_iter())
            .for_each(|(cb, ab)| int8::gemm_serial(kernel, alpha, ab, b, 0, beta, bias, cb));
    } else {
        // A's rows are quantised once, here, and shared by the column blocks.
        let rows = int8::QuantA::new(kernel, a, b.kp());
        let cols = n.div_ceil(threads).next_multiple_of(4 * int8::LANES);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .enumerate()
            .for_each(|(q, cb)| {
                let j0 = q * cols;
                let bias = bias.map(|v| &v[j0..j0 + cb.ncols()]);
                int8::gemm_quantized(kernel, alpha, &rows, b, j0, beta, bias, cb)
            });
    }
}

/// One thread's share of `gemm_packed`: `panels` hold exactly `c`'s columns.
fn packed_serial(
    alpha: f32,
    a: ArrayView2<f32>,
    panels: &[f32],
    beta: f32,
    bias: Option<&[f32]>,
    mut c: ArrayViewMut2<f32>,
) {
    let (m, k) = a.dim();
    let n = c.ncols();
    let (sa, rsc) = (a.strides(), c.strides()[0]);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX-512F (a PackedB exists only where `packed_kernel()` said so), the
    // views describe valid memory for their shapes, `c`'s rows are contiguous (gemm_packed
    // checked it) and `c` is unique, and `panels` holds B's columns of `c` as pack_panels lays
    // them out (the kernel checks the length); `bias`, when given, has `c`'s n values.
    unsafe {
        avx512::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            sa[0],
            sa[1],
            panels,
            beta,
            bias.map_or(std::ptr::null(), |v| v.as_ptr()),
            c.as_mut_ptr(),
            rsc,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "PackedB::new returns None off x86-64 ({m}x{k}x{n}, {alpha}, {beta}, {} panels, {rsc}, {bias:?})",
        panels.len()
    );
}
