//! Multi-label categorical cross-entropy over span scores (method.md §3), with its gradient.
//!
//! For text b and type a, with P its gold spans and Q the other spans taking part:
//! `L = log(1 + Σ_P e^{-s}) + log(1 + Σ_Q e^{s})`; the loss is the mean over (text, type).
//! Gradient: `-e^{-s}/Z_P` on P, `e^{s}/Z_Q` on Q, 0 on spans that take no part.
//!
//! Both sums are log-sum-exps including the implicit 0 logit, shifted by their maxima, so the
//! loss is finite for any finite scores. Each (text, type) block is one rayon task: one pass over
//! its scores for the maxima, one computing each exponential once (loss sums and gradient
//! numerators together), one scaling the gradient.
//!
//! The sparse form takes gold spans as per-text lists and walks them with a cursor in the same
//! (i, j) order as the scores, so it computes exactly Q (no `log(1 - e^{lse_P - lse_all})`
//! subtraction, which loses all precision when a gold score dominates): it gives the same value
//! and gradient as the dense form, bit for bit, with no dense label tensor.

use crate::scalar::Scalar;
use crate::span::{Bounds, GoldSpan, RowBounds};
use ndarray::{ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Axis};
use rayon::prelude::*;

/// Which spans of each text take part in the loss.
#[derive(Clone, Copy, Debug)]
pub enum SpanSet<'a> {
    /// `(i, j)` with `i <= j`, `starts[b, i]` and `ends[b, j]`: what the heads score
    /// (`[B, n]` each). The other spans contribute nothing and get gradient 0.
    Valid(Bounds<'a>),
    /// Every `(i, j)` of the `n x n` grid (scores already masked by the caller, as in the
    /// reference implementation's loss).
    All,
}

/// Dense form: `labels` `[B, C, n, n]` (true = gold span). Returns the mean loss and writes
/// `d loss / d scores` into `grad` (`[B, C, n, n]`, standard layout).
pub fn mcce_dense<T: Scalar>(
    scores: ArrayView4<T>,
    labels: ArrayView4<bool>,
    spans: SpanSet,
    grad: ArrayViewMut4<T>,
) -> f64 {
    assert_eq!(
        labels.dim(),
        scores.dim(),
        "mcce_dense: labels shape differs from scores"
    );
    run_blocks(scores, spans, grad, |b, a| {
        let lab = labels.slice(ndarray::s![b, a, .., ..]);
        move |i: usize, j: usize| lab[[i, j]]
    })
}

/// Sparse form: `gold[b]` lists the gold spans of text b (duplicates count once; spans outside
/// `spans` are ignored). Same value and gradient as [`mcce_dense`].
pub fn mcce_sparse<T: Scalar>(
    scores: ArrayView4<T>,
    gold: &[Vec<GoldSpan>],
    spans: SpanSet,
    grad: ArrayViewMut4<T>,
) -> f64 {
    let (bs, c, _, _) = scores.dim();
    assert_eq!(gold.len(), bs, "mcce_sparse: one gold list per text");
    // Per text, gold sorted by (type, start, end) so each (text, type) owns a sorted slice.
    let sorted: Vec<Vec<GoldSpan>> = gold
        .iter()
        .map(|g| {
            let mut v = g.clone();
            v.sort_unstable();
            v.dedup();
            assert!(
                v.iter().all(|&(a, ..)| a < c),
                "mcce_sparse: gold type out of range"
            );
            v
        })
        .collect();
    run_blocks(scores, spans, grad, |b, a| {
        let g = &sorted[b];
        let lo = g.partition_point(|&(t, ..)| t < a);
        let hi = g.partition_point(|&(t, ..)| t <= a);
        GoldCursor {
            spans: &g[lo..hi],
            at: 0,
        }
    })
}

/// Walks a type's sorted gold spans alongside spans visited in increasing (i, j) order.
struct GoldCursor<'a> {
    spans: &'a [GoldSpan],
    at: usize,
}

impl GoldCursor<'_> {
    fn is_gold(&mut self, i: usize, j: usize) -> bool {
        while self.at < self.spans.len() && (self.spans[self.at].1, self.spans[self.at].2) < (i, j) {
            self.at += 1;
        }
        self.at < self.spans.len() && (self.spans[self.at].1, self.spans[self.at].2) == (i, j)
    }
}

/// Membership test for gold spans, queried in increasing (i, j) order within one pass.
trait Gold {
    fn is_gold(&mut self, i: usize, j: usize) -> bool;
}

impl<F: FnMut(usize, usize) -> bool> Gold for F {
    fn is_gold(&mut self, i: usize, j: usize) -> bool {
        self(i, j)
    }
}

impl Gold for GoldCursor<'_> {
    fn is_gold(&mut self, i: usize, j: usize) -> bool {
        GoldCursor::is_gold(self, i, j)
    }
}

