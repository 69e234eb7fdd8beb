//! Span-scoring heads: GlobalPointer and Efficient GlobalPointer over the encoder output, with the
//! shared pieces they use (RoPE table, grow-only buffers, the invalid-span mask).
//!
//! Both heads take `h` `[B*n, H]` (row `b*n + i` is token `i` of text `b`), the token count `n`
//! and `valid` `[B, n]` (true = the token may be an entity boundary: real and not special), and
//! write scores `[B, C, n, n]` into a caller-owned [`Buffer`]. Spans with `i > j` or an invalid
//! end are set to [`MASKED_SCORE`]. Backward takes the score gradient (zero on those spans, as the
//! loss writes it) and returns `dh`, accumulating parameter gradients.

pub mod buffer;
pub mod efficient;
pub mod global_pointer;
pub mod rope;

pub use buffer::Buffer;
pub use efficient::EfficientGlobalPointer;
pub use global_pointer::GlobalPointer;
pub use rope::RopeTable;

use crate::param::{ParamMut, Params};
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView2, ArrayView4, ArrayViewD, ArrayViewMut4, Axis};
use rayon::prelude::*;

/// The score of an excluded span (`i > j`, or an end that is not a valid boundary): large and
/// negative so that it contributes nothing to the loss and is never decoded (exactly -1e12 in
/// f64, the nearest f32 in f32), as in the reference implementation.
pub const MASKED_SCORE: f64 = -1e12;

/// True when span `(i, j)` of a text with boundary flags `valid` can be an entity.
#[inline]
pub fn span_is_valid(valid: &ndarray::ArrayView1<bool>, i: usize, j: usize) -> bool {
    i <= j && valid[i] && valid[j]
}

/// Forward activations a head keeps for its backward, and scratch reused across calls
/// (all grow-only: a step allocates nothing once the largest batch has been seen).
#[derive(Clone, Debug, Default)]
pub struct HeadCache<T> {
    /// cos/sin table, grown to the longest text seen.
    pub(crate) rope: RopeTable<T>,
    /// Plain head: dense output `[B*n, C*2d]` with RoPE applied. Efficient head: `u` `[B*n, 2d]`.
    pub(crate) proj: Buffer<T>,
    /// Efficient head: rotated `[q | k]` `[B*n, 2d]` (q = u[0::2], k = u[1::2]).
    pub(crate) qk: Buffer<T>,
    /// Efficient head: per-type boundary scores `c` `[B*n, 2C]`.
    pub(crate) bias: Buffer<T>,
    /// Backward scratch: gradient of `proj` (plain) or of the rotated `[q | k]` (efficient).
    pub(crate) dproj: Buffer<T>,
    /// Efficient head backward: `Σ_a dS[b, a]` `[B, 1, n, n]`.
    pub(crate) dsum: Buffer<T>,
    /// Efficient head backward: `dc` `[B*n, 2C]`.
    pub(crate) dbias: Buffer<T>,
    /// (B, n) of the last forward, checked by backward.
    pub(crate) batch: (usize, usize),
}

impl<T: Scalar> HeadCache<T> {
    /// An empty cache.
    pub fn new() -> Self {
        HeadCache {
            rope: RopeTable::new(0),
            proj: Buffer::new(),
            qk: Buffer::new(),
            bias: Buffer::new(),
            dproj: Buffer::new(),
            dsum: Buffer::new(),
            dbias: Buffer::new(),
            batch: (0, 0),
        }
    }

    /// Bytes held by the cache's buffers.
    pub fn capacity_bytes(&self) -> usize {
        [
            &self.proj,
            &self.qk,
            &self.bias,
            &self.dproj,
            &self.dsum,
            &self.dbias,
        ]
        .iter()
        .map(|b| b.capacity_bytes())
        .sum()
    }
}

/// Checks the shapes of a head's input and returns the batch size B.
pub(crate) fn batch_size(h: ArrayView2<'_, impl Scalar>, n: usize, valid: &ArrayView2<bool>) -> usize {
    assert!(n > 0, "head: n must be positive");
    assert_eq!(
        h.nrows() % n,
        0,
        "head: h has {} rows, not a multiple of n = {n}",
        h.nrows()
    );
    let b = h.nrows() / n;
    assert_eq!(valid.dim(), (b, n), "head: valid must be [B, n] = [{b}, {n}]");
    b
}

