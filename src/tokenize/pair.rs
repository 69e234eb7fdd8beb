//! A question and a context as one encoder input, `[CLS] question [SEP] context [SEP]` with
//! `type_ids` 0 then 1, a context longer than a window split into windows that share half of
//! their context tokens. Only context tokens may begin or end a span.

use std::ops::Range;

use super::{window_ranges, Encoding, TokenizeError};

/// One window of a question and context pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairWindow {
    /// `[CLS] question [SEP] context[tokens] [SEP]`, ready to batch (question tokens may not
    /// begin or end a span; offsets are into the question for its tokens, into the context for
    /// the context's).
    pub encoding: Encoding,
    /// Indices of its context tokens in the context's encoding.
    pub tokens: Range<usize>,
    /// Index in `encoding` of its first context token.
    pub first: usize,
}

impl PairWindow {
    /// The index in the context's encoding of window token `i` (a context token).
    pub fn to_context(&self, i: usize) -> usize {
        self.tokens.start + i - self.first
    }

    /// The window token of context token `t`, when the window holds it.
    pub fn from_context(&self, t: usize) -> Option<usize> {
        self.tokens
            .contains(&t)
            .then(|| self.first + t - self.tokens.start)
    }
}

/// The windows of `question` and `context` (each encoded as `[CLS] content [SEP]`) of at most
/// `max_len` tokens: the question cut to its first `max_question` tokens, the context in windows
/// of the room left, consecutive windows starting half that room apart.
pub fn pair_windows(
    question: &Encoding,
    context: &Encoding,
    max_len: usize,
    max_question: usize,
) -> Result<Vec<PairWindow>, TokenizeError> {
    let (nq, nc) = (question.len(), context.len());
    if nq < 2 || nc < 2 || !question.special[0] || !context.special[nc - 1] {
        return Err(TokenizeError::NoSpecials);
    }
    let q = (nq - 2).min(max_question);
    let room = max_len.saturating_sub(q + 3);
    if room == 0 {
        return Err(TokenizeError::NoRoomForContext { max_len, question: q });
    }
    let mut head = Encoding::new(vec![question.ids[0]], vec![(0, 0)], vec![true]);
    for t in 1..=q {
        head.push_token_of(question, t, 0);
        head.may_start[t] = false;
        head.may_end[t] = false;
    }
    head.push(context.ids[nc - 1], (0, 0), true);
    let first = head.len();
    let ranges = window_ranges(context, room + 2, (room / 2).max(1))?;
    Ok(ranges
        .into_iter()
        .map(|tokens| {
            let mut encoding = head.clone();
            for t in tokens.clone() {
                encoding.push_token_of(context, t, 0);
                *encoding.type_ids.last_mut().expect("just pushed") = 1;
            }
            encoding.push(context.ids[nc - 1], (0, 0), true);
            *encoding.type_ids.last_mut().expect("just pushed") = 1;
            PairWindow {
                encoding,
                tokens,
                first,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [CLS] k tokens [SEP], token i covering character i - 1.
    fn enc(k: usize, base: u32) -> Encoding {
        let mut e = Encoding::new(vec![101], vec![(0, 0)], vec![true]);
        for i in 0..k {
            e.push(base + i as u32, (i, i + 1), false);
        }
        e.push(102, (0, 0), true);
        e
    }

    #[test]
    fn pairs_carry_segments_and_allow_only_context_spans() {
        let w = pair_windows(&enc(2, 10), &enc(3, 20), 16, 8).unwrap();
        assert_eq!(w.len(), 1);
        let e = &w[0].encoding;
        assert_eq!(e.ids, vec![101, 10, 11, 102, 20, 21, 22, 102]);
        assert_eq!(e.type_ids, vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(
            e.may_start,
            vec![false, false, false, false, true, true, true, false]
        );
        assert_eq!(e.may_end, e.may_start);
        assert_eq!(e.offsets[5], (1, 2));
        assert_eq!((w[0].first, w[0].to_context(5)), (4, 2));
        assert_eq!(w[0].from_context(3), Some(6));
    }

    #[test]
    fn long_contexts_are_windowed_with_half_overlap_and_long_questions_cut() {
        // max_len 10, question cut to 3: room 4, stride 2; 9 context tokens: 1..5, 3..7, 5..9, 7..10.
        let w = pair_windows(&enc(5, 10), &enc(9, 20), 10, 3).unwrap();
        let ranges: Vec<_> = w.iter().map(|w| w.tokens.clone()).collect();
        assert_eq!(ranges, vec![1..5, 3..7, 5..9, 7..10]);
        assert!(w.iter().all(|w| w.encoding.len() <= 10 && w.first == 5));
        assert_eq!(w[1].from_context(2), None);
        assert!(matches!(
            pair_windows(&enc(5, 10), &enc(9, 20), 6, 3),
            Err(TokenizeError::NoRoomForContext { .. })
        ));
    }
}
