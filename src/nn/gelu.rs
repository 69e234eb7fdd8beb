//! GELU activation: the exact form `x Φ(x) = ½ x (1 + erf(x/√2))` (BERT's "gelu") and the tanh
//! approximation ("gelu_new", "gelu_pytorch_tanh"). The backward uses each form's exact derivative.

use crate::nn::erf::erf_fast_f32;
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// Which GELU formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gelu {
    /// `½ x (1 + erf(x/√2))`
    Erf,
    /// `½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))`
    Tanh,
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const INV_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
const TANH_C: f64 = 0.044715;

/// erf as the GELU loops use it: [`erf_fast_f32`] in f32, libm's erf in f64 (gradchecks).
#[inline(always)]
fn gelu_erf<T: Scalar>(x: T) -> T {
    // Through a one-value view: x itself when T is f32.
    match T::as_f32(std::slice::from_ref(&x)) {
        Some(&[x]) => T::c(erf_fast_f32(x) as f64),
        _ => T::c(libm::erf(x.f64())),
    }
}

/// x ← ½ x (1 + erf(x/√2)) in f32, as [`Gelu::value`] computes it. The default x86-64 build
/// targets SSE2, where this loop runs 4 lanes wide: on a CPU with AVX-512F it runs a copy compiled
/// for 16 lanes (2.8x faster on a 50 x 512 block, where a tiny batch-1 call spent 5% of its time).
fn erf_gelu_f32(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        // SAFETY: the CPU runs AVX-512F (`cpu::avx512` checked it).
        return unsafe { erf_gelu_f32_avx512(x) };
    }
    x.iter_mut().for_each(|v| *v = Gelu::Erf.value(*v));
}

/// [`erf_gelu_f32`] compiled for AVX-512F.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn erf_gelu_f32_avx512(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = Gelu::Erf.value(*v));
}

/// dy ← dy · GELU'(x) for the erf form in f32, as [`Gelu::derivative`] computes it. On a CPU
/// with AVX-512F it runs 16 lanes at a time with [`crate::nn::erf`]'s 16-lane erf and
/// [`crate::nn::vector_math`]'s exp (the portable loop calls libm's expf value by value: 7% of a
/// `tiny` training step).
fn erf_gelu_backward_f32(x: &[f32], dy: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        // SAFETY: the CPU runs AVX-512F (`cpu::avx512` checked it).
        return unsafe { erf_gelu_backward_f32_avx512(x, dy) };
    }
    dy.iter_mut()
        .zip(x)
        .for_each(|(d, &x)| *d *= Gelu::Erf.derivative(x));
}

/// [`erf_gelu_backward_f32`] on 16 lanes: `GELU'(x) = Φ(x) + x φ(x)`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn erf_gelu_backward_f32_avx512(x: &[f32], dy: &mut [f32]) {
    use crate::nn::erf::erf_fast_avx512 as erf;
    use crate::nn::vector_math::{exp, lanes};
    use std::arch::x86_64::*;
    assert_eq!(x.len(), dy.len(), "GELU backward: lengths differ");
    let c = _mm512_set1_ps;
    for j in (0..x.len()).step_by(16) {
        let m = lanes(x.len() - j);
        // SAFETY: j < len and the mask lanes(len - j), so the lanes loaded and stored lie inside
        // `x` and `dy` (the same length, checked above); the CPU runs AVX-512F (the caller's
        // contract), as `erf` and `exp` need.
        unsafe {
            let xv = _mm512_maskz_loadu_ps(m, x.as_ptr().add(j));
            // Φ(x) = ½ (1 + erf(x/√2)); φ(x) = e^{-x²/2} / √(2π)
            let cdf = _mm512_mul_ps(
                c(0.5),
                _mm512_add_ps(c(1.0), erf(_mm512_mul_ps(xv, c(INV_SQRT_2 as f32)))),
            );
            let pdf = _mm512_mul_ps(
                c(INV_SQRT_2PI as f32),
                exp(_mm512_mul_ps(c(-0.5), _mm512_mul_ps(xv, xv))),
            );
            let d = _mm512_maskz_loadu_ps(m, dy.as_ptr().add(j));
            _mm512_mask_storeu_ps(
                dy.as_mut_ptr().add(j),
                m,
                _mm512_mul_ps(d, _mm512_fmadd_ps(xv, pdf, cdf)),
            );
        }
    }
}

