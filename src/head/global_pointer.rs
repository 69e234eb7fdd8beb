//! GlobalPointer (method.md §2): one dense layer `H -> C·2d`, per type `[q (d) | k (d)]`, and
//! `s[a](i, j) = (R_i q[i,a])ᵀ (R_j k[j,a]) / √d` with excluded spans set to [`MASKED_SCORE`].
//!
//! Parameter names: `dense.weight` `[C·2d, H]` and `dense.bias` `[C·2d]` (PyTorch layout,
//! `y = h Wᵀ + b`; columns `[a·2d, a·2d+d)` are q of type a, `[a·2d+d, (a+1)·2d)` its k).
//!
//! [`MASKED_SCORE`]: crate::span::MASKED_SCORE

use super::buffer::Buffer;
use super::config::{parse_settings, HeadConfig, HeadError, HeadOptions, Settings};
use super::kind::{HeadKind, HeadShape};
use super::score_head::{batch_size, mask_invalid, rotate_rows};
use super::score_head::{ScoreCache, ScoreHead, Scored};
use crate::matmul::gemm_batched;
use crate::nn::Linear;
use crate::param::{join, ParamMut, Params};
use crate::scalar::Scalar;
use crate::span::Bounds;
use ndarray::{s, Array2, ArrayView2, ArrayView4, ArrayViewD, Axis};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Settings of both GlobalPointer heads (config.json: `{"kind": "gp" | "egp", "head_size", "rope"}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalPointerConfig {
    /// d, the size of each q and k vector (64 by default).
    pub head_size: usize,
    /// RoPE on q and k (on by default; off only for the ablation).
    pub rope: bool,
}

impl GlobalPointerConfig {
    /// `--head-size` and `--no-rope`.
    pub fn from_options(opts: &HeadOptions) -> Self {
        GlobalPointerConfig {
            head_size: opts.head_size,
            rope: opts.rope,
        }
    }

    /// The settings of head `kind` read and checked: a positive head size, even with RoPE.
    pub fn checked(kind: &str, settings: &Settings) -> Result<Self, HeadError> {
        let c: GlobalPointerConfig = parse_settings(kind, settings)?;
        if c.head_size == 0 {
            return Err(HeadError::Field {
                field: "head_size",
                value: "0".into(),
                reason: "must be positive",
            });
        }
        if c.rope && !c.head_size.is_multiple_of(2) {
            return Err(HeadError::Field {
                field: "head_size",
                value: c.head_size.to_string(),
                reason: "must be even with RoPE",
            });
        }
        Ok(c)
    }

    /// As config.json keeps it.
    pub fn settings(&self) -> Settings {
        HeadConfig::new("", self).settings
    }
}

/// The registry's entry: `--head gp`, GlobalPointer (method.md §2).
pub fn kind<T: Scalar>() -> HeadKind<T> {
    HeadKind {
        name: "gp",
        help: "GlobalPointer: a q·k score per type and span, with RoPE (method.md §2)",
        nested: true,
        settings: |opts| GlobalPointerConfig::from_options(opts).settings(),
        // the dense layer H -> C·2d
        check: |settings, shape| {
            let c = GlobalPointerConfig::checked("gp", settings)?;
            Ok(shape.hidden as u128 * shape.types as u128 * 2 * c.head_size as u128)
        },
        build: |settings, shape: HeadShape, mut rng| {
            let c = GlobalPointerConfig::checked("gp", settings)?;
            let head = GlobalPointer::new(
                shape.hidden,
                shape.types,
                c.head_size,
                c.rope,
                shape.std,
                &mut rng,
            );
            Ok(Box::new(Scored(head)))
        },
    }
}

/// The plain GlobalPointer head.
#[derive(Clone, Debug)]
pub struct GlobalPointer<T> {
    /// `H -> C·2d`.
    pub dense: Linear<T>,
    /// Number of entity types `C`.
    pub num_types: usize,
    /// Width `d` of each type's q and k.
    pub head_size: usize,
    /// RoPE on q and k (on by default; off only for the ablation).
    pub rope: bool,
}

impl<T: Scalar> GlobalPointer<T> {
    /// A fresh head with BERT initialisation (weights N(0, std²), bias 0).
    pub fn new(
        hidden: usize,
        num_types: usize,
        head_size: usize,
        rope: bool,
        std: f64,
        rng: &mut impl Rng,
    ) -> Self {
        let dense = Linear::new(hidden, num_types * 2 * head_size, std, rng);
        GlobalPointer::from_dense(dense, num_types, head_size, rope)
    }

    /// Wraps a dense layer of output size `C·2d`.
    pub fn from_dense(dense: Linear<T>, num_types: usize, head_size: usize, rope: bool) -> Self {
        assert_eq!(
            dense.out_features(),
            num_types * 2 * head_size,
            "GlobalPointer: dense output must be C*2d"
        );
        assert!(
            !rope || head_size.is_multiple_of(2),
            "GlobalPointer: RoPE needs an even head size"
        );
        GlobalPointer {
            dense,
            num_types,
            head_size,
            rope,
        }
    }
}

impl<T: Scalar> ScoreHead<T> for GlobalPointer<T> {
    type Cache = ScoreCache<T>;

    fn head_config(&self) -> HeadConfig {
        HeadConfig::new(
            "gp",
            &GlobalPointerConfig {
                head_size: self.head_size,
                rope: self.rope,
            },
        )
    }

    fn types(&self) -> usize {
        self.num_types
    }

    fn prepack(&mut self) {
        self.dense.prepack();
    }

    /// h `[B*n, H]` -> scores `[B, C, n, n]` in `scores` (grown if needed).
    fn forward_scores(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        cache: &mut ScoreCache<T>,
        scores: &mut Buffer<T>,
    ) {
        let b = batch_size(h, n, &bounds);
        let (c, d) = (self.num_types, self.head_size);
        cache.batch = (b, n);
        // proj = h Wᵀ + b: [B*n, C*2d], then q and k rotated in place.
        cache.proj.reshape(&[b * n, c * 2 * d]);
        self.dense.forward_into(h, cache.proj.view2_mut());
        if self.rope {
            cache.rope.ensure(d, n);
            rotate_rows(&cache.rope, cache.proj.as_slice_mut(), c * 2 * d, n, false);
        }
        // s[b, a] = q[b, a] k[b, a]ᵀ / √d over permuted views of proj: [B, n, C, 2d] -> [B, C, n, d].
        let y = cache
            .proj
            .view2()
            .into_shape_with_order((b, n, c, 2 * d))
            .unwrap();
        let q = y.slice(s![.., .., .., ..d]).permuted_axes([0, 2, 1, 3]);
        let kt = y.slice(s![.., .., .., d..]).permuted_axes([0, 2, 3, 1]);
        scores.reshape(&[b, c, n, n]);
        let alpha = T::c(1.0 / (d as f64).sqrt());
        gemm_batched(alpha, q, kt, T::zero(), scores.view4_mut());
        mask_invalid(scores.view4_mut(), bounds);
    }

    /// dscores `[B, C, n, n]` (zero on excluded spans) -> dh `[B*n, H]`; accumulates dense grads.
    /// `h` and `cache` must be those of the matching forward.
    fn backward_scores(
        &mut self,
        h: ArrayView2<T>,
        cache: &mut ScoreCache<T>,
        dscores: ArrayView4<T>,
    ) -> Array2<T> {
        let (b, n) = cache.batch;
        let (c, d) = (self.num_types, self.head_size);
        assert_eq!(
            dscores.dim(),
            (b, c, n, n),
            "GlobalPointer backward: dscores shape"
        );
        let alpha = T::c(1.0 / (d as f64).sqrt());
        let y = cache
            .proj
            .view2()
            .into_shape_with_order((b, n, c, 2 * d))
            .unwrap();
        let q = y.slice(s![.., .., .., ..d]).permuted_axes([0, 2, 1, 3]);
        let k = y.slice(s![.., .., .., d..]).permuted_axes([0, 2, 1, 3]);
        cache.dproj.reshape(&[b * n, c * 2 * d]);
        {
            let dy = cache
                .dproj
                .view2_mut()
                .into_shape_with_order((b, n, c, 2 * d))
                .unwrap();
            let (dq, dk) = dy.split_at(Axis(3), d);
            // dq = dS k / √d ; dk = dSᵀ q / √d  (per text and type)
            gemm_batched(alpha, dscores, k, T::zero(), dq.permuted_axes([0, 2, 1, 3]));
            let dst = dscores.permuted_axes([0, 1, 3, 2]);
            gemm_batched(alpha, dst, q, T::zero(), dk.permuted_axes([0, 2, 1, 3]));
        }
        if self.rope {
            // d(pre-rotation) = R_iᵀ d(rotated)
            rotate_rows(&cache.rope, cache.dproj.as_slice_mut(), c * 2 * d, n, true);
        }
        self.dense.backward(h, cache.dproj.view2())
    }
}

impl<T: Scalar> Params<T> for GlobalPointer<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.dense.visit(&join(prefix, "dense"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.dense.visit_mut(&join(prefix, "dense"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::fixed_random;
    use crate::head::RopeTable;
    use crate::span::MASKED_SCORE;
    use ndarray::{Ix1, Ix2};

    #[test]
    fn forward_matches_the_formula_span_by_span() {
        let (c, d, hid, n) = (2, 4, 3, 5);
        let gp = GlobalPointer::from_dense(
            Linear::from_arrays(
                fixed_random(Ix2(c * 2 * d, hid), 1),
                fixed_random(Ix1(c * 2 * d), 2),
            ),
            c,
            d,
            true,
        );
        let h = fixed_random(Ix2(2 * n, hid), 3);
        let valid = ndarray::array![[true, true, true, true, true], [false, true, true, true, false]];
        let (mut cache, mut scores) = (ScoreCache::new(), Buffer::new());
        gp.forward_scores(h.view(), n, Bounds::same(valid.view()), &mut cache, &mut scores);
        let y = gp.dense.forward(h.view());
        let mut rope = RopeTable::<f64>::new(d);
        rope.ensure(d, n);
        for b in 0..2 {
            for a in 0..c {
                for i in 0..n {
                    for j in 0..n {
                        let mut q: Vec<f64> = (0..d).map(|m| y[[b * n + i, a * 2 * d + m]]).collect();
                        let mut k: Vec<f64> = (0..d).map(|m| y[[b * n + j, a * 2 * d + d + m]]).collect();
                        rope.rotate(&mut q, i);
                        rope.rotate(&mut k, j);
                        let want = if i <= j && valid[[b, i]] && valid[[b, j]] {
                            q.iter().zip(&k).map(|(x, y)| x * y).sum::<f64>() / 2.0
                        } else {
                            MASKED_SCORE
                        };
                        let got = scores.view4()[[b, a, i, j]];
                        assert!((got - want).abs() < 1e-13, "[{b},{a},{i},{j}] {got} vs {want}");
                    }
                }
            }
        }
        assert_eq!(gp.param_shapes()[0], ("dense.weight".to_string(), vec![16, 3]));
    }
}
