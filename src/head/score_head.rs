//! Heads that score every span: `[B, C, n, n]` scores, the multi-label cross-entropy as their
//! loss and "every valid span above the threshold" as their decoding (GlobalPointer, Efficient
//! GlobalPointer and the additive head). A [`ScoreHead`] implements only the scores and their
//! backward, with scratch of its own type; [`Scored`] makes it a [`SpanHead`].

use super::buffer::Buffer;
use super::cache::HeadCache;
use super::config::HeadConfig;
use super::rope::RopeTable;
use super::span_head::SpanHead;
use crate::decode::{decode, DecodeMode};
use crate::loss::{mcce_sparse, SpanSet};
use crate::param::{ParamMut, Params};
use crate::scalar::Scalar;
use crate::span::{Bounds, GoldSpan, SpanPred, MASKED_SCORE};
use ndarray::{Array2, ArrayView2, ArrayView4, ArrayViewD, ArrayViewMut4, Axis};
use rayon::prelude::*;

/// The GlobalPointer heads' activations and scratch (all grow-only: a step allocates nothing
/// once the largest batch has been seen).
#[derive(Clone, Debug, Default)]
pub struct ScoreCache<T> {
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

impl<T: Scalar> ScoreCache<T> {
    /// An empty cache.
    pub fn new() -> Self {
        ScoreCache {
            rope: RopeTable::new(0),
            ..Default::default()
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

/// A head that scores every span of every type.
pub trait ScoreHead<T: Scalar>: Params<T> + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// What the forward keeps for the backward, and scratch (grow-only; [`Scored`] keeps it in
    /// the [`HeadCache`] beside the scores).
    type Cache: Default + Send + 'static;
    /// See [`SpanHead::config`].
    fn head_config(&self) -> HeadConfig;
    /// Number of entity types C.
    fn types(&self) -> usize;
    /// See [`SpanHead::prepack`].
    fn prepack(&mut self);
    /// h `[B*n, H]` -> scores `[B, C, n, n]` into `scores`, excluded spans at [`MASKED_SCORE`].
    fn forward_scores(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        cache: &mut Self::Cache,
        scores: &mut Buffer<T>,
    );
    /// dscores `[B, C, n, n]` (zero on excluded spans) -> dh `[B*n, H]`; accumulates parameter
    /// gradients. `h` and `cache` must be those of the matching forward.
    fn backward_scores(
        &mut self,
        h: ArrayView2<T>,
        cache: &mut Self::Cache,
        dscores: ArrayView4<T>,
    ) -> Array2<T>;
}

/// What [`Scored`] keeps between calls: the head's own cache, the span scores and their loss
/// gradient.
#[derive(Clone, Debug, Default)]
pub struct ScoredCache<T, C> {
    /// The [`ScoreHead`]'s cache.
    pub inner: C,
    /// The span scores `[B, C, n, n]`.
    pub scores: Buffer<T>,
    /// The loss gradient of `scores`, `[B, C, n, n]`.
    pub dscores: Buffer<T>,
}

/// A [`ScoreHead`] as a [`SpanHead`]: the multi-label cross-entropy over its scores as the
/// loss, every valid span above the threshold as the decoding. Parameters walk as the inner
/// head's.
#[derive(Clone, Debug)]
pub struct Scored<S>(pub S);

impl<T: Scalar, S: ScoreHead<T>> Params<T> for Scored<S> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.0.visit(prefix, f)
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.0.visit_mut(prefix, f)
    }
}

impl<T: Scalar, S: ScoreHead<T>> SpanHead<T> for Scored<S> {
    fn config(&self) -> HeadConfig {
        self.0.head_config()
    }

    fn prepack(&mut self) {
        self.0.prepack();
    }

    fn num_types(&self) -> usize {
        self.0.types()
    }

