//! The published baseline: a BIO tagger with a linear-chain CRF (bert4keras
//! `ConditionalRandomField` semantics, as in ../shared/reference/crf.safetensors).
//!
//! ```text
//! E = h Wᵀ + b                                  (H -> T tags: O = 0, B-a = 1 + 2a, I-a = 2 + 2a)
//! score(y) = Σ_t E[t, y_t] + Σ_{t>=1} trans[y_{t-1}, y_t]      (no start/end transitions)
//! loss = mean over texts of log Z - score(gold),  log Z = logsumexp over all paths (forward algorithm)
//! dE[t, y] = P(y_t = y) - [gold_t = y],  dtrans[p, y] = Σ_t P(y_{t-1} = p, y_t = y) - gold counts
//! ```
//!
//! The tag sequence of a text runs over its boundary tokens (those that may start or end an
//! entity: not special, not padding; with word boundaries, a word's inner pieces are skipped and
//! inherit the tag of the span around them). A `B-` tag is impossible at a token that may not
//! start an entity (its emission is [`MASKED_SCORE`]).
//!
//! Decoding: the Viterbi path, turned into spans (`B-a` opens an entity of type a, `I-a`
//! continues an open entity of type a and otherwise opens one, `O` closes); a span's score is the
//! smallest marginal probability of its tags. A tag sequence cannot hold overlapping entities:
//! training keeps, of overlapping gold spans, the outermost (longest first among those that
//! start first), and reports how many it left out; decoding is always flat.
//!
//! Parameter names: `dense.weight` `[T, H]`, `dense.bias` `[T]`, `transitions` `[T, T]`
//! (`trans[prev, cur]`), initialised to 0. The transitions learn at the head's rate times
//! `transition_lr_multiplier` (bert4keras multiplies it by 1000 at lr 2e-5; gp-lite's default is
//! 100, see [`CrfConfig`]).

use super::bio_tags::{gold_tags, num_tags, positions, tag_b, tags_to_spans};
use super::cache::HeadCache;
use super::config::{parse_settings, HeadConfig, HeadOptions, Settings};
use super::crf_chain::{forward_backward, nll, viterbi};
use super::kind::{HeadKind, HeadShape};
use super::span_head::SpanHead;
use crate::decode::{best_of_each, flatten};
use crate::nn::Linear;
use crate::param::{join, Param2, ParamMut, Params};
use crate::scalar::Scalar;
use crate::span::{span_is_valid, Bounds, GoldSpan, SpanPred, MASKED_SCORE};
use ndarray::{Array2, ArrayView2, ArrayViewD, Axis};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The default multiplier of the transitions' learning rate.
pub const DEFAULT_TRANSITION_LR_MULTIPLIER: f64 = 100.0;

/// Settings of the CRF head (config.json: `{"kind": "crf", "transition_lr_multiplier"}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrfConfig {
    /// The transitions' learning rate over the rest of the model's.
    #[serde(default = "default_multiplier")]
    pub transition_lr_multiplier: f64,
}

fn default_multiplier() -> f64 {
    DEFAULT_TRANSITION_LR_MULTIPLIER
}

/// The registry's entry: `--head crf`, the published baseline.
pub fn kind<T: Scalar>() -> HeadKind<T> {
    HeadKind {
        name: "crf",
        help: "BIO tagger with a linear-chain CRF (the published baseline; flat output only)",
        nested: false,
        settings: |opts: &HeadOptions| {
            let c = CrfConfig {
                transition_lr_multiplier: opts.crf_lr_multiplier,
            };
            HeadConfig::new("crf", &c).settings
        },
        // emissions H -> T and T x T transitions, T = 2C + 1 BIO tags
        check: |settings: &Settings, shape: HeadShape| {
            parse_settings::<CrfConfig>("crf", settings)?;
            let t = num_tags(shape.types) as u128;
            Ok(shape.hidden as u128 * t + t * t)
        },
        build: |settings, shape, mut rng| {
            let c: CrfConfig = parse_settings("crf", settings)?;
            Ok(Box::new(Crf::new(
                shape.hidden,
                shape.types,
                c,
                shape.std,
                &mut rng,
            )))
        },
    }
}

