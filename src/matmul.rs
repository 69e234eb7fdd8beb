//! The one module through which every matrix product in gp-lite goes.
//!
//! Operands are ndarray views with arbitrary strides, so transposed operands are free: pass
//! `a.t()` for Aᵀ. The kernel is `matrixmultiply` (sgemm/dgemm), built without its own threading
//! (which would need an environment variable set before the first product, and caps at 4
//! threads); parallelism comes from rayon, splitting large products into row (or column) blocks of C and
//! batched products over their batch axes. The thread count is the size of the rayon pool the
//! call runs in (`rayon::current_num_threads()`): run inside `ThreadPool::install` (see
//! [`thread_pool`]) to govern it, so `--threads N` bounds every product and nothing nests.
//!
//! On a CPU with AVX-512F ([`packed_kernel`]) f32 products whose output rows are contiguous run
//! on the kernel of [`avx512`] instead, which reads A's contiguous rows in place and packs only
//! B (matrixmultiply packs both): training steps 3-9% faster than on matrixmultiply (small,
//! minilm, base). A model loaded for inference packs each weight once ([`PackedB`]) and its
//! products ([`gemm_packed`]) read the packed panels as they are.
//! `GP_LITE_MATMUL=portable` in the environment (read once, see [`crate::cpu`]) keeps every
//! product on matrixmultiply, to compare the two. Training in bf16: [`products_in`].

use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Axis};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod bf16;
pub mod int8;
mod packed_split;
mod portable;
mod product_precision;
mod row_blocks;
use product_precision::{bf16_product, try_bf16};
pub use product_precision::{product_precision, products_in};

/// Products below this many multiply-adds run on one thread (splitting costs more than it saves).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A rayon pool of `threads` workers (0 = all logical cores). Run work inside `pool.install(..)`.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    thread_pool_builder(threads).build()
}

/// The builder of [`thread_pool`], for callers that configure more (the C interface joins its
/// workers through a spawn handler). Its threads can form lockstep teams ([`crate::lockstep`]).
pub fn thread_pool_builder(threads: usize) -> rayon::ThreadPoolBuilder {
    let mut b = crate::lockstep::enrol(rayon::ThreadPoolBuilder::new());
    if threads > 0 {
        b = b.num_threads(threads);
    }
    b
}

/// Products with nothing to multiply: none when `c` is empty, `c = beta c` when the inner
/// dimension is 0. True when the product is thereby done.
fn empty_product<T: Scalar>(k: usize, beta: T, c: &mut ArrayViewMut2<T>) -> bool {
    if c.is_empty() {
        return true;
    }
    if k == 0 {
        if beta == T::zero() {
            c.fill(T::zero());
        } else {
            c.mapv_inplace(|x| x * beta);
        }
        return true;
    }
    false
}

/// Serial kernel call: `c = alpha * a · b + beta * c`.
fn gemm_serial<T: Scalar>(alpha: T, a: ArrayView2<T>, b: ArrayView2<T>, beta: T, mut c: ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    let (k2, n) = b.dim();
    assert_eq!(k, k2, "matmul: inner dimensions differ ({m}x{k} · {k2}x{n})");
    assert_eq!(
        c.dim(),
        (m, n),
        "matmul: output is {:?}, expected ({m}, {n})",
        c.dim()
    );
    if empty_product(k, beta, &mut c) || try_bf16(alpha, a, b, beta, &mut c, PARALLEL_MIN_MACS) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if c.strides()[1] == 1 || n == 1 {
        if let (Some(a), Some(b), Some(mut c)) =
            (T::view_f32(a), T::view_f32(b), T::view_f32_mut(c.view_mut()))
        {
            if packed_kernel() {
                let (sa, sb, rsc) = (a.strides(), b.strides(), c.strides()[0]);
                // SAFETY: the CPU has AVX-512F (`packed_kernel`), the views are valid for their
                // shapes and strides, `c`'s rows are contiguous (checked above) and `c` is a
                // unique mutable view, so it aliases neither `a` nor `b`. The scalars convert
                // exactly (T is f32).
                unsafe {
                    avx512::sgemm_unpacked(
                        m,
                        k,
                        n,
                        alpha.f64() as f32,
                        a.as_ptr(),
                        sa[0],
                        sa[1],
                        b.as_ptr(),
                        sb[0],
                        sb[1],
                        beta.f64() as f32,
                        c.as_mut_ptr(),
                        rsc,
                    );
                }
                return;
            }
        }
    }
    portable::gemm(alpha, a, b, beta, c);
}

