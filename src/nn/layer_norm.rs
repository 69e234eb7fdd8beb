//! Layer normalisation over the last axis of `[N, H]`, and the post-LN residual form
//! `y = LayerNorm(x + s)` that BERT applies after each sublayer (one fused pass).

use crate::param::{join, Param1, ParamMut, Params};
use crate::scalar::Scalar;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewD, ArrayViewMut1, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

/// Scale and shift of a layer norm; `eps` is added to the variance.
#[derive(Clone, Debug)]
pub struct LayerNorm<T> {
    /// `[H]`
    pub weight: Param1<T>,
    /// `[H]`
    pub bias: Param1<T>,
    /// Added to the variance: `y = (x - mean) / sqrt(var + eps) * weight + bias`.
    pub eps: f64,
}

/// What the backward needs besides the normalised input: per-row mean and 1/std (llm.c style).
#[derive(Clone, Debug)]
pub struct LayerNormCache<T> {
    /// `[N]`
    pub mean: Array1<T>,
    /// `[N]`
    pub rstd: Array1<T>,
}

/// The cache of `y = LayerNorm(x + s)`: the sum that was normalised, and its statistics.
#[derive(Clone, Debug)]
pub struct ResidualNormCache<T> {
    /// `[N, H]`: x + s
    pub sum: Array2<T>,
    /// The per-row statistics of `sum`.
    pub stats: LayerNormCache<T>,
}

/// (mean, 1/sqrt(var + eps)) of one row (two passes, as the training forward computes them).
#[inline]
fn row_stats<T: Scalar>(x: ArrayView1<T>, eps: T) -> (T, T) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() && !x.is_empty() {
        if let Some(xs) = x.as_slice().and_then(T::as_f32) {
            // SAFETY: the CPU runs AVX-512F (`cpu::avx512` checked it).
            let (mean, rstd) = unsafe { avx512::row_stats(xs, eps.f64() as f32) };
            return (T::c(mean as f64), T::c(rstd as f64));
        }
    }
    let h = T::c(x.len() as f64);
    let mean = x.sum() / h;
    let var = x.fold(T::zero(), |acc, &v| acc + (v - mean) * (v - mean)) / h;
    (mean, T::one() / (var + eps).sqrt())
}

/// x ← LayerNorm(x + s) for one row.
fn residual_norm_row<T: Scalar>(
    mut x: ArrayViewMut1<T>,
    s: ArrayView1<T>,
    w: ArrayView1<T>,
    b: ArrayView1<T>,
    eps: T,
) {
    Zip::from(&mut x).and(s).for_each(|x, &s| *x += s);
    let (mean, rstd) = row_stats(x.view(), eps);
    Zip::from(&mut x)
        .and(w)
        .and(b)
        .for_each(|x, &w, &b| *x = (*x - mean) * rstd * w + b);
}

/// Normalises one row into `y`, returning (mean, rstd).
#[inline]
fn norm_row<T: Scalar>(
    x: ArrayView1<T>,
    w: ArrayView1<T>,
    b: ArrayView1<T>,
    eps: T,
    y: ArrayViewMut1<T>,
) -> (T, T) {
    let (mean, rstd) = row_stats(x, eps);
    // y = (x - mean) * rstd * w + b
    Zip::from(y)
        .and(x)
        .and(w)
        .and(b)
        .for_each(|y, &x, &w, &b| *y = (x - mean) * rstd * w + b);
    (mean, rstd)
}

/// Rows per task in the backward; fixed so that gradient sums are added in a fixed order.
const ROW_BLOCK: usize = 64;