/// Applies `R_pos` (or `R_posᵀ` when `back`) to every `d`-vector of every row of a row-major
/// `[B*n, width]` matrix, the row `r` being position `r % n`. Parallel over rows.
pub(crate) fn rotate_rows<T: Scalar>(
    rope: &RopeTable<T>,
    data: &mut [T],
    width: usize,
    n: usize,
    back: bool,
) {
    let d = rope.dim();
    data.par_chunks_mut(width)
        .with_min_len(64)
        .enumerate()
        .for_each(|(r, row)| {
            for v in row.chunks_exact_mut(d) {
                if back {
                    rope.rotate_back(v, r % n);
                } else {
                    rope.rotate(v, r % n);
                }
            }
        });
}

/// Sets every excluded span of `scores` `[B, C, n, n]` to [`MASKED_SCORE`]. Parallel over texts.
pub(crate) fn mask_invalid<T: Scalar>(mut scores: ArrayViewMut4<'_, T>, valid: ArrayView2<'_, bool>) {
    let masked = T::c(MASKED_SCORE);
    scores
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(valid.axis_iter(Axis(0)).into_par_iter())
        .for_each(|(mut sb, vb)| {
            for mut sa in sb.outer_iter_mut() {
                for ((i, j), s) in sa.indexed_iter_mut() {
                    if !span_is_valid(&vb, i, j) {
                        *s = masked;
                    }
                }
            }
        });
}

/// Either head, so a model can hold one chosen at run time.
// A model holds one head: the size difference of the variants (a few hundred bytes) is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Head<T> {
    GlobalPointer(GlobalPointer<T>),
    Efficient(EfficientGlobalPointer<T>),
}

impl<T: Scalar> Head<T> {
    /// Number of entity types C.
    pub fn num_types(&self) -> usize {
        match self {
            Head::GlobalPointer(g) => g.num_types,
            Head::Efficient(e) => e.num_types,
        }
    }

    /// Head size d.
    pub fn head_size(&self) -> usize {
        match self {
            Head::GlobalPointer(g) => g.head_size,
            Head::Efficient(e) => e.head_size,
        }
    }

    /// Scores `[B, C, n, n]` into `scores`; see the module docs.
    pub fn forward(
        &self,
        h: ArrayView2<T>,
        n: usize,
        valid: ArrayView2<bool>,
        cache: &mut HeadCache<T>,
        scores: &mut Buffer<T>,
    ) {
        match self {
            Head::GlobalPointer(g) => g.forward(h, n, valid, cache, scores),
            Head::Efficient(e) => e.forward(h, n, valid, cache, scores),
        }
    }

    /// Returns `dh` `[B*n, H]` and accumulates parameter gradients; `dscores` `[B, C, n, n]`.
    pub fn backward(
        &mut self,
        h: ArrayView2<T>,
        cache: &mut HeadCache<T>,
        dscores: ArrayView4<T>,
    ) -> Array2<T> {
        match self {
            Head::GlobalPointer(g) => g.backward(h, cache, dscores),
            Head::Efficient(e) => e.backward(h, cache, dscores),
        }
    }
}

