//! Additive span scores (TPLinker style, method.md §7): per span a small hidden layer over both
//! ends, then one score per type.
//!
//! ```text
//! s[c](i, j) = W_o[c] · tanh(W_h [h_i; h_j] + b_h) + b_o[c]
//!            = W_o[c] · tanh(R_i W_1 h_i + R_j W_2 h_j + b_h) + b_o[c]     (W_h = [W_1 | W_2])
//! ```
//!
//! Computed without concatenating: `W_1 h` and `W_2 h` once per token (two products
//! `[B*n, H] x [H, D]`), `z_ij = tanh(u_i + v_j + b_h)` per valid span, then per text one product
//! `W_o z_bᵀ`: `[C, D] x [D, n²]`, written straight into the `[C, n, n]` layout of the scores.
//! Excluded spans are at [`MASKED_SCORE`] as for the other heads (their `z` is 0 and never
//! computed); the loss is the multi-label cross-entropy and decoding "every valid span above the
//! threshold", as for GlobalPointer.
//!
//! **RoPE** (`rope`, on by default like the other heads; `--no-rope` for the ablation) rotates the
//! projections, not the raw encoder states: `R_i` is applied to `W_1 h_i` and `R_j` to `W_2 h_j`
//! (θ_m = 10000^(-2m/D), as gp's q and k), and `b_h` is added after the rotation so the bias stays
//! position-free. Why after the projection: the rotation then acts on the D coordinates the head
//! owns (so it needs an even head size, checked like gp's, and not an even encoder size), at the
//! frequencies gp uses; rotating `h` first (`W_1 R_i h_i`) is a different model unless `W_1`
//! commutes with every `R_i`. Either way the additive form does not turn RoPE into a relative
//! position: `u_i + v_j` sees both absolute positions and the tanh mixes them.
//!
//! **Parameters** (PyTorch layout, `y = x Wᵀ + b`): `hidden.weight` `[D, 2H]` (W_h as the formula
//! has it, columns `[..H)` W_1, `[H..)` W_2), `hidden.bias` `[D]` (b_h), `out.weight` `[C, D]`
//! (W_o), `out.bias` `[C]` (b_o): 2HD + D + CD + C. Initialised like egp: the shared layer W_h
//! at N(0, std²) (BERT's `initializer_range`), the per-type layer W_o at LeCun normal N(0, 1/D)
//! (see [`Additive::new`]), biases 0.
//!
//! **Memory per span** (the seed's "far more memory per span"): `z` holds D values for each of the
//! n² (i, j) pairs of every text of the batch, kept from the forward for the backward (grow-only,
//! in the head's [`AdditiveCache`]); the backward adds `da` (D values a pair) for one text at a
//! time. In f32 at D = 64: 256 bytes a pair for `z` (B·n²·256 bytes a batch: 134 MB at B = 32,
//! n = 128), plus the C-per-span scores and their gradient [`Scored`] keeps for every score head
//! (8C bytes);
//! GlobalPointer keeps only those 8C bytes per span (plus its per-token projections).
//!
//! [`MASKED_SCORE`]: crate::span::MASKED_SCORE

use super::buffer::Buffer;
use super::config::HeadConfig;
use super::global_pointer::GlobalPointerConfig;
use super::kind::{HeadKind, HeadShape};
use super::rope::RopeTable;
use super::score_head::{batch_size, mask_invalid, rotate_rows, ScoreHead, Scored};
use crate::init::lecun_std;
use crate::matmul::{gemm, matmul_acc};
use crate::nn::Linear;
use crate::parallel;
use crate::param::{join, ParamMut, Params};
use crate::scalar::Scalar;
use crate::span::{span_is_valid, Bounds};
use ndarray::{s, Array2, ArrayView2, ArrayView4, ArrayViewD, Axis};
use rand::Rng;
use rayon::prelude::*;

