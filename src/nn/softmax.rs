//! Masked softmax over the last axis, row by row. The key mask is a prefix length: columns
//! `j < valid` are real keys, the rest (right padding) get probability exactly 0.

use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// One row in place: `y_j = exp(x_j - max) / Σ_{k<valid} exp(x_k - max)` for j < valid, else 0.
#[inline]
pub fn softmax_row<T: Scalar>(mut row: ArrayViewMut1<T>, valid: usize) {
    let valid = valid.min(row.len());
    if valid == 0 {
        row.fill(T::zero());
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        if let Some(x) = row.as_slice_mut().and_then(T::as_f32_mut) {
            // SAFETY: the CPU runs AVX-512F (`cpu::avx512` checked it).
            return unsafe { avx512::softmax_row(x, valid) };
        }
    }
    let (mut keys, mut pad) = row.view_mut().split_at(ndarray::Axis(0), valid);
    let max = keys.fold(T::neg_infinity(), |m, &v| m.max(v));
    let mut sum = T::zero();
    keys.map_inplace(|v| {
        *v = (*v - max).exp();
        sum += *v;
    });
    let inv = T::one() / sum;
    keys.map_inplace(|v| *v *= inv);
    pad.fill(T::zero());
}

/// One row in place: `dx = y · (dy - Σ dy·y)` (dy is overwritten by dx).
#[inline]
pub fn softmax_row_backward<T: Scalar>(y: ArrayView1<T>, mut dy: ArrayViewMut1<T>) {
    let dot = Zip::from(&y).and(&dy).fold(T::zero(), |acc, &y, &d| acc + y * d);
    Zip::from(&mut dy).and(&y).for_each(|d, &y| *d = y * (*d - dot));
}

/// Softmax of every row of x `[R, C]` over its first `valid` columns.
pub fn masked_softmax<T: Scalar>(x: ArrayView2<T>, valid: usize) -> Array2<T> {
    let mut y = x.to_owned();
    masked_softmax_inplace(y.view_mut(), valid);
    y
}

/// In-place form of [`masked_softmax`].
pub fn masked_softmax_inplace<T: Scalar>(mut x: ArrayViewMut2<T>, valid: usize) {
    for row in x.rows_mut() {
        softmax_row(row, valid);
    }
}

/// dx = y · (dy - rowsum(dy·y)) for y = masked_softmax(x); padded columns get 0 since y = 0 there.
pub fn masked_softmax_backward<T: Scalar>(y: ArrayView2<T>, dy: ArrayView2<T>) -> Array2<T> {
    let mut dx = dy.to_owned();
    for (y, d) in y.rows().into_iter().zip(dx.rows_mut()) {
        softmax_row_backward(y, d);
    }
    dx
}

/// The f32 row on AVX-512F: 16 lanes at a time, with its own `exp`, where the portable loop calls
/// libm's `expf` value by value (3% of a `small` batch-1 call went to softmax).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::nn::vector_math::{exp, lanes};
    use std::arch::x86_64::*;

    /// [`super::softmax_row`] for f32: max, exponentials and their sum, scale; padding to 0.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `0 < valid <= x.len()`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax_row(x: &mut [f32], valid: usize) {
        let p = x.as_mut_ptr();
        // SAFETY: in every loop j < valid and the mask is lanes(valid - j) (the max's load keeps
        // the other lanes), so every lane loaded or stored lies inside `x[..valid]` (the caller
        // vouched for valid <= x.len()); the CPU runs AVX-512F (the caller's contract), as `exp`
        // needs.
        unsafe {
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            for j in (0..valid).step_by(16) {
                let v = _mm512_mask_loadu_ps(max, lanes(valid - j), p.add(j));
                max = _mm512_max_ps(max, v);
            }
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
            let mut sum = _mm512_setzero_ps();
            for j in (0..valid).step_by(16) {
                let m = lanes(valid - j);
                let e = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, p.add(j)), max));
                _mm512_mask_storeu_ps(p.add(j), m, e);
                sum = _mm512_mask_add_ps(sum, m, sum, e);
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            for j in (0..valid).step_by(16) {
                let m = lanes(valid - j);
                _mm512_mask_storeu_ps(
                    p.add(j),
                    m,
                    _mm512_mul_ps(_mm512_maskz_loadu_ps(m, p.add(j)), inv),
                );
            }
        }
        x[valid..].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Ix2};

    #[test]
    fn forward_by_hand() {
        // Row [0, ln 3, 99] with 2 valid keys -> [1/4, 3/4, 0].
        let y = masked_softmax(array![[0.0, 3f64.ln(), 99.0], [5.0, 5.0, 5.0]].view(), 2);
        assert!((y[[0, 0]] - 0.25).abs() < 1e-15 && (y[[0, 1]] - 0.75).abs() < 1e-15);
        assert_eq!(y[[0, 2]], 0.0);
        assert_eq!(y.row(1), array![0.5, 0.5, 0.0]);
    }

    /// f32 rows (the AVX-512 path on CPUs that have it) against the same rows in f64: lengths
    /// around the 16-lane edges, keys cut short, scores far apart (probabilities that underflow).
    #[test]
    fn f32_rows_match_f64() {
        for (len, valid) in [(1, 1), (5, 3), (16, 16), (17, 17), (33, 20), (50, 50), (64, 1)] {
            let x64: Vec<f64> = (0..len)
                .map(|j| ((j * 37 % 23) as f64 - 11.0) * if j % 5 == 0 { 9.0 } else { 0.7 })
                .collect();
            let mut want = ndarray::Array1::from(x64.clone());
            softmax_row(want.view_mut(), valid);
            let mut got = ndarray::Array1::from_iter(x64.iter().map(|&v| v as f32));
            softmax_row(got.view_mut(), valid);
            for j in 0..len {
                let (g, w) = (got[j] as f64, want[j]);
                if j >= valid {
                    assert_eq!(got[j], 0.0, "padding of ({len}, {valid})");
                } else {
                    assert!(
                        (g - w).abs() <= 2e-6 * w + 1e-30,
                        "({len}, {valid}) key {j}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn gradcheck() {
        let x = fixed_random(Ix2(3, 5), 1) * 4.0;
        let proj = fixed_random(Ix2(3, 5), 2);
        for valid in [5, 3] {
            let y = masked_softmax(x.view(), valid);
            let dx = masked_softmax_backward(y.view(), proj.view());
            GradCheck::default()
                .input("x", &x, &dx, |x| {
                    proj_loss(&masked_softmax(x.view(), valid), &proj)
                })
                .assert_below(1e-6);
        }
    }
}
