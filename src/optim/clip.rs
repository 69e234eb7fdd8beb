//! Clipping by the global gradient norm, as `torch.nn.utils.clip_grad_norm_`.

use crate::param::{grad_norm_sq, Params};
use crate::scalar::Scalar;

/// Scales every gradient by `max_norm / (norm + 1e-6)` when that is below 1; returns the norm
/// before clipping (the L2 norm over all parameters' gradients).
pub fn clip_grad_norm<T: Scalar, M: Params<T> + ?Sized>(model: &mut M, max_norm: f64) -> f64 {
    let norm = grad_norm_sq(model).sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        let c = T::c(coef);
        model.visit_mut("", &mut |_, mut p| p.grad.mapv_inplace(|g| g * c));
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Linear;
    use ndarray::array;

    #[test]
    fn clips_to_max_norm_and_returns_pre_clip_norm() {
        let mut l = Linear::<f64>::from_arrays(array![[0.0, 0.0]], array![0.0]);
        l.weight.grad = array![[3.0, 0.0]];
        l.bias.grad = array![4.0];
        let n = clip_grad_norm(&mut l, 1.0);
        assert_eq!(n, 5.0);
        let after = grad_norm_sq(&mut l).sqrt();
        assert!((after - 1.0).abs() < 1e-6);
        assert!((l.weight.grad[[0, 0]] / l.bias.grad[0] - 0.75).abs() < 1e-15);
        // below the limit: untouched
        let n2 = clip_grad_norm(&mut l, 10.0);
        assert!((n2 - after).abs() < 1e-15);
        assert!((grad_norm_sq(&mut l).sqrt() - after).abs() < 1e-15);
    }
}