/// Backward of one row: writes dx, accumulates dw += dy·x̂ and db += dy.
#[inline]
fn backward_row<T: Scalar>(
    x: ArrayView1<T>,
    dy: ArrayView1<T>,
    w: ArrayView1<T>,
    (mean, rstd): (T, T),
    mut dx: ArrayViewMut1<T>,
    mut dw: ArrayViewMut1<T>,
    mut db: ArrayViewMut1<T>,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        if let (Some(xs), Some(dys), Some(ws), Some(dxs), Some(dws), Some(dbs)) = (
            x.as_slice().and_then(T::as_f32),
            dy.as_slice().and_then(T::as_f32),
            w.as_slice().and_then(T::as_f32),
            dx.as_slice_mut().and_then(T::as_f32_mut),
            dw.as_slice_mut().and_then(T::as_f32_mut),
            db.as_slice_mut().and_then(T::as_f32_mut),
        ) {
            // SAFETY: the CPU runs AVX-512F (`cpu::avx512` checked it).
            return unsafe {
                avx512::backward_row(xs, dys, ws, (mean.f64() as f32, rstd.f64() as f32), dxs, dws, dbs)
            };
        }
    }
    let inv_h = T::c(1.0 / x.len() as f64);
    let (mut s1, mut s2) = (T::zero(), T::zero());
    Zip::from(&x).and(&dy).and(w).for_each(|&x, &dy, &w| {
        let g = dy * w;
        s1 += g;
        s2 += g * (x - mean) * rstd;
    });
    let (m1, m2) = (s1 * inv_h, s2 * inv_h);
    Zip::from(dx)
        .and(&x)
        .and(&dy)
        .and(w)
        .and(dw)
        .and(db)
        .for_each(|dx, &x, &dy, &w, dw, db| {
            let xhat = (x - mean) * rstd;
            *dx = (dy * w - m1 - xhat * m2) * rstd;
            *dw += dy * xhat;
            *db += dy;
        });
}

/// The f32 row statistics and row backward on AVX-512F, 16 lanes at a time: the scalar loops'
/// sums are serial, so the compiler cannot vectorise them (the backward was 3.4% of a `tiny`
/// training step, the statistics 4% of `tiny` batch-32 inference).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::nn::vector_math::lanes;
    use std::arch::x86_64::*;

    /// [`super::row_stats`] of a non-empty row: the mean, then the mean squared deviation.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
        let h = x.len();
        // SAFETY: every call below passes j < h and a mask of lanes(h - j) or fewer, so the
        // lanes loaded lie inside `x`.
        let ld = |m, j: usize| unsafe { _mm512_maskz_loadu_ps(m, x.as_ptr().add(j)) };
        let mut s = _mm512_setzero_ps();
        for j in (0..h).step_by(16) {
            s = _mm512_add_ps(s, ld(lanes(h - j), j));
        }
        let mean = _mm512_reduce_add_ps(s) / h as f32;
        let vmean = _mm512_set1_ps(mean);
        // Σ (x - mean)², lanes past h contributing 0
        let mut q = _mm512_setzero_ps();
        for j in (0..h).step_by(16) {
            let m = lanes(h - j);
            let d = _mm512_maskz_sub_ps(m, ld(m, j), vmean);
            q = _mm512_fmadd_ps(d, d, q);
        }
        let var = _mm512_reduce_add_ps(q) / h as f32;
        (mean, 1.0 / (var + eps).sqrt())
    }

    /// [`super::backward_row`] on 16 lanes.
    ///
    /// # Safety
    /// The CPU must support AVX-512F. (All slices must have the same length; that is checked.)
    #[target_feature(enable = "avx512f")]
    pub unsafe fn backward_row(
        x: &[f32],
        dy: &[f32],
        w: &[f32],
        (mean, rstd): (f32, f32),
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let h = x.len();
        assert!(dy.len() == h && w.len() == h && dx.len() == h && dw.len() == h && db.len() == h);
        let (vmean, vrstd) = (_mm512_set1_ps(mean), _mm512_set1_ps(rstd));
        // SAFETY: every call below passes a slice of h values, j < h and the mask lanes(h - j),
        // so the lanes loaded lie inside the slice.
        let ld = |m, v: &[f32], j: usize| unsafe { _mm512_maskz_loadu_ps(m, v.as_ptr().add(j)) };
        // s1 = Σ dy·w, s2 = Σ dy·w·x̂ (lanes past h load 0 for dy, so they add nothing)
        let (mut s1, mut s2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        for j in (0..h).step_by(16) {
            let m = lanes(h - j);
            let g = _mm512_mul_ps(ld(m, dy, j), ld(m, w, j));
            let xhat = _mm512_mul_ps(_mm512_sub_ps(ld(m, x, j), vmean), vrstd);
            s1 = _mm512_add_ps(s1, g);
            s2 = _mm512_fmadd_ps(g, xhat, s2);
        }
        let inv_h = 1.0 / h as f32;
        let m1 = _mm512_set1_ps(_mm512_reduce_add_ps(s1) * inv_h);
        let m2 = _mm512_set1_ps(_mm512_reduce_add_ps(s2) * inv_h);
        for j in (0..h).step_by(16) {
            let m = lanes(h - j);
            let d = ld(m, dy, j);
            let xhat = _mm512_mul_ps(_mm512_sub_ps(ld(m, x, j), vmean), vrstd);
            // dx = (dy·w - m1 - x̂·m2)·rstd
            let inner = _mm512_fnmadd_ps(xhat, m2, _mm512_sub_ps(_mm512_mul_ps(d, ld(m, w, j)), m1));
            let dwv = _mm512_fmadd_ps(d, xhat, ld(m, dw, j));
            let dbv = _mm512_add_ps(ld(m, db, j), d);
            // SAFETY: j < h and the mask lanes(h - j): the lanes stored lie inside dx, dw and db
            // (h values each, checked above).
            unsafe {
                _mm512_mask_storeu_ps(dx.as_mut_ptr().add(j), m, _mm512_mul_ps(inner, vrstd));
                _mm512_mask_storeu_ps(dw.as_mut_ptr().add(j), m, dwv);
                _mm512_mask_storeu_ps(db.as_mut_ptr().add(j), m, dbv);
            }
        }
    }
}

