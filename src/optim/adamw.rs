//! AdamW with decoupled weight decay and bias correction, exactly as `torch.optim.AdamW`:
//!
//! ```text
//! p ← p (1 - lr·wd)                     (only for parameters the decay predicate selects)
//! m ← m + (1 - β1)(g - m);  v ← β2 v + (1 - β2) g²
//! p ← p - lr/(1 - β1^t) · m / (√v / √(1 - β2^t) + ε)
//! ```
//!
//! State (m, v, step) is kept per parameter in the model's walk order, with names checked at
//! every step. [`AdamW::state_tensors`] / [`AdamW::load_state`] expose it as named tensors
//! (`<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.step`) so a trainer can save and resume.

use crate::param::Params;
use crate::scalar::Scalar;
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use rayon::prelude::*;
use std::collections::HashMap;

/// Tensors of at least this many elements are updated in parallel chunks of this size.
const PAR_CHUNK: usize = 1 << 12;

/// Hyper-parameters (torch defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Base learning rate (default 1e-3); each step takes the schedule's rate instead.
    pub lr: f64,
    /// Decay rate of the first moment `m` (default 0.9).
    pub beta1: f64,
    /// Decay rate of the second moment `v` (default 0.999).
    pub beta2: f64,
    /// Added to the bias-corrected `√v` in the denominator (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay `wd`, applied as `p ← p (1 - lr·wd)` (default 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// Why the optimizer state does not fit the model.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// At a step, the model has a different number of parameters than the state.
    #[error("optimizer state is for {expected} parameters, the model has {found}")]
    Count {
        /// Parameters the state holds moments for.
        expected: usize,
        /// Parameters the model has.
        found: usize,
    },
    /// At a step, a parameter's name differs from the one its state was made for.
    #[error("parameter {index}: optimizer state is for `{expected}`, the model has `{found}`")]
    Name {
        /// Position of the parameter in the model's walk order.
        index: usize,
        /// The name the state was made for.
        expected: String,
        /// The model's name at that position.
        found: String,
    },
    /// A shape disagrees: at a step, a parameter's with its state's; in [`AdamW::load_state`], a
    /// saved tensor's with its parameter's.
    #[error("parameter `{name}`: optimizer state has shape {expected:?}, the model {found:?}")]
    Shape {
        /// The parameter (in `load_state`, the tensor, e.g. `<param>.exp_avg`).
        name: String,
        /// At a step, the state's shape; in `load_state`, the shape the parameter needs.
        expected: Vec<usize>,
        /// At a step, the parameter's shape; in `load_state`, the saved tensor's.
        found: Vec<usize>,
    },
    /// [`AdamW::load_state`] found no tensor of this name (e.g. `<param>.exp_avg`).
    #[error("optimizer state tensor `{0}` is missing")]
    Missing(String),
}

/// The default decay predicate: everything except biases and LayerNorm parameters.
pub fn default_decay(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm") || name.contains("layer_norm"))
}

/// Moments of one parameter, in the parameter's memory order.
#[derive(Clone, Debug)]
struct Moments<T> {
    name: String,
    shape: Vec<usize>,
    /// The parameter is stored column-major (e.g. a Linear weight), so `m` and `v` are too.
    reversed: bool,
    m: Vec<T>,
    v: Vec<T>,
    step: u64,
}

/// True for a parameter stored in column-major order (its reversed-axes view is row-major).
fn is_reversed<T>(a: &ArrayViewD<'_, T>) -> bool {
    a.ndim() > 1 && !a.is_standard_layout() && a.t().is_standard_layout()
}

/// [`is_reversed`] for every parameter, in walk order.
fn layouts<T: Scalar, M: Params<T> + ?Sized>(model: &M) -> Vec<bool> {
    let mut out = Vec::new();
    model.visit("", &mut |_, v| out.push(is_reversed(&v)));
    out
}

/// The AdamW optimizer.
#[derive(Clone, Debug)]
pub struct AdamW<T> {
    /// Its hyper-parameters.
    pub config: AdamWConfig,
    /// True for parameters that get weight decay.
    pub decay: fn(&str) -> bool,
    state: Vec<Moments<T>>,
}

