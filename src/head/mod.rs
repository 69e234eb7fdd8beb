//! Heads: what turns the encoder output into entities. Each head owns its parameters, its
//! scratch ([`HeadCache`]), its loss and gradient, and its decoding to token spans; the trainer
//! and predict only see the [`SpanHead`] trait.
//!
//! The heads are listed once, in [`HeadConfig`]: adding one is a new file with a config struct
//! and a [`SpanHead`] implementation, plus its variant (and build arm) there.
//!
//! Every head takes `h` `[B*n, H]` (row `b*n + i` is token `i` of text `b`), the token count
//! `n` and [`Bounds`]: which tokens may start and end an entity (real, not special, and where
//! the model uses word boundaries, at a word start / end).

pub mod buffer;
pub mod crf;
pub mod efficient;
pub mod global_pointer;
pub mod rope;
pub mod score_head;

pub use buffer::Buffer;
pub use crf::{Crf, CrfConfig};
pub use efficient::EfficientGlobalPointer;
pub use global_pointer::{GlobalPointer, GlobalPointerConfig};
pub use rope::RopeTable;
pub use score_head::{ScoreCache, ScoreHead, Scored};

use crate::decode::SpanPred;
use crate::loss::GoldSpan;
use crate::param::Params;
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView1, ArrayView2};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::HashMap;

/// The score of an excluded span (`i > j`, or a boundary that is not allowed): large and
/// negative so that it contributes nothing to the loss and is never decoded (exactly -1e12 in
/// f64, the nearest f32 in f32), as in the reference implementation.
pub const MASKED_SCORE: f64 = -1e12;

/// Which tokens of each text may begin (`starts[b, i]`) and end (`ends[b, j]`) an entity.
#[derive(Clone, Copy, Debug)]
pub struct Bounds<'a> {
    pub starts: ArrayView2<'a, bool>,
    pub ends: ArrayView2<'a, bool>,
}

/// [`Bounds`] of one text.
#[derive(Clone, Copy, Debug)]
pub struct RowBounds<'a> {
    pub starts: ArrayView1<'a, bool>,
    pub ends: ArrayView1<'a, bool>,
}

impl<'a> Bounds<'a> {
    /// The same flags for starts and ends (every real, non-special token).
    pub fn same(valid: ArrayView2<'a, bool>) -> Self {
        Bounds {
            starts: valid,
            ends: valid,
        }
    }

    /// `(B, n)`.
    pub fn dim(&self) -> (usize, usize) {
        self.starts.dim()
    }

    /// The flags of text `b`.
    pub fn row(&self, b: usize) -> RowBounds<'a> {
        RowBounds {
            starts: self.starts.index_axis_move(ndarray::Axis(0), b),
            ends: self.ends.index_axis_move(ndarray::Axis(0), b),
        }
    }
}

/// True when span `(i, j)` can be an entity: `i <= j`, `i` may start one and `j` may end one.
#[inline]
pub fn span_is_valid(row: &RowBounds, i: usize, j: usize) -> bool {
    i <= j && row.starts[i] && row.ends[j]
}

/// A head's scratch across calls, of the head's own type (created on first use, grow-only).
#[derive(Default)]
pub struct HeadCache(Option<Box<dyn Any + Send>>);

impl HeadCache {
    /// An empty cache.
    pub fn new() -> Self {
        HeadCache(None)
    }

    /// The cache as type `C`, created (default) when empty or of another head's type.
    pub fn get<C: Default + Send + 'static>(&mut self) -> &mut C {
        if !self.0.as_ref().is_some_and(|c| c.is::<C>()) {
            self.0 = Some(Box::new(C::default()));
        }
        self.0
            .as_mut()
            .and_then(|c| c.downcast_mut::<C>())
            .expect("just created")
    }
}

impl std::fmt::Debug for HeadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "HeadCache(..)"
        } else {
            "HeadCache(empty)"
        })
    }
}

/// What the trainer and predict need of a head.
pub trait SpanHead<T: Scalar>: Params<T> + Send + Sync + std::fmt::Debug {
    /// The configuration that rebuilds this head (kept in config.json).
    fn config(&self) -> HeadConfig;

    /// Number of entity types C.
    fn num_types(&self) -> usize;

    /// Packs the head's dense weights for inference (`Linear::prepack`).
    fn prepack(&mut self);

    /// The gold spans of one text this head can learn, and how many it leaves out (a tagger
    /// cannot hold overlapping entities). Default: all of them.
    fn trainable_gold(&self, gold: Vec<GoldSpan>) -> (Vec<GoldSpan>, usize) {
        (gold, 0)
    }