/// Runs one task per (text, type) block; `gold_of(b, a)` makes a fresh membership test.
fn run_blocks<T, G, F>(scores: ArrayView4<T>, spans: SpanSet, mut grad: ArrayViewMut4<T>, gold_of: F) -> f64
where
    T: Scalar,
    G: Gold,
    F: Fn(usize, usize) -> G + Sync,
{
    let (bs, c, n, n2) = scores.dim();
    assert_eq!(n, n2, "mcce: scores must be [B, C, n, n]");
    assert_eq!(grad.dim(), scores.dim(), "mcce: grad shape differs from scores");
    if let SpanSet::Valid(v) = spans {
        assert_eq!(v.dim(), (bs, n), "mcce: starts must be [B, n]");
        assert_eq!(v.ends.dim(), (bs, n), "mcce: ends must be [B, n]");
    }
    if bs * c == 0 {
        return 0.0;
    }
    // d mean / d L_{b,a}
    let scale = T::c(1.0 / (bs * c) as f64);
    let mut flat = grad
        .view_mut()
        .into_shape_with_order((bs * c, n, n))
        .expect("mcce: grad buffer must be contiguous (standard layout)");
    // Per-block losses summed serially in block order: a parallel `.sum()` would add them in
    // an order that depends on work stealing, and the reported loss would vary run to run.
    let losses: Vec<f64> = flat
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .map(|(ba, g)| {
            let (b, a) = (ba / c, ba % c);
            let s = scores.slice(ndarray::s![b, a, .., ..]);
            let row = match spans {
                SpanSet::Valid(v) => Some(v.row(b)),
                SpanSet::All => None,
            };
            block(s, row, || gold_of(b, a), scale, g)
        })
        .collect();
    losses.iter().sum::<f64>() / (bs * c) as f64
}

/// Calls `f(i, j)` for every span taking part, in increasing (i, j) order.
#[inline]
fn for_each_span(n: usize, valid: Option<RowBounds>, mut f: impl FnMut(usize, usize)) {
    match valid {
        None => (0..n).for_each(|i| (0..n).for_each(|j| f(i, j))),
        Some(v) => {
            for i in (0..n).filter(|&i| v.starts[i]) {
                for j in (i..n).filter(|&j| v.ends[j]) {
                    f(i, j);
                }
            }
        }
    }
}

