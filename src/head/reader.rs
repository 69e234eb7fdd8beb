//! The reader (`--head reader`): span-extraction reading comprehension as a one-type
//! GlobalPointer over `[CLS] question [SEP] context [SEP]` (method.md §7). Scores are
//! [`GlobalPointer`]'s (one type, RoPE); spans are restricted to context tokens and to
//! `max_answer_len`; the loss is one softmax over a window's allowed spans
//! ([`span_softmax_loss`]): the gold span's cross-entropy, or minus the expected F1 with an
//! entropy term.
//!
//! Training windows: a context longer than the window is split ([`pair_windows`]); a window
//! that does not hold the whole answer is left out of training (there is no "no answer" span to
//! aim at). An example's first located answer is its gold; further ones are counted as left out.
//!
//! `max_answer_len` is in characters at prediction (exact, from the token offsets); in training
//! it bounds a span's tokens, a superset of the spans of that many characters (a token holds one
//! character or more), equal with one token per character.

use super::buffer::Buffer;
use super::cache::HeadCache;
use super::config::{parse_settings, HeadConfig, HeadError, Settings};
use super::global_pointer::{GlobalPointer, GlobalPointerConfig};
use super::kind::{HeadKind, HeadShape};
use super::score_head::{ScoreCache, ScoreHead, ScoredCache};
use super::span_head::SpanHead;
use crate::data::Example;
use crate::param::{ParamMut, Params};
use crate::sample::{ExampleSamples, LabelIndex, Sample};
use crate::scalar::Scalar;
use crate::span::{Bounds, GoldSpan, SpanPred};
use crate::span_softmax::{span_softmax_loss, ReaderLoss};
use crate::tokenize::{char_span_to_tokens, pair_windows, Encoding, TokenizeError};
use ndarray::{Array2, ArrayView2, ArrayViewD, Axis};
use serde::{Deserialize, Serialize};

/// Spans a window's decoding returns (the best-scoring allowed ones).
pub const CANDIDATES: usize = 20;

/// The reader's loss as config.json names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossName {
    /// Softmax cross-entropy of the gold span.
    Ce,
    /// Minus the expected F1, plus lambda times `Σ p log p`.
    ExpectedF1,
}

/// Settings of the reader (config.json: `{"kind": "reader", "head_size", "rope", "loss",
/// "lambda", "max_answer_len", "max_question_len"}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// d of q and k.
    pub head_size: usize,
    /// RoPE on q and k.
    pub rope: bool,
    /// The training loss.
    pub loss: LossName,
    /// The entropy weight of the expected-F1 loss.
    pub lambda: f64,
    /// The longest answer, in characters (tokens in training; see the module docs).
    pub max_answer_len: usize,
    /// Question tokens kept (the rest are cut).
    pub max_question_len: usize,
}

/// Question tokens kept by default.
pub const MAX_QUESTION_LEN: usize = 64;

impl ReaderConfig {
    /// The settings of `settings` read and checked.
    pub fn checked(settings: &Settings) -> Result<Self, HeadError> {
        let c: ReaderConfig = parse_settings("reader", settings)?;
        let gp = GlobalPointerConfig {
            head_size: c.head_size,
            rope: c.rope,
        };
        GlobalPointerConfig::checked("reader", &gp.settings())?;
        if !c.lambda.is_finite() {
            return Err(HeadError::Field {
                field: "lambda",
                value: c.lambda.to_string(),
                reason: "must be finite",
            });
        }
        for (field, v) in [
            ("max_answer_len", c.max_answer_len),
            ("max_question_len", c.max_question_len),
        ] {
            if v == 0 {
                return Err(HeadError::Field {
                    field,
                    value: "0".into(),
                    reason: "must be positive",
                });
            }
        }
        Ok(c)
    }

    /// The loss to train with.
    pub fn loss(&self) -> ReaderLoss {
        match self.loss {
            LossName::Ce => ReaderLoss::Ce,
            LossName::ExpectedF1 => ReaderLoss::ExpectedF1 { lambda: self.lambda },
        }
    }
}

/// The registry's entry: `--head reader`.
pub fn kind<T: Scalar>() -> HeadKind<T> {
    HeadKind {
        name: "reader",
        help: "reading comprehension: one-type GlobalPointer over question and context, \
               softmax over the context's spans (--loss ce | expected-f1)",
        nested: false,
        settings: |opts| {
            let mut s = Settings::new();
            s.insert("head_size".into(), opts.head_size.into());
            s.insert("rope".into(), opts.rope.into());
            s.insert("loss".into(), opts.loss.clone().into());
            s.insert("lambda".into(), opts.lambda.into());
            s.insert("max_answer_len".into(), opts.max_answer_len.into());
            s.insert("max_question_len".into(), MAX_QUESTION_LEN.into());
            s
        },
        // the dense layer H -> 2d
        check: |settings, shape| {
            let c = ReaderConfig::checked(settings)?;
            check_types(shape)?;
            Ok(shape.hidden as u128 * 2 * c.head_size as u128)
        },
        build: |settings, shape: HeadShape, mut rng| {
            let c = ReaderConfig::checked(settings)?;
            check_types(shape)?;
            let gp = GlobalPointer::new(shape.hidden, 1, c.head_size, c.rope, shape.std, &mut rng);
            Ok(Box::new(Reader { gp, config: c }))
        },
    }
}