/// The CRF head.
#[derive(Clone, Debug)]
pub struct Crf<T> {
    /// `H -> T` emission scores.
    pub dense: Linear<T>,
    /// `[T, T]`, `trans[prev, cur]`.
    pub transitions: Param2<T>,
    /// Number of entity types `C` (the tagger has `T = 2C + 1` BIO tags).
    pub num_types: usize,
    /// Its settings, as recorded in config.json.
    pub config: CrfConfig,
}

/// Activations kept between loss and backward.
#[derive(Debug, Default)]
struct CrfCache<T> {
    /// Emissions `[B*n, T]`.
    emissions: Array2<T>,
    /// Loss gradient of the emissions `[B*n, T]` and of the transitions `[T, T]`.
    d_emissions: Array2<T>,
    d_transitions: Array2<T>,
}

impl<T: Scalar> Crf<T> {
    /// A fresh head: emission weights N(0, std²), biases and transitions 0.
    pub fn new(hidden: usize, num_types: usize, config: CrfConfig, std: f64, rng: &mut impl Rng) -> Self {
        let t = num_tags(num_types);
        Crf {
            dense: Linear::new(hidden, t, std, rng),
            transitions: Param2::new(Array2::zeros((t, t))),
            num_types,
            config,
        }
    }

    /// Emissions `[B*n, T]` with the B tags of tokens that may not start an entity masked.
    fn emissions(&self, h: ArrayView2<T>, n: usize, bounds: Bounds) -> Array2<T> {
        let mut e = self.dense.forward(h);
        let masked = T::c(MASKED_SCORE);
        for (r, mut row) in e.axis_iter_mut(Axis(0)).enumerate() {
            if !bounds.starts[[r / n, r % n]] {
                for a in 0..self.num_types {
                    row[tag_b(a)] = masked;
                }
            }
        }
        e
    }
}

impl<T: Scalar> SpanHead<T> for Crf<T> {
    fn config(&self) -> HeadConfig {
        HeadConfig::new("crf", &self.config)
    }

    fn num_types(&self) -> usize {
        self.num_types
    }

    fn prepack(&mut self) {
        self.dense.prepack();
    }

    /// Of overlapping spans, the outermost: by start, longest first, each kept when it does not
    /// overlap one already kept.
    fn trainable_gold(&self, mut gold: Vec<GoldSpan>) -> (Vec<GoldSpan>, usize) {
        gold.sort_by_key(|&(a, s, e)| (s, std::cmp::Reverse(e), a));
        gold.dedup();
        let total = gold.len();
        let mut kept: Vec<GoldSpan> = Vec::with_capacity(total);
        for g in gold {
            if kept.last().is_none_or(|&(_, _, e)| e < g.1) {
                kept.push(g);
            }
        }
        let left_out = total - kept.len();
        (kept, left_out)
    }

    fn loss(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        gold: &[Vec<GoldSpan>],
        cache: &mut HeadCache,
    ) -> f64 {
        let (b, nt) = (h.nrows() / n, num_tags(self.num_types));
        assert_eq!(gold.len(), b, "crf: one gold list per text");
        let c: &mut CrfCache<T> = cache.get();
        c.emissions = self.emissions(h, n, bounds);
        c.d_emissions = Array2::zeros((b * n, nt));
        let scale = T::c(1.0 / b as f64);
        let trans = self.transitions.value.view();
        let emissions = &c.emissions;
        // One task per text; the transition gradients are summed in text order afterwards.
        // Per text: its loss, transition gradient, tag positions and their emission gradients.
        type TextGrads<T> = (f64, Array2<T>, Vec<usize>, Array2<T>);
        let per_text: Vec<TextGrads<T>> = (0..b)
            .into_par_iter()
            .map(|bi| {
                let pos = positions(&bounds, bi);
                let tags = gold_tags(&self.trainable_gold(gold[bi].clone()).0, &pos);
                let e = gather(emissions.view(), bi * n, &pos);
                let mut de = Array2::zeros(e.dim());
                let mut dt = Array2::zeros((nt, nt));
                let l = nll(e.view(), trans, &tags, scale, de.view_mut(), &mut dt);
                (l.f64(), dt, pos, de)
            })
            .collect();
        c.d_transitions = Array2::zeros((nt, nt));
        let mut total = 0.0;
        for (bi, (l, dt, pos, de)) in per_text.into_iter().enumerate() {
            total += l;
            c.d_transitions += &dt;
            for (&i, d) in pos.iter().zip(de.outer_iter()) {
                c.d_emissions.row_mut(bi * n + i).assign(&d);
            }
        }
        total / b as f64
    }