impl Gelu {
    /// The form HF's `hidden_act` names, or `None` for any other activation.
    pub fn from_hidden_act(name: &str) -> Option<Gelu> {
        match name {
            "gelu" => Some(Gelu::Erf),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Gelu::Tanh),
            _ => None,
        }
    }

    /// GELU(x).
    #[inline(always)]
    pub fn value<T: Scalar>(self, x: T) -> T {
        let half = T::c(0.5);
        match self {
            Gelu::Erf => half * x * (T::one() + gelu_erf(x * T::c(INV_SQRT_2))),
            Gelu::Tanh => {
                let u = T::c(SQRT_2_OVER_PI) * (x + T::c(TANH_C) * x * x * x);
                half * x * (T::one() + u.tanh())
            }
        }
    }

    /// d GELU / dx.
    #[inline(always)]
    pub fn derivative<T: Scalar>(self, x: T) -> T {
        let half = T::c(0.5);
        match self {
            // Φ(x) + x φ(x)
            Gelu::Erf => {
                half * (T::one() + gelu_erf(x * T::c(INV_SQRT_2)))
                    + x * T::c(INV_SQRT_2PI) * (-half * x * x).exp()
            }
            // ½(1 + t) + ½ x (1 - t²) √(2/π) (1 + 3c x²)
            Gelu::Tanh => {
                let x2 = x * x;
                let t = (T::c(SQRT_2_OVER_PI) * x * (T::one() + T::c(TANH_C) * x2)).tanh();
                half * (T::one() + t)
                    + half
                        * x
                        * (T::one() - t * t)
                        * T::c(SQRT_2_OVER_PI)
                        * (T::one() + T::c(3.0 * TANH_C) * x2)
            }
        }
    }

    /// y = GELU(x), elementwise, parallel over rows. x `[N, F]`.
    pub fn forward<T: Scalar>(self, x: ArrayView2<T>) -> Array2<T> {
        let mut y = crate::parallel::copy(x);
        self.forward_inplace(y.view_mut());
        y
    }

    /// x ← GELU(x) in place (inference: the pre-activation is not kept). Parallel over rows.
    pub fn forward_inplace<T: Scalar>(self, mut x: ArrayViewMut2<T>) {
        Zip::from(x.rows_mut()).par_for_each(|x| self.forward_row(x));
    }

    /// [`forward_inplace`](Self::forward_inplace) on this thread (a lockstep team's block).
    pub fn forward_block<T: Scalar>(self, mut x: ArrayViewMut2<T>) {
        x.rows_mut().into_iter().for_each(|x| self.forward_row(x));
    }

    fn forward_row<T: Scalar>(self, mut x: ArrayViewMut1<T>) {
        if let (Gelu::Erf, Some(row)) = (self, x.as_slice_mut().and_then(T::as_f32_mut)) {
            return erf_gelu_f32(row);
        }
        Zip::from(x).for_each(|x| *x = self.value(*x));
    }

    /// dy ← dy · GELU'(x) in place (the backward, given the pre-activation x).
    pub fn backward_inplace<T: Scalar>(self, x: ArrayView2<T>, mut dy: ArrayViewMut2<T>) {
        Zip::from(dy.rows_mut()).and(x.rows()).par_for_each(|mut dy, x| {
            if let (Gelu::Erf, Some(d), Some(x)) = (
                self,
                dy.as_slice_mut().and_then(T::as_f32_mut),
                x.as_slice().and_then(T::as_f32),
            ) {
                return erf_gelu_backward_f32(x, d);
            }
            Zip::from(dy).and(x).for_each(|d, &x| *d *= self.derivative(x));
        });
    }

    /// dx = dy · GELU'(x).
    pub fn backward<T: Scalar>(self, x: ArrayView2<T>, dy: ArrayView2<T>) -> Array2<T> {
        let mut dx = dy.to_owned();
        self.backward_inplace(x, dx.view_mut());
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Ix2};

    /// The f32 rows of the erf form take the vectorised loop (on AVX-512 CPUs); every value must
    /// be the scalar formula's, in place and into a new array, on a block with a ragged width.
    #[test]
    fn f32_blocks_equal_the_scalar_formula() {
        let x = Array2::from_shape_fn((7, 37), |(i, j)| (i as f32 - 3.0) * 1.7 + j as f32 * 0.11 - 2.0);
        for form in [Gelu::Erf, Gelu::Tanh] {
            let want = x.mapv(|v| form.value(v));
            let mut inplace = x.clone();
            form.forward_inplace(inplace.view_mut());
            assert_eq!(inplace, want, "{form:?} in place");
            assert_eq!(form.forward(x.view()), want, "{form:?}");
            // A column-major block has no contiguous rows and takes the generic loop.
            let mut f = x.t().to_owned();
            form.forward_inplace(f.view_mut().reversed_axes());
            assert_eq!(f.t(), want, "{form:?} column-major");
        }
    }

    /// The f32 derivative rows (the AVX-512 path on CPUs that have it) against the f64 formula:
    /// a ragged width, values out to ±12 (where φ underflows), a column-major block (generic loop).
    #[test]
    fn f32_derivative_rows_match_f64() {
        let x64 = Array2::from_shape_fn((5, 37), |(i, j)| (i as f64 - 2.0) * 3.1 + j as f64 * 0.093 - 1.7);
        let dy64 = Array2::from_shape_fn((5, 37), |(i, j)| 1.0 + 0.25 * ((i * 37 + j) % 7) as f64);
        let (x32, dy32) = (x64.mapv(|v| v as f32), dy64.mapv(|v| v as f32));
        for form in [Gelu::Erf, Gelu::Tanh] {
            let want = form.backward(x64.view(), dy64.view());
            let got = form.backward(x32.view(), dy32.view());
            let mut cm = dy32.t().to_owned();
            form.backward_inplace(x32.view(), cm.view_mut().reversed_axes());
            for (g, w) in [(&got, &want), (&cm.t().to_owned(), &want)] {
                let worst = g
                    .iter()
                    .zip(w.iter())
                    .map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0))
                    .fold(0.0, f64::max);
                assert!(worst < 1e-6, "{form:?}: worst error {worst}");
            }
        }
    }

    #[test]
    fn forward_by_hand() {
        // GELU(1) = Φ(1) = 0.841344746...; GELU(-1) = -(1 - Φ(1)); GELU(0) = 0.
        let y = Gelu::Erf.forward(array![[1.0f64, -1.0, 0.0]].view());
        assert!((y[[0, 0]] - 0.841_344_746_068_542_9).abs() < 1e-15);
        assert!((y[[0, 1]] + 0.158_655_253_931_457_05).abs() < 1e-15);
        assert_eq!(y[[0, 2]], 0.0);
        // tanh form at 1: 0.5 (1 + tanh(√(2/π) · 1.044715)) = 0.8411919906082768
        let t = Gelu::Tanh.forward(array![[1.0f64]].view());
        assert!((t[[0, 0]] - 0.841_191_990_608_276_8).abs() < 1e-15);
        assert_eq!(Gelu::from_hidden_act("gelu"), Some(Gelu::Erf));
        assert_eq!(Gelu::from_hidden_act("gelu_new"), Some(Gelu::Tanh));
        assert_eq!(Gelu::from_hidden_act("relu"), None);
    }

    #[test]
    fn gradcheck() {
        let x = fixed_random(Ix2(4, 5), 1) * 3.0;
        let proj = fixed_random(Ix2(4, 5), 2);
        for g in [Gelu::Erf, Gelu::Tanh] {
            let dx = g.backward(x.view(), proj.view());
            GradCheck::default()
                .input("x", &x, &dx, |x| proj_loss(&g.forward(x.view()), &proj))
                .assert_below(1e-6);
        }
    }
}
