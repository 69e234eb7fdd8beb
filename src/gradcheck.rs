//! Finite-difference gradient checks: central differences in f64 against an analytic backward.
//!
//! `rel = |analytic - numeric| / max(|analytic|, |numeric|, floor)`; the worst over every checked
//! element is reported. Large tensors are checked on a seeded random subset of elements.

use crate::param::Params;
use ndarray::{Array, ArrayD, Dimension};
use rand::seq::index::sample;
use rand::SeedableRng;
use std::collections::BTreeMap;

/// How a check is run.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Step of the central difference, relative to max(1, |x|).
    pub eps: f64,
    /// Denominator floor, so that near-zero gradients are compared absolutely.
    pub floor: f64,
    /// At most this many elements of one tensor are checked (a seeded random subset).
    pub max_elems: usize,
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            eps: 1e-5,
            floor: 1e-5,
            max_elems: 200,
            seed: 7,
        }
    }
}

/// The outcome of a check: the worst relative error and where it was.
#[derive(Clone, Debug, Default)]
pub struct GradReport {
    pub worst: f64,
    pub worst_at: String,
    pub analytic: f64,
    pub numeric: f64,
    pub checked: usize,
}

impl GradReport {
    fn record(&mut self, at: impl FnOnce() -> String, analytic: f64, numeric: f64, floor: f64) {
        let rel = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(floor);
        self.checked += 1;
        if rel > self.worst || !rel.is_finite() {
            self.worst = if rel.is_finite() { rel } else { f64::INFINITY };
            self.worst_at = at();
            self.analytic = analytic;
            self.numeric = numeric;
        }
    }

    /// Panics with a readable message when the worst error exceeds `tol`.
    pub fn assert_below(&self, tol: f64) {
        assert!(self.checked > 0, "gradient check checked nothing");
        assert!(
            self.worst <= tol,
            "gradient check failed: rel error {:.3e} > {tol:.0e} at {} (analytic {:.10e}, numeric {:.10e}; {} elements checked)",
            self.worst,
            self.worst_at,
            self.analytic,
            self.numeric,
            self.checked
        );
    }
}

impl GradCheck {
    fn indices(&self, len: usize, salt: u64) -> Vec<usize> {
        if len <= self.max_elems {
            (0..len).collect()
        } else {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ salt.wrapping_mul(0x9e37_79b9));
            let mut v = sample(&mut rng, len, self.max_elems).into_vec();
            v.sort_unstable();
            v
        }
    }

    fn central(&self, x0: f64, mut eval: impl FnMut(f64) -> f64) -> f64 {
        let h = self.eps * x0.abs().max(1.0);
        (eval(x0 + h) - eval(x0 - h)) / (2.0 * h)
    }

    /// Checks `analytic` = d loss / d x for an input tensor `x`; `loss(x)` evaluates the scalar.
    pub fn input<D: Dimension>(
        &self,
        name: &str,
        x: &Array<f64, D>,
        analytic: &Array<f64, D>,
        mut loss: impl FnMut(&Array<f64, D>) -> f64,
    ) -> GradReport {
        assert_eq!(
            x.shape(),
            analytic.shape(),
            "gradcheck {name}: gradient shape differs from input"
        );
        let mut report = GradReport::default();
        let mut xp = x.clone();
        let flat_analytic: Vec<f64> = analytic.iter().copied().collect();
        for idx in self.indices(x.len(), name.len() as u64) {
            let x0 = x.iter().nth(idx).copied().unwrap();
            let numeric = self.central(x0, |v| {
                *xp.iter_mut().nth(idx).unwrap() = v;
                let l = loss(&xp);
                *xp.iter_mut().nth(idx).unwrap() = x0;
                l
            });
            report.record(
                || format!("{name}[{idx}]"),
                flat_analytic[idx],
                numeric,
                self.floor,
            );
        }
        report
    }

    /// Checks every parameter of `model` against the gradients it currently holds (run forward
    /// and backward with zeroed gradients first); `loss(model)` evaluates the scalar.
    pub fn params<M: Params<f64> + ?Sized>(
        &self,
        model: &mut M,
        mut loss: impl FnMut(&M) -> f64,
    ) -> GradReport {
        let mut grads: BTreeMap<String, ArrayD<f64>> = BTreeMap::new();
        let mut order = Vec::new();
        model.visit_mut("", &mut |name, p| {
            grads.insert(name.to_string(), p.grad.to_owned());
            order.push(name.to_string());
        });
        let mut report = GradReport::default();
        for (salt, name) in order.iter().enumerate() {
            let analytic = &grads[name];
            for idx in self.indices(analytic.len(), salt as u64 + 1) {
                let x0 = get(model, name, idx);
                let numeric = self.central(x0, |v| {
                    set(model, name, idx, v);
                    let l = loss(model);
                    set(model, name, idx, x0);
                    l
                });
                let a = analytic.iter().nth(idx).copied().unwrap();
                report.record(|| format!("{name}[{idx}]"), a, numeric, self.floor);
            }
        }
        report
    }
}