/// General product `c = alpha * a · b + beta * c`, parallel over blocks of `c` when large.
/// Pass `a.t()` / `b.t()` for transposed operands.
pub fn gemm<T: Scalar>(alpha: T, a: ArrayView2<T>, b: ArrayView2<T>, beta: T, mut c: ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PARALLEL_MIN_MACS || bf16_product(&c) {
        // (the bf16 path packs B once and splits the rows itself)
        return gemm_serial(alpha, a, b, beta, c);
    }
    // Split the larger of m and n into one block per thread (rounded to 8 for the kernel).
    if m >= n {
        let rows = m.div_ceil(threads).next_multiple_of(8).min(m);
        c.axis_chunks_iter_mut(Axis(0), rows)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), rows).into_par_iter())
            .for_each(|(cb, ab)| gemm_serial(alpha, ab, b, beta, cb));
    } else {
        let cols = n.div_ceil(threads).next_multiple_of(8).min(n);
        c.axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .zip(b.axis_chunks_iter(Axis(1), cols).into_par_iter())
            .for_each(|(cb, bb)| gemm_serial(alpha, a, bb, beta, cb));
    }
}

/// True when inference products run on packed weights and f32 products on the AVX-512 kernel
/// ([`crate::cpu::avx512`]).
pub fn packed_kernel() -> bool {
    crate::cpu::avx512()
}

/// The kernel products in `precision` run on here: `avx512` or `matrixmultiply` for f32;
/// `amx`, `vnni` or `portable` for int8; `amx-bf16`, `avx512-bf16` or `portable` for bf16 (see
/// [`crate::cpu`] and `GP_LITE_KERNEL`).
pub fn kernel_name(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 if packed_kernel() => "avx512",
        Precision::F32 => "matrixmultiply",
        Precision::Int8 => match int8::Kernel::best() {
            int8::Kernel::Amx => "amx",
            int8::Kernel::Vnni => "vnni",
            int8::Kernel::Portable => "portable",
        },
        Precision::Bf16 => match bf16::Kernel::best() {
            bf16::Kernel::Amx => "amx-bf16",
            bf16::Kernel::Avx512 => "avx512-bf16",
            bf16::Kernel::Portable => "portable",
        },
    }
}

/// A right operand `B` (`k x n`, a frozen weight's `Wᵀ`) packed once for inference: into the
/// column panels the AVX-512 kernel reads (one more copy of the weight, so that no product packs
/// it again), quantised to int8 ([`int8::QuantB`]) or rounded to bf16 ([`bf16::Bf16B`]).
#[derive(Clone)]
pub struct PackedB {
    k: usize,
    n: usize,
    panels: Panels,
}

#[derive(Clone)]
enum Panels {
    F32(Vec<f32>),
    Int8(int8::QuantB),
    Bf16(bf16::Bf16B),
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedB({} x {}, {})", self.k, self.n, self.precision())
    }
}

