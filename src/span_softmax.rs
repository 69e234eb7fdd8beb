//! The reader's losses over one softmax per window: `p(i, j) = softmax of s(i, j)` over the
//! window's allowed spans (valid boundaries, at most `max_tokens` tokens; the gold span is always
//! in the set), against its one gold answer span `g`.
//!
//! - [`ReaderLoss::Ce`]: `-log p(g)`.
//! - [`ReaderLoss::ExpectedF1`]: `-Σ p(i,j) f1(i,j) + λ Σ p(i,j) log p(i,j)`, with `f1(i,j)` the
//!   F1 of span `(i, j)` against `g` over token positions ([`token_f1`]; 0 for the spans that
//!   share no token with `g`).
//!
//! Both are means over the windows that have a gold span (a window without one adds nothing).
//! Gradients are analytic: for `L = Σ p a + λ Σ p log p` with `a = -f1`,
//! `dL/ds_m = p_m [(a_m - Σ p a) + λ (log p_m - Σ p log p)]`; for the cross-entropy
//! `dL/ds_m = p_m - [m = g]`.

use crate::scalar::Scalar;
use crate::span::{Bounds, GoldSpan};
use ndarray::{ArrayView4, ArrayViewMut4, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Which loss the reader trains with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss", rename_all = "kebab-case")]
pub enum ReaderLoss {
    /// Softmax cross-entropy of the gold span over the allowed spans.
    Ce,
    /// Minus the expected F1 plus `lambda` times the negative entropy.
    ExpectedF1 {
        /// Weight of `Σ p log p` (an entropy bonus: a positive lambda sharpens nothing, it keeps
        /// the distribution spread; 0 is the plain expected F1).
        lambda: f64,
    },
}

/// F1 of span `(i, j)` against gold `(s, t)` (token indices, inclusive) over token positions:
/// `2 overlap / (len(i,j) + len(s,t))`.
pub fn token_f1(i: usize, j: usize, s: usize, t: usize) -> f64 {
    let lo = i.max(s);
    let hi = j.min(t);
    if lo > hi {
        return 0.0;
    }
    2.0 * (hi - lo + 1) as f64 / ((j - i + 1) + (t - s + 1)) as f64
}

/// The loss of `scores` `[B, 1, n, n]` (only allowed spans are read) against `gold` (per window,
/// the first span is the answer; an empty list: no answer in the window); writes
/// `d loss / d scores` into `dscores` (zero outside the allowed spans).
pub fn span_softmax_loss<T: Scalar>(
    scores: ArrayView4<T>,
    gold: &[Vec<GoldSpan>],
    bounds: Bounds,
    max_tokens: usize,
    loss: ReaderLoss,
    mut dscores: ArrayViewMut4<T>,
) -> f64 {
    let (b, c, n, _) = scores.dim();
    assert_eq!(c, 1, "span softmax: one type");
    assert_eq!(gold.len(), b, "span softmax: one gold list a window");
    dscores.fill(T::zero());
    let answered = gold.iter().filter(|g| !g.is_empty()).count();
    if answered == 0 {
        return 0.0;
    }
    let scale = 1.0 / answered as f64;
    let total: f64 = dscores
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .enumerate()
        .map(|(w, mut ds)| {
            let Some(&(_, gs, gt)) = gold[w].first() else {
                return 0.0;
            };
            let row = bounds.row(w);
            let s = scores.index_axis(Axis(0), w);
            // The allowed spans and their scores.
            let mut spans = Vec::new();
            for i in 0..n {
                if !row.starts[i] {
                    continue;
                }
                for j in i..n.min(i + max_tokens) {
                    if row.ends[j] && (i, j) != (gs, gt) {
                        spans.push((i, j, s[[0, i, j]].f64()));
                    }
                }
            }
            spans.push((gs, gt, s[[0, gs, gt]].f64()));
            let max = spans.iter().map(|x| x.2).fold(f64::NEG_INFINITY, f64::max);
            let lse = max + spans.iter().map(|x| (x.2 - max).exp()).sum::<f64>().ln();
            match loss {
                ReaderLoss::Ce => {
                    for &(i, j, v) in &spans {
                        ds[[0, i, j]] = T::c(scale * (v - lse).exp());
                    }
                    let g = ds[[0, gs, gt]].f64();
                    ds[[0, gs, gt]] = T::c(g - scale);
                    lse - s[[0, gs, gt]].f64()
                }
                ReaderLoss::ExpectedF1 { lambda } => {
                    let (mut mean_a, mut mean_logp) = (0.0, 0.0);
                    for &(i, j, v) in &spans {
                        let (logp, a) = (v - lse, -token_f1(i, j, gs, gt));
                        mean_a += logp.exp() * a;
                        mean_logp += logp.exp() * logp;
                    }
                    for &(i, j, v) in &spans {
                        let (logp, a) = (v - lse, -token_f1(i, j, gs, gt));
                        let g = logp.exp() * ((a - mean_a) + lambda * (logp - mean_logp));
                        ds[[0, i, j]] = T::c(scale * g);
                    }
                    mean_a + lambda * mean_logp
                }
            }
        })
        .sum();
    total * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use ndarray::{Array2, Array4, Ix4};

    fn case() -> (Array4<f64>, Array2<bool>, Array2<bool>, Vec<Vec<GoldSpan>>) {
        let n = 7;
        let s = fixed_random(Ix4(3, 1, n, n), 5) * 3.0;
        let starts = Array2::from_shape_fn((3, n), |(b, i)| i >= 2 + b % 2 && i < n - 1);
        let ends = Array2::from_shape_fn((3, n), |(b, i)| i >= 2 && i < n - 1 && (b != 1 || i != 4));
        // Window 1's gold is longer than max_tokens (still in the set); window 2 has none.
        let gold = vec![vec![(0, 3, 4)], vec![(0, 3, 5)], vec![]];
        (s, starts, ends, gold)
    }

    #[test]
    fn gradcheck_both_losses_in_f64() {
        let (s, starts, ends, gold) = case();
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        for loss in [
            ReaderLoss::Ce,
            ReaderLoss::ExpectedF1 { lambda: 0.0 },
            ReaderLoss::ExpectedF1 { lambda: 0.3 },
        ] {
            let mut ds = Array4::zeros(s.dim());
            span_softmax_loss(s.view(), &gold, bounds, 2, loss, ds.view_mut());
            let mut scratch = Array4::zeros(s.dim());
            GradCheck {
                max_elems: 1000,
                ..GradCheck::default()
            }
            .input("scores", &s, &ds, |x| {
                span_softmax_loss(x.view(), &gold, bounds, 2, loss, scratch.view_mut())
            })
            .assert_below(1e-6);
            assert_eq!(ds.index_axis(Axis(0), 2).sum(), 0.0, "no gold, no gradient");
            assert!(ds.iter().any(|&g| g != 0.0));
        }
    }

    #[test]
    fn values_match_the_formulas_on_a_small_window() {
        // n = 3, tokens 1 and 2 allowed: spans (1,1), (1,2), (2,2); gold (1,1).
        let mut s = Array4::zeros((1, 1, 3, 3));
        s[[0, 0, 1, 1]] = 1.0;
        s[[0, 0, 1, 2]] = 0.0;
        s[[0, 0, 2, 2]] = -1.0;
        let flags = ndarray::array![[false, true, true]];
        let bounds = Bounds::same(flags.view());
        let gold = vec![vec![(0, 1, 1)]];
        let z = 1f64.exp() + 1.0 + (-1f64).exp();
        let p = [1f64.exp() / z, 1.0 / z, (-1f64).exp() / z];
        let mut ds = Array4::zeros((1, 1, 3, 3));
        let ce = span_softmax_loss(s.view(), &gold, bounds, 8, ReaderLoss::Ce, ds.view_mut());
        assert!((ce - (z.ln() - 1.0)).abs() < 1e-12);
        // f1: (1,1) 1, (1,2) 2/3, (2,2) 0.
        let lambda = 0.5;
        let ef1 = span_softmax_loss(
            s.view(),
            &gold,
            bounds,
            8,
            ReaderLoss::ExpectedF1 { lambda },
            ds.view_mut(),
        );
        let want = -(p[0] + p[1] * 2.0 / 3.0) + lambda * p.iter().map(|q| q * q.ln()).sum::<f64>();
        assert!((ef1 - want).abs() < 1e-12, "{ef1} vs {want}");
        // max_tokens 1 drops (1,2) from the set.
        let short = span_softmax_loss(s.view(), &gold, bounds, 1, ReaderLoss::Ce, ds.view_mut());
        let z1 = 1f64.exp() + (-1f64).exp();
        assert!((short - (z1.ln() - 1.0)).abs() < 1e-12);
        assert_eq!(ds[[0, 0, 1, 2]], 0.0);
    }

    #[test]
    fn token_f1_counts_shared_positions() {
        assert_eq!(token_f1(3, 4, 3, 4), 1.0);
        assert_eq!(token_f1(3, 3, 3, 4), 2.0 / 3.0);
        assert_eq!(token_f1(1, 2, 3, 4), 0.0);
        assert_eq!(token_f1(2, 5, 3, 4), 4.0 / 6.0);
    }
}