    /// Forward and mean loss of a batch against `gold` (per text, token spans); keeps in
    /// `cache` what [`SpanHead::backward`] needs.
    fn loss(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        gold: &[Vec<GoldSpan>],
        cache: &mut HeadCache,
    ) -> f64;

    /// After [`SpanHead::loss`] on the same `h`: `d loss / d h` `[B*n, H]`; accumulates the
    /// parameter gradients.
    fn backward(&mut self, h: ArrayView2<T>, cache: &mut HeadCache) -> Array2<T>;

    /// The entities of each text, token indices (`end` inclusive), sorted by (start, end, type).
    /// `threshold` is the score above which a span is an entity, for heads that score spans.
    fn decode(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        threshold: f64,
        cache: &mut HeadCache,
    ) -> Vec<Vec<SpanPred>>;

    /// The spans one text got from its overlapping windows (full-encoding token indices, in any
    /// order, a span possibly several times) merged into its entities. Default: each distinct
    /// (type, start, end) once, with its best score.
    fn merge_windows(&self, spans: Vec<SpanPred>) -> Vec<SpanPred> {
        best_of_each(spans)
    }

    /// Learning-rate multiplier of the head parameter `name` (default 1).
    fn lr_scale(&self, _name: &str) -> f64 {
        1.0
    }

    /// A boxed copy.
    fn boxed_clone(&self) -> Box<dyn SpanHead<T>>;
}

/// Each distinct (type, start, end) once with its best score, sorted by (start, end, type).
pub fn best_of_each(spans: Vec<SpanPred>) -> Vec<SpanPred> {
    let mut best: HashMap<(usize, usize, usize), f64> = HashMap::new();
    for p in spans {
        let s = best.entry((p.ty, p.start, p.end)).or_insert(f64::NEG_INFINITY);
        *s = s.max(p.score);
    }
    let mut out: Vec<SpanPred> = best
        .into_iter()
        .map(|((ty, start, end), score)| SpanPred {
            ty,
            start,
            end,
            score,
        })
        .collect();
    out.sort_by_key(|p| (p.start, p.end, p.ty));
    out
}

/// The heads, with each one's own settings (config.json's `head`: `{"kind": "gp", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HeadConfig {
    /// GlobalPointer (method.md §2).
    Gp(GlobalPointerConfig),
    /// Efficient GlobalPointer (method.md §6).
    Egp(GlobalPointerConfig),
    /// BIO tagger with a linear-chain CRF (the published baseline).
    Crf(CrfConfig),
}

/// Head settings from the command line, each head taking the ones it uses.
#[derive(Clone, Debug)]
pub struct HeadOptions {
    pub head_size: usize,
    pub rope: bool,
    pub crf_lr_multiplier: f64,
}

impl HeadConfig {
    /// The names `--head` accepts.
    pub const NAMES: [&'static str; 3] = ["gp", "egp", "crf"];

    /// The head called `name` with its settings from `opts`.
    pub fn from_name(name: &str, opts: &HeadOptions) -> Option<HeadConfig> {
        let gp = GlobalPointerConfig {
            head_size: opts.head_size,
            rope: opts.rope,
        };
        match name {
            "gp" => Some(HeadConfig::Gp(gp)),
            "egp" => Some(HeadConfig::Egp(gp)),
            "crf" => Some(HeadConfig::Crf(CrfConfig {
                transition_lr_multiplier: opts.crf_lr_multiplier,
            })),
            _ => None,
        }
    }

    /// A fresh head over hidden size `hidden` for `types` entity types (weights N(0, std²)).
    pub fn build<T: Scalar>(
        &self,
        hidden: usize,
        types: usize,
        std: f64,
        rng: &mut impl Rng,
    ) -> Box<dyn SpanHead<T>> {
        match self {
            HeadConfig::Gp(c) => Box::new(Scored(GlobalPointer::new(
                hidden,
                types,
                c.head_size,
                c.rope,
                std,
                rng,
            ))),
            HeadConfig::Egp(c) => Box::new(Scored(EfficientGlobalPointer::new(
                hidden,
                types,
                c.head_size,
                c.rope,
                std,
                rng,
            ))),
            HeadConfig::Crf(c) => Box::new(Crf::new(hidden, types, c.clone(), std, rng)),
        }
    }

    /// The head's `--head` name.
    pub fn name(&self) -> &'static str {
        match self {
            HeadConfig::Gp(_) => "gp",
            HeadConfig::Egp(_) => "egp",
            HeadConfig::Crf(_) => "crf",
        }
    }