fn check_types(shape: HeadShape) -> Result<(), HeadError> {
    if shape.types != 1 {
        return Err(HeadError::Field {
            field: "kind",
            value: format!("reader over {} labels", shape.types),
            reason: "the reader has one label, the answer (reading-comprehension data)",
        });
    }
    Ok(())
}

/// The reader head: a one-type GlobalPointer and its settings.
#[derive(Clone, Debug)]
pub struct Reader<T> {
    /// The span scores (one type).
    pub gp: GlobalPointer<T>,
    /// Its settings.
    pub config: ReaderConfig,
}

impl<T: Scalar> Params<T> for Reader<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.gp.visit(prefix, f)
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.gp.visit_mut(prefix, f)
    }
}

type Cache<T> = ScoredCache<T, ScoreCache<T>>;

impl<T: Scalar> Reader<T> {
    /// The scores of the batch into the cache.
    fn scores<'c>(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        cache: &'c mut HeadCache,
    ) -> &'c mut Cache<T> {
        let c: &mut Cache<T> = cache.get();
        self.gp.forward_scores(h, n, bounds, &mut c.inner, &mut c.scores);
        c
    }
}

impl<T: Scalar> SpanHead<T> for Reader<T> {
    fn config(&self) -> HeadConfig {
        HeadConfig::new("reader", &self.config)
    }

    fn num_types(&self) -> usize {
        1
    }

    fn prepack(&mut self) {
        self.gp.prepack();
    }

    /// `[CLS] question [SEP] context [SEP]` windows holding the whole first answer, the answer
    /// as their gold.
    fn samples(
        &self,
        example: &Example,
        encode: &dyn Fn(&str) -> Result<Encoding, TokenizeError>,
        _labels: &LabelIndex,
        max_len: usize,
    ) -> Result<ExampleSamples, TokenizeError> {
        let question = example.question.as_ref().ok_or(TokenizeError::NoQuestion)?;
        let mut out = ExampleSamples::default();
        let Some(answer) = example.entities.first() else {
            return Ok(out);
        };
        out.left_out = example.entities.len() - 1;
        let (q, c) = (encode(&question.text)?, encode(&example.text)?);
        let Some((s, t)) = char_span_to_tokens(&c, answer.start, answer.end)
            .filter(|&(s, t)| c.may_start[s] && c.may_end[t])
        else {
            out.unaligned = 1;
            return Ok(out);
        };
        let windows = pair_windows(&q, &c, max_len, self.config.max_question_len)?;
        out.windowed = windows.len() > 1;
        for w in windows {
            if let (Some(ws), Some(wt)) = (w.from_context(s), w.from_context(t)) {
                out.samples.push(Sample {
                    enc: w.encoding,
                    gold: vec![(0, ws, wt)],
                });
            }
        }
        Ok(out)
    }

    fn loss(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        gold: &[Vec<GoldSpan>],
        cache: &mut HeadCache,
    ) -> f64 {
        let c = self.scores(h, n, bounds, cache);
        c.dscores.reshape(c.scores.shape());
        span_softmax_loss(
            c.scores.view4(),
            gold,
            bounds,
            self.config.max_answer_len,
            self.config.loss(),
            c.dscores.view4_mut(),
        )
    }

    fn backward(&mut self, h: ArrayView2<T>, cache: &mut HeadCache) -> Array2<T> {
        let c: &mut Cache<T> = cache.get();
        self.gp.backward_scores(h, &mut c.inner, c.dscores.view4())
    }

    /// The [`CANDIDATES`] best allowed spans of each window (context tokens, at most
    /// `max_answer_len` tokens), sorted by (start, end); `threshold` is not used (a reader
    /// always answers).
    fn decode(
        &self,
        h: ArrayView2<T>,
        n: usize,
        bounds: Bounds,
        _threshold: f64,
        cache: &mut HeadCache,
    ) -> Vec<Vec<SpanPred>> {
        let c = self.scores(h, n, bounds, cache);
        best_spans(&c.scores, bounds, self.config.max_answer_len)
    }

    fn boxed_clone(&self) -> Box<dyn SpanHead<T>> {
        Box::new(self.clone())
    }
}

