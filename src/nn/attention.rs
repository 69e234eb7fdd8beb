//! BERT multi-head self-attention (`attention.self`) over a right-padded batch.
//!
//! x `[B*n, H]` holds text b's token i in row b*n+i; text b has `lengths[b]` real tokens. Per
//! (text, head), in one rayon task: `S = Q Kᵀ / √dh` over real rows and keys only, softmax per row,
//! dropout, `C = P V`. Padded query rows give context 0 and receive no gradient; padded keys get
//! probability 0. Q, K, V stay `[B*n, H]`; heads are strided views, never copied.

use crate::lockstep::Part;
use crate::matmul::{gemm, gemm_packed, gemm_packed_columns, PackedB};
use crate::nn::dropout::Dropout;
use crate::nn::linear::Linear;
use crate::nn::softmax::{softmax_row, softmax_row_backward};
use crate::parallel;
use crate::param::{join, ParamMut, Params};
use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{
    s, Array1, Array2, Array4, ArrayView2, ArrayView4, ArrayViewD, ArrayViewMut2, ArrayViewMut4, Axis, Zip,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::ops::Range;

/// The query, key and value projections of `attention.self`.
#[derive(Clone, Debug)]
pub struct SelfAttention<T> {
    /// `query`: H -> H (the heads' queries side by side).
    pub query: Linear<T>,
    /// `key`: H -> H.
    pub key: Linear<T>,
    /// `value`: H -> H.
    pub value: Linear<T>,
    /// The number of heads; each attends over `H / num_heads` dimensions.
    pub num_heads: usize,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    /// `[Wq; Wk; Wv]ᵀ` packed as one `[H, 3H]` operand with its bias `[bq | bk | bv]`, for
    /// inference ([`SelfAttention::prepack`]): one product reads x once for all three. Dropped by
    /// any mutable walk of the parameters.
    fused_qkv: Option<(PackedB, Array1<T>)>,
    /// Set by [`SelfAttention::pack_on_load`]: the next mutable walk (the load) packs Q, K and V
    /// in this precision after it and drops their f32 copies.
    pack_on_load: Option<Precision>,
}

/// What the backward needs.
#[derive(Clone, Debug)]
pub struct AttentionCache<T> {
    /// `[B*n, H]`: the queries.
    pub q: Array2<T>,
    /// `[B*n, H]`: the keys.
    pub k: Array2<T>,
    /// `[B*n, H]`: the values.
    pub v: Array2<T>,
    /// `[B, heads, n, n]`: softmax output before dropout (0 outside the real block)
    pub probs: Array4<T>,
    /// `[B, heads, n, n]`: dropout mask, when dropout was active
    pub drop_mask: Option<Array4<T>>,
}

/// One head's context over a text of `l` real rows: `S = Q Kᵀ / √dh` (`scale`), softmax over
/// the keys, `C = P V` into `c`'s first `l` rows; `c`'s other (padded) rows are set to 0.
fn head_context<T: Scalar>(
    scale: T,
    q: ArrayView2<T>,
    k: ArrayView2<T>,
    v: ArrayView2<T>,
    l: usize,
    mut c: ArrayViewMut2<T>,
) {
    c.slice_mut(s![l.., ..]).fill(T::zero());
    if l == 0 {
        return;
    }
    let (q, k, v) = (
        q.slice_move(s![..l, ..]),
        k.slice_move(s![..l, ..]),
        v.slice_move(s![..l, ..]),
    );
    let mut p = Array2::<T>::zeros((l, l));
    gemm(scale, q, k.t(), T::zero(), p.view_mut());
    for row in p.rows_mut() {
        softmax_row(row, l);
    }
    gemm(T::one(), p.view(), v, T::zero(), c.slice_move(s![..l, ..]));
}

/// `[B*n, H]` as `[B, heads, n, dh]` (a strided view).
fn heads<T>(a: ArrayView2<'_, T>, b: usize, heads: usize) -> ArrayView4<'_, T> {
    let (rows, h) = a.dim();
    a.into_shape_with_order((b, rows / b, heads, h / heads))
        .expect("attention activations are contiguous")
        .permuted_axes([0, 2, 1, 3])
}

/// `[B*n, H]` as mutable `[B, heads, n, dh]`.
fn heads_mut<T>(a: ArrayViewMut2<'_, T>, b: usize, heads: usize) -> ArrayViewMut4<'_, T> {
    let (rows, h) = a.dim();
    a.into_shape_with_order((b, rows / b, heads, h / heads))
        .expect("attention activations are contiguous")
        .permuted_axes([0, 2, 1, 3])
}

/// The (text, head) matrices of a `[B, heads, r, c]` view, text-major.
fn split_bh<T>(a: ArrayViewMut4<'_, T>) -> Vec<ArrayViewMut2<'_, T>> {
    let mut out = Vec::with_capacity(a.shape()[0] * a.shape()[1]);
    // `into_outer_iter` is deprecated in ndarray 0.16 without a by-value replacement yet.
    #[allow(deprecated)]
    for ab in a.into_outer_iter() {
        for abh in ab.into_outer_iter() {
            out.push(abh);
        }
    }
    out
}

impl<T: Scalar> SelfAttention<T> {
    /// Packs the Q, K and V weights for inference as one fused operand where the CPU's kernel
    /// can use it (see `matmul::PackedB`); elsewhere each layer keeps its own ([`Linear::prepack`]).
    pub fn prepack(&mut self, precision: Precision) {
        for l in [&mut self.query, &mut self.key, &mut self.value] {
            l.unpack();
        }
        let layers = [&self.query, &self.key, &self.value];
        let wt = ndarray::concatenate(Axis(1), &layers.map(|l| l.weight.value.t()))
            .expect("q, k and v have the same input size");
        let bias =
            ndarray::concatenate(Axis(0), &layers.map(|l| l.bias.value.view())).expect("biases are vectors");
        self.fused_qkv = PackedB::for_inference(wt.view(), precision).map(|p| (p, bias));
        if self.fused_qkv.is_none() {
            for l in [&mut self.query, &mut self.key, &mut self.value] {
                l.prepack_as(precision);
            }
        }
    }

    /// For a model about to be filled from an int8 or bf16 directory: the walk that loads Q, K
    /// and V packs them in `precision` right after and drops their f32 copies
    /// ([`SelfAttention::release_weights`]).
    pub fn pack_on_load(&mut self, precision: Precision) {
        self.pack_on_load = Some(precision);
    }

    /// Drops the f32 Q, K and V weights of a model packed in int8 or bf16 ([`Linear::release_weight`]).
    /// Under a fused operand each layer first packs its own copy (a quarter of its f32 bytes in
    /// int8, the same values: the quantisation is per output column), from which a walk of the
    /// parameters gives its weight back.
    pub fn release_weights(&mut self) {
        let precision = self.fused_qkv.as_ref().map(|(p, _)| p.precision());
        for l in [&mut self.query, &mut self.key, &mut self.value] {
            if let Some(precision) = precision.filter(|p| !p.is_f32()) {
                l.prepack_as(precision);
            }
            l.release_weight();
        }
    }

    /// `num_heads` heads over `hidden` dimensions (which they must divide), weights drawn from
    /// N(0, std²), biases 0, dropout `dropout` on the attention probabilities.
    pub fn new(hidden: usize, num_heads: usize, dropout: f64, std: f64, rng: &mut impl Rng) -> Self {
        assert_eq!(hidden % num_heads, 0, "hidden size must divide into heads");
        SelfAttention {
            query: Linear::new(hidden, hidden, std, rng),
            key: Linear::new(hidden, hidden, std, rng),
            value: Linear::new(hidden, hidden, std, rng),
            num_heads,
            dropout: Dropout::new(dropout),
            fused_qkv: None,
            pack_on_load: None,
        }
    }

    /// The hidden size H.
    pub fn hidden(&self) -> usize {
        self.query.out_features()
    }

    /// Dimensions per head, `H / num_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden() / self.num_heads
    }

    /// context `[B*n, H]` of x `[B*n, H]`; `rng` given = training (attention dropout on).
    pub fn forward(
        &self,
        x: ArrayView2<T>,
        lengths: &[usize],
        rng: Option<&mut impl Rng>,
    ) -> (Array2<T>, AttentionCache<T>) {
        let bsz = lengths.len();
        assert!(
            bsz > 0 && x.nrows().is_multiple_of(bsz),
            "attention: rows not a multiple of the batch"
        );
        let n = x.nrows() / bsz;
        assert!(
            lengths.iter().all(|&l| l <= n),
            "attention: a length exceeds the padded length"
        );
        let (nh, dh) = (self.num_heads, self.head_dim());
        let q = self.query.forward(x);
        let k = self.key.forward(x);
        let v = self.value.forward(x);
        let mut probs = parallel::zeros(ndarray::Ix4(bsz, nh, n, n));
        let mut ctx = parallel::zeros(x.raw_dim());
        // One seed per call; each (text, head) task draws from its own ChaCha stream.
        let seed = rng.filter(|_| self.dropout.p > 0.0).map(|r| r.gen::<u64>());
        let mut drop_mask = seed.map(|_| parallel::zeros(ndarray::Ix4(bsz, nh, n, n)));
        let scale = T::c(1.0 / (dh as f64).sqrt());
        let (q4, k4, v4) = (
            heads(q.view(), bsz, nh),
            heads(k.view(), bsz, nh),
            heads(v.view(), bsz, nh),
        );
        let p_jobs = split_bh(probs.view_mut());
        let c_jobs = split_bh(heads_mut(ctx.view_mut(), bsz, nh));
        let m_jobs: Vec<Option<ArrayViewMut2<T>>> = match drop_mask.as_mut() {
            Some(m) => split_bh(m.view_mut()).into_iter().map(Some).collect(),
            None => (0..bsz * nh).map(|_| None).collect(),
        };
        let dropout = self.dropout;
        p_jobs
            .into_par_iter()
            .zip(c_jobs)
            .zip(m_jobs)
            .enumerate()
            .for_each(|(job, ((mut p, mut c), m))| {
                let (b, h) = (job / nh, job % nh);
                let l = lengths[b];
                let qh = q4.slice(s![b, h, ..l, ..]);
                let kh = k4.slice(s![b, h, ..l, ..]);
                let vh = v4.slice(s![b, h, ..l, ..]);
                let mut p = p.slice_mut(s![..l, ..l]);
                // S = Q Kᵀ / √dh, then softmax over the real keys.
                gemm(scale, qh, kh.t(), T::zero(), p.view_mut());
                for row in p.rows_mut() {
                    softmax_row(row, l);
                }
                let mut c = c.slice_mut(s![..l, ..]);
                match (m, seed) {
                    (Some(mut m), Some(seed)) => {
                        let mut rng = ChaCha8Rng::seed_from_u64(seed);
                        rng.set_stream(job as u64);
                        let mut m = m.slice_mut(s![..l, ..l]);
                        m.assign(&dropout.sample_mask(m.raw_dim(), &mut rng));
                        let pd = &p * &m;
                        gemm(T::one(), pd.view(), vh, T::zero(), c);
                    }
                    _ => gemm(T::one(), p.view(), vh, T::zero(), c.view_mut()),
                }
            });
        (
            ctx,
            AttentionCache {
                q,
                k,
                v,
                probs,
                drop_mask,
            },
        )
    }

    /// Inference form of [`forward`](Self::forward) (no dropout, nothing kept for a backward):
    /// writes the context of x `[B*n, H]` into `ctx` `[B*n, H]`. Q | K | V go into `qkv`
    /// `[B*n, 3H]` (caller scratch, old contents not read). Each (text, head) task scores its
    /// real block in an `l x l` scratch of its own (scale folded into the product, softmax in
    /// place) and writes `P V` straight into its strided slice of `ctx`; padded rows get 0.
    pub fn forward_inference(
        &self,
        x: ArrayView2<T>,
        lengths: &[usize],
        mut qkv: ArrayViewMut2<T>,
        mut ctx: ArrayViewMut2<T>,
    ) {
        let bsz = lengths.len();
        assert!(
            bsz > 0 && x.nrows().is_multiple_of(bsz),
            "attention: rows not a multiple of the batch"
        );
        assert_eq!(ctx.dim(), x.dim(), "attention: context shape differs from x");
        let n = x.nrows() / bsz;
        assert!(
            lengths.iter().all(|&l| l <= n),
            "attention: a length exceeds the padded length"
        );
        let nh = self.num_heads;
        let (rows, h) = x.dim();
        assert_eq!(
            qkv.dim(),
            (rows, 3 * h),
            "attention: qkv scratch must be [B*n, 3H]"
        );
        // q | k | v side by side in one [B*n, 3H] product (the kernel adding the bias as it
        // writes), or three products.
        match &self.fused_qkv {
            Some((w, bias)) => gemm_packed(T::one(), x, w, T::zero(), Some(bias.view()), qkv.view_mut()),
            None => {
                for (i, l) in [&self.query, &self.key, &self.value].into_iter().enumerate() {
                    l.forward_into(x, qkv.slice_mut(s![.., i * h..(i + 1) * h]));
                }
            }
        };
        let c_jobs = split_bh(heads_mut(ctx.view_mut(), bsz, nh));
        let qkv = qkv.view();
        c_jobs
            .into_par_iter()
            .enumerate()
            .for_each(|(job, c)| self.head_context_of(qkv, lengths, job / nh, job % nh, c));
    }

    /// Whether Q, K and V are packed as one fused operand (what [`SelfAttention::qkv_columns`]
    /// needs).
    pub fn is_fused(&self) -> bool {
        self.fused_qkv.is_some()
    }

    /// The columns of the fused `[B*n, 3H]` q | k | v product that `part` computes in a lockstep
    /// team ([`SelfAttention::qkv_columns_forward`]); `None` where Q, K and V are not fused.
    pub fn qkv_columns(&self, part: &Part) -> Option<Range<usize>> {
        let (w, _) = self.fused_qkv.as_ref()?;
        Some(part.block(w.n(), w.column_align()))
    }

    /// Columns `j0..j0 + qkv.ncols()` of the fused q | k | v product of x, bias added, on this
    /// thread (a lockstep team's share of [`SelfAttention::forward_inference`]'s first product).
    pub fn qkv_columns_forward(&self, x: ArrayView2<T>, qkv: ArrayViewMut2<T>, j0: usize) {
        let (w, bias) = self
            .fused_qkv
            .as_ref()
            .expect("qkv_columns said the product is fused");
        gemm_packed_columns(T::one(), x, w, T::zero(), Some(bias.view()), qkv, j0);
    }

    /// Head `h` of text `b` (texts of `n` rows, `lengths[b]` real) from the `[B*n, 3H]` q | k | v
    /// rows into `c`, that text's `n` rows of the head's `dh` context columns (padded rows 0).
    pub fn head_context_of(
        &self,
        qkv: ArrayView2<T>,
        lengths: &[usize],
        b: usize,
        h: usize,
        c: ArrayViewMut2<T>,
    ) {
        let (nh, dh) = (self.num_heads, self.head_dim());
        let n = c.nrows();
        let rows = qkv.slice(s![b * n..(b + 1) * n, ..]);
        let part = |i: usize| rows.slice_move(s![.., (i * nh + h) * dh..(i * nh + h + 1) * dh]);
        head_context(
            T::c(1.0 / (dh as f64).sqrt()),
            part(0),
            part(1),
            part(2),
            lengths[b],
            c,
        );
    }

    /// Accumulates the q/k/v parameter gradients and returns dx `[B*n, H]`. Rows of padded
    /// positions in `dctx` are ignored.
    pub fn backward(
        &mut self,
        x: ArrayView2<T>,
        lengths: &[usize],
        cache: &AttentionCache<T>,
        dctx: ArrayView2<T>,
    ) -> Array2<T> {
        let mut dx = parallel::zeros(x.raw_dim());
        self.backward_acc(x, lengths, cache, dctx, dx.view_mut());
        dx
    }

    /// `backward` adding dx into `dx` (the residual's gradient) instead of a new buffer.
    pub fn backward_acc(
        &mut self,
        x: ArrayView2<T>,
        lengths: &[usize],
        cache: &AttentionCache<T>,
        dctx: ArrayView2<T>,
        mut dx: ArrayViewMut2<T>,
    ) {
        let bsz = lengths.len();
        let (nh, dh) = (self.num_heads, self.head_dim());
        let scale = T::c(1.0 / (dh as f64).sqrt());
        let mut dq = parallel::zeros(x.raw_dim());
        let mut dk = parallel::zeros(x.raw_dim());
        let mut dv = parallel::zeros(x.raw_dim());
        let (q4, k4, v4) = (
            heads(cache.q.view(), bsz, nh),
            heads(cache.k.view(), bsz, nh),
            heads(cache.v.view(), bsz, nh),
        );
        let dc4 = heads(dctx, bsz, nh);
        let jobs: Vec<_> = split_bh(heads_mut(dq.view_mut(), bsz, nh))
            .into_iter()
            .zip(split_bh(heads_mut(dk.view_mut(), bsz, nh)))
            .zip(split_bh(heads_mut(dv.view_mut(), bsz, nh)))
            .collect();
        jobs.into_par_iter()
            .enumerate()
            .for_each(|(job, ((dqh, dkh), dvh))| {
                let (b, h) = (job / nh, job % nh);
                let l = lengths[b];
                let qh = q4.slice(s![b, h, ..l, ..]);
                let kh = k4.slice(s![b, h, ..l, ..]);
                let vh = v4.slice(s![b, h, ..l, ..]);
                let dc = dc4.slice(s![b, h, ..l, ..]);
                let p = cache.probs.slice(s![b, h, ..l, ..l]);
                let m = cache.drop_mask.as_ref().map(|m| m.slice(s![b, h, ..l, ..l]));
                // dP' = dC Vᵀ, dV = P'ᵀ dC with P' = P·M the dropped probabilities.
                let mut dp = Array2::zeros((l, l));
                gemm(T::one(), dc, vh.t(), T::zero(), dp.view_mut());
                let dvh = dvh.slice_move(s![..l, ..]);
                match m {
                    Some(m) => {
                        let pd = &p * &m;
                        gemm(T::one(), pd.t(), dc, T::zero(), dvh);
                        dp *= &m;
                    }
                    None => gemm(T::one(), p.t(), dc, T::zero(), dvh),
                }
                // dS = P · (dP - rowsum(dP·P))
                Zip::from(dp.rows_mut())
                    .and(p.rows())
                    .for_each(|d, p| softmax_row_backward(p, d));
                // dQ = dS K / √dh, dK = dSᵀ Q / √dh
                gemm(scale, dp.view(), kh, T::zero(), dqh.slice_move(s![..l, ..]));
                gemm(scale, dp.t(), qh, T::zero(), dkh.slice_move(s![..l, ..]));
            });
        self.query.backward_params(x, dq.view());
        self.key.backward_params(x, dk.view());
        self.value.backward_params(x, dv.view());
        gemm(
            T::one(),
            dq.view(),
            self.query.weight.value.view(),
            T::one(),
            dx.view_mut(),
        );
        gemm(
            T::one(),
            dk.view(),
            self.key.weight.value.view(),
            T::one(),
            dx.view_mut(),
        );
        gemm(
            T::one(),
            dv.view(),
            self.value.weight.value.view(),
            T::one(),
            dx.view_mut(),
        );
    }
}

impl<T: Scalar> Params<T> for SelfAttention<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.query.visit(&join(prefix, "query"), f);
        self.key.visit(&join(prefix, "key"), f);
        self.value.visit(&join(prefix, "value"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.fused_qkv = None;
        self.query.visit_mut(&join(prefix, "query"), f);
        self.key.visit_mut(&join(prefix, "key"), f);
        self.value.visit_mut(&join(prefix, "value"), f);
        if let Some(precision) = self.pack_on_load.take() {
            self.prepack(precision);
            self.release_weights();
            crate::alloc::release_cached();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Array1, Ix1, Ix2};

    fn identity_attention(h: usize, heads: usize) -> SelfAttention<f64> {
        let eye = || Linear::from_arrays(Array2::eye(h), Array1::zeros(h));
        SelfAttention {
            query: eye(),
            key: eye(),
            value: eye(),
            num_heads: heads,
            dropout: Dropout::new(0.0),
            fused_qkv: None,
            pack_on_load: None,
        }
    }

    #[test]
    fn forward_by_hand() {
        // One text of 3 slots, 2 real; one head of size 2; Q = K = V = x.
        // Scores of row 0: [x0·x0, x0·x1]/√2 = [1, 0]/√2 -> p = softmax([0.7071, 0]).
        let att = identity_attention(2, 1);
        let x = array![[1.0, 0.0], [0.0, 1.0], [50.0, 50.0]];
        let (c, cache) = att.forward(x.view(), &[2], None::<&mut ChaCha8Rng>);
        let e = (1.0f64 / 2f64.sqrt()).exp();
        let (p0, p1) = (e / (e + 1.0), 1.0 / (e + 1.0));
        assert!((c[[0, 0]] - p0).abs() < 1e-15 && (c[[0, 1]] - p1).abs() < 1e-15);
        assert!((c[[1, 0]] - p1).abs() < 1e-15 && (c[[1, 1]] - p0).abs() < 1e-15);
        // The padded row is 0 and no real row attends to it.
        assert_eq!(c.row(2), array![0.0, 0.0]);
        assert_eq!(cache.probs[[0, 0, 0, 2]], 0.0);
    }

    fn setup() -> (SelfAttention<f64>, Array2<f64>, Vec<usize>, Array2<f64>) {
        let lin = |s| Linear::from_arrays(fixed_random(Ix2(6, 6), s), fixed_random(Ix1(6), s + 10));
        let att = SelfAttention {
            query: lin(1),
            key: lin(2),
            value: lin(3),
            num_heads: 2,
            dropout: Dropout::new(0.3),
            fused_qkv: None,
            pack_on_load: None,
        };
        let mut proj = fixed_random(Ix2(8, 6), 5);
        // Padded positions carry no loss (as the encoder arranges); real rows 0..4 and 4..6.
        proj.slice_mut(s![6.., ..]).fill(0.0);
        (att, fixed_random(Ix2(8, 6), 4), vec![4, 2], proj)
    }

    #[test]
    fn gradcheck() {
        let (mut att, x, lengths, proj) = setup();
        for train in [false, true] {
            let run = |a: &SelfAttention<f64>, x: &Array2<f64>| {
                let mut rng = ChaCha8Rng::seed_from_u64(11);
                a.forward(x.view(), &lengths, if train { Some(&mut rng) } else { None })
            };
            let (_, cache) = run(&att, &x);
            assert_eq!(cache.drop_mask.is_some(), train);
            att.zero_grad();
            let dx = att.backward(x.view(), &lengths, &cache, proj.view());
            // Key-bias gradients are exactly 0 (softmax ignores a per-row shift); the floor covers
            // the central difference's rounding noise there.
            let gc = GradCheck {
                floor: 1e-3,
                ..GradCheck::default()
            };
            gc.params(&mut att, |a| proj_loss(&run(a, &x).0, &proj))
                .assert_below(1e-6);
            gc.input("x", &x, &dx, |x| proj_loss(&run(&att, x).0, &proj))
                .assert_below(1e-6);
        }
    }

    /// The inference form equals the training form without dropout, on three products or on the
    /// fused packed one, and a mutable walk (an optimizer step, say) drops the fused copy.
    #[test]
    fn inference_matches_forward_packed_or_not_and_a_mutable_walk_unpacks() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut att = SelfAttention::<f32>::new(64, 2, 0.0, 0.1, &mut rng);
        for l in [&mut att.query, &mut att.key, &mut att.value] {
            l.bias.value.mapv_inplace(|_| rng.gen_range(-0.5..0.5));
        }
        let x = Array2::from_shape_fn((18, 64), |_| rng.gen_range(-1.0f32..1.0));
        let lengths = [9, 5];
        let check = |att: &SelfAttention<f32>| {
            let (want, _) = att.forward(x.view(), &lengths, None::<&mut ChaCha8Rng>);
            let mut got = Array2::from_elem(x.raw_dim(), 7.0f32);
            let mut qkv = Array2::from_elem((18, 3 * 64), f32::NAN);
            att.forward_inference(x.view(), &lengths, qkv.view_mut(), got.view_mut());
            let worst = (&got - &want).iter().fold(0.0f32, |m, d| m.max(d.abs()));
            assert!(worst < 1e-5, "inference differs from forward by {worst}");
        };
        check(&att);
        att.prepack(Precision::F32);
        assert_eq!(att.fused_qkv.is_some(), crate::matmul::packed_kernel());
        check(&att);
        att.visit_mut("", &mut |_, mut p| p.value.mapv_inplace(|v| v * 1.5));
        assert!(
            att.fused_qkv.is_none(),
            "a mutable walk must drop the fused weights"
        );
        check(&att);
    }

    #[test]
    fn padding_does_not_change_real_rows() {
        let (att, x, lengths, _) = setup();
        let (c, _) = att.forward(x.view(), &lengths, None::<&mut ChaCha8Rng>);
        // Text 1's padded rows are 6..8.
        let mut x2 = x.clone();
        x2.slice_mut(s![6..8, ..]).fill(9.0);
        let (c2, _) = att.forward(x2.view(), &lengths, None::<&mut ChaCha8Rng>);
        assert_eq!(c.slice(s![..6, ..]), c2.slice(s![..6, ..]));
    }
}