impl<T: Scalar> AdamW<T> {
    /// An optimizer with [`default_decay`]; state is created at the first step.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            decay: default_decay,
            state: Vec::new(),
        }
    }

    /// Replaces the decay predicate.
    pub fn with_decay(mut self, decay: fn(&str) -> bool) -> Self {
        self.decay = decay;
        self
    }

    /// Updates taken so far (that of the first parameter; all advance together).
    pub fn steps(&self) -> u64 {
        self.state.first().map_or(0, |s| s.step)
    }

    /// One update of every parameter with learning rate `lr` (the schedule's value; the
    /// config's `lr` is the base). The model's gradients are left as they are.
    pub fn step<M: Params<T> + ?Sized>(&mut self, model: &mut M, lr: f64) -> Result<(), OptimError> {
        self.step_scaled(model, lr, &|_| 1.0)
    }

    /// [`AdamW::step`] with the learning rate of parameter `name` multiplied by `scale(name)`
    /// (parameter groups: weight decay and step both use the scaled rate, as in PyTorch).
    pub fn step_scaled<M: Params<T> + ?Sized>(
        &mut self,
        model: &mut M,
        base_lr: f64,
        scale: &dyn Fn(&str) -> f64,
    ) -> Result<(), OptimError> {
        if self.state.is_empty() {
            self.state = fresh_state(&*model);
        }
        self.check(&*model)?;
        let cfg = self.config;
        let decay = self.decay;
        let mut moments = self.state.iter_mut();
        model.visit_mut("", &mut |name, mut p| {
            let st = moments.next().expect("checked above");
            assert!(
                is_reversed(&p.value.view()) == st.reversed && is_reversed(&p.grad.view()) == st.reversed,
                "AdamW: `{name}` changed memory order, or its gradient's differs from its value's"
            );
            st.step += 1;
            let t = st.step as i32;
            let lr = base_lr * scale(name);
            let coef = Coefs {
                keep: T::c(if decay(name) {
                    1.0 - lr * cfg.weight_decay
                } else {
                    1.0
                }),
                w1: T::c(1.0 - cfg.beta1),
                b2: T::c(cfg.beta2),
                w2: T::c(1.0 - cfg.beta2),
                step_size: T::c(lr / (1.0 - cfg.beta1.powi(t))),
                bc2_sqrt: T::c((1.0 - cfg.beta2.powi(t)).sqrt()),
                eps: T::c(cfg.eps),
            };
            let g = p
                .grad
                .as_slice_memory_order()
                .expect("parameter gradients are contiguous");
            let x = p
                .value
                .as_slice_memory_order_mut()
                .expect("parameters are contiguous");
            if x.len() >= 2 * PAR_CHUNK {
                x.par_chunks_mut(PAR_CHUNK)
                    .zip(g.par_chunks(PAR_CHUNK))
                    .zip(st.m.par_chunks_mut(PAR_CHUNK))
                    .zip(st.v.par_chunks_mut(PAR_CHUNK))
                    .for_each(|(((x, g), m), v)| coef.update(x, g, m, v));
            } else {
                coef.update(x, g, &mut st.m, &mut st.v);
            }
        });
        Ok(())
    }

    /// Checks that the state matches the model's parameters (names and shapes, in order).
    fn check<M: Params<T> + ?Sized>(&self, model: &M) -> Result<(), OptimError> {
        let shapes = model.param_shapes();
        if shapes.len() != self.state.len() {
            return Err(OptimError::Count {
                expected: self.state.len(),
                found: shapes.len(),
            });
        }
        for (index, ((name, shape), st)) in shapes.into_iter().zip(&self.state).enumerate() {
            if name != st.name {
                return Err(OptimError::Name {
                    index,
                    expected: st.name.clone(),
                    found: name,
                });
            }
            if shape != st.shape {
                return Err(OptimError::Shape {
                    name,
                    expected: st.shape.clone(),
                    found: shape,
                });
            }
        }
        Ok(())
    }

    /// The state as named tensors: `<param>.exp_avg`, `<param>.exp_avg_sq` (the parameter's
    /// shape) and `<param>.step` (`[1]`, exact up to 2^24 steps in f32), in walk order.
    pub fn state_tensors(&self) -> Vec<(String, ArrayD<T>)> {
        let mut out = Vec::with_capacity(3 * self.state.len());
        for st in &self.state {
            // Memory order back to the logical (row-major) layout.
            let arr = |v: &Vec<T>| {
                if st.reversed {
                    let rev: Vec<usize> = st.shape.iter().rev().copied().collect();
                    let a = ArrayD::from_shape_vec(IxDyn(&rev), v.clone()).unwrap();
                    a.reversed_axes().as_standard_layout().into_owned()
                } else {
                    ArrayD::from_shape_vec(IxDyn(&st.shape), v.clone()).unwrap()
                }
            };
            out.push((format!("{}.exp_avg", st.name), arr(&st.m)));
            out.push((format!("{}.exp_avg_sq", st.name), arr(&st.v)));
            out.push((
                format!("{}.step", st.name),
                ArrayD::from_elem(IxDyn(&[1]), T::c(st.step as f64)),
            ));
        }
        out
    }

    /// Restores the state saved by [`Self::state_tensors`] for `model`'s parameters (looked up
    /// by name, shapes checked). On error the current state is left unchanged.
    pub fn load_state<M: Params<T> + ?Sized>(
        &mut self,
        model: &M,
        tensors: &HashMap<String, ArrayD<T>>,
    ) -> Result<(), OptimError> {
        let mut state = Vec::new();
        for ((name, shape), reversed) in model.param_shapes().into_iter().zip(layouts(model)) {
            let get = |suffix: &str, want: &[usize]| -> Result<Vec<T>, OptimError> {
                let key = format!("{name}.{suffix}");
                let a = tensors
                    .get(&key)
                    .ok_or_else(|| OptimError::Missing(key.clone()))?;
                if a.shape() != want {
                    return Err(OptimError::Shape {
                        name: key,
                        expected: want.to_vec(),
                        found: a.shape().to_vec(),
                    });
                }
                // In the parameter's memory order.
                Ok(if reversed {
                    a.t().iter().copied().collect()
                } else {
                    a.iter().copied().collect()
                })
            };
            let m = get("exp_avg", &shape)?;
            let v = get("exp_avg_sq", &shape)?;
            let step = get("step", &[1])?[0].f64().round() as u64;
            state.push(Moments {
                name,
                shape,
                reversed,
                m,
                v,
                step,
            });
        }
        self.state = state;
        Ok(())
    }
}