fn get<M: Params<f64> + ?Sized>(model: &mut M, name: &str, idx: usize) -> f64 {
    let mut out = f64::NAN;
    model.visit_mut("", &mut |n, p| {
        if n == name {
            out = *p.value.iter().nth(idx).unwrap();
        }
    });
    out
}

fn set<M: Params<f64> + ?Sized>(model: &mut M, name: &str, idx: usize, v: f64) {
    model.visit_mut("", &mut |n, mut p| {
        if n == name {
            *p.value.iter_mut().nth(idx).unwrap() = v;
        }
    });
}

/// A fixed pseudo-random tensor with entries in [-1, 1) (deterministic test inputs).
pub fn fixed_random<D: Dimension>(shape: D, seed: u64) -> Array<f64, D> {
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Array::from_shape_simple_fn(shape, || rng.gen_range(-1.0..1.0))
}

/// `sum(out * proj)`: the scalar loss of a gradient check, whose gradient w.r.t. `out` is `proj`.
pub fn proj_loss<D: Dimension>(out: &Array<f64, D>, proj: &Array<f64, D>) -> f64 {
    (out * proj).sum()
}

#[cfg(test)]
mod tests {
    //! The harness is itself tested: planted bugs in a backward pass must be caught.
    use super::*;
    use ndarray::{Array1, Array2};

    /// f(x) = sum(proj * (A x + x∘x)), with gradient Aᵀ proj + 2 x∘proj.
    fn setup() -> (Array2<f64>, Array1<f64>, Array1<f64>) {
        let a = fixed_random(ndarray::Ix2(4, 4), 1);
        let x = fixed_random(ndarray::Ix1(4), 2);
        let p = fixed_random(ndarray::Ix1(4), 3);
        (a, x, p)
    }

    fn loss(a: &Array2<f64>, p: &Array1<f64>, x: &Array1<f64>) -> f64 {
        (p * &(a.dot(x) + x * x)).sum()
    }

    fn check(grad: Array1<f64>) -> GradReport {
        let (a, x, p) = setup();
        GradCheck::default().input("x", &x, &grad, |x| loss(&a, &p, x))
    }

    #[test]
    fn correct_backward_passes() {
        let (a, x, p) = setup();
        check(a.t().dot(&p) + 2.0 * &x * &p).assert_below(1e-6);
    }

    #[test]
    fn scaled_backward_is_caught() {
        let (a, x, p) = setup();
        assert!(check((a.t().dot(&p) + 2.0 * &x * &p) * 1.001).worst > 1e-6);
    }

    #[test]
    fn transposed_backward_is_caught() {
        let (a, x, p) = setup();
        assert!(check(a.dot(&p) + 2.0 * &x * &p).worst > 1e-6);
    }

    #[test]
    fn missing_term_is_caught() {
        let (a, _x, p) = setup();
        assert!(check(a.t().dot(&p)).worst > 1e-6);
    }

    #[test]
    #[should_panic(expected = "gradient check failed")]
    fn assert_below_panics_on_failure() {
        let (a, _x, p) = setup();
        check(a.t().dot(&p)).assert_below(1e-6);
    }
}