impl PackedB {
    /// `b` packed, where products can use it (f32 and [`packed_kernel`]); `None` elsewhere, and
    /// the caller goes on with [`gemm`].
    pub fn new<T: Scalar>(b: ArrayView2<T>) -> Option<PackedB> {
        let b = T::view_f32(b)?;
        if !packed_kernel() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (k, n) = b.dim();
            Some(PackedB {
                k,
                n,
                panels: Panels::F32(avx512::pack_panels(b)),
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// `b` packed for inference in `precision`: as [`PackedB::new`] for f32; int8 and bf16 on
    /// every CPU (f32 `T` only; `None` for f64).
    pub fn for_inference<T: Scalar>(b: ArrayView2<T>, precision: Precision) -> Option<PackedB> {
        match precision {
            Precision::F32 => PackedB::new(b),
            Precision::Int8 => {
                let b = T::view_f32(b)?;
                let (k, n) = b.dim();
                Some(PackedB {
                    k,
                    n,
                    panels: Panels::Int8(int8::QuantB::new(b)),
                })
            }
            Precision::Bf16 => {
                let b = T::view_f32(b)?;
                let (k, n) = b.dim();
                Some(PackedB {
                    k,
                    n,
                    panels: Panels::Bf16(bf16::Bf16B::new(b)),
                })
            }
        }
    }

    /// `B` (`k x n`) as the products see it, for a narrow format (int8: each value times its
    /// column's scale; bf16: each value widened), so that a layer can drop its f32 weight and
    /// still give it back; `None` for f32 panels.
    pub fn narrow_values(&self) -> Option<Array2<f32>> {
        let get: &dyn Fn(usize, usize) -> f32 = match &self.panels {
            Panels::F32(_) => return None,
            Panels::Int8(q) => &|p, j| q.get(p, j),
            Panels::Bf16(b) => &|p, j| b.get(p, j),
        };
        Some(Array2::from_shape_fn((self.k, self.n), |(p, j)| get(p, j)))
    }

    /// Rows of `B` (the weight's input width).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of `B` (the weight's output width).
    pub fn n(&self) -> usize {
        self.n
    }

    /// The number format of the packed values.
    pub fn precision(&self) -> Precision {
        match self.panels {
            Panels::F32(_) => Precision::F32,
            Panels::Int8(_) => Precision::Int8,
            Panels::Bf16(_) => Precision::Bf16,
        }
    }

    /// Where a block of columns may start (the panel width of the format), for
    /// [`gemm_packed_columns`].
    pub fn column_align(&self) -> usize {
        match self.panels {
            Panels::F32(_) => packed_split::F32_PANEL,
            Panels::Int8(_) => 4 * int8::LANES,
            Panels::Bf16(_) => 4 * bf16::LANES,
        }
    }

    /// `(k, n)`: the shape of B.
    pub fn dim(&self) -> (usize, usize) {
        (self.k, self.n)
    }
}

/// `c = alpha * a · B + beta * c (+ bias in every row)` with B packed ([`PackedB`]), parallel
/// over blocks of `c`'s rows (or of its column panels when it has more columns than rows) like
/// [`gemm`]. `c` must have contiguous rows; `T` is f32 (a [`PackedB`] exists only then). With
/// beta = 0 and a bias, a layer's output is written once, by the kernel (no pass writing the
/// bias rows first, no read of them in the kernel).
pub fn gemm_packed<T: Scalar>(
    alpha: T,
    a: ArrayView2<T>,
    b: &PackedB,
    beta: T,
    bias: Option<ArrayView1<T>>,
    c: ArrayViewMut2<T>,
) {
    assert_eq!(
        c.ncols(),
        b.n,
        "gemm_packed: output has {} columns, B {}",
        c.ncols(),
        b.n
    );
    let Some((alpha, a, beta, bias, c)) = packed_operands(alpha, a, b, beta, bias, c, 0) else {
        return;
    };
    match &b.panels {
        Panels::F32(p) => packed_split::f32_parallel(alpha, a, p, beta, bias, c, PARALLEL_MIN_MACS),
        Panels::Int8(q) => packed_split::narrow_parallel(alpha, a, q, beta, bias, c, PARALLEL_MIN_MACS),
        Panels::Bf16(h) => packed_split::narrow_parallel(alpha, a, h, beta, bias, c, PARALLEL_MIN_MACS),
    }
}

/// Columns `j0..j0 + c.ncols()` of [`gemm_packed`], on the calling thread: `c` holds just those
/// columns, `bias` (when given) the whole row's `n` values, and `j0` is a multiple of
/// [`PackedB::column_align`]. One thread's share of a product that a lockstep team
/// ([`crate::lockstep`]) splits by columns.
pub fn gemm_packed_columns<T: Scalar>(
    alpha: T,
    a: ArrayView2<T>,
    b: &PackedB,
    beta: T,
    bias: Option<ArrayView1<T>>,
    c: ArrayViewMut2<T>,
    j0: usize,
) {
    let Some((alpha, a, beta, bias, c)) = packed_operands(alpha, a, b, beta, bias, c, j0) else {
        return;
    };
    match &b.panels {
        Panels::F32(p) => packed_split::f32_columns(alpha, a, p, j0, beta, bias, c),
        Panels::Int8(q) => int8::gemm_serial(int8::Kernel::best(), alpha, a, q, j0, beta, bias, c),
        Panels::Bf16(h) => bf16::gemm_serial(bf16::Kernel::best(), alpha, a, h, j0, beta, bias, c),
    }
}

/// The f32 operands of a packed product whose output `c` holds B's columns `j0..`, its shapes
/// checked: the scalars, `a`, and the bias cut to `c`'s columns; `None` when the product is done
/// by then (no inner dimension: `c = beta c + bias`).
#[allow(clippy::type_complexity)]
fn packed_operands<'a, 'v, 'c, T: Scalar>(
    alpha: T,
    a: ArrayView2<'a, T>,
    b: &PackedB,
    beta: T,
    bias: Option<ArrayView1<'v, T>>,
    c: ArrayViewMut2<'c, T>,
    j0: usize,
) -> Option<(
    f32,
    ArrayView2<'a, f32>,
    f32,
    Option<&'v [f32]>,
    ArrayViewMut2<'c, f32>,
)> {
    let ((m, k), n) = (a.dim(), b.n);
    assert_eq!(
        k, b.k,
        "gemm_packed: inner dimensions differ ({m}x{k} · {}x{n})",
        b.k
    );
    assert!(
        c.nrows() == m && j0 + c.ncols() <= n,
        "gemm_packed: output {:?} from column {j0}, expected {m} rows within B's {n} columns",
        c.dim()
    );
    // A PackedB exists only for f32, so T is f32 here.
    let (Some(a), Some(mut c)) = (T::view_f32(a), T::view_f32_mut(c)) else {
        panic!("gemm_packed: f32 only")
    };
    let bias = bias.map(|v| T::view_f32(v).expect("gemm_packed: f32 only"));
    assert!(
        c.ncols() <= 1 || c.strides()[1] == 1,
        "gemm_packed: the output's rows must be contiguous"
    );
    if let Some(v) = &bias {
        assert_eq!(
            v.len(),
            n,
            "gemm_packed: bias has {} values, the output {n} columns",
            v.len()
        );
    }
    // The scalars convert exactly (T is f32).
    let (alpha, beta) = (alpha.f64() as f32, beta.f64() as f32);
    if empty_product(a.ncols(), beta, &mut c) {
        if let Some(v) = bias {
            c += &v.slice(ndarray::s![j0..j0 + c.ncols()]);
        }
        return None;
    }
    let bias = bias.map(|v| &v.to_slice().expect("gemm_packed: contiguous bias")[j0..j0 + c.ncols()]);
    Some((alpha, a, beta, bias, c))
}

/// `a · b` into a new array.
pub fn matmul<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>) -> Array2<T> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    gemm(T::one(), a, b, T::zero(), c.view_mut());
    c
}

