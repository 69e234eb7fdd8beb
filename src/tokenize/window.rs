//! Overlapping windows over an encoding longer than the model accepts, so that no text is cut.

use std::ops::Range;

use super::{Encoding, TokenizeError};

/// One window: `tokens` are the indices of its content tokens in the full encoding, and
/// `encoding` is `[CLS] enc[tokens] [SEP]` (offsets still refer to the full text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Indices of its content tokens in the full encoding (never a special token).
    pub tokens: Range<usize>,
    /// `[CLS] enc[tokens] [SEP]`, ready to batch.
    pub encoding: Encoding,
}

impl Window {
    /// The index in the full encoding of token `i` of this window (`1 <= i <= tokens.len()`).
    pub fn to_full(&self, i: usize) -> usize {
        self.tokens.start + i - 1
    }
}

/// Splits `enc` (`[CLS] content [SEP]`) into windows of at most `max_len` tokens, specials
/// included. Window `k` starts at content token `k * stride`; the last one ends at the last
/// content token, so consecutive windows overlap by `max_len - 2 - stride` tokens and every token
/// is in at least one window. An encoding that fits gives one window, equal to `enc`.
pub fn windows(enc: &Encoding, max_len: usize, stride: usize) -> Result<Vec<Window>, TokenizeError> {
    Ok(window_ranges(enc, max_len, stride)?
        .into_iter()
        .map(|tokens| window(enc, tokens))
        .collect())
}

/// The `tokens` ranges of [`windows`] without building the windows (a caller that scores them a
/// few at a time builds each with [`window`] when it needs it).
pub fn window_ranges(
    enc: &Encoding,
    max_len: usize,
    stride: usize,
) -> Result<Vec<Range<usize>>, TokenizeError> {
    if max_len < 3 || stride == 0 || stride > max_len - 2 {
        return Err(TokenizeError::BadWindow { max_len, stride });
    }
    let n = enc.len();
    if n < 2 || !enc.special[0] || !enc.special[n - 1] {
        return Err(TokenizeError::NoSpecials);
    }
    // content tokens are enc[1..n-1]; window capacity is max_len - 2
    let (body, cap) = (n - 2, max_len - 2);
    let mut out = Vec::with_capacity(body.saturating_sub(cap) / stride + 1);
    let mut start = 0;
    loop {
        let end = (start + cap).min(body);
        out.push(1 + start..1 + end);
        if end == body {
            return Ok(out);
        }
        start += stride;
    }
}

/// The window of `enc` over content tokens `tokens` (see [`windows`]).
pub fn window(enc: &Encoding, tokens: Range<usize>) -> Window {
    let last = enc.len() - 1;
    let take = |r: Range<usize>| std::iter::once(0).chain(r).chain(std::iter::once(last));
    let encoding = Encoding {
        ids: take(tokens.clone()).map(|i| enc.ids[i]).collect(),
        offsets: take(tokens.clone()).map(|i| enc.offsets[i]).collect(),
        special: take(tokens.clone()).map(|i| enc.special[i]).collect(),
        may_start: take(tokens.clone()).map(|i| enc.may_start[i]).collect(),
        may_end: take(tokens.clone()).map(|i| enc.may_end[i]).collect(),
        type_ids: take(tokens.clone()).map(|i| enc.type_ids[i]).collect(),
    };
    Window { tokens, encoding }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [CLS] t1 .. tk [SEP], token i covering characters [i, i + 1).
    fn encoding(k: usize) -> Encoding {
        let mut e = Encoding::new(vec![101], vec![(0, 0)], vec![true]);
        for i in 1..=k {
            e.push(i as u32, (i, i + 1), false);
        }
        e.push(102, (0, 0), true);
        e
    }

    #[test]
    fn short_encoding_is_one_window() {
        let e = encoding(3);
        let w = windows(&e, 5, 2).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].tokens, 1..4);
        assert_eq!(w[0].encoding, e);
    }

    #[test]
    fn long_encoding_overlaps_and_covers_everything() {
        // 7 content tokens, 4 per window, step 3: [1..5), [4..8)
        let e = encoding(7);
        let w = windows(&e, 6, 3).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].tokens, 1..5);
        assert_eq!(w[1].tokens, 4..8);
        assert_eq!(w[1].encoding.ids, vec![101, 4, 5, 6, 7, 102]);
        assert_eq!(w[1].encoding.offsets[1], (4, 5));
        assert_eq!(
            w[1].encoding.special,
            vec![true, false, false, false, false, true]
        );
        assert_eq!(w[1].to_full(1), 4);
        // 10 content tokens, 4 per window, step 2: starts 0, 2, 4, 6 (ends at 10)
        let w = windows(&encoding(10), 6, 2).unwrap();
        let ranges: Vec<_> = w.iter().map(|w| w.tokens.clone()).collect();
        assert_eq!(ranges, vec![1..5, 3..7, 5..9, 7..11]);
    }

    #[test]
    fn a_stride_that_would_skip_tokens_is_refused() {
        assert!(matches!(
            windows(&encoding(10), 6, 5),
            Err(TokenizeError::BadWindow { .. })
        ));
        assert!(windows(&encoding(10), 2, 1).is_err());
        assert!(windows(&encoding(10), 6, 0).is_err());
    }
}