    fn backward(&mut self, h: ArrayView2<T>, cache: &mut HeadCache) -> Array2<T> {
        let c: &mut CrfCache<T> = cache.get();
        self.transitions.grad += &c.d_transitions;
        self.dense.backward(h, c.d_emissions.view())
    }

    fn decode(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        _threshold: f64,
        _cache: &mut HeadCache,
    ) -> Vec<Vec<SpanPred>> {
        let b = h.nrows() / n;
        let emissions = self.emissions(h, n, bounds);
        let trans = self.transitions.value.view();
        (0..b)
            .into_par_iter()
            .map(|bi| {
                let pos = positions(&bounds, bi);
                if pos.is_empty() {
                    return Vec::new();
                }
                let e = gather(emissions.view(), bi * n, &pos);
                let (path, _) = viterbi(e.view(), trans);
                let (alpha, beta, log_z) = forward_backward(e.view(), trans);
                let row = bounds.row(bi);
                tags_to_spans(&path)
                    .into_iter()
                    .filter(|&(_, s, e)| span_is_valid(&row, pos[s], pos[e]))
                    .map(|(ty, s, e)| {
                        // The least certain tag of the span: min_t P(y_t = path_t).
                        let score = (s..=e)
                            .map(|t| (alpha[[t, path[t]]] + beta[[t, path[t]]] - log_z).exp().f64())
                            .fold(1.0, f64::min);
                        SpanPred {
                            ty,
                            start: pos[s],
                            end: pos[e],
                            score,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Windows may disagree: the best-scoring of overlapping spans is kept (the output is flat).
    fn merge_windows(&self, spans: Vec<SpanPred>) -> Vec<SpanPred> {
        flatten(best_of_each(spans))
    }

    fn lr_scale(&self, name: &str) -> f64 {
        if name == "transitions" {
            self.config.transition_lr_multiplier
        } else {
            1.0
        }
    }

    fn boxed_clone(&self) -> Box<dyn SpanHead<T>> {
        Box::new(self.clone())
    }
}

/// Rows `offset + pos[k]` of `x`, as a `[pos.len(), T]` matrix.
fn gather<T: Scalar>(x: ArrayView2<T>, offset: usize, pos: &[usize]) -> Array2<T> {
    let mut out = Array2::zeros((pos.len(), x.ncols()));
    for (k, &i) in pos.iter().enumerate() {
        out.row_mut(k).assign(&x.row(offset + i));
    }
    out
}

impl<T: Scalar> Params<T> for Crf<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.dense.visit(&join(prefix, "dense"), f);
        f(&join(prefix, "transitions"), self.transitions.view_dyn());
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.dense.visit_mut(&join(prefix, "dense"), f);
        f(&join(prefix, "transitions"), self.transitions.views_mut_dyn());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use crate::head::crf_chain::path_score;
    use ndarray::{Ix1, Ix2};

    #[test]
    fn tags_and_spans_round_trip() {
        // O B-0 I-0 B-1 I-1 I-1 O I-0 B-0 I-1
        let tags = [0, 1, 2, 3, 4, 4, 0, 2, 1, 4];
        let spans = tags_to_spans(&tags);
        // A stray I opens an entity; I of another type after B-0 opens its own.
        assert_eq!(spans, vec![(0, 1, 2), (1, 3, 5), (0, 7, 7), (0, 8, 8), (1, 9, 9)]);
        let pos: Vec<usize> = (0..6).collect();
        assert_eq!(gold_tags(&[(0, 1, 2), (1, 3, 5)], &pos), vec![0, 1, 2, 3, 4, 4]);
    }

    #[test]
    fn outermost_of_overlapping_gold_is_kept() {
        let crf = Crf::<f64>::new(
            3,
            2,
            CrfConfig {
                transition_lr_multiplier: 1.0,
            },
            0.1,
            &mut rand::rngs::mock::StepRng::new(0, 1),
        );
        let (kept, out) = crf.trainable_gold(vec![(0, 2, 3), (1, 1, 5), (0, 6, 6), (1, 6, 8), (0, 7, 9)]);
        assert_eq!(kept, vec![(1, 1, 5), (1, 6, 8)]);
        assert_eq!(out, 3);
    }

    #[test]
    fn viterbi_is_the_best_of_all_paths() {
        let e = fixed_random(Ix2(4, 3), 3) * 2.0;
        let trans = fixed_random(Ix2(3, 3), 4);
        let (path, score) = viterbi(e.view(), trans.view());
        let mut best = f64::NEG_INFINITY;
        let mut z = 0.0;
        for code in 0..81 {
            let tags: Vec<usize> = (0..4).map(|t| (code / 3usize.pow(t)) % 3).collect();
            let s = path_score(e.view(), trans.view(), &tags);
            best = best.max(s);
            z += s.exp();
        }
        assert!((score - best).abs() < 1e-12);
        assert!((path_score(e.view(), trans.view(), &path) - best).abs() < 1e-12);
        let (_, _, log_z) = forward_backward(e.view(), trans.view());
        assert!((log_z - z.ln()).abs() < 1e-12);
    }

    type Setup = (
        Crf<f64>,
        Array2<f64>,
        Array2<bool>,
        Array2<bool>,
        Vec<Vec<GoldSpan>>,
    );

    fn setup() -> Setup {
        let (hid, c, n) = (4, 2, 6);
        let t = num_tags(c);
        let mut crf = Crf::<f64>::new(
            hid,
            c,
            CrfConfig {
                transition_lr_multiplier: 1.0,
            },
            0.1,
            &mut rand::rngs::mock::StepRng::new(0, 1),
        );
        crf.dense = Linear::from_arrays(fixed_random(Ix2(t, hid), 1), fixed_random(Ix1(t), 2));
        crf.transitions.value = fixed_random(Ix2(t, t), 3);
        let h = fixed_random(Ix2(2 * n, hid), 4);
        // Text 0: [CLS] w1 w2 ##x w3 [SEP]: ##x may end but not start. Text 1: 3 tokens + padding.
        let starts = ndarray::array![
            [false, true, true, false, true, false],
            [false, true, true, true, false, false]
        ];
        let ends = ndarray::array![
            [false, true, false, true, true, false],
            [false, true, true, true, false, false]
        ];
        // Nested gold in text 0: the inner span is left out.
        let gold = vec![vec![(0, 1, 3), (1, 2, 3), (1, 4, 4)], vec![(1, 2, 3)]];
        (crf, h, starts, ends, gold)
    }

    #[test]
    fn gradcheck_loss() {
        let (mut crf, h, starts, ends, gold) = setup();
        let n = starts.ncols();
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        let mut cache = HeadCache::new();
        crf.loss(h.view(), n, bounds, &gold, &mut cache);
        crf.zero_grad();
        let dh = crf.backward(h.view(), &mut cache);
        let mut scratch = HeadCache::new();
        let gc = GradCheck::default();
        gc.params(&mut crf, |m| m.loss(h.view(), n, bounds, &gold, &mut scratch))
            .assert_below(1e-6);
        gc.input("h", &h, &dh, |x| {
            crf.loss(x.view(), n, bounds, &gold, &mut scratch)
        })
        .assert_below(1e-6);
    }

    #[test]
    fn decoded_spans_respect_bounds_and_do_not_overlap() {
        let (crf, h, starts, ends, _) = setup();
        let n = starts.ncols();
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        let spans = crf.decode(h.view(), n, bounds, 0.0, &mut HeadCache::new());
        for (b, ps) in spans.iter().enumerate() {
            for (k, p) in ps.iter().enumerate() {
                assert!(super::span_is_valid(&bounds.row(b), p.start, p.end), "{p:?}");
                assert!(p.score > 0.0 && p.score <= 1.0);
                if k > 0 {
                    assert!(ps[k - 1].end < p.start);
                }
            }
        }
    }
}
