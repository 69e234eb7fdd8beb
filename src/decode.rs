//! Decoding span scores into entities (method.md §4) and mapping token spans to characters.
//!
//! Every valid span with score above the threshold (default [`DEFAULT_THRESHOLD`] = 0) is an
//! entity; this is nested output for free. [`DecodeMode::Flat`] keeps spans by descending score
//! and drops any that overlaps (shares a token with) one already kept, whatever its type.

use crate::scalar::Scalar;
use crate::span::{span_is_valid, Bounds, SpanPred};
use ndarray::{ArrayView4, Axis};
use rayon::prelude::*;
use serde::Deserialize;
use serde::Serialize;

/// The score above which a span is an entity.
pub const DEFAULT_THRESHOLD: f64 = 0.0;

/// Nested (every span above the threshold) or flat (non-overlapping) output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeMode {
    /// Every valid span scoring above the threshold, overlapping or not.
    #[default]
    Nested,
    /// Spans kept by descending score, dropping any that shares a token with one already kept.
    Flat,
}

/// scores `[B, C, n, n]`, bounds `[B, n]` -> per text, its entities sorted by (start, end, type).
pub fn decode<T: Scalar>(
    scores: ArrayView4<T>,
    bounds: Bounds,
    threshold: f64,
    mode: DecodeMode,
) -> Vec<Vec<SpanPred>> {
    let (bs, _, n, _) = scores.dim();
    assert_eq!(bounds.dim(), (bs, n), "decode: bounds must be [B, n]");
    scores
        .axis_iter(Axis(0))
        .into_par_iter()
        .enumerate()
        .map(|(b, sb)| {
            let vb = bounds.row(b);
            let mut out = Vec::new();
            for (ty, sa) in sb.outer_iter().enumerate() {
                for ((start, end), &s) in sa.indexed_iter() {
                    if s.f64() > threshold && span_is_valid(&vb, start, end) {
                        out.push(SpanPred {
                            ty,
                            start,
                            end,
                            score: s.f64(),
                        });
                    }
                }
            }
            if mode == DecodeMode::Flat {
                out = flatten(out);
            }
            out.sort_by_key(|p| (p.start, p.end, p.ty));
            out
        })
        .collect()
}

/// Keeps spans by descending score (ties: earlier start, shorter, lower type first), dropping
/// every span that shares a token with one already kept. Output sorted by (start, end, type).
pub fn flatten(mut spans: Vec<SpanPred>) -> Vec<SpanPred> {
    spans.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then((a.start, a.end, a.ty).cmp(&(b.start, b.end, b.ty)))
    });
    // Kept spans are disjoint, so only the one starting last at or before `s.end` can overlap
    // `s` (an ordered map keeps this O(n log n): a scan of all kept spans made a long text's
    // flat decoding quadratic).
    let mut kept: std::collections::BTreeMap<usize, SpanPred> = std::collections::BTreeMap::new();
    for s in spans {
        let overlaps = kept
            .range(..=s.end)
            .next_back()
            .is_some_and(|(_, k)| k.end >= s.start);
        if !overlaps {
            kept.insert(s.start, s);
        }
    }
    kept.into_values().collect()
}

