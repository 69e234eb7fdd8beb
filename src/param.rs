//! Parameters (a value with its gradient) and the walk over a model's parameters by name.
//!
//! Names are the HF checkpoint tensor names (`encoder.layer.0.attention.self.query.weight`), so the
//! optimizer, zeroing, saving and loading are all one walk over the same tree.

use crate::scalar::Scalar;
use ndarray::{Array, ArrayViewD, ArrayViewMutD, Dimension, Ix1, Ix2};

/// A trainable tensor and its gradient (same shape). Backward passes accumulate into `grad`.
#[derive(Clone, Debug)]
pub struct Param<T, D: Dimension> {
    /// The tensor's current value.
    pub value: Array<T, D>,
    /// The loss gradient accumulated since it was last zeroed, shaped as `value`.
    pub grad: Array<T, D>,
}

/// A vector parameter (a bias, a LayerNorm scale or shift).
pub type Param1<T> = Param<T, Ix1>;
/// A matrix parameter (a weight or an embedding table).
pub type Param2<T> = Param<T, Ix2>;

impl<T: Scalar, D: Dimension> Param<T, D> {
    /// Wraps a value with a zero gradient.
    pub fn new(value: Array<T, D>) -> Self {
        let grad = Array::zeros(value.raw_dim());
        Param { value, grad }
    }

    /// Number of scalars in the tensor.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Read-only view for the visitor.
    pub fn view_dyn(&self) -> ArrayViewD<'_, T> {
        self.value.view().into_dyn()
    }

    /// Mutable value and gradient for the visitor.
    pub fn views_mut_dyn(&mut self) -> ParamMut<'_, T> {
        ParamMut {
            value: self.value.view_mut().into_dyn(),
            grad: self.grad.view_mut().into_dyn(),
        }
    }
}

/// A parameter as the mutable visitor sees it.
pub struct ParamMut<'a, T> {
    /// The parameter's value.
    pub value: ArrayViewMutD<'a, T>,
    /// Its accumulated gradient, same shape.
    pub grad: ArrayViewMutD<'a, T>,
}

/// Joins a prefix and a name with a dot (`"" + "weight" = "weight"`).
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A module whose parameters can be walked by name.
pub trait Params<T: Scalar> {
    /// Calls `f(name, value)` for every parameter, names under `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>));
    /// Calls `f(name, value and grad)` for every parameter, names under `prefix`.
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>));

    /// Sets every gradient to zero (once per step; backward passes accumulate).
    fn zero_grad(&mut self) {
        self.visit_mut("", &mut |_, mut p| match p.grad.as_slice_memory_order_mut() {
            Some(g) => crate::parallel::fill(g, T::zero()),
            None => p.grad.fill(T::zero()),
        });
    }

    /// Total number of trainable scalars.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit("", &mut |_, v| n += v.len());
        n
    }

    /// Names and shapes, in walk order.
    fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, v| {
            out.push((name.to_string(), v.shape().to_vec()))
        });
        out
    }
}

/// Sum of squared gradients over all parameters (for clipping by global norm).
pub fn grad_norm_sq<T: Scalar, M: Params<T> + ?Sized>(model: &mut M) -> f64 {
    let mut s = 0.0;
    model.visit_mut("", &mut |_, p| {
        s += p.grad.iter().map(|g| g.f64() * g.f64()).sum::<f64>()
    });
    s
}