/// The [`CANDIDATES`] best allowed spans of each window of `scores` `[B, 1, n, n]`.
fn best_spans<T: Scalar>(scores: &Buffer<T>, bounds: Bounds, max_tokens: usize) -> Vec<Vec<SpanPred>> {
    let s = scores.view4();
    let n = s.dim().2;
    s.axis_iter(Axis(0))
        .enumerate()
        .map(|(b, sb)| {
            let row = bounds.row(b);
            let mut spans = Vec::new();
            for i in (0..n).filter(|&i| row.starts[i]) {
                for j in (i..n.min(i + max_tokens)).filter(|&j| row.ends[j]) {
                    spans.push(SpanPred {
                        ty: 0,
                        start: i,
                        end: j,
                        score: sb[[0, i, j]].f64(),
                    });
                }
            }
            spans.sort_by(|a, b| b.score.total_cmp(&a.score));
            spans.truncate(CANDIDATES);
            spans.sort_by_key(|p| (p.start, p.end));
            spans
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Entity, Question};
    use crate::gradcheck::{fixed_random, GradCheck};
    use crate::nn::Linear;
    use ndarray::{Ix1, Ix2};

    const N: usize = 7;
    const H: usize = 5;

    fn reader(rope: bool, loss: LossName) -> Reader<f64> {
        let d = 4;
        let gp = GlobalPointer::from_dense(
            Linear::from_arrays(fixed_random(Ix2(2 * d, H), 1), fixed_random(Ix1(2 * d), 2)),
            1,
            d,
            rope,
        );
        let config = ReaderConfig {
            head_size: d,
            rope,
            loss,
            lambda: 0.2,
            max_answer_len: 3,
            max_question_len: 8,
        };
        Reader { gp, config }
    }

    #[test]
    fn gradcheck_reader_with_both_losses() {
        let h = fixed_random(Ix2(2 * N, H), 3);
        // tokens 0..=2: [CLS] q [SEP]; context 3..=5; [SEP] 6 (window 1 shorter by one token).
        let starts = ndarray::array![
            [false, false, false, true, true, true, false],
            [false, false, false, true, true, false, false]
        ];
        let bounds = Bounds::same(starts.view());
        let gold = vec![vec![(0, 3, 4)], vec![(0, 4, 4)]];
        for rope in [true, false] {
            for loss in [LossName::Ce, LossName::ExpectedF1] {
                let mut head = reader(rope, loss);
                let mut cache = HeadCache::new();
                head.loss(h.view(), N, bounds, &gold, &mut cache);
                head.zero_grad();
                let dh = head.backward(h.view(), &mut cache);
                let gc = GradCheck::default();
                let mut scratch = HeadCache::new();
                gc.params(&mut head, |m| m.loss(h.view(), N, bounds, &gold, &mut scratch))
                    .assert_below(1e-6);
                gc.input("h", &h, &dh, |x| {
                    head.loss(x.view(), N, bounds, &gold, &mut scratch)
                })
                .assert_below(1e-6);
            }
        }
    }

    #[test]
    fn decode_keeps_to_the_context_and_the_answer_length() {
        let head = reader(true, LossName::Ce);
        let h = fixed_random(Ix2(N, H), 4);
        let starts = ndarray::array![[false, false, false, true, true, true, true]];
        let bounds = Bounds::same(starts.view());
        let spans = head.decode(h.view(), N, bounds, 0.0, &mut HeadCache::new());
        // context 3..=6, at most 3 tokens: 4 + 3 + 2 = 9 spans.
        assert_eq!(spans[0].len(), 9);
        assert!(spans[0].iter().all(|p| p.start >= 3 && p.end - p.start < 3));
    }

    #[test]
    fn samples_pair_question_and_context_and_skip_windows_without_the_answer() {
        let head = reader(true, LossName::Ce);
        // One token per character.
        let encode = |text: &str| -> Result<Encoding, TokenizeError> {
            let mut e = Encoding::new(vec![1], vec![(0, 0)], vec![true]);
            for (i, c) in text.chars().enumerate() {
                e.push(c as u32, (i, i + 1), false);
            }
            e.push(2, (0, 0), true);
            Ok(e)
        };
        let example = Example {
            text: "abcdefghij".into(),
            entities: vec![Entity {
                start: 7,
                end: 9,
                label: "answer".into(),
            }],
            question: Some(Question {
                id: "q".into(),
                text: "xy".into(),
                answers: vec!["hi".into()],
            }),
        };
        // max_len 9: [CLS] x y [SEP] + 4 context tokens + [SEP]; stride 2: windows at a, c, e, g.
        let s = head.samples(&example, &encode, &LabelIndex::new(), 9).unwrap();
        assert!(s.windowed);
        // "hi" (context tokens 8, 9) is whole in windows e..h? no (e f g h); g..j yes.
        assert_eq!(s.samples.len(), 1);
        let sample = &s.samples[0];
        assert_eq!(sample.gold, vec![(0, 5, 6)]);
        assert_eq!(sample.enc.ids[5], 'h' as u32);
        assert_eq!(sample.enc.type_ids, vec![0, 0, 0, 0, 1, 1, 1, 1, 1]);
        let mut no_question = example.clone();
        no_question.question = None;
        assert!(matches!(
            head.samples(&no_question, &encode, &LabelIndex::new(), 9),
            Err(TokenizeError::NoQuestion)
        ));
    }
}
