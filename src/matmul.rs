//! The one module through which every matrix product in gp-lite goes.
//!
//! Operands are ndarray views with arbitrary strides, so transposed operands are free: pass
//! `a.t()` for Aᵀ. The kernel is `matrixmultiply` (sgemm/dgemm), built without its own threading
//! (which would need an environment variable set before the first product, and caps at 4
//! threads); parallelism comes from rayon, splitting large products into row (or column) blocks of C and
//! batched products over their batch axes. The thread count is the size of the rayon pool the
//! call runs in (`rayon::current_num_threads()`): run inside `ThreadPool::install` (see
//! [`thread_pool`]) to govern it, so `--threads N` bounds every product and nothing nests.

use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Axis};
use rayon::prelude::*;

/// Products below this many multiply-adds run on one thread (splitting costs more than it saves).
const PARALLEL_MIN_MACS: usize = 1 << 18;

/// A rayon pool of `threads` workers (0 = all logical cores). Run work inside `pool.install(..)`.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    thread_pool_builder(threads).build()
}

/// The builder of [`thread_pool`], for callers that configure more (the C interface joins its
/// workers through a spawn handler).
pub fn thread_pool_builder(threads: usize) -> rayon::ThreadPoolBuilder {
    let mut b = rayon::ThreadPoolBuilder::new();
    if threads > 0 {
        b = b.num_threads(threads);
    }
    b
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
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == T::zero() {
            c.fill(T::zero());
        } else {
            c *= beta;
        }
        return;
    }
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides());
    let (rsc, csc) = (sc[0], sc[1]);
    // SAFETY: the views guarantee valid memory for their dims and strides; `c` is a unique
    // mutable view so it cannot alias `a` or `b`.
    unsafe {
        T::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            sa[0],
            sa[1],
            b.as_ptr(),
            sb[0],
            sb[1],
            beta,
            c.as_mut_ptr(),
            rsc,
            csc,
        );
    }
}

/// General product `c = alpha * a · b + beta * c`, parallel over blocks of `c` when large.
/// Pass `a.t()` / `b.t()` for transposed operands.
pub fn gemm<T: Scalar>(alpha: T, a: ArrayView2<T>, b: ArrayView2<T>, beta: T, mut c: ArrayViewMut2<T>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * n * k < PARALLEL_MIN_MACS {
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
    use ndarray::{Array, Array4};

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

    #[test]
    #[should_panic(expected = "inner dimensions")]
    fn mismatched_shapes_panic_with_a_message() {
        let a = seq(3, 4, 1.0);
        let b = seq(5, 2, 1.0);
        let _ = matmul(a.view(), b.view());
    }
}