    fn loss(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        gold: &[Vec<GoldSpan>],
        cache: &mut HeadCache,
    ) -> f64 {
        let c: &mut ScoredCache<T, S::Cache> = cache.get();
        self.0.forward_scores(h, n, bounds, &mut c.inner, &mut c.scores);
        c.dscores.reshape(c.scores.shape());
        mcce_sparse(
            c.scores.view4(),
            gold,
            SpanSet::Valid(bounds),
            c.dscores.view4_mut(),
        )
    }

    fn backward(&mut self, h: ArrayView2<T>, cache: &mut HeadCache) -> Array2<T> {
        let c: &mut ScoredCache<T, S::Cache> = cache.get();
        self.0.backward_scores(h, &mut c.inner, c.dscores.view4())
    }

    fn decode(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        threshold: f64,
        cache: &mut HeadCache,
    ) -> Vec<Vec<SpanPred>> {
        let c: &mut ScoredCache<T, S::Cache> = cache.get();
        self.0.forward_scores(h, n, bounds, &mut c.inner, &mut c.scores);
        decode(c.scores.view4(), bounds, threshold, DecodeMode::Nested)
    }

    fn boxed_clone(&self) -> Box<dyn SpanHead<T>> {
        Box::new(self.clone())
    }
}

/// Checks the shapes of a head's input and returns the batch size B.
pub(crate) fn batch_size(h: ArrayView2<'_, impl Scalar>, n: usize, bounds: &Bounds) -> usize {
    assert!(n > 0, "head: n must be positive");
    assert_eq!(
        h.nrows() % n,
        0,
        "head: h has {} rows, not a multiple of n = {n}",
        h.nrows()
    );
    let b = h.nrows() / n;
    assert_eq!(bounds.dim(), (b, n), "head: bounds must be [B, n] = [{b}, {n}]");
    assert_eq!(bounds.ends.dim(), (b, n), "head: ends must be [B, n]");
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
pub(crate) fn mask_invalid<T: Scalar>(mut scores: ArrayViewMut4<'_, T>, bounds: Bounds) {
    let masked = T::c(MASKED_SCORE);
    scores
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut sb)| {
            let row = bounds.row(b);
            for mut sa in sb.outer_iter_mut() {
                for (i, mut si) in sa.outer_iter_mut().enumerate() {
                    // Row i: all of it when i starts nothing, else j < i and every j ending nothing.
                    if !row.starts[i] {
                        si.fill(masked);
                        continue;
                    }
                    for (j, s) in si.iter_mut().enumerate() {
                        if j < i || !row.ends[j] {
                            *s = masked;
                        }
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::span_is_valid;
    use ndarray::{Array2, Array4};

    /// The row-wise masking masks exactly the spans `span_is_valid` rejects, and keeps the rest.
    #[test]
    fn mask_invalid_is_span_is_valid() {
        let (b, c, n) = (3, 2, 7);
        // Flags from a fixed pattern: text 1 has a start-less and an end-less position.
        let starts = Array2::from_shape_fn((b, n), |(t, i)| (t * 5 + i * 3) % 4 != 1);
        let ends = Array2::from_shape_fn((b, n), |(t, j)| (t + j * 7) % 5 != 2);
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        let mut s = Array4::from_shape_fn((b, c, n, n), |(t, a, i, j)| {
            (t * 1000 + a * 100 + i * 10 + j) as f64
        });
        let before = s.clone();
        mask_invalid(s.view_mut(), bounds);
        let mut masked = 0;
        for ((t, a, i, j), &v) in s.indexed_iter() {
            if span_is_valid(&bounds.row(t), i, j) {
                assert_eq!(v, before[[t, a, i, j]], "kept span ({t}, {a}, {i}, {j})");
            } else {
                assert_eq!(v, MASKED_SCORE, "excluded span ({t}, {a}, {i}, {j})");
                masked += 1;
            }
        }
        assert!(
            masked > b * c * n * (n - 1) / 2,
            "bounds exclude some upper spans too"
        );
    }
}
