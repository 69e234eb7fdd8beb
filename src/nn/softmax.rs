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