impl<T: Scalar> LayerNorm<T> {
    /// Weight 1, bias 0.
    pub fn new(dim: usize, eps: f64) -> Self {
        LayerNorm::from_arrays(Array1::ones(dim), Array1::zeros(dim), eps)
    }

    /// Wraps a given weight and bias `[H]` (equal lengths).
    pub fn from_arrays(weight: Array1<T>, bias: Array1<T>, eps: f64) -> Self {
        assert_eq!(
            weight.len(),
            bias.len(),
            "LayerNorm: weight and bias lengths differ"
        );
        LayerNorm {
            weight: Param1::new(weight),
            bias: Param1::new(bias),
            eps,
        }
    }

    /// The normalised width H.
    pub fn dim(&self) -> usize {
        self.weight.len()
    }

    /// `y = (x - mean) / sqrt(var + eps) * w + b` row by row; x `[N, H]`.
    pub fn forward(&self, x: ArrayView2<T>) -> (Array2<T>, LayerNormCache<T>) {
        let n = x.nrows();
        let mut y = crate::parallel::zeros(x.raw_dim());
        let mut mean = Array1::zeros(n);
        let mut rstd = Array1::zeros(n);
        let (w, b, eps) = (self.weight.value.view(), self.bias.value.view(), T::c(self.eps));
        Zip::from(y.rows_mut())
            .and(x.rows())
            .and(&mut mean)
            .and(&mut rstd)
            .par_for_each(|y, x, m, r| (*m, *r) = norm_row(x, w, b, eps, y));
        (y, LayerNormCache { mean, rstd })
    }

    /// Post-LN residual: `y = LayerNorm(x + s)`, the sum formed in the same pass. x, s `[N, H]`.
    pub fn forward_residual(&self, x: ArrayView2<T>, s: ArrayView2<T>) -> (Array2<T>, ResidualNormCache<T>) {
        assert_eq!(x.dim(), s.dim(), "LayerNorm residual: shapes differ");
        let n = x.nrows();
        let mut y = crate::parallel::zeros(x.raw_dim());
        let mut sum = crate::parallel::zeros(x.raw_dim());
        let mut mean = Array1::zeros(n);
        let mut rstd = Array1::zeros(n);
        let (w, b, eps) = (self.weight.value.view(), self.bias.value.view(), T::c(self.eps));
        Zip::from(y.rows_mut())
            .and(sum.rows_mut())
            .and(x.rows())
            .and(s.rows())
            .and(&mut mean)
            .and(&mut rstd)
            .par_for_each(|y, mut sum, x, s, m, r| {
                Zip::from(&mut sum).and(x).and(s).for_each(|o, &a, &b| *o = a + b);
                (*m, *r) = norm_row(sum.view(), w, b, eps, y);
            });
        let stats = LayerNormCache { mean, rstd };
        (y, ResidualNormCache { sum, stats })
    }