fn fresh_state<T: Scalar, M: Params<T> + ?Sized>(model: &M) -> Vec<Moments<T>> {
    model
        .param_shapes()
        .into_iter()
        .zip(layouts(model))
        .map(|((name, shape), reversed)| {
            let len = shape.iter().product();
            Moments {
                name,
                shape,
                reversed,
                m: vec![T::zero(); len],
                v: vec![T::zero(); len],
                step: 0,
            }
        })
        .collect()
}

/// Per-tensor coefficients of one update.
#[derive(Clone, Copy)]
struct Coefs<T> {
    keep: T,
    w1: T,
    b2: T,
    w2: T,
    step_size: T,
    bc2_sqrt: T,
    eps: T,
}

impl<T: Scalar> Coefs<T> {
    /// The fused update of one chunk (one pass over p, g, m, v).
    #[inline]
    fn update(&self, x: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
        for (((x, &g), m), v) in x.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *x *= self.keep;
            *m += self.w1 * (g - *m);
            *v = *v * self.b2 + g * g * self.w2;
            let denom = v.sqrt() / self.bc2_sqrt + self.eps;
            *x -= self.step_size * (*m / denom);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Linear;
    use ndarray::{array, Array2};

    #[test]
    fn first_step_by_hand() {
        // At t = 1, m̂ = g and v̂ = g², so the step is lr·g/(|g| + ε) after decay.
        let mut l = Linear::<f64>::from_arrays(array![[1.0, -2.0]], array![0.5]);
        l.weight.grad = array![[0.1, -4.0]];
        l.bias.grad = array![2.0];
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            ..Default::default()
        };
        let mut opt = AdamW::new(cfg);
        opt.step(&mut l, cfg.lr).unwrap();
        let w = |p: f64, g: f64| p * (1.0 - 0.1 * 0.5) - 0.1 * g / (g.abs() + 1e-8);
        assert!((l.weight.value[[0, 0]] - w(1.0, 0.1)).abs() < 1e-12);
        assert!((l.weight.value[[0, 1]] - w(-2.0, -4.0)).abs() < 1e-12);
        // bias: no decay by default
        assert!((l.bias.value[0] - (0.5 - 0.1 * 2.0 / (2.0 + 1e-8))).abs() < 1e-12);
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn state_of_a_column_major_weight_is_saved_in_logical_layout() {
        let mut l = Linear::<f64>::from_arrays(Array2::zeros((2, 3)), array![0.0, 0.0]);
        let g = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        l.weight.grad.assign(&g);
        let mut opt = AdamW::new(AdamWConfig::default());
        opt.step(&mut l, 1e-3).unwrap();
        let saved: HashMap<_, _> = opt.state_tensors().into_iter().collect();
        // m = (1 - β1) g after one step.
        let m = &saved["weight.exp_avg"];
        assert_eq!(m.shape(), &[2, 3]);
        assert!(m.iter().zip(g.iter()).all(|(m, g)| (m - 0.1 * g).abs() < 1e-12));
        let mut opt2 = AdamW::new(AdamWConfig::default());
        opt2.load_state(&l, &saved).unwrap();
        let again: HashMap<_, _> = opt2.state_tensors().into_iter().collect();
        assert_eq!(again["weight.exp_avg"], *m);
    }

    #[test]
    fn state_round_trips_and_names_are_checked() {
        let mut a = Linear::<f64>::from_arrays(array![[1.0, -2.0], [0.3, 0.2]], array![0.5, 0.1]);
        let mut opt = AdamW::new(AdamWConfig::default());
        for k in 0..3 {
            a.weight.grad.fill(0.1 * k as f64 - 0.05);
            a.bias.grad.fill(0.2);
            opt.step(&mut a, 1e-2).unwrap();
        }
        let saved: HashMap<_, _> = opt.state_tensors().into_iter().collect();
        assert_eq!(saved.len(), 6);
        let mut b = a.clone();
        let mut opt2 = AdamW::new(AdamWConfig::default());
        opt2.load_state(&b, &saved).unwrap();
        opt.step(&mut a, 1e-2).unwrap();
        opt2.step(&mut b, 1e-2).unwrap();
        assert_eq!(a.weight.value, b.weight.value);
        assert_eq!(opt2.steps(), 4);
        // A model with other parameters is refused.
        let mut other = Linear::<f64>::from_arrays(array![[1.0, 2.0, 3.0]], array![0.0]);
        assert!(matches!(
            opt.step(&mut other, 1e-2),
            Err(OptimError::Shape { .. })
        ));
        let mut missing = saved.clone();
        missing.remove("bias.exp_avg");
        assert!(matches!(
            opt2.load_state(&b, &missing),
            Err(OptimError::Missing(_))
        ));
    }

    #[test]
    fn decay_predicate() {
        assert!(default_decay("encoder.layer.0.attention.self.query.weight"));
        assert!(!default_decay("encoder.layer.0.attention.self.query.bias"));
        assert!(!default_decay("embeddings.LayerNorm.weight"));
        assert!(!default_decay("head.layer_norm.weight"));
    }

    #[test]
    fn parallel_chunks_match_serial() {
        let n = 3 * PAR_CHUNK + 17;
        let x0: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let g: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
        let mut big = Linear::<f64>::from_arrays(
            ndarray::Array2::from_shape_vec((1, n), x0.clone()).unwrap(),
            array![0.0],
        );
        big.weight.grad = ndarray::Array2::from_shape_vec((1, n), g.clone()).unwrap();
        let mut opt = AdamW::new(AdamWConfig::default());
        let pool = crate::matmul::thread_pool(2).unwrap();
        pool.install(|| opt.step(&mut big, 1e-2)).unwrap();
        let coef = Coefs {
            keep: 1.0 - 1e-2 * 0.01,
            w1: 1.0 - 0.9,
            b2: 0.999,
            w2: 1.0 - 0.999,
            step_size: 1e-2 / (1.0 - 0.9),
            bc2_sqrt: (1.0f64 - 0.999).sqrt(),
            eps: 1e-8,
        };
        let (mut x, mut m, mut v) = (x0, vec![0.0; n], vec![0.0; n]);
        coef.update(&mut x, &g, &mut m, &mut v);
        assert!(
            big.weight.value.iter().zip(&x).all(|(a, b)| a == b),
            "chunked update differs"
        );
    }
}