impl<T: Scalar> Params<T> for Head<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        match self {
            Head::GlobalPointer(g) => g.visit(prefix, f),
            Head::Efficient(e) => e.visit(prefix, f),
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        match self {
            Head::GlobalPointer(g) => g.visit_mut(prefix, f),
            Head::Efficient(e) => e.visit_mut(prefix, f),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Both heads composed with the loss: gradient checks in f64, with and without RoPE.
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use crate::loss::{mcce_sparse, GoldSpan, SpanSet};
    use crate::nn::Linear;
    use ndarray::{Array2, Array4, Ix1, Ix2};

    const N: usize = 6;
    const H: usize = 5;

    fn inputs() -> (Array2<f64>, Array2<bool>, Vec<Vec<GoldSpan>>) {
        let h = fixed_random(Ix2(2 * N, H), 21);
        let valid = ndarray::array![
            [false, true, true, true, true, false],
            [false, true, true, false, false, false]
        ];
        let gold = vec![vec![(0, 1, 3), (2, 2, 2), (1, 1, 4)], vec![(1, 1, 2)]];
        (h, valid, gold)
    }

    fn heads(rope: bool) -> Vec<Head<f64>> {
        let (c, d) = (3, 4);
        let gp = GlobalPointer::from_dense(
            Linear::from_arrays(
                fixed_random(Ix2(c * 2 * d, H), 1),
                fixed_random(Ix1(c * 2 * d), 2),
            ),
            c,
            d,
            rope,
        );
        let egp = EfficientGlobalPointer::from_dense(
            Linear::from_arrays(fixed_random(Ix2(2 * d, H), 3), fixed_random(Ix1(2 * d), 4)),
            Linear::from_arrays(fixed_random(Ix2(2 * c, 2 * d), 5), fixed_random(Ix1(2 * c), 6)),
            rope,
        );
        vec![Head::GlobalPointer(gp), Head::Efficient(egp)]
    }

    /// Mean loss of the head's scores; `dscores` receives the loss gradient.
    fn loss(head: &Head<f64>, h: &Array2<f64>, cache: &mut HeadCache<f64>, dscores: &mut Array4<f64>) -> f64 {
        let (_, valid, gold) = inputs();
        let mut scores = Buffer::new();
        head.forward(h.view(), N, valid.view(), cache, &mut scores);
        *dscores = Array4::zeros(scores.view4().dim());
        mcce_sparse(
            scores.view4(),
            &gold,
            SpanSet::Valid(valid.view()),
            dscores.view_mut(),
        )
    }

    #[test]
    fn gradcheck_heads_with_loss() {
        for rope in [true, false] {
            for mut head in heads(rope) {
                let (h, _, _) = inputs();
                let mut cache = HeadCache::new();
                let mut ds = Array4::zeros((0, 0, 0, 0));
                loss(&head, &h, &mut cache, &mut ds);
                head.zero_grad();
                let dh = head.backward(h.view(), &mut cache, ds.view());
                let gc = GradCheck::default();
                let mut scratch = (HeadCache::new(), Array4::zeros((0, 0, 0, 0)));
                gc.params(&mut head, |m| loss(m, &h, &mut scratch.0, &mut scratch.1))
                    .assert_below(1e-6);
                gc.input("h", &h, &dh, |x| loss(&head, x, &mut scratch.0, &mut scratch.1))
                    .assert_below(1e-6);
            }
        }
    }

    #[test]
    fn masked_spans_and_buffer_reuse() {
        let (h, valid, _) = inputs();
        let mut cache = HeadCache::new();
        let mut scores = Buffer::new();
        for head in heads(true) {
            head.forward(h.view(), N, valid.view(), &mut cache, &mut scores);
            let s = scores.view4();
            assert_eq!(s.dim(), (2, 3, N, N));
            for ((b, _, i, j), &v) in s.indexed_iter() {
                let ok = i <= j && valid[[b, i]] && valid[[b, j]];
                assert_eq!(v == MASKED_SCORE, !ok, "({b}, {i}, {j})");
            }
        }
        let cap = scores.capacity_bytes();
        // A smaller batch reuses the buffer.
        let h1 = h.slice(ndarray::s![..N, ..]).to_owned();
        heads(true)[0].forward(
            h1.view(),
            N,
            valid.slice(ndarray::s![..1, ..]),
            &mut cache,
            &mut scores,
        );
        assert_eq!(scores.view4().dim(), (1, 3, N, N));
        assert_eq!(scores.capacity_bytes(), cap);
    }

    #[test]
    fn f32_matches_f64() {
        let (h, valid, _) = inputs();
        for head in heads(true) {
            let head32 = match &head {
                Head::GlobalPointer(g) => Head::GlobalPointer(GlobalPointer::from_dense(
                    Linear::from_arrays(
                        g.dense.weight.value.mapv(|x| x as f32),
                        g.dense.bias.value.mapv(|x| x as f32),
                    ),
                    g.num_types,
                    g.head_size,
                    true,
                )),
                Head::Efficient(e) => Head::Efficient(EfficientGlobalPointer::from_dense(
                    Linear::from_arrays(
                        e.p_dense.weight.value.mapv(|x| x as f32),
                        e.p_dense.bias.value.mapv(|x| x as f32),
                    ),
                    Linear::from_arrays(
                        e.c_dense.weight.value.mapv(|x| x as f32),
                        e.c_dense.bias.value.mapv(|x| x as f32),
                    ),
                    true,
                )),
            };
            let (mut c64, mut s64) = (HeadCache::new(), Buffer::new());
            let (mut c32, mut s32) = (HeadCache::<f32>::new(), Buffer::new());
            head.forward(h.view(), N, valid.view(), &mut c64, &mut s64);
            head32.forward(h.mapv(|x| x as f32).view(), N, valid.view(), &mut c32, &mut s32);
            for (a, b) in s64.as_slice().iter().zip(s32.as_slice()) {
                assert!((a - *b as f64).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
}