    /// Inference form of [`forward`](Self::forward): x ← LayerNorm(x) in place, no statistics kept.
    pub fn forward_inplace(&self, mut x: ArrayViewMut2<T>) {
        let (w, b, eps) = (self.weight.value.view(), self.bias.value.view(), T::c(self.eps));
        Zip::from(x.rows_mut()).par_for_each(|mut x| {
            let (mean, rstd) = row_stats(x.view(), eps);
            Zip::from(&mut x)
                .and(w)
                .and(b)
                .for_each(|x, &w, &b| *x = (*x - mean) * rstd * w + b);
        });
    }

    /// Inference form of [`forward_residual`](Self::forward_residual): x ← LayerNorm(x + s) in
    /// place, the sum and the normalisation in one pass over each row, nothing kept.
    pub fn forward_residual_inplace(&self, mut x: ArrayViewMut2<T>, s: ArrayView2<T>) {
        assert_eq!(x.dim(), s.dim(), "LayerNorm residual: shapes differ");
        let (w, b, eps) = (self.weight.value.view(), self.bias.value.view(), T::c(self.eps));
        Zip::from(x.rows_mut())
            .and(s.rows())
            .par_for_each(|x, s| residual_norm_row(x, s, w, b, eps));
    }

    /// [`forward_residual_inplace`](Self::forward_residual_inplace) on this thread: a lockstep
    /// team's block of rows.
    pub fn forward_residual_rows(&self, mut x: ArrayViewMut2<T>, s: ArrayView2<T>) {
        assert_eq!(x.dim(), s.dim(), "LayerNorm residual: shapes differ");
        let (w, b, eps) = (self.weight.value.view(), self.bias.value.view(), T::c(self.eps));
        for (x, s) in x.rows_mut().into_iter().zip(s.rows()) {
            residual_norm_row(x, s, w, b, eps);
        }
    }

    /// Accumulates dw += Σ dy·x̂, db += Σ dy and returns
    /// dx = rstd · (dy·w - mean(dy·w) - x̂ · mean(dy·w·x̂)), with x̂ = (x - mean)·rstd.
    ///
    /// The rows are cut into fixed blocks of `ROW_BLOCK` (64) rows; each block's partial dw/db is
    /// summed serially and the partials are added in block order, so the parameter gradients do not
    /// depend on how rayon schedules the blocks (bit-identical training runs).
    pub fn backward(&mut self, x: ArrayView2<T>, cache: &LayerNormCache<T>, dy: ArrayView2<T>) -> Array2<T> {
        let mut dx = crate::parallel::zeros(x.raw_dim());
        let h = x.ncols();
        let w = self.weight.value.view();
        let partials: Vec<(Array1<T>, Array1<T>)> = dx
            .axis_chunks_iter_mut(Axis(0), ROW_BLOCK)
            .into_par_iter()
            .enumerate()
            .map(|(blk, mut dxb)| {
                let (mut dw, mut db) = (Array1::<T>::zeros(h), Array1::<T>::zeros(h));
                let r0 = blk * ROW_BLOCK;
                for (i, dxr) in dxb.rows_mut().into_iter().enumerate() {
                    let r = r0 + i;
                    let stats = (cache.mean[r], cache.rstd[r]);
                    backward_row(x.row(r), dy.row(r), w, stats, dxr, dw.view_mut(), db.view_mut());
                }
                (dw, db)
            })
            .collect();
        for (dw, db) in &partials {
            self.weight.grad += dw;
            self.bias.grad += db;
        }
        dx
    }