/// The registry's entry: `--head additive`, TPLinker-style additive scores (method.md §7).
pub fn kind<T: Scalar>() -> HeadKind<T> {
    HeadKind {
        name: "additive",
        help: "Additive (TPLinker) scores: W_o tanh(W_h [h_i; h_j] + b_h) + b_o per span (method.md §7)",
        nested: true,
        settings: |opts| GlobalPointerConfig::from_options(opts).settings(),
        // hidden 2H -> D and out D -> C
        check: |settings, shape| {
            let d = GlobalPointerConfig::checked("additive", settings)?.head_size as u128;
            Ok(2 * shape.hidden as u128 * d + d * shape.types as u128)
        },
        build: |settings, shape: HeadShape, mut rng| {
            let c = GlobalPointerConfig::checked("additive", settings)?;
            let head = Additive::new(
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

/// The additive head.
#[derive(Clone, Debug)]
pub struct Additive<T> {
    /// W_h `[D, 2H]` and b_h `[D]`.
    pub hidden: Linear<T>,
    /// W_o `[C, D]` and b_o `[C]`.
    pub out: Linear<T>,
    /// RoPE on `W_1 h_i` and `W_2 h_j` (on by default; off for the ablation).
    pub rope: bool,
}

/// The additive head's activations and scratch (all grow-only).
#[derive(Clone, Debug, Default)]
pub struct AdditiveCache<T> {
    /// cos/sin table, grown to the longest text seen.
    rope: RopeTable<T>,
    /// `[B*n, 2D]`: `[W_1 h | W_2 h]` per token, rotated when RoPE is on (no bias).
    proj: Buffer<T>,
    /// `[B*n*n, D]`: `z_ij = tanh(u_i + v_j + b_h)`, row `(b*n + i)*n + j`; 0 on excluded spans.
    z: Buffer<T>,
    /// Backward, one text at a time: `da` `[n*n, D]`.
    da: Buffer<T>,
    /// Backward: `[du | dv]` `[B*n, 2D]`.
    dproj: Buffer<T>,
    /// (B, n) of the last forward, checked by backward.
    batch: (usize, usize),
}

impl<T: Scalar> AdditiveCache<T> {
    /// Bytes held by the cache's buffers (the high-water mark).
    pub fn capacity_bytes(&self) -> usize {
        [&self.proj, &self.z, &self.da, &self.dproj]
            .iter()
            .map(|b| b.capacity_bytes())
            .sum()
    }
}

impl<T: Scalar> Additive<T> {
    /// A fresh head: `hidden` with BERT initialisation (weights N(0, std²)), `out` with LeCun
    /// normal (weights N(0, 1/D)), biases 0.
    ///
    /// Why `out` differs (as egp's `c_dense`): W_o is the only per-type part, and at std 0.02 every
    /// type starts near zero and the gradient reaches W_h scaled by that same small weight; on the
    /// bundled sample (30 epochs) the head reached dev F1 1.7 with W_o at 0.02 and 21.9 with LeCun
    /// (24.1 with LeCun on W_h too, not kept: within the sample's noise).
    pub fn new(
        hidden: usize,
        num_types: usize,
        head_size: usize,
        rope: bool,
        std: f64,
        rng: &mut impl Rng,
    ) -> Self {
        let w_h = Linear::new(2 * hidden, head_size, std, rng);
        let w_o = Linear::new(head_size, num_types, lecun_std(head_size), rng);
        Additive::from_dense(w_h, w_o, rope)
    }

    /// Wraps the two layers: `hidden` `2H -> D` and `out` `D -> C`.
    pub fn from_dense(hidden: Linear<T>, out: Linear<T>, rope: bool) -> Self {
        assert!(
            hidden.in_features().is_multiple_of(2),
            "Additive: hidden input must be 2H"
        );
        assert_eq!(
            out.in_features(),
            hidden.out_features(),
            "Additive: out input must be D"
        );
        assert!(
            !rope || hidden.out_features().is_multiple_of(2),
            "Additive: RoPE needs an even head size"
        );
        Additive { hidden, out, rope }
    }

    /// The encoder's hidden size H.
    pub fn hidden_size(&self) -> usize {
        self.hidden.in_features() / 2
    }

    /// D, the size of the per-span hidden layer.
    pub fn head_size(&self) -> usize {
        self.hidden.out_features()
    }
}

impl<T: Scalar> ScoreHead<T> for Additive<T> {
    type Cache = AdditiveCache<T>;

    fn head_config(&self) -> HeadConfig {
        HeadConfig::new(
            "additive",
            &GlobalPointerConfig {
                head_size: self.head_size(),
                rope: self.rope,
            },
        )
    }

    fn types(&self) -> usize {
        self.out.out_features()
    }

    /// Nothing to pack: the head reads W_h in two halves and W_o as a left operand.
    fn prepack(&mut self) {}

    /// h `[B*n, H]` -> `scores` `[B, C, n, n]`, excluded spans at `MASKED_SCORE`; keeps `proj`
    /// and `z` for the backward.
    fn forward_scores(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        cache: &mut AdditiveCache<T>,
        scores: &mut Buffer<T>,
    ) {
        let b = batch_size(h, n, &bounds);
        let (hid, d, types) = (self.hidden_size(), self.head_size(), self.out.out_features());
        assert_eq!(h.ncols(), hid, "Additive: h must be [B*n, H]");
        cache.batch = (b, n);
        // [u | v] = [h W_1ᵀ | h W_2ᵀ]: W_hᵀ is a contiguous [2H, D], its halves W_1ᵀ and W_2ᵀ.
        cache.proj.reshape(&[b * n, 2 * d]);
        {
            let wt = self.hidden.weight.value.t();
            let mut p = cache.proj.view2_mut();
            let (pu, pv) = p.view_mut().split_at(Axis(1), d);
            gemm(T::one(), h, wt.slice(s![..hid, ..]), T::zero(), pu);
            gemm(T::one(), h, wt.slice(s![hid.., ..]), T::zero(), pv);
        }
        if self.rope {
            cache.rope.ensure(d, n);
            rotate_rows(&cache.rope, cache.proj.as_slice_mut(), 2 * d, n, false);
        }
        // z_ij = tanh(u_i + v_j + b_h) on valid spans, 0 elsewhere. Parallel over (text, i).
        cache.z.reshape(&[b * n * n, d]);
        let proj = cache.proj.as_slice();
        let bh = self.hidden.bias.value.as_slice().expect("bias is contiguous");
        cache
            .z
            .as_slice_mut()
            .par_chunks_mut(n * d)
            .enumerate()
            .for_each(|(r, zi)| {
                let (bi, i) = (r / n, r % n);
                let row = bounds.row(bi);
                let u = &proj[r * 2 * d..r * 2 * d + d];
                for (j, zij) in zi.chunks_exact_mut(d).enumerate() {
                    if !span_is_valid(&row, i, j) {
                        zij.fill(T::zero());
                        continue;
                    }
                    let v = &proj[(bi * n + j) * 2 * d + d..(bi * n + j + 1) * 2 * d];
                    for (((zm, &um), &vm), &bm) in zij.iter_mut().zip(u).zip(v).zip(bh) {
                        *zm = (um + vm + bm).tanh();
                    }
                }
            });
        // s[b] = W_o z_bᵀ + b_o: [C, D] x [D, n²] per text, in the scores' own layout.
        scores.reshape(&[b, types, n, n]);
        let z = cache.z.view2();
        let wo = self.out.weight.value.view();
        for (bi, sb) in scores.view4_mut().outer_iter_mut().enumerate() {
            let mut sb = sb
                .into_shape_with_order((types, n * n))
                .expect("contiguous scores");
            for (mut row, &bias) in sb.outer_iter_mut().zip(&self.out.bias.value) {
                row.fill(bias);
            }
            let zb = z.slice(s![bi * n * n..(bi + 1) * n * n, ..]);
            gemm(T::one(), wo, zb.t(), T::one(), sb);
        }
        mask_invalid(scores.view4_mut(), bounds);
    }

    /// dscores `[B, C, n, n]` (zero on excluded spans) -> dh `[B*n, H]`; accumulates the
    /// parameter gradients. `h` and `cache` must be those of the matching forward.
    fn backward_scores(
        &mut self,
        h: ArrayView2<T>,
        cache: &mut AdditiveCache<T>,
        dscores: ArrayView4<T>,
    ) -> Array2<T> {
        let (b, n) = cache.batch;
        let (hid, d, types) = (self.hidden_size(), self.head_size(), self.out.out_features());
        assert_eq!(
            dscores.dim(),
            (b, types, n, n),
            "Additive backward: dscores shape"
        );
        assert_eq!(h.dim(), (b * n, hid), "Additive backward: h shape");
        let nn = n * n;
        cache.dproj.reshape(&[b * n, 2 * d]);
        cache.da.reshape(&[nn, d]);
        let z = cache.z.view2();
        for bi in 0..b {
            let ds = dscores.index_axis(Axis(0), bi);
            let ds = ds.as_standard_layout();
            let ds = ds
                .view()
                .into_shape_with_order((types, nn))
                .expect("standard layout");
            let zb = z.slice(s![bi * nn..(bi + 1) * nn, ..]);
            // dW_oᵀ += z_bᵀ ds_bᵀ (the contiguous [D, C] view of the gradient); db_o += Σ ds_b.
            matmul_acc(zb.t(), ds.t(), self.out.weight.grad.view_mut().reversed_axes());
            for (g, row) in self.out.bias.grad.iter_mut().zip(ds.outer_iter()) {
                *g += row.sum();
            }
            // da = (ds_bᵀ W_o) ⊙ (1 - z²): [n², C] x [C, D]. Excluded spans: ds = 0, so da = 0.
            gemm(
                T::one(),
                ds.t(),
                self.out.weight.value.view(),
                T::zero(),
                cache.da.view2_mut(),
            );
            let zs = &cache.z.as_slice()[bi * nn * d..(bi + 1) * nn * d];
            cache
                .da
                .as_slice_mut()
                .par_chunks_mut(d)
                .zip(zs.par_chunks(d))
                .with_min_len(64)
                .for_each(|(a, z)| {
                    for (am, &zm) in a.iter_mut().zip(z) {
                        *am *= T::one() - zm * zm;
                    }
                });
            // du_k = Σ_j da[k, j], dv_k = Σ_i da[i, k]: one token's pair of rows per task.
            let da = cache.da.as_slice();
            cache.dproj.as_slice_mut()[bi * n * 2 * d..(bi + 1) * n * 2 * d]
                .par_chunks_mut(2 * d)
                .enumerate()
                .for_each(|(k, row)| {
                    let (du, dv) = row.split_at_mut(d);
                    du.fill(T::zero());
                    dv.fill(T::zero());
                    for j in 0..n {
                        for (g, &a) in du.iter_mut().zip(&da[(k * n + j) * d..(k * n + j + 1) * d]) {
                            *g += a;
                        }
                    }
                    for i in 0..n {
                        for (g, &a) in dv.iter_mut().zip(&da[(i * n + k) * d..(i * n + k + 1) * d]) {
                            *g += a;
                        }
                    }
                });
        }
        // db_h = Σ du (b_h is added after the rotation, so before RoPE's backward).
        parallel::column_sums_acc(
            cache.dproj.view2().slice(s![.., ..d]),
            self.hidden.bias.grad.view_mut(),
        );
        if self.rope {
            // d(pre-rotation) = R_iᵀ d(rotated)
            rotate_rows(&cache.rope, cache.dproj.as_slice_mut(), 2 * d, n, true);
        }
        let dp = cache.dproj.view2();
        let (du, dv) = (dp.slice(s![.., ..d]), dp.slice(s![.., d..]));
        // dW_1ᵀ += hᵀ du, dW_2ᵀ += hᵀ dv: the two halves of the contiguous [2H, D] view.
        {
            let mut gt = self.hidden.weight.grad.view_mut().reversed_axes();
            let (g1, g2) = gt.view_mut().split_at(Axis(0), hid);
            matmul_acc(h.t(), du, g1);
            matmul_acc(h.t(), dv, g2);
        }
        // dh = du W_1 + dv W_2
        let w = self.hidden.weight.value.view();
        let mut dh = parallel::zeros(ndarray::Ix2(b * n, hid));
        gemm(T::one(), du, w.slice(s![.., ..hid]), T::zero(), dh.view_mut());
        gemm(T::one(), dv, w.slice(s![.., hid..]), T::one(), dh.view_mut());
        dh
    }
}

impl<T: Scalar> Params<T> for Additive<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.hidden.visit(&join(prefix, "hidden"), f);
        self.out.visit(&join(prefix, "out"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.hidden.visit_mut(&join(prefix, "hidden"), f);
        self.out.visit_mut(&join(prefix, "out"), f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use crate::head::{HeadCache, ScoredCache, SpanHead};
    use crate::span::MASKED_SCORE;
    use ndarray::{array, Array1, Ix1, Ix2};

    /// What [`Scored`] keeps for the additive head in f32 or f64.
    type Cache<T> = ScoredCache<T, AdditiveCache<T>>;

    fn head(hid: usize, c: usize, d: usize, rope: bool) -> Additive<f64> {
        Additive::from_dense(
            Linear::from_arrays(fixed_random(Ix2(d, 2 * hid), 1), fixed_random(Ix1(d), 2)),
            Linear::from_arrays(fixed_random(Ix2(c, d), 3), fixed_random(Ix1(c), 4)),
            rope,
        )
    }

    /// Span by span: the concatenated form of the formula, `W_o tanh(W_h [R_i·; R_j·] + b_h) + b_o`
    /// with RoPE on the two halves' projections.
    #[test]
    fn forward_matches_the_formula_span_by_span() {
        let (c, d, hid, n) = (3, 4, 5, 5);
        for rope in [true, false] {
            let a = head(hid, c, d, rope);
            let h = fixed_random(Ix2(2 * n, hid), 5);
            let starts = array![[true, true, true, true, true], [false, true, true, true, false]];
            let ends = array![[true, false, true, true, true], [false, true, true, true, false]];
            let bounds = Bounds {
                starts: starts.view(),
                ends: ends.view(),
            };
            let (mut cache, mut scores) = (AdditiveCache::default(), Buffer::new());
            a.forward_scores(h.view(), n, bounds, &mut cache, &mut scores);
            let (wh, bh) = (&a.hidden.weight.value, &a.hidden.bias.value);
            let (wo, bo) = (&a.out.weight.value, &a.out.bias.value);
            let mut table = RopeTable::<f64>::new(d);
            table.ensure(d, n);
            for b in 0..2 {
                for i in 0..n {
                    for j in 0..n {
                        // W_1 h_i and W_2 h_j, rotated, then the bias and tanh.
                        let mut u: Vec<f64> = (0..d)
                            .map(|m| (0..hid).map(|k| wh[[m, k]] * h[[b * n + i, k]]).sum())
                            .collect();
                        let mut v: Vec<f64> = (0..d)
                            .map(|m| (0..hid).map(|k| wh[[m, hid + k]] * h[[b * n + j, k]]).sum())
                            .collect();
                        if rope {
                            table.rotate(&mut u, i);
                            table.rotate(&mut v, j);
                        }
                        let z: Vec<f64> = (0..d).map(|m| (u[m] + v[m] + bh[m]).tanh()).collect();
                        for t in 0..c {
                            let want = if span_is_valid(&bounds.row(b), i, j) {
                                (0..d).map(|m| wo[[t, m]] * z[m]).sum::<f64>() + bo[t]
                            } else {
                                MASKED_SCORE
                            };
                            let got = scores.view4()[[b, t, i, j]];
                            assert!(
                                (got - want).abs() < 1e-13,
                                "rope {rope} [{b},{t},{i},{j}] {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The head with the loss, through the SpanHead trait, in f64, with and without RoPE: every
    /// parameter and the input, one text with an excluded start, end and padding.
    #[test]
    fn gradcheck_with_loss() {
        let (c, d, hid, n) = (2, 6, 4, 5);
        let h = fixed_random(Ix2(2 * n, hid), 11);
        let starts = array![[true, true, false, true, true], [true, true, true, false, false]];
        let ends = array![[true, true, true, false, true], [true, true, true, false, false]];
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        let gold = vec![vec![(0, 0, 2), (1, 3, 4), (0, 1, 1)], vec![(1, 0, 2)]];
        for rope in [true, false] {
            let mut a = Scored(head(hid, c, d, rope));
            let loss = |m: &Scored<Additive<f64>>, x: &Array2<f64>, cache: &mut HeadCache| {
                m.loss(x.view(), n, bounds, &gold, cache)
            };
            let mut cache = HeadCache::new();
            loss(&a, &h, &mut cache);
            a.zero_grad();
            let dh = a.backward(h.view(), &mut cache);
            let gc = GradCheck::default();
            let mut scratch = HeadCache::new();
            let p = gc.params(&mut a, |m| loss(m, &h, &mut scratch));
            let x = gc.input("h", &h, &dh, |x| loss(&a, x, &mut scratch));
            eprintln!(
                "additive gradcheck rope={rope}: params worst {:.2e} at {}, h worst {:.2e}",
                p.worst, p.worst_at, x.worst
            );
            p.assert_below(1e-6);
            x.assert_below(1e-6);
        }
    }

    #[test]
    fn decode_keeps_to_bounds_and_the_threshold() {
        let (c, d, hid, n) = (2, 4, 3, 4);
        let a = Scored(head(hid, c, d, true));
        let h = fixed_random(Ix2(n, hid), 9);
        let starts = array![[false, true, true, true]];
        let ends = array![[false, true, false, true]];
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        let mut cache = HeadCache::new();
        let all = a.decode(h.view(), n, bounds, -1e9, &mut cache);
        // Valid: (1,1), (1,3), (2,3), (3,3), of each type.
        assert_eq!(all[0].len(), 4 * c);
        assert!(all[0]
            .iter()
            .all(|p| span_is_valid(&bounds.row(0), p.start, p.end)));
        let some = a.decode(h.view(), n, bounds, 0.0, &mut cache);
        assert!(some[0].iter().all(|p| p.score > 0.0));
        assert_eq!(some[0].len(), all[0].iter().filter(|p| p.score > 0.0).count());
    }

    /// z holds D values per (i, j) pair of the batch; the backward's da one text's worth.
    #[test]
    fn cache_holds_d_values_per_span() {
        let (c, d, hid, n, b) = (3, 8, 4, 6, 2);
        let mut a = Scored(head(hid, c, d, true));
        let h = fixed_random(Ix2(b * n, hid), 3);
        let valid = Array2::from_elem((b, n), true);
        let mut cache = HeadCache::new();
        let gold = vec![vec![(0, 1, 2)], vec![]];
        a.loss(h.view(), n, Bounds::same(valid.view()), &gold, &mut cache);
        a.backward(h.view(), &mut cache);
        let held = cache.get::<Cache<f64>>();
        let bytes =
            held.inner.capacity_bytes() + held.scores.capacity_bytes() + held.dscores.capacity_bytes();
        let f = std::mem::size_of::<f64>();
        let want = f
            * (b * n * n * d   // z
            + n * n * d                 // da, one text
            + 2 * b * n * 2 * d          // proj, dproj
            + 2 * b * c * n * n); // scores, dscores
        assert_eq!(bytes, want);
    }

    /// At training's sizes (products split over threads, f32 on the CPU's kernel) the f32 head
    /// computes the scores, loss and gradients of the f64 one.
    #[test]
    fn f32_matches_f64_at_training_sizes() {
        let (c, d, hid, n, b) = (10, 64, 48, 37, 3);
        let a64 = head(hid, c, d, true);
        let to32 = |l: &Linear<f64>| {
            Linear::from_arrays(l.weight.value.mapv(|x| x as f32), l.bias.value.mapv(|x| x as f32))
        };
        let mut a32 = Scored(Additive::from_dense(to32(&a64.hidden), to32(&a64.out), true));
        let mut a64 = Scored(a64);
        let h64 = fixed_random(Ix2(b * n, hid), 5) * 0.5;
        let h32 = h64.mapv(|x| x as f32);
        let starts = Array2::from_shape_fn((b, n), |(t, i)| i > 0 && i < n - 1 - 5 * t && i % 7 != 3);
        let ends = Array2::from_shape_fn((b, n), |(t, i)| i > 0 && i < n - 1 - 5 * t && i % 5 != 2);
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        let gold = vec![vec![(0, 1, 4), (3, 2, 2)], vec![(9, 10, 20)], vec![]];
        let (mut c32, mut c64) = (HeadCache::new(), HeadCache::new());
        let l32 = a32.loss(h32.view(), n, bounds, &gold, &mut c32);
        let l64 = a64.loss(h64.view(), n, bounds, &gold, &mut c64);
        assert!((l32 - l64).abs() < 1e-4 * l64.abs().max(1.0), "{l32} vs {l64}");
        let s32 = c32.get::<Cache<f32>>().scores.view4().mapv(|x| x as f64);
        let s64 = c64.get::<Cache<f64>>().scores.view4().to_owned();
        // (Excluded spans: MASKED_SCORE rounded to f32 on one side.)
        let worst = s32
            .iter()
            .zip(&s64)
            .filter(|(_, &y)| y > MASKED_SCORE / 2.0)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 1e-4, "scores differ by {worst}");
        let dh32 = a32.backward(h32.view(), &mut c32).mapv(|x| x as f64);
        let dh64 = a64.backward(h64.view(), &mut c64);
        let rel = |x: ArrayViewD<f64>, y: ArrayViewD<f64>| {
            let scale = y.iter().fold(0f64, |m, v| m.max(v.abs()));
            (&x - &y).iter().fold(0f64, |m, v| m.max(v.abs())) / scale
        };
        assert!(rel(dh32.view().into_dyn(), dh64.view().into_dyn()) < 1e-4);
        let mut g32 = Vec::new();
        a32.visit_mut("", &mut |_, p| g32.push(p.grad.mapv(|x| x as f64)));
        let mut i = 0;
        a64.visit_mut("", &mut |name, p| {
            let r = rel(g32[i].view(), p.grad.view());
            assert!(r < 1e-4, "{name}: {r}");
            i += 1;
        });
    }

    #[test]
    fn fresh_head_initialises_out_with_lecun_std_and_walks_by_name() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let a = Additive::<f64>::new(48, 5, 32, true, 0.02, &mut rng);
        let std = |w: &Array2<f64>| (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std(&a.hidden.weight.value) / 0.02 - 1.0).abs() < 0.1);
        let lecun = 1.0 / 32f64.sqrt();
        assert!((std(&a.out.weight.value) / lecun - 1.0).abs() < 0.15);
        let zero = |b: &Array1<f64>| b.iter().all(|&x| x == 0.0);
        assert!(zero(&a.hidden.bias.value) && zero(&a.out.bias.value));
        assert_eq!(
            a.param_shapes(),
            [
                ("hidden.weight".to_string(), vec![32, 96]),
                ("hidden.bias".to_string(), vec![32]),
                ("out.weight".to_string(), vec![5, 32]),
                ("out.bias".to_string(), vec![5]),
            ]
        );
        assert_eq!(a.num_params(), 2 * 48 * 32 + 32 + 5 * 32 + 5);
    }
}
