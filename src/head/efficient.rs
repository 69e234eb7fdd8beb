//! Efficient GlobalPointer (method.md §6): one projection shared by all types plus a cheap
//! per-type boundary bias.
//!
//! ```text
//! u_i = W_p h_i + b_p                (H -> 2d)
//! q_i = u_i[0::2], k_i = u_i[1::2]   (both rotated by RoPE)
//! c_i = W_c u_i + b_c                (2d -> 2C)
//! s[a](i, j) = (R_i q_i)ᵀ (R_j k_j) / √d + (c_i[2a+1] + c_j[2a]) / 2
//! ```
//!
//! Parameter names: `p_dense.weight` `[2d, H]`, `p_dense.bias` `[2d]`, `c_dense.weight` `[2C, 2d]`,
//! `c_dense.bias` `[2C]`.

use super::buffer::Buffer;
use super::config::HeadConfig;
use super::global_pointer::GlobalPointerConfig;
use super::kind::{HeadKind, HeadShape};
use super::score_head::{batch_size, rotate_rows};
use super::score_head::{ScoreCache, ScoreHead, Scored};
use crate::init::lecun_std;
use crate::matmul::gemm_batched;
use crate::nn::Linear;
use crate::param::{join, ParamMut, Params};
use crate::scalar::Scalar;
use crate::span::{span_is_valid, Bounds, MASKED_SCORE};
use ndarray::{s, Array2, ArrayView2, ArrayView4, ArrayViewD, Axis};
use rand::Rng;
use rayon::prelude::*;

/// The Efficient GlobalPointer head.
#[derive(Clone, Debug)]
pub struct EfficientGlobalPointer<T> {
    /// `H -> 2d`, shared by all types.
    pub p_dense: Linear<T>,
    /// `2d -> 2C`: per type, `[end score, start score]`.
    pub c_dense: Linear<T>,
    /// Number of entity types `C`.
    pub num_types: usize,
    /// Width `d` of each of q and k.
    pub head_size: usize,
    /// RoPE on q and k (on by default; off only for the ablation).
    pub rope: bool,
}