    /// Whether the head can output overlapping entities.
    pub fn nested(&self) -> bool {
        !matches!(self, HeadConfig::Crf(_))
    }
}

impl<T: Scalar> Clone for Box<dyn SpanHead<T>> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

#[cfg(test)]
mod tests {
    //! Both span-score heads composed with the loss (through the SpanHead trait): gradient
    //! checks in f64, with and without RoPE.
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use crate::nn::Linear;
    use ndarray::{Ix1, Ix2};

    const N: usize = 6;
    const H: usize = 5;

    fn inputs() -> (Array2<f64>, Array2<bool>, Array2<bool>, Vec<Vec<GoldSpan>>) {
        let h = fixed_random(Ix2(2 * N, H), 21);
        let starts = ndarray::array![
            [false, true, true, true, true, false],
            [false, true, true, false, false, false]
        ];
        // Token 2 of text 0 may start but not end an entity (a word-piece boundary).
        let ends = ndarray::array![
            [false, true, false, true, true, false],
            [false, true, true, false, false, false]
        ];
        let gold = vec![vec![(0, 1, 3), (2, 3, 3), (1, 1, 4)], vec![(1, 1, 2)]];
        (h, starts, ends, gold)
    }

    fn heads(rope: bool) -> Vec<Box<dyn SpanHead<f64>>> {
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
        vec![Box::new(Scored(gp)), Box::new(Scored(egp))]
    }

    fn loss(head: &dyn SpanHead<f64>, h: &Array2<f64>, cache: &mut HeadCache) -> f64 {
        let (_, starts, ends, gold) = inputs();
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        head.loss(h.view(), N, bounds, &gold, cache)
    }

    #[test]
    fn gradcheck_heads_with_loss() {
        for rope in [true, false] {
            for mut head in heads(rope) {
                let (h, _, _, _) = inputs();
                let mut cache = HeadCache::new();
                loss(head.as_ref(), &h, &mut cache);
                head.zero_grad();
                let dh = head.backward(h.view(), &mut cache);
                let gc = GradCheck::default();
                let mut scratch = HeadCache::new();
                gc.params(head.as_mut(), |m| loss(m, &h, &mut scratch))
                    .assert_below(1e-6);
                gc.input("h", &h, &dh, |x| loss(head.as_ref(), x, &mut scratch))
                    .assert_below(1e-6);
            }
        }
    }

    #[test]
    fn decode_respects_bounds() {
        let (h, starts, ends, _) = inputs();
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        for head in heads(true) {
            let spans = head.decode(h.view(), N, bounds, -1e9, &mut HeadCache::new());
            let mut count = 0;
            for (b, ps) in spans.iter().enumerate() {
                for p in ps {
                    assert!(span_is_valid(&bounds.row(b), p.start, p.end), "{p:?}");
                    count += 1;
                }
            }
            // Every valid span of every type scores above -1e9: text 0 has starts {1,2,3,4},
            // ends {1,3,4}: (1,1),(1,3),(1,4),(2,3),(2,4),(3,3),(3,4),(4,4) = 8; text 1: 3.
            assert_eq!(count, 3 * (8 + 3));
        }
    }

    #[test]
    fn cache_is_reused_and_replaced_by_type() {
        let mut cache = HeadCache::new();
        cache.get::<Vec<u8>>().push(1);
        assert_eq!(cache.get::<Vec<u8>>().len(), 1);
        assert_eq!(*cache.get::<u32>(), 0);
        assert_eq!(cache.get::<Vec<u8>>().len(), 0);
    }

    #[test]
    fn merge_keeps_best_score_once() {
        let p = |ty, start, end, score| SpanPred {
            ty,
            start,
            end,
            score,
        };
        let merged = best_of_each(vec![p(0, 3, 4, 1.0), p(1, 1, 1, 0.5), p(0, 3, 4, 2.0)]);
        assert_eq!(merged, vec![p(1, 1, 1, 0.5), p(0, 3, 4, 2.0)]);
    }

    #[test]
    fn config_json_is_backward_compatible() {
        let old = r#"{"kind": "gp", "head_size": 64, "rope": true}"#;
        let c: HeadConfig = serde_json::from_str(old).unwrap();
        assert_eq!(
            c,
            HeadConfig::Gp(GlobalPointerConfig {
                head_size: 64,
                rope: true
            })
        );
        let crf = HeadConfig::Crf(CrfConfig {
            transition_lr_multiplier: 100.0,
        });
        let back: HeadConfig = serde_json::from_str(&serde_json::to_string(&crf).unwrap()).unwrap();
        assert_eq!(back, crf);
    }
}
