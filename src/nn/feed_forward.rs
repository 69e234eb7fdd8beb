//! BERT feed-forward block: `intermediate.dense` -> GELU -> `output.dense` (the residual and
//! LayerNorm after it belong to the BERT layer).

use crate::matmul::gemm;
use crate::nn::gelu::Gelu;
use crate::nn::linear::Linear;
use crate::param::{join, ParamMut, Params};
use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView2, ArrayViewD, ArrayViewMut2};
use rand::Rng;

/// `y = W2 GELU(W1 x + b1) + b2` over rows `[N, H]`, inner width F.
#[derive(Clone, Debug)]
pub struct FeedForward<T> {
    /// `intermediate.dense`: H -> F
    pub intermediate: Linear<T>,
    /// `output.dense`: F -> H
    pub output: Linear<T>,
    /// The GELU variant (erf or tanh form, from `hidden_act`).
    pub act: Gelu,
}

/// What the backward needs.
#[derive(Clone, Debug)]
pub struct FeedForwardCache<T> {
    /// `[N, F]`: x W1ᵀ + b1 (before GELU)
    pub pre: Array2<T>,
    /// `[N, F]`: GELU(pre)
    pub act: Array2<T>,
}

impl<T: Scalar> FeedForward<T> {
    /// Packs both weights for inference ([`Linear::prepack`]).
    pub fn prepack(&mut self, precision: Precision) {
        self.intermediate.prepack_as(precision);
        self.output.prepack_as(precision);
    }

    /// H = `hidden`, F = `inner`; weights drawn from N(0, std²), biases 0.
    pub fn new(hidden: usize, inner: usize, act: Gelu, std: f64, rng: &mut impl Rng) -> Self {
        FeedForward {
            intermediate: Linear::new(hidden, inner, std, rng),
            output: Linear::new(inner, hidden, std, rng),
            act,
        }
    }

    /// y = GELU(x W1ᵀ + b1) W2ᵀ + b2; x `[N, H]` -> y `[N, H]`.
    pub fn forward(&self, x: ArrayView2<T>) -> (Array2<T>, FeedForwardCache<T>) {
        // The bias is the product's initial value; GELU is one pass over the result.
        let pre = self.intermediate.forward(x);
        let act = self.act.forward(pre.view());
        let y = self.output.forward(act.view());
        (y, FeedForwardCache { pre, act })
    }

    /// Accumulates both layers' gradients and returns dx.
    pub fn backward(
        &mut self,
        x: ArrayView2<T>,
        cache: &FeedForwardCache<T>,
        dy: ArrayView2<T>,
    ) -> Array2<T> {
        let mut dx = crate::parallel::zeros(x.raw_dim());
        self.backward_acc(x, cache, dy, dx.view_mut());
        dx
    }

    /// `backward` adding dx into `dx` (the residual's gradient) instead of a new buffer.
    pub fn backward_acc(
        &mut self,
        x: ArrayView2<T>,
        cache: &FeedForwardCache<T>,
        dy: ArrayView2<T>,
        dx: ArrayViewMut2<T>,
    ) {
        self.output.backward_params(cache.act.view(), dy);
        // d pre = (dy W2) · GELU'(pre), the product and the derivative in one buffer.
        let mut dpre = crate::parallel::zeros(cache.pre.raw_dim());
        gemm(
            T::one(),
            dy,
            self.output.weight.value.view(),
            T::zero(),
            dpre.view_mut(),
        );
        self.act.backward_inplace(cache.pre.view(), dpre.view_mut());
        self.intermediate.backward_acc(x, dpre.view(), dx);
    }
}

impl<T: Scalar> Params<T> for FeedForward<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.intermediate.visit(&join(prefix, "intermediate.dense"), f);
        self.output.visit(&join(prefix, "output.dense"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.intermediate
            .visit_mut(&join(prefix, "intermediate.dense"), f);
        self.output.visit_mut(&join(prefix, "output.dense"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Ix1, Ix2};

    #[test]
    fn forward_by_hand() {
        // W1 = [[1], [-1]], b1 = 0; W2 = [[1, 1]], b2 = 0.5: y = GELU(x) + GELU(-x) + 0.5 = x·erf(x/√2) + 0.5.
        let ff = FeedForward::<f64> {
            intermediate: Linear::from_arrays(array![[1.0], [-1.0]], array![0.0, 0.0]),
            output: Linear::from_arrays(array![[1.0, 1.0]], array![0.5]),
            act: Gelu::Erf,
        };
        let (y, _) = ff.forward(array![[1.0], [2.0]].view());
        assert!((y[[0, 0]] - (0.682_689_492_137_085_9 + 0.5)).abs() < 1e-15);
        assert!((y[[1, 0]] - (2.0 * 0.954_499_736_103_641_6 + 0.5)).abs() < 1e-15);
    }

    #[test]
    fn gradcheck() {
        let mut ff = FeedForward {
            intermediate: Linear::from_arrays(fixed_random(Ix2(7, 4), 1), fixed_random(Ix1(7), 2)),
            output: Linear::from_arrays(fixed_random(Ix2(4, 7), 3), fixed_random(Ix1(4), 4)),
            act: Gelu::Erf,
        };
        let x = fixed_random(Ix2(5, 4), 5) * 2.0;
        let proj = fixed_random(Ix2(5, 4), 6);
        for act in [Gelu::Erf, Gelu::Tanh] {
            ff.act = act;
            let (_, cache) = ff.forward(x.view());
            ff.zero_grad();
            let dx = ff.backward(x.view(), &cache, proj.view());
            let gc = GradCheck::default();
            gc.params(&mut ff, |f| proj_loss(&f.forward(x.view()).0, &proj))
                .assert_below(1e-6);
            gc.input("x", &x, &dx, |x| proj_loss(&ff.forward(x.view()).0, &proj))
                .assert_below(1e-6);
        }
    }
}