/// `c = a · b` (overwrites `c`).
pub fn matmul_into<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>, c: ArrayViewMut2<T>) {
    gemm(T::one(), a, b, T::zero(), c);
}

/// `c += a · b` (for gradients).
pub fn matmul_acc<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>, c: ArrayViewMut2<T>) {
    gemm(T::one(), a, b, T::one(), c);
}

/// Batched product over two leading axes (e.g. batch × heads):
/// `c[i, j] = alpha * a[i, j] · b[i, j] + beta * c[i, j]`, parallel over (i, j), each product
/// serial. Shapes: a `[B, H, m, k]`, b `[B, H, k, n]`, c `[B, H, m, n]`; any strides, so the
/// per-head slices of a `[B, n, H, d]` activation are passed as a permuted view, no copy.
pub fn gemm_batched<T: Scalar>(
    alpha: T,
    a: ArrayView4<T>,
    b: ArrayView4<T>,
    beta: T,
    mut c: ArrayViewMut4<T>,
) {
    let (bs, hs) = (c.shape()[0], c.shape()[1]);
    assert_eq!(
        &a.shape()[..2],
        &[bs, hs],
        "gemm_batched: a's batch axes differ from c's"
    );
    assert_eq!(
        &b.shape()[..2],
        &[bs, hs],
        "gemm_batched: b's batch axes differ from c's"
    );
    let mut jobs = Vec::with_capacity(bs * hs);
    // `into_outer_iter` is deprecated in ndarray 0.16 without a by-value replacement yet.
    #[allow(deprecated)]
    for (i, ci) in c.outer_iter_mut().enumerate() {
        for (j, cij) in ci.into_outer_iter().enumerate() {
            let aij = a.index_axis(Axis(0), i).index_axis_move(Axis(0), j);
            let bij = b.index_axis(Axis(0), i).index_axis_move(Axis(0), j);
            jobs.push((aij, bij, cij));
        }
    }
    if rayon::current_num_threads() <= 1 || jobs.len() <= 1 {
        for (aij, bij, cij) in jobs {
            gemm_serial(alpha, aij, bij, beta, cij);
        }
    } else {
        jobs.into_par_iter()
            .for_each(|(aij, bij, cij)| gemm_serial(alpha, aij, bij, beta, cij));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array, Array1, Array4};

    fn naive(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
        let mut c = Array2::zeros((a.nrows(), b.ncols()));
        for i in 0..a.nrows() {
            for j in 0..b.ncols() {
                c[[i, j]] = (0..a.ncols()).map(|p| a[[i, p]] * b[[p, j]]).sum();
            }
        }
        c
    }

    fn seq(r: usize, c: usize, s: f64) -> Array2<f64> {
        Array::from_shape_fn((r, c), |(i, j)| ((i * 7 + j * 3) as f64 * s).sin())
    }

    #[test]
    fn products_and_transposes_match_naive() {
        let a = seq(37, 19, 0.3);
        let b = seq(19, 23, 0.7);
        assert!((matmul(a.view(), b.view()) - naive(a.view(), b.view()))
            .iter()
            .all(|x| x.abs() < 1e-12));
        let at = a.t().to_owned();
        let got = matmul(at.t(), b.view());
        assert!((got - naive(a.view(), b.view())).iter().all(|x| x.abs() < 1e-12));
        let bt = b.t().to_owned();
        let got = matmul(a.view(), bt.t());
        assert!((got - naive(a.view(), b.view())).iter().all(|x| x.abs() < 1e-12));
        let mut c = Array2::from_elem((37, 23), 1.0);
        matmul_acc(a.view(), b.view(), c.view_mut());
        assert!((c - 1.0 - naive(a.view(), b.view()))
            .iter()
            .all(|x| x.abs() < 1e-12));
    }

    #[test]
    fn parallel_split_matches_serial() {
        let pool = thread_pool(2).unwrap();
        for (m, k, n) in [(300, 64, 40), (40, 64, 300), (129, 70, 131)] {
            let a = seq(m, k, 0.11);
            let b = seq(k, n, 0.13);
            let got = pool.install(|| matmul(a.view(), b.view()));
            assert!(
                (got - naive(a.view(), b.view())).iter().all(|x| x.abs() < 1e-10),
                "{m}x{k}x{n}"
            );
        }
    }

    /// The largest error of an f32 product `got` against `alpha want + beta init`, relative to
    /// `1 + |expected|`.
    fn worst_error(got: &Array2<f32>, alpha: f32, want: &Array2<f64>, beta: f32, init: &Array2<f32>) -> f64 {
        got.indexed_iter()
            .map(|((i, j), &g)| {
                let w = alpha as f64 * want[[i, j]] + beta as f64 * init[[i, j]] as f64;
                (g as f64 - w).abs() / (1.0 + w.abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn packed_products_match_naive_in_every_split() {
        // f32 on AVX-512 machines; elsewhere there is nothing to pack and the callers use gemm.
        let probe = seq(3, 5, 0.1).mapv(|x| x as f32);
        if !packed_kernel() {
            assert!(PackedB::new(probe.view()).is_none());
            return;
        }
        assert!(
            PackedB::new(seq(3, 5, 0.1).view()).is_none(),
            "f64 is never packed"
        );
        let pools = [
            thread_pool(1).unwrap(),
            thread_pool(2).unwrap(),
            thread_pool(3).unwrap(),
        ];
        // rows, inner, columns: tile edges (1, 7, 8, 9 rows; 1, 16, 31, 32, 33 columns), the row
        // split (m >= n) and the panel split (m < n) of large products, odd panel counts.
        let shapes = [
            (1, 5, 1),
            (7, 3, 16),
            (8, 64, 31),
            (9, 64, 32),
            (50, 128, 33),
            (600, 64, 40),
            (20, 128, 1290),
            (33, 70, 97),
        ];
        for (m, k, n) in shapes {
            let a = seq(m, k, 0.11);
            let b = seq(k, n, 0.13);
            let want = naive(a.view(), b.view());
            let (a32, b32) = (a.mapv(|x| x as f32), b.mapv(|x| x as f32));
            let at32 = a32.t().to_owned(); // a transposed, strided left operand
            let packed = PackedB::new(b32.view()).expect("f32 on AVX-512 packs");
            assert_eq!(packed.dim(), (k, n));
            let bias = Array1::from_shape_fn(n, |j| (j as f32 * 0.37).sin());
            for pool in &pools {
                for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (2.0, -0.25)] {
                    let init = seq(m, n, 0.17).mapv(|x| x as f32);
                    let mut c = init.clone();
                    pool.install(|| gemm_packed(alpha, a32.view(), &packed, beta, None, c.view_mut()));
                    let mut ct = init.clone();
                    pool.install(|| gemm_packed(alpha, at32.t(), &packed, beta, None, ct.view_mut()));
                    // The bias added by the kernel: as if C had held it (beta 1 more).
                    let mut cb = init.clone();
                    let with_bias = Some(bias.view());
                    pool.install(|| gemm_packed(alpha, a32.view(), &packed, beta, with_bias, cb.view_mut()));
                    cb -= &bias;
                    for got in [&c, &ct, &cb] {
                        let worst = worst_error(got, alpha, &want, beta, &init);
                        assert!(
                            worst < 1e-5,
                            "{m}x{k}x{n} alpha {alpha} beta {beta}, {} threads: {worst:e}",
                            pool.current_num_threads()
                        );
                    }
                }
                // A layer's output: the bias in the kernel is bit for bit the bias rows as C.
                let mut rows = Array2::from_shape_fn((m, n), |(_, j)| bias[j]);
                pool.install(|| gemm_packed(1.0, a32.view(), &packed, 1.0, None, rows.view_mut()));
                let mut fused = Array2::from_elem((m, n), f32::NAN);
                pool.install(|| {
                    gemm_packed(1.0, a32.view(), &packed, 0.0, Some(bias.view()), fused.view_mut())
                });
                assert_eq!(fused, rows, "{m}x{k}x{n}, {} threads", pool.current_num_threads());
            }
        }
    }

    #[test]
    fn batched_matches_per_slice() {
        let a = Array4::from_shape_fn((2, 3, 5, 4), |(b, h, i, j)| {
            ((b * 31 + h * 7 + i * 3 + j) as f64).cos()
        });
        let bm = Array4::from_shape_fn((2, 3, 4, 6), |(b, h, i, j)| {
            ((b * 13 + h * 5 + i * 2 + j) as f64).sin()
        });
        let mut c = Array4::zeros((2, 3, 5, 6));
        let pool = thread_pool(2).unwrap();
        pool.install(|| gemm_batched(1.0, a.view(), bm.view(), 0.0, c.view_mut()));
        for b in 0..2 {
            for h in 0..3 {
                let want = naive(
                    a.slice(ndarray::s![b, h, .., ..]),
                    bm.slice(ndarray::s![b, h, .., ..]),
                );
                let got = c.slice(ndarray::s![b, h, .., ..]);
                assert!((&got - &want).iter().all(|x| x.abs() < 1e-12));
            }
        }
    }

    /// f32 products run on the AVX-512 kernel with B packed per call where the CPU has it: tile
    /// edges, attention's and training's sizes, A read in place or (column-major) packed in
    /// blocks, B as a transposed strided view (Kᵀ of a head), alpha and beta, and outputs whose
    /// rows are not contiguous (which stay on matrixmultiply).
    #[test]
    fn f32_products_match_naive() {
        use ndarray::ShapeBuilder;
        let shapes = [
            (1, 1, 1),
            (50, 64, 50),
            (50, 50, 64),
            (9, 7, 33),
            (64, 64, 64),
            (8, 130, 31),
            // Training's sizes: A in several row blocks, B in many panels.
            (300, 700, 200),
            (1024, 128, 96),
        ];
        for (m, k, n) in shapes {
            let a = seq(m, k, 0.11);
            let b = seq(k, n, 0.13);
            let want = naive(a.view(), b.view());
            let a32 = a.mapv(|x| x as f32);
            // B = Kᵀ with K [n, k] cut from a wider matrix: row stride 1, column stride 3k.
            let wide = Array2::from_shape_fn((n, 3 * k), |(j, p)| if p < k { b[[p, j]] as f32 } else { 9.0 });
            let bt = wide.slice(ndarray::s![.., ..k]);
            let bt = bt.t();
            for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (2.0, -0.25)] {
                let init = seq(m, n, 0.17).mapv(|x| x as f32);
                let mut c = init.clone();
                gemm(alpha, a32.view(), bt, beta, c.view_mut());
                let mut cf = Array2::from_shape_fn((m, n).f(), |ij| init[ij]); // columns contiguous
                gemm(alpha, a32.t().to_owned().t(), bt, beta, cf.view_mut());
                for got in [&c, &cf] {
                    let worst = worst_error(got, alpha, &want, beta, &init);
                    assert!(
                        worst < 1e-5,
                        "{m}x{k}x{n} alpha {alpha} beta {beta}: error {worst}"
                    );
                }
            }
        }
    }

    /// Sliced operands: A rows with a non-unit column stride, B cut from a wider matrix, in f32,
    /// serial and split over two threads.
    #[test]
    fn f32_products_read_strided_operands() {
        let big_a = seq(40, 90, 0.19).mapv(|x| x as f32);
        let big_b = seq(60, 70, 0.29).mapv(|x| x as f32);
        let a = big_a.slice(ndarray::s![3..37;2, 1..61;2]); // 17 x 30, strides (180, 2)
        let b = big_b.slice(ndarray::s![5..35, 2..69]); // 30 x 67, row stride 70
        let want = naive(a.mapv(|x| x as f64).view(), b.mapv(|x| x as f64).view());
        let serial = matmul(a, b);
        assert!((serial.mapv(|x| x as f64) - &want).iter().all(|d| d.abs() < 1e-4));
        let pool = thread_pool(2).unwrap();
        let got = pool.install(|| matmul(a, b));
        assert!((got.mapv(|x| x as f64) - &want).iter().all(|d| d.abs() < 1e-4));
    }

    /// Products with an empty inner dimension (k = 0) are C = beta C (+ bias): through `gemm`,
    /// through a packed empty weight, and on the AVX-512 kernel's entry points called directly
    /// (`pack_panels` and `sgemm_unpacked` panicked on k = 0; `gemm` filters it before them).
    #[test]
    fn empty_inner_dimension_scales_c() {
        let (m, n) = (3, 40);
        let a = Array2::<f32>::zeros((m, 0));
        let b = Array2::<f32>::zeros((0, n));
        let bias = Array1::from_shape_fn(n, |j| j as f32);
        let mut c = Array2::from_elem((m, n), 2.0f32);
        gemm(1.0, a.view(), b.view(), 0.5, c.view_mut());
        assert!(c.iter().all(|&v| v == 1.0));
        if let Some(packed) = PackedB::new(b.view()) {
            assert_eq!(packed.dim(), (0, n));
            let mut c = Array2::from_elem((m, n), f32::NAN);
            gemm_packed(1.0, a.view(), &packed, 0.0, Some(bias.view()), c.view_mut());
            assert!(c.rows().into_iter().all(|r| r == bias));
        }
        #[cfg(target_arch = "x86_64")]
        {
            assert!(avx512::pack_panels(b.view()).is_empty());
            assert!(avx512::pack_panels(b.t().t()).is_empty());
            if is_x86_feature_detected!("avx512f") {
                for (beta, init, want) in [(0.5f32, 2.0f32, 1.0f32), (0.0, f32::NAN, 0.0)] {
                    let mut c = Array2::from_elem((m, n), init);
                    // SAFETY: AVX-512F is there; the operands have no elements to read and `c`
                    // is a unique m x n matrix with row stride n.
                    unsafe {
                        avx512::sgemm_unpacked(
                            m,
                            0,
                            n,
                            1.0,
                            a.as_ptr(),
                            0,
                            1,
                            b.as_ptr(),
                            n as isize,
                            1,
                            beta,
                            c.as_mut_ptr(),
                            n as isize,
                        );
                    }
                    assert!(c.iter().all(|&v| v == want), "beta {beta}: {c:?}");
                    let mut c = Array2::from_elem((m, n), init);
                    // SAFETY: as above; the bias has n values.
                    unsafe {
                        avx512::sgemm(
                            m,
                            0,
                            n,
                            1.0,
                            a.as_ptr(),
                            0,
                            1,
                            &[],
                            beta,
                            bias.as_ptr(),
                            c.as_mut_ptr(),
                            n as isize,
                        );
                    }
                    assert!(
                        c.rows().into_iter().all(|r| r == &bias + want),
                        "beta {beta}, bias: {c:?}"
                    );
                }
            }
        }
    }

    /// The f32 tests against f64 (products, softmax, GELU, LayerNorm) test only the path
    /// [`crate::cpu::avx512`] picks, once per process: on an AVX-512 machine never the portable
    /// one. So the unit tests run again, all of them, in a child process with
    /// `GP_LITE_MATMUL=portable` (the child checks that it is portable). A machine without
    /// AVX-512 runs the portable path twice and cannot test the AVX-512 kernels.
    #[test]
    fn unit_tests_pass_on_the_portable_path_too() {
        if let Ok(forced) = std::env::var("GP_LITE_MATMUL") {
            // The child (or a run that chose its path): no further child.
            if forced == "portable" {
                assert!(!crate::cpu::avx512() && !packed_kernel());
            }
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--test-threads=2",
                "--skip",
                "unit_tests_pass_on_the_portable_path_too",
            ])
            .env("GP_LITE_MATMUL", "portable")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "the unit tests failed on the portable path:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let passed: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("test result: ok. "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            stdout.contains("test matmul::tests::f32_products_match_naive ... ok") && passed > 100,
            "the portable run did not run the tests: {stdout}"
        );
        println!(
            "portable path (this CPU {} AVX-512F): {passed} unit tests passed",
            if crate::cpu::avx512() {
                "runs"
            } else {
                "does not run"
            }
        );
    }

    /// `x` rounded to bf16, in f64.
    fn bf16_of(x: &Array2<f32>) -> Array2<f64> {
        x.mapv(|v| crate::bf16::round(v) as f64)
    }

    /// Inside `products_in(Bf16)` every f32 product, whatever its operands' layouts, alpha and
    /// beta, is the product of the bf16-rounded operands summed in f32: within f32 summation
    /// error of the f64 product of the rounded values, and measurably off the f32 product. Outside
    /// the scope the same calls give the f32 product's bits again; f64 products never change.
    #[test]
    fn bf16_scope_rounds_the_operands_of_every_f32_product() {
        let (m, k, n) = (37, 70, 45);
        let a = seq(m, k, 0.31).mapv(|x| x as f32 * 1.37);
        let b = seq(k, n, 0.17).mapv(|x| x as f32 * 0.91);
        let want_f32 = naive(a.mapv(f64::from).view(), b.mapv(f64::from).view());
        let want = naive(bf16_of(&a).view(), bf16_of(&b).view());
        let (at, bt) = (a.t().to_owned(), b.t().to_owned());
        let init = seq(m, n, 0.5).mapv(|x| x as f32);
        let layouts = [
            (a.view(), b.view()),
            (at.t(), b.view()),
            (a.view(), bt.t()),
            (at.t(), bt.t()),
        ];
        let f32_bits: Vec<Array2<f32>> = layouts
            .iter()
            .map(|(a, b)| {
                let mut c = init.clone();
                gemm(2.0, *a, *b, 1.0, c.view_mut());
                c
            })
            .collect();
        // In a pool of its own: a scope on the global pool would reach the other tests' products.
        let pool = thread_pool(1).unwrap();
        pool.install(|| {
            products_in(Precision::Bf16, || {
                assert_eq!(product_precision(), Precision::Bf16);
                for (a, b) in layouts {
                    let mut c = init.clone();
                    gemm(2.0, a, b, 1.0, c.view_mut());
                    let err = worst_error(&c, 2.0, &want, 1.0, &init);
                    assert!(err < 1e-5, "strides {:?} {:?}: {err}", a.strides(), b.strides());
                    let off = worst_error(&c, 2.0, &want_f32, 1.0, &init);
                    assert!(off > 1e-4, "not rounded: {off}");
                    let c = matmul(a, b);
                    assert!(worst_error(&c, 1.0, &want, 0.0, &init) < 1e-5);
                }
                let c64 = matmul(a.mapv(f64::from).view(), b.mapv(f64::from).view());
                assert!(
                    (c64 - &want_f32).iter().all(|x| x.abs() < 1e-12),
                    "f64 products stay f64"
                );
            })
        });
        assert_eq!(pool.install(product_precision), Precision::F32);
        for ((a, b), bits) in layouts.iter().zip(&f32_bits) {
            let mut c = init.clone();
            gemm(2.0, *a, *b, 1.0, c.view_mut());
            assert_eq!(&c, bits, "f32 again after the scope");
        }
    }

    /// The scope reaches every thread of the pool (a product split over 2 threads and batched
    /// products in parallel are rounded too), gives the same bits as one thread, and is undone
    /// on every thread, also when the scope panics.
    #[test]
    fn bf16_scope_covers_the_pool_and_is_undone_on_every_thread() {
        // Pools of their own: a scope on the global pool would reach the other tests' products.
        let pool = thread_pool(2).unwrap();
        // Above PARALLEL_MIN_MACS, split by rows, then by columns (A rounded by both threads),
        // A row-major and column-major.
        for (m, k, n) in [(300, 96, 200), (120, 600, 700)] {
            let a = seq(m, k, 0.11).mapv(|x| x as f32);
            let at = a.t().to_owned();
            let b = seq(k, n, 0.13).mapv(|x| x as f32);
            let want = naive(bf16_of(&a).view(), bf16_of(&b).view());
            let zero = Array2::zeros((m, n));
            for a in [a.view(), at.t()] {
                let product = || products_in(Precision::Bf16, || matmul(a, b.view()));
                let one = thread_pool(1).unwrap().install(product);
                let two = pool.install(product);
                assert!(worst_error(&two, 1.0, &want, 0.0, &zero) < 1e-5, "{m}x{k}x{n}");
                assert_eq!(two, one, "{m}x{k}x{n}: the split changes no bits");
            }
        }
        pool.install(|| {
            let xs = Array4::from_shape_fn((2, 3, 20, 30), |(i, j, p, q)| {
                ((i * 5 + j * 3 + p * 7 + q) as f32 * 0.1).sin()
            });
            let ys = Array4::from_shape_fn((2, 3, 30, 10), |(i, j, p, q)| {
                ((i + j * 11 + p * 3 + q * 2) as f32 * 0.2).cos()
            });
            let mut cs = Array4::zeros((2, 3, 20, 10));
            products_in(Precision::Bf16, || {
                gemm_batched(1.0, xs.view(), ys.view(), 0.0, cs.view_mut())
            });
            for i in 0..2 {
                for j in 0..3 {
                    let (x, y) = (
                        xs.slice(ndarray::s![i, j, .., ..]).to_owned(),
                        ys.slice(ndarray::s![i, j, .., ..]).to_owned(),
                    );
                    let w = naive(bf16_of(&x).view(), bf16_of(&y).view());
                    let got = cs.slice(ndarray::s![i, j, .., ..]).to_owned();
                    assert!(
                        worst_error(&got, 1.0, &w, 0.0, &Array2::zeros((20, 10))) < 1e-5,
                        "head ({i}, {j})"
                    );
                }
            }
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                products_in(Precision::Bf16, || panic!("inside the scope"))
            }));
            assert!(panicked.is_err());
            let settings = rayon::broadcast(|_| product_precision());
            assert_eq!(settings, vec![Precision::F32; 2], "every worker back to f32");
            // nested scopes give each thread the outer scope's setting back
            products_in(Precision::Bf16, || {
                products_in(Precision::F32, || {
                    assert_eq!(rayon::broadcast(|_| product_precision()), vec![Precision::F32; 2]);
                });
                assert_eq!(
                    rayon::broadcast(|_| product_precision()),
                    vec![Precision::Bf16; 2]
                );
                assert_eq!(product_precision(), Precision::Bf16);
            });
            assert_eq!(rayon::broadcast(|_| product_precision()), vec![Precision::F32; 2]);
        });
    }

    #[test]
    #[should_panic(expected = "not int8")]
    fn int8_general_products_are_refused() {
        thread_pool(1)
            .unwrap()
            .install(|| products_in(Precision::Int8, || ()));
    }

    #[test]
    #[should_panic(expected = "inner dimensions")]
    fn mismatched_shapes_panic_with_a_message() {
        let a = seq(3, 4, 1.0);
        let b = seq(5, 2, 1.0);
        let _ = matmul(a.view(), b.view());
    }
}