/// One (text, type) block: returns L and writes `scale · dL/ds` into `g` (0 where excluded).
/// One exponential per span: pass 1 takes the maxima, pass 2 writes `±e^{±s - max}` and sums
/// them, pass 3 (over `g` only) divides by the sums.
fn block<T: Scalar, G: Gold>(
    s: ArrayView2<T>,
    valid: Option<RowBounds>,
    gold_of: impl Fn() -> G,
    scale: T,
    mut g: ArrayViewMut2<T>,
) -> f64 {
    let n = s.nrows();
    // Pass 1: maxima of -s over P and of s over Q, starting from the implicit 0 logit.
    let (mut mp, mut mq) = (T::zero(), T::zero());
    let mut gold = gold_of();
    for_each_span(n, valid, |i, j| {
        let x = s[[i, j]];
        if gold.is_gold(i, j) {
            mp = mp.max(-x);
        } else {
            mq = mq.max(x);
        }
    });
    // Pass 2: Z_P e^{-mp} = e^{-mp} + Σ_P e^{-s - mp}, likewise Z_Q; g holds -e on P, +e on Q.
    if valid.is_some() {
        g.fill(T::zero());
    }
    let (mut zp, mut zq) = ((-mp).exp(), (-mq).exp());
    let mut gold = gold_of();
    for_each_span(n, valid, |i, j| {
        let x = s[[i, j]];
        g[[i, j]] = if gold.is_gold(i, j) {
            let e = (-x - mp).exp();
            zp += e;
            -e
        } else {
            let e = (x - mq).exp();
            zq += e;
            e
        };
    });
    // Pass 3: dL/ds = -e^{-s}/Z_P on P, e^{s}/Z_Q on Q (the sign tells which).
    let (cp, cq) = (scale / zp, scale / zq);
    g.mapv_inplace(|v| if v < T::zero() { v * cp } else { v * cq });
    (mp + zp.ln() + mq + zq.ln()).f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use crate::span::Bounds;
    use ndarray::{Array2, Array4, Ix4};

    fn setup() -> (Array4<f64>, Array2<bool>, Vec<Vec<GoldSpan>>) {
        let s = fixed_random(Ix4(2, 3, 5, 5), 11) * 4.0;
        let valid = ndarray::array![
            [false, true, true, true, false],
            [false, true, true, false, false]
        ];
        let gold = vec![
            vec![(0, 1, 3), (2, 2, 2), (0, 1, 1)],
            vec![(1, 1, 2), (1, 2, 2), (2, 1, 1)],
        ];
        (s, valid, gold)
    }

    fn dense_labels(shape: (usize, usize, usize, usize), gold: &[Vec<GoldSpan>]) -> Array4<bool> {
        let mut l = Array4::from_elem(shape, false);
        for (b, g) in gold.iter().enumerate() {
            for &(a, i, j) in g {
                l[[b, a, i, j]] = true;
            }
        }
        l
    }

    #[test]
    fn one_block_by_hand() {
        // One text, one type, n = 2, all valid: spans (0,0), (0,1), (1,1); gold (0,1).
        let s = ndarray::array![[[[1.0, 2.0], [9.0, -1.0]]]];
        let labels = ndarray::array![[[[false, true], [false, false]]]];
        let valid = ndarray::array![[true, true]];
        let mut g = Array4::zeros((1, 1, 2, 2));
        let l = mcce_dense(
            s.view(),
            labels.view(),
            SpanSet::Valid(Bounds::same(valid.view())),
            g.view_mut(),
        );
        let zp = 1.0 + (-2.0f64).exp();
        let zq = 1.0 + 1f64.exp() + (-1f64).exp();
        assert!((l - (zp.ln() + zq.ln())).abs() < 1e-14);
        assert!((g[[0, 0, 0, 1]] + (-2.0f64).exp() / zp).abs() < 1e-15);
        assert!((g[[0, 0, 0, 0]] - 1f64.exp() / zq).abs() < 1e-15);
        assert_eq!(g[[0, 0, 1, 0]], 0.0);
    }

    #[test]
    fn dense_and_sparse_agree() {
        let (s, valid, gold) = setup();
        let labels = dense_labels(s.dim(), &gold);
        for spans in [SpanSet::Valid(Bounds::same(valid.view())), SpanSet::All] {
            let mut gd = Array4::from_elem(s.dim(), 7.0);
            let mut gs = Array4::from_elem(s.dim(), 7.0);
            let ld = mcce_dense(s.view(), labels.view(), spans, gd.view_mut());
            let ls = mcce_sparse(s.view(), &gold, spans, gs.view_mut());
            assert_eq!(ld, ls);
            assert_eq!(gd, gs);
        }
    }

    #[test]
    fn excluded_spans_contribute_nothing() {
        let (s, valid, gold) = setup();
        let mut g = Array4::zeros(s.dim());
        let l0 = mcce_sparse(
            s.view(),
            &gold,
            SpanSet::Valid(Bounds::same(valid.view())),
            g.view_mut(),
        );
        let mut s2 = s.clone();
        s2[[0, 0, 0, 0]] = 1e4; // invalid start
        s2[[0, 1, 3, 1]] = 1e4; // lower triangle
        let l1 = mcce_sparse(
            s2.view(),
            &gold,
            SpanSet::Valid(Bounds::same(valid.view())),
            g.view_mut(),
        );
        assert_eq!(l0, l1);
        assert_eq!(g[[0, 0, 0, 0]], 0.0);
        assert_eq!(g[[0, 1, 3, 1]], 0.0);
    }

    #[test]
    fn extreme_scores_stay_finite() {
        let (mut s, valid, gold) = setup();
        s[[0, 0, 1, 3]] = -1e4; // a gold span scored very low
        s[[0, 1, 1, 2]] = 1e4; // a non-gold span scored very high
        let mut g = Array4::zeros(s.dim());
        let l = mcce_sparse(
            s.view(),
            &gold,
            SpanSet::Valid(Bounds::same(valid.view())),
            g.view_mut(),
        );
        assert!(l.is_finite() && l > (2e4 - 1.0) / 6.0);
        assert!(g.iter().all(|x| x.is_finite()));
        let s32 = s.mapv(|x| x as f32);
        let mut g32 = Array4::<f32>::zeros(s.dim());
        let l32 = mcce_sparse(
            s32.view(),
            &gold,
            SpanSet::Valid(Bounds::same(valid.view())),
            g32.view_mut(),
        );
        assert!(((l32 - l) / l).abs() < 1e-5);
    }

    #[test]
    fn gradcheck_sparse() {
        let (s, valid, gold) = setup();
        for spans in [SpanSet::Valid(Bounds::same(valid.view())), SpanSet::All] {
            let mut g = Array4::zeros(s.dim());
            mcce_sparse(s.view(), &gold, spans, g.view_mut());
            let mut scratch = Array4::zeros(s.dim());
            GradCheck::default()
                .input("scores", &s, &g, |x| {
                    mcce_sparse(x.view(), &gold, spans, scratch.view_mut())
                })
                .assert_below(1e-6);
        }
    }
}