/// The registry's entry: `--head egp`, Efficient GlobalPointer (method.md §6).
pub fn kind<T: Scalar>() -> HeadKind<T> {
    HeadKind {
        name: "egp",
        help: "Efficient GlobalPointer: one shared q·k plus per-type boundary scores (method.md §6)",
        nested: true,
        settings: |opts| GlobalPointerConfig::from_options(opts).settings(),
        // p_dense H -> 2d and c_dense 2d -> 2C
        check: |settings, shape| {
            let d = GlobalPointerConfig::checked("egp", settings)?.head_size as u128;
            Ok(shape.hidden as u128 * 2 * d + 2 * d * 2 * shape.types as u128)
        },
        build: |settings, shape: HeadShape, mut rng| {
            let c = GlobalPointerConfig::checked("egp", settings)?;
            let head = EfficientGlobalPointer::new(
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

impl<T: Scalar> EfficientGlobalPointer<T> {
    /// A fresh head: `p_dense` with BERT initialisation (weights N(0, std²)), `c_dense` with
    /// LeCun normal (weights N(0, 1/2d), as the reference implementation), biases 0.
    ///
    /// Why `c_dense` differs: the per-type scores are all it has to tell types apart, and at
    /// std 0.02 they start near zero for every type and their gradient reaches `u` scaled by
    /// that same small weight.
    pub fn new(
        hidden: usize,
        num_types: usize,
        head_size: usize,
        rope: bool,
        std: f64,
        rng: &mut impl Rng,
    ) -> Self {
        let p = Linear::new(hidden, 2 * head_size, std, rng);
        let c = Linear::new(2 * head_size, 2 * num_types, lecun_std(2 * head_size), rng);
        EfficientGlobalPointer::from_dense(p, c, rope)
    }

    /// Wraps the two dense layers (`H -> 2d` and `2d -> 2C`).
    pub fn from_dense(p_dense: Linear<T>, c_dense: Linear<T>, rope: bool) -> Self {
        let two_d = p_dense.out_features();
        assert!(
            two_d.is_multiple_of(2),
            "EfficientGlobalPointer: p_dense output must be 2d"
        );
        assert_eq!(
            c_dense.in_features(),
            two_d,
            "EfficientGlobalPointer: c_dense input must be 2d"
        );
        assert!(
            c_dense.out_features().is_multiple_of(2),
            "EfficientGlobalPointer: c_dense output must be 2C"
        );
        let head_size = two_d / 2;
        assert!(
            !rope || head_size.is_multiple_of(2),
            "EfficientGlobalPointer: RoPE needs an even head size"
        );
        EfficientGlobalPointer {
            num_types: c_dense.out_features() / 2,
            p_dense,
            c_dense,
            head_size,
            rope,
        }
    }
}

impl<T: Scalar> ScoreHead<T> for EfficientGlobalPointer<T> {
    type Cache = ScoreCache<T>;

    fn head_config(&self) -> HeadConfig {
        HeadConfig::new(
            "egp",
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
        self.p_dense.prepack();
        self.c_dense.prepack();
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
        // u = h W_pᵀ + b_p: [B*n, 2d]; c = u W_cᵀ + b_c: [B*n, 2C]
        cache.proj.reshape(&[b * n, 2 * d]);
        self.p_dense.forward_into(h, cache.proj.view2_mut());
        cache.bias.reshape(&[b * n, 2 * c]);
        self.c_dense
            .forward_into(cache.proj.view2(), cache.bias.view2_mut());
        // qk = [u[0::2] | u[1::2]], rotated.
        cache.qk.reshape(&[b * n, 2 * d]);
        deinterleave(cache.proj.as_slice(), cache.qk.as_slice_mut(), d);
        if self.rope {
            cache.rope.ensure(d, n);
            rotate_rows(&cache.rope, cache.qk.as_slice_mut(), 2 * d, n, false);
        }
        // The type-independent product once per text, into type 0: [B, 1, n, n].
        scores.reshape(&[b, c, n, n]);
        let qk = cache.qk.view2().into_shape_with_order((b, n, 1, 2 * d)).unwrap();
        let q = qk.slice(s![.., .., .., ..d]).permuted_axes([0, 2, 1, 3]);
        let kt = qk.slice(s![.., .., .., d..]).permuted_axes([0, 2, 3, 1]);
        let alpha = T::c(1.0 / (d as f64).sqrt());
        let mut sv = scores.view4_mut();
        gemm_batched(alpha, q, kt, T::zero(), sv.slice_mut(s![.., 0..1, .., ..]));
        // s[a](i, j) = P(i, j) + (c_i[2a+1] + c_j[2a]) / 2, or masked; type 0 last (it holds P).
        let bias = cache.bias.view2();
        let (half, masked) = (T::c(0.5), T::c(MASKED_SCORE));
        sv.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(bi, sb)| {
                let vb = bounds.row(bi);
                let cb = bias.slice(s![bi * n..(bi + 1) * n, ..]);
                let (mut s0, mut rest) = sb.split_at(Axis(0), 1);
                let mut s0 = s0.index_axis_mut(Axis(0), 0);
                for a in (0..c).rev() {
                    for i in 0..n {
                        for j in 0..n {
                            let v = if span_is_valid(&vb, i, j) {
                                s0[[i, j]] + (cb[[i, 2 * a + 1]] + cb[[j, 2 * a]]) * half
                            } else {
                                masked
                            };
                            if a == 0 {
                                s0[[i, j]] = v;
                            } else {
                                rest[[a - 1, i, j]] = v;
                            }
                        }
                    }
                }
            });
    }

    /// dscores `[B, C, n, n]` (zero on excluded spans) -> dh `[B*n, H]`; accumulates grads.
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
            "EfficientGlobalPointer backward: dscores shape"
        );
        // dP = Σ_a dS[a]; dc[i, 2a+1] = ½ Σ_j dS[a](i, j); dc[j, 2a] = ½ Σ_i dS[a](i, j)
        cache.dsum.reshape(&[b, 1, n, n]);
        cache.dbias.reshape(&[b * n, 2 * c]);
        let half = T::c(0.5);
        cache
            .dsum
            .view4_mut()
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(
                cache
                    .dbias
                    .view2_mut()
                    .axis_chunks_iter_mut(Axis(0), n)
                    .into_par_iter(),
            )
            .zip(dscores.axis_iter(Axis(0)).into_par_iter())
            .for_each(|((mut pb, mut cb), db)| {
                let mut pb = pb.index_axis_mut(Axis(0), 0);
                pb.fill(T::zero());
                cb.fill(T::zero());
                for (a, da) in db.outer_iter().enumerate() {
                    for i in 0..n {
                        for j in 0..n {
                            let g = da[[i, j]];
                            pb[[i, j]] += g;
                            cb[[i, 2 * a + 1]] += g * half;
                            cb[[j, 2 * a]] += g * half;
                        }
                    }
                }
            });
        // d(qk rotated): dq = dP k / √d ; dk = dPᵀ q / √d
        let alpha = T::c(1.0 / (d as f64).sqrt());
        let qk = cache.qk.view2().into_shape_with_order((b, n, 1, 2 * d)).unwrap();
        let q = qk.slice(s![.., .., .., ..d]).permuted_axes([0, 2, 1, 3]);
        let k = qk.slice(s![.., .., .., d..]).permuted_axes([0, 2, 1, 3]);
        cache.dproj.reshape(&[b * n, 2 * d]);
        {
            let dqk = cache
                .dproj
                .view2_mut()
                .into_shape_with_order((b, n, 1, 2 * d))
                .unwrap();
            let (dq, dk) = dqk.split_at(Axis(3), d);
            let dp = cache.dsum.view4();
            gemm_batched(alpha, dp, k, T::zero(), dq.permuted_axes([0, 2, 1, 3]));
            gemm_batched(
                alpha,
                dp.permuted_axes([0, 1, 3, 2]),
                q,
                T::zero(),
                dk.permuted_axes([0, 2, 1, 3]),
            );
        }
        if self.rope {
            rotate_rows(&cache.rope, cache.dproj.as_slice_mut(), 2 * d, n, true);
        }
        // du = dc W_c + interleave(dq, dk); dh = du W_p
        let mut du = self.c_dense.backward(cache.proj.view2(), cache.dbias.view2());
        interleave_add(cache.dproj.as_slice(), du.as_slice_mut().unwrap(), d);
        self.p_dense.backward(h, du.view())
    }
}

/// `out[r] = [u[r][0::2] | u[r][1::2]]` for rows of size 2d.
fn deinterleave<T: Scalar>(u: &[T], out: &mut [T], d: usize) {
    for (ur, or) in u.chunks_exact(2 * d).zip(out.chunks_exact_mut(2 * d)) {
        let (oq, ok) = or.split_at_mut(d);
        for (m, pair) in ur.chunks_exact(2).enumerate() {
            oq[m] = pair[0];
            ok[m] = pair[1];
        }
    }
}

/// `du[r][2m] += g[r][m]`, `du[r][2m+1] += g[r][d+m]`: the backward of [`deinterleave`].
fn interleave_add<T: Scalar>(g: &[T], du: &mut [T], d: usize) {
    for (gr, dr) in g.chunks_exact(2 * d).zip(du.chunks_exact_mut(2 * d)) {
        let (gq, gk) = gr.split_at(d);
        for (m, pair) in dr.chunks_exact_mut(2).enumerate() {
            pair[0] += gq[m];
            pair[1] += gk[m];
        }
    }
}

impl<T: Scalar> Params<T> for EfficientGlobalPointer<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.p_dense.visit(&join(prefix, "p_dense"), f);
        self.c_dense.visit(&join(prefix, "c_dense"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.p_dense.visit_mut(&join(prefix, "p_dense"), f);
        self.c_dense.visit_mut(&join(prefix, "c_dense"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::fixed_random;
    use crate::head::RopeTable;
    use ndarray::{Ix1, Ix2};

    /// A fresh head: `p_dense` at the given std, `c_dense` at LeCun's 1/√2d (sample std of
    /// 2C x 2d = 2,560 draws within 10%), biases zero.
    #[test]
    fn fresh_head_initialises_c_dense_with_lecun_std() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (hidden, types, d) = (96, 10, 64);
        let e = EfficientGlobalPointer::<f64>::new(hidden, types, d, true, 0.02, &mut rng);
        let std = |w: &ndarray::Array2<f64>| (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
        let (p, c) = (std(&e.p_dense.weight.value), std(&e.c_dense.weight.value));
        assert!((p / 0.02 - 1.0).abs() < 0.1, "p_dense std {p}");
        let want = 1.0 / (2.0 * d as f64).sqrt();
        assert!((c / want - 1.0).abs() < 0.1, "c_dense std {c}, want {want}");
        assert!(e
            .p_dense
            .bias
            .value
            .iter()
            .chain(&e.c_dense.bias.value)
            .all(|&b| b == 0.0));
    }

    #[test]
    fn forward_matches_the_formula_span_by_span() {
        let (c, d, hid, n) = (3, 4, 5, 4);
        let e = EfficientGlobalPointer::from_dense(
            Linear::from_arrays(fixed_random(Ix2(2 * d, hid), 1), fixed_random(Ix1(2 * d), 2)),
            Linear::from_arrays(fixed_random(Ix2(2 * c, 2 * d), 3), fixed_random(Ix1(2 * c), 4)),
            true,
        );
        let h = fixed_random(Ix2(2 * n, hid), 5);
        let valid = ndarray::array![[true, true, true, true], [false, true, true, false]];
        let (mut cache, mut scores) = (ScoreCache::new(), Buffer::new());
        e.forward_scores(h.view(), n, Bounds::same(valid.view()), &mut cache, &mut scores);
        let u = e.p_dense.forward(h.view());
        let cc = e.c_dense.forward(u.view());
        let mut rope = RopeTable::<f64>::new(d);
        rope.ensure(d, n);
        for b in 0..2 {
            for a in 0..c {
                for i in 0..n {
                    for j in 0..n {
                        let mut q: Vec<f64> = (0..d).map(|m| u[[b * n + i, 2 * m]]).collect();
                        let mut k: Vec<f64> = (0..d).map(|m| u[[b * n + j, 2 * m + 1]]).collect();
                        rope.rotate(&mut q, i);
                        rope.rotate(&mut k, j);
                        let dot = q.iter().zip(&k).map(|(x, y)| x * y).sum::<f64>() / 2.0;
                        let want = if i <= j && valid[[b, i]] && valid[[b, j]] {
                            dot + (cc[[b * n + i, 2 * a + 1]] + cc[[b * n + j, 2 * a]]) / 2.0
                        } else {
                            MASKED_SCORE
                        };
                        let got = scores.view4()[[b, a, i, j]];
                        assert!((got - want).abs() < 1e-13, "[{b},{a},{i},{j}] {got} vs {want}");
                    }
                }
            }
        }
        let names: Vec<String> = e.param_shapes().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["p_dense.weight", "p_dense.bias", "c_dense.weight", "c_dense.bias"]
        );
    }
}