/// Each distinct (type, start, end) once with its best score, sorted by (start, end, type).
pub fn best_of_each(spans: Vec<SpanPred>) -> Vec<SpanPred> {
    let mut best: std::collections::HashMap<(usize, usize, usize), f64> = std::collections::HashMap::new();
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

/// Character span `[offsets[start].0, offsets[end].1)` of tokens `start..=end`, given each
/// token's character offsets `[start, end)` (as the tokenizer reports them; special tokens are
/// never valid boundaries so their `(0, 0)` offsets are never used).
pub fn char_span(offsets: &[(usize, usize)], start: usize, end: usize) -> (usize, usize) {
    assert!(
        start <= end && end < offsets.len(),
        "char_span: token span out of range"
    );
    (offsets[start].0, offsets[end].1)
}

/// The entity's text: characters `[cs, ce)` of `text` (character, not byte, offsets).
pub fn span_text(text: &str, (cs, ce): (usize, usize)) -> String {
    text.chars().skip(cs).take(ce - cs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::MASKED_SCORE;
    use ndarray::{Array2, Array4};

    /// The greedy rule written plainly: keep a span when it overlaps no span kept before.
    fn flatten_by_scan(mut spans: Vec<SpanPred>) -> Vec<SpanPred> {
        spans.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then((a.start, a.end, a.ty).cmp(&(b.start, b.end, b.ty)))
        });
        let mut kept: Vec<SpanPred> = Vec::new();
        for s in spans {
            if kept.iter().all(|k| s.end < k.start || k.end < s.start) {
                kept.push(s);
            }
        }
        kept.sort_by_key(|p| (p.start, p.end, p.ty));
        kept
    }

    fn random_spans(rng: &mut impl rand::Rng, n: usize, len: usize) -> Vec<SpanPred> {
        (0..n)
            .map(|_| {
                let start = rng.gen_range(0..len);
                SpanPred {
                    ty: rng.gen_range(0..3),
                    start,
                    end: (start + rng.gen_range(0..6)).min(len - 1),
                    score: rng.gen_range(0..50) as f64,
                }
            })
            .collect()
    }

    #[test]
    fn flatten_keeps_what_the_plain_greedy_rule_keeps() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..300 {
            let spans = random_spans(&mut rng, 40, 30);
            assert_eq!(flatten(spans.clone()), flatten_by_scan(spans));
        }
    }

    /// Regression (tests/it/fuzz.rs, flat prediction of a 0.5 MB text: 183 s, then 9 s): each span
    /// was compared with every span kept so far. A million spans over a long text now take well
    /// under a second; the old scan took hours.
    #[test]
    fn flatten_is_not_quadratic_on_long_texts() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(10);
        let spans = random_spans(&mut rng, 1_000_000, 2_000_000);
        let kept = flatten(spans);
        assert!(kept.len() > 300_000, "{}", kept.len());
        assert!(kept.windows(2).all(|w| w[0].end < w[1].start));
    }

    fn scores(n: usize, c: usize, set: &[(usize, usize, usize, f64)]) -> Array4<f64> {
        let mut s = Array4::from_elem((1, c, n, n), -1.0);
        for &(a, i, j, v) in set {
            s[[0, a, i, j]] = v;
        }
        s
    }

    #[test]
    fn nested_spans_all_decoded() {
        // [CLS] a b c [SEP]: "a b c" of type 0 contains "b" of type 1 and "a b" of type 0.
        let s = scores(
            5,
            2,
            &[
                (0, 1, 3, 2.0),
                (1, 2, 2, 1.5),
                (0, 1, 2, 0.5),
                (0, 0, 1, 9.0),
                (1, 3, 1, 3.0),
            ],
        );
        let valid = ndarray::array![[false, true, true, true, false]];
        let got = decode(
            s.view(),
            Bounds::same(valid.view()),
            DEFAULT_THRESHOLD,
            DecodeMode::Nested,
        );
        let keys: Vec<_> = got[0].iter().map(|p| (p.ty, p.start, p.end)).collect();
        // (0,0,1) touches [CLS] and (1,3,1) has start > end: both excluded.
        assert_eq!(keys, vec![(0, 1, 2), (0, 1, 3), (1, 2, 2)]);
        assert_eq!(got[0][1].score, 2.0);
    }

    #[test]
    fn threshold_and_masked_scores() {
        let s = scores(3, 1, &[(0, 0, 0, 0.3), (0, 1, 2, MASKED_SCORE)]);
        let valid = Array2::from_elem((1, 3), true);
        assert_eq!(
            decode(s.view(), Bounds::same(valid.view()), 0.5, DecodeMode::Nested)[0].len(),
            0
        );
        assert_eq!(
            decode(s.view(), Bounds::same(valid.view()), 0.0, DecodeMode::Nested)[0].len(),
            1
        );
    }

    #[test]
    fn flat_mode_keeps_best_non_overlapping() {
        let s = scores(
            6,
            2,
            &[
                (0, 0, 2, 1.0),
                (1, 2, 3, 3.0),
                (0, 4, 5, 0.5),
                (1, 0, 0, 0.8),
                (0, 1, 1, 2.0),
            ],
        );
        let valid = Array2::from_elem((1, 6), true);
        let got = decode(s.view(), Bounds::same(valid.view()), 0.0, DecodeMode::Flat);
        let keys: Vec<_> = got[0].iter().map(|p| (p.ty, p.start, p.end)).collect();
        // 3.0 (2..=3) kept; 2.0 (1..=1) kept; 1.0 (0..=2) overlaps; 0.8 (0..=0) kept; 0.5 kept.
        assert_eq!(keys, vec![(1, 0, 0), (0, 1, 1), (1, 2, 3), (0, 4, 5)]);
    }

    #[test]
    fn cjk_one_char_per_token() {
        let text = "我爱北京天安门";
        // [CLS] 我 爱 北 京 天 安 门 [SEP]
        let mut offsets = vec![(0, 0)];
        offsets.extend((0..7).map(|c| (c, c + 1)));
        offsets.push((0, 0));
        let cs = char_span(&offsets, 3, 4);
        assert_eq!(cs, (2, 4));
        assert_eq!(span_text(text, cs), "北京");
        assert_eq!(span_text(text, char_span(&offsets, 5, 7)), "天安门");
    }

    #[test]
    fn wordpiece_subwords_map_to_whole_word() {
        let text = "Mr Johanson left";
        // [CLS] mr johan ##son left [SEP]
        let offsets = [(0, 0), (0, 2), (3, 8), (8, 11), (12, 16), (0, 0)];
        assert_eq!(char_span(&offsets, 2, 3), (3, 11));
        assert_eq!(span_text(text, char_span(&offsets, 2, 3)), "Johanson");
        assert_eq!(span_text(text, char_span(&offsets, 1, 3)), "Mr Johanson");
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
}
