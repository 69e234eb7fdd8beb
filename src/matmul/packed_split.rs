//! A packed product (`gemm_packed` in matmul.rs) on its weight's format: split over rayon's
//! threads (blocks of rows, or of whole panels of columns when `c` has more columns than rows),
//! or one block of columns on the calling thread (a lockstep team's share).

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::{bf16, int8};
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

/// A weight in a narrow format (int8, bf16) whose products quantise or round A's rows first.
pub trait NarrowB: Sync {
    /// The instruction set a product runs on, chosen once per product.
    type Kernel: Copy + Send + Sync;
    /// A's rows prepared for the kernel (quantised or rounded), shared by column blocks.
    type Rows: Sync;
    /// Row blocks are multiples of this (the kernel's tile height, where it has tiles).
    const ROW_BLOCK: usize;
    /// Column blocks are multiples of this (whole panels).
    const COL_BLOCK: usize;
    /// The fastest kernel the CPU has.
    fn kernel() -> Self::Kernel;
    /// `c = alpha a·B + beta c (+ bias)` for B's columns `j0..j0 + c.ncols()`, on this thread.
    #[allow(clippy::too_many_arguments)]
    fn serial(
        &self,
        k: Self::Kernel,
        alpha: f32,
        a: ArrayView2<f32>,
        j0: usize,
        beta: f32,
        bias: Option<&[f32]>,
        c: ArrayViewMut2<f32>,
    );
    /// A's rows prepared once for [`NarrowB::prepared`].
    fn prepare(&self, k: Self::Kernel, a: ArrayView2<f32>) -> Self::Rows;
    /// [`NarrowB::serial`] on rows already prepared.
    #[allow(clippy::too_many_arguments)]
    fn prepared(
        &self,
        k: Self::Kernel,
        alpha: f32,
        rows: &Self::Rows,
        j0: usize,
        beta: f32,
        bias: Option<&[f32]>,
        c: ArrayViewMut2<f32>,
    );
}

/// `c = alpha a·B + beta c (+ bias)` on a narrow weight, split over rayon's threads like the f32
/// one: blocks of rows (each thread prepares its own rows of A), or of whole panels of columns
/// when `c` has more columns than rows (A's rows prepared once, here, and shared); on one thread
/// below `min_macs` multiply-adds.
pub fn narrow_parallel<B: NarrowB>(
    alpha: f32,
    a: ArrayView2<f32>,
    b: &B,
    beta: f32,
    bias: Option<&[f32]>,
    mut c: ArrayViewMut2<f32>,
    min_macs: usize,
) {
    let kernel = B::kernel();
    let (m, n) = c.dim();
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * a.ncols() < min_macs {
        return b.serial(kernel, alpha, a, 0, beta, bias, c);
    }
    if m >= n {
        let rows = m.div_ceil(threads).next_multiple_of(B::ROW_BLOCK).min(m);
        c.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), rows).into_par_iter())
            .for_each(|(cb, ab)| b.serial(kernel, alpha, ab, 0, beta, bias, cb));
    } else {
        let rows = b.prepare(kernel, a);
        let cols = n.div_ceil(threads).next_multiple_of(B::COL_BLOCK);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .enumerate()
            .for_each(|(q, cb)| {
                let j0 = q * cols;
                let bias = bias.map(|v| &v[j0..j0 + cb.ncols()]);
                b.prepared(kernel, alpha, &rows, j0, beta, bias, cb)
            });
    }
}

impl NarrowB for int8::QuantB {
    type Kernel = int8::Kernel;
    type Rows = int8::QuantA;
    const ROW_BLOCK: usize = 4;
    const COL_BLOCK: usize = 4 * int8::LANES;
    fn kernel() -> int8::Kernel {
        int8::Kernel::best()
    }
    fn serial(
        &self,
        k: int8::Kernel,
        alpha: f32,
        a: ArrayView2<f32>,
        j0: usize,
        beta: f32,
        bias: Option<&[f32]>,
        c: ArrayViewMut2<f32>,
    ) {
        int8::gemm_serial(k, alpha, a, self, j0, beta, bias, c)
    }
    fn prepare(&self, k: int8::Kernel, a: ArrayView2<f32>) -> int8::QuantA {
        int8::QuantA::new(k, a, self.kp())
    }
    fn prepared(
        &self,
        k: int8::Kernel,
        alpha: f32,
        rows: &int8::QuantA,
        j0: usize,
        beta: f32,
        bias: Option<&[f32]>,
        c: ArrayViewMut2<f32>,
    ) {
        int8::gemm_quantized(k, alpha, rows, self, j0, beta, bias, c)
    }
}

impl NarrowB for bf16::Bf16B {
    type Kernel = bf16::Kernel;
    type Rows = bf16::Bf16A;
    // whole AMX tiles of rows where the rows allow it
    const ROW_BLOCK: usize = 16;
    const COL_BLOCK: usize = 4 * bf16::LANES;
    fn kernel() -> bf16::Kernel {
        bf16::Kernel::best()
    }
    fn serial(
        &self,
        k: bf16::Kernel,
        alpha: f32,
        a: ArrayView2<f32>,
        j0: usize,
        beta: f32,
        bias: Option<&[f32]>,
        c: ArrayViewMut2<f32>,
    ) {
        bf16::gemm_serial(k, alpha, a, self, j0, beta, bias, c)
    }
    fn prepare(&self, _: bf16::Kernel, a: ArrayView2<f32>) -> bf16::Bf16A {
        bf16::Bf16A::new(a, self.kp())
    }
    fn prepared(
        &self,
        k: bf16::Kernel,
        alpha: f32,
        rows: &bf16::Bf16A,
        j0: usize,
        beta: f32,
        bias: Option<&[f32]>,
        c: ArrayViewMut2<f32>,
    ) {
        bf16::gemm_rounded(k, alpha, rows, self, j0, beta, bias, c)
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
