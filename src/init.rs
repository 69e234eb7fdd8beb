//! Parameter initialisation (BERT's: normal with std 0.02 for weights, zeros for biases).

use crate::scalar::Scalar;
use ndarray::{Array, Dimension, ShapeBuilder};
use rand::Rng;

/// A tensor of normal samples with mean 0 and standard deviation `std` (Box–Muller). A `std` of
/// 0 gives zeros with no draw and no write (a large tensor's fresh pages stay untouched: a model
/// built to be filled from a file holds no memory for a tensor until it is read).
pub fn normal<T: Scalar, D: Dimension, Sh: ShapeBuilder<Dim = D>>(
    shape: Sh,
    std: f64,
    rng: &mut impl Rng,
) -> Array<T, D> {
    if std == 0.0 {
        return Array::zeros(shape);
    }
    Array::from_shape_simple_fn(shape, || {
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        T::c(std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos())
    })
}

/// LeCun normal's standard deviation for a layer with `fan_in` inputs: `1/√fan_in`, which keeps
/// the output's variance equal to the input's.
pub fn lecun_std(fan_in: usize) -> f64 {
    1.0 / (fan_in as f64).sqrt()
}
