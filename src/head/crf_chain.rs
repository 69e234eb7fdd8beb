//! Linear-chain CRF algorithms over emissions `e` `[L, T]` and transitions `trans[prev, cur]`
//! `[T, T]`: the forward-backward log-potentials, a path's score, the negative log-likelihood
//! with its gradient, and the Viterbi path (no start or end transitions, as bert4keras).

use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// `log Σ exp(x)` of a slice, stable.
pub fn log_sum_exp<T: Scalar>(x: impl Iterator<Item = T> + Clone) -> T {
    let m = x.clone().fold(T::neg_infinity(), |a, b| a.max(b));
    if m == T::neg_infinity() {
        return m;
    }
    m + x.map(|v| (v - m).exp()).fold(T::zero(), |a, b| a + b).ln()
}

/// Forward (`alpha`) and backward (`beta`) log-potentials of emissions `e` `[L, T]` (L >= 1):
/// `alpha[t, y]` = log-sum of the scores of all prefixes ending in y at t (emission included),
/// `beta[t, y]` = log-sum of all suffixes after t given y at t. Returns `(alpha, beta, log Z)`.
pub fn forward_backward<T: Scalar>(e: ArrayView2<T>, trans: ArrayView2<T>) -> (Array2<T>, Array2<T>, T) {
    let (l, nt) = e.dim();
    let mut alpha = Array2::zeros((l, nt));
    let mut beta = Array2::zeros((l, nt));
    alpha.row_mut(0).assign(&e.row(0));
    for t in 1..l {
        for y in 0..nt {
            let prev = alpha.row(t - 1);
            alpha[[t, y]] = e[[t, y]] + log_sum_exp((0..nt).map(|p| prev[p] + trans[[p, y]]));
        }
    }
    for t in (0..l - 1).rev() {
        for p in 0..nt {
            let next = beta.row(t + 1);
            beta[[t, p]] = log_sum_exp((0..nt).map(|y| trans[[p, y]] + e[[t + 1, y]] + next[y]));
        }
    }
    let log_z = log_sum_exp(alpha.row(l - 1).iter().copied());
    (alpha, beta, log_z)
}

/// The score of tag path `tags` under emissions `e` `[L, T]`.
pub fn path_score<T: Scalar>(e: ArrayView2<T>, trans: ArrayView2<T>, tags: &[usize]) -> T {
    let mut s = T::zero();
    for (t, &y) in tags.iter().enumerate() {
        s += e[[t, y]];
        if t > 0 {
            s += trans[[tags[t - 1], y]];
        }
    }
    s
}

/// Negative log-likelihood `log Z - score(tags)` of one sequence `e` `[L, T]`; adds
/// `scale · d/dE` into `de` `[L, T]` and `scale · d/dtrans` into `dtrans`.
pub fn nll<T: Scalar>(
    e: ArrayView2<T>,
    trans: ArrayView2<T>,
    tags: &[usize],
    scale: T,
    mut de: ArrayViewMut2<T>,
    dtrans: &mut Array2<T>,
) -> T {
    let (l, nt) = e.dim();
    if l == 0 {
        return T::zero();
    }
    let (alpha, beta, log_z) = forward_backward(e, trans);
    for t in 0..l {
        for y in 0..nt {
            // P(y_t = y) = exp(alpha + beta - log Z)
            de[[t, y]] += scale * (alpha[[t, y]] + beta[[t, y]] - log_z).exp();
        }
        de[[t, tags[t]]] -= scale;
        if t > 0 {
            // P(y_{t-1} = p, y_t = y) = exp(alpha[t-1, p] + trans[p, y] + E[t, y] + beta[t, y] - log Z)
            for p in 0..nt {
                for y in 0..nt {
                    let lp = alpha[[t - 1, p]] + trans[[p, y]] + e[[t, y]] + beta[[t, y]] - log_z;
                    dtrans[[p, y]] += scale * lp.exp();
                }
            }
            dtrans[[tags[t - 1], tags[t]]] -= scale;
        }
    }
    log_z - path_score(e, trans, tags)
}

/// The best tag path of `e` `[L, T]` and its score (ties: the lowest tag).
pub fn viterbi<T: Scalar>(e: ArrayView2<T>, trans: ArrayView2<T>) -> (Vec<usize>, T) {
    let (l, nt) = e.dim();
    if l == 0 {
        return (Vec::new(), T::zero());
    }
    let mut delta = e.row(0).to_owned();
    let mut back = Array2::<usize>::zeros((l, nt));
    for t in 1..l {
        let prev = delta.clone();
        for y in 0..nt {
            let (mut best, mut arg) = (prev[0] + trans[[0, y]], 0);
            for p in 1..nt {
                let v = prev[p] + trans[[p, y]];
                if v > best {
                    (best, arg) = (v, p);
                }
            }
            delta[y] = best + e[[t, y]];
            back[[t, y]] = arg;
        }
    }
    let (mut last, mut best) = (0, delta[0]);
    for y in 1..nt {
        if delta[y] > best {
            (last, best) = (y, delta[y]);
        }
    }
    let mut path = vec![0; l];
    path[l - 1] = last;
    for t in (1..l).rev() {
        path[t - 1] = back[[t, path[t]]];
    }
    (path, best)
}
