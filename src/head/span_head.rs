//! What the trainer and predict need of a head: the [`SpanHead`] trait.
//!
//! Every head takes `h` `[B*n, H]` (row `b*n + i` is token `i` of text `b`), the token count `n`
//! and [`Bounds`]: which tokens may start and end an entity (real, not special, and where the
//! model uses word boundaries, at a word start / end).

use super::cache::HeadCache;
use super::config::HeadConfig;
use crate::data::Example;
use crate::decode::best_of_each;
use crate::param::Params;
use crate::sample::{text_samples, ExampleSamples, LabelIndex};
use crate::scalar::Scalar;
use crate::span::{Bounds, GoldSpan, SpanPred};
use crate::tokenize::{Encoding, TokenizeError};
use ndarray::{Array2, ArrayView2};

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

    /// The encoder inputs and gold token spans a training example becomes. `encode` tokenizes a
    /// text as the model does (its tokenizer and entity boundaries). Default: the example's text
    /// alone, its entities mapped onto tokens, windows of at most `max_len` tokens; a head over a
    /// pair of texts (a reader over question and context) builds its own segments and
    /// `type_ids` here.
    fn samples(
        &self,
        example: &Example,
        encode: &dyn Fn(&str) -> Result<Encoding, TokenizeError>,
        labels: &LabelIndex,
        max_len: usize,
    ) -> Result<ExampleSamples, TokenizeError> {
        text_samples(example, encode, labels, max_len, &|g| self.trainable_gold(g))
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

impl<T: Scalar> Clone for Box<dyn SpanHead<T>> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}