    /// Backward of `forward_residual`: returns d(x + s), the gradient of both x and s.
    pub fn backward_residual(&mut self, cache: &ResidualNormCache<T>, dy: ArrayView2<T>) -> Array2<T> {
        self.backward(cache.sum.view(), &cache.stats, dy)
    }
}

impl<T: Scalar> Params<T> for LayerNorm<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        f(&join(prefix, "weight"), self.weight.view_dyn());
        f(&join(prefix, "bias"), self.bias.view_dyn());
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        f(&join(prefix, "weight"), self.weight.views_mut_dyn());
        f(&join(prefix, "bias"), self.bias.views_mut_dyn());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Ix1, Ix2};

    #[test]
    fn forward_by_hand() {
        // Row [1, 3]: mean 2, var 1 -> x̂ = [-1, 1]; y = x̂ * [2, 1] + [0, 0.5].
        let ln = LayerNorm::<f64>::from_arrays(array![2.0, 1.0], array![0.0, 0.5], 0.0);
        let (y, c) = ln.forward(array![[1.0, 3.0], [4.0, 4.0 + 1e-3]].view());
        assert_eq!(y.row(0), array![-2.0, 1.5]);
        assert!((y[[1, 0]] + 2.0).abs() < 1e-9 && (y[[1, 1]] - 1.5).abs() < 1e-9);
        assert_eq!(c.mean[0], 2.0);
        assert_eq!(c.rstd[0], 1.0);
        let (y2, _) = ln.forward_residual(array![[0.5, 1.0]].view(), array![[0.5, 2.0]].view());
        assert_eq!(y2.row(0), array![-2.0, 1.5]);
    }

    fn setup() -> (LayerNorm<f64>, Array2<f64>, Array2<f64>, Array2<f64>) {
        let ln = LayerNorm::from_arrays(fixed_random(Ix1(6), 1) + 1.0, fixed_random(Ix1(6), 2), 1e-5);
        (
            ln,
            fixed_random(Ix2(4, 6), 3),
            fixed_random(Ix2(4, 6), 4),
            fixed_random(Ix2(4, 6), 5),
        )
    }

    #[test]
    fn gradcheck() {
        let (mut ln, x, _, proj) = setup();
        let (_, cache) = ln.forward(x.view());
        ln.zero_grad();
        let dx = ln.backward(x.view(), &cache, proj.view());
        let gc = GradCheck::default();
        gc.params(&mut ln, |l| proj_loss(&l.forward(x.view()).0, &proj))
            .assert_below(1e-6);
        gc.input("x", &x, &dx, |x| proj_loss(&ln.forward(x.view()).0, &proj))
            .assert_below(1e-6);
    }

    /// The f32 forwards (the AVX-512 row statistics on CPUs that have them) against f64 on the
    /// same values: widths below, at and past 16 lanes, rows with a large offset (where a
    /// one-pass variance would lose digits), the training and the in-place forms.
    #[test]
    fn f32_forward_matches_f64() {
        for h in [5, 16, 37] {
            let n = 9;
            // Values exact in f32, so both sides see the same input.
            let x = Array2::from_shape_fn((n, h), |(i, j)| {
                ((i * 7 + j * 13) % 29) as f64 * 0.25 - 2.0 + if i == 3 { 300.0 } else { 0.0 }
            });
            let s = Array2::from_shape_fn((n, h), |(i, j)| ((i * 5 + j * 3) % 17) as f64 * 0.125 - 0.75);
            let w = Array1::from_shape_fn(h, |j| 0.5 + 0.03 * j as f64);
            let b = Array1::from_shape_fn(h, |j| 0.01 * j as f64);
            let ln64 = LayerNorm::from_arrays(w.clone(), b.clone(), 1e-5);
            let ln32 = LayerNorm::from_arrays(w.mapv(|v| v as f32), b.mapv(|v| v as f32), 1e-5);
            let (x32, s32) = (x.mapv(|v| v as f32), s.mapv(|v| v as f32));
            let close = |got: &Array2<f32>, want: &Array2<f64>, what: &str| {
                for (g, w) in got.iter().zip(want) {
                    assert!((*g as f64 - w).abs() < 1e-4, "{what}, h = {h}: {g} against {w}");
                }
            };
            let (y64, c64) = ln64.forward(x.view());
            let (y32, c32) = ln32.forward(x32.view());
            close(&y32, &y64, "forward");
            for (r32, r64) in c32.rstd.iter().zip(&c64.rstd) {
                assert!((*r32 as f64 / r64 - 1.0).abs() < 1e-5, "rstd {r32} against {r64}");
            }
            let (r64, _) = ln64.forward_residual(x.view(), s.view());
            let (r32, _) = ln32.forward_residual(x32.view(), s32.view());
            close(&r32, &r64, "forward_residual");
            let mut i32 = x32.clone();
            ln32.forward_inplace(i32.view_mut());
            close(&i32, &y64, "forward_inplace");
            let mut i32 = x32.clone();
            ln32.forward_residual_inplace(i32.view_mut(), s32.view());
            close(&i32, &r64, "forward_residual_inplace");
        }
    }

    /// The f32 backward (the AVX-512 rows on CPUs that have it) against f64 on the same values:
    /// a width that is not a multiple of 16, rows across two of the backward's row blocks.
    #[test]
    fn f32_backward_matches_f64() {
        let (h, n) = (37, ROW_BLOCK + 5);
        let x = Array2::from_shape_fn((n, h), |(i, j)| ((i * 7 + j * 13) % 29) as f64 * 0.21 - 2.0);
        let dy = Array2::from_shape_fn((n, h), |(i, j)| ((i * 5 + j * 3) % 17) as f64 * 0.1 - 0.8);
        let w = Array1::from_shape_fn(h, |j| 0.5 + 0.03 * j as f64);
        let b = Array1::from_shape_fn(h, |j| 0.01 * j as f64);
        let mut ln64 = LayerNorm::from_arrays(w.clone(), b.clone(), 1e-5);
        let mut ln32 = LayerNorm::from_arrays(w.mapv(|v| v as f32), b.mapv(|v| v as f32), 1e-5);
        let (_, c64) = ln64.forward(x.view());
        let x32 = x.mapv(|v| v as f32);
        let (_, c32) = ln32.forward(x32.view());
        let dx64 = ln64.backward(x.view(), &c64, dy.view());
        let dx32 = ln32.backward(x32.view(), &c32, dy.mapv(|v| v as f32).view());
        let worst = |a: ndarray::ArrayViewD<f32>, b: ndarray::ArrayViewD<f64>| {
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            a.iter()
                .zip(b.iter())
                .map(|(&a, &b)| (a as f64 - b).abs() / scale)
                .fold(0.0, f64::max)
        };
        assert!(worst(dx32.view().into_dyn(), dx64.view().into_dyn()) < 1e-5, "dx");
        let (g32, g64) = (&ln32.weight.grad, &ln64.weight.grad);
        assert!(worst(g32.view().into_dyn(), g64.view().into_dyn()) < 1e-5, "dw");
        let (g32, g64) = (&ln32.bias.grad, &ln64.bias.grad);
        assert!(worst(g32.view().into_dyn(), g64.view().into_dyn()) < 1e-5, "db");
    }

    #[test]
    fn gradcheck_residual() {
        let (mut ln, x, s, proj) = setup();
        let (_, cache) = ln.forward_residual(x.view(), s.view());
        ln.zero_grad();
        let d = ln.backward_residual(&cache, proj.view());
        let gc = GradCheck::default();
        gc.params(&mut ln, |l| {
            proj_loss(&l.forward_residual(x.view(), s.view()).0, &proj)
        })
        .assert_below(1e-6);
        gc.input("x", &x, &d, |x| {
            proj_loss(&ln.forward_residual(x.view(), s.view()).0, &proj)
        })
        .assert_below(1e-6);
        gc.input("s", &s, &d, |s| {
            proj_loss(&ln.forward_residual(x.view(), s.view()).0, &proj)
        })
        .assert_below(1e-6);
    }
}
