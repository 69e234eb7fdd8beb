//! Character spans to token spans and back.

use super::Encoding;

/// The tokens `(first, last)` (inclusive) covering characters `[start, end)`: `first` is the
/// first non-special token overlapping `start`, `last` the last one overlapping `end - 1`.
/// `None` when the span does not align with token boundaries, i.e. `first` does not begin exactly
/// at `start` or `last` does not end exactly at `end` (an entity boundary inside a token), or when
/// no token overlaps it (empty span, only whitespace).
pub fn char_span_to_tokens(enc: &Encoding, start: usize, end: usize) -> Option<(usize, usize)> {
    if start >= end {
        return None;
    }
    let overlaps = |i: &usize| {
        let (s, e) = enc.offsets[*i];
        !enc.special[*i] && s < end && e > start
    };
    let first = (0..enc.len()).find(overlaps)?;
    let last = (first..enc.len()).rev().find(overlaps)?;
    let aligned = enc.offsets[first].0 == start && enc.offsets[last].1 == end;
    aligned.then_some((first, last))
}

/// Characters `[start, end)` covered by tokens `first..=last`.
pub fn token_span_to_chars(enc: &Encoding, first: usize, last: usize) -> (usize, usize) {
    (enc.offsets[first].0, enc.offsets[last].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "[CLS] new york ##er . [SEP]" over "New Yorker." (offsets by hand).
    fn sample() -> Encoding {
        Encoding::new(
            vec![101, 1, 2, 3, 4, 102],
            vec![(0, 0), (0, 3), (4, 8), (8, 10), (10, 11), (0, 0)],
            vec![true, false, false, false, false, true],
        )
    }

    #[test]
    fn aligned_spans_map_to_tokens() {
        let e = sample();
        assert_eq!(char_span_to_tokens(&e, 0, 3), Some((1, 1)));
        assert_eq!(char_span_to_tokens(&e, 0, 10), Some((1, 3)));
        assert_eq!(char_span_to_tokens(&e, 4, 11), Some((2, 4)));
        assert_eq!(token_span_to_chars(&e, 2, 3), (4, 10));
    }

    #[test]
    fn boundaries_inside_tokens_do_not_align() {
        let e = sample();
        // "york" is 4..8: 4..8 aligns, 4..9 ends inside "##er".
        assert_eq!(char_span_to_tokens(&e, 4, 8), Some((2, 2)));
        assert_eq!(char_span_to_tokens(&e, 4, 9), None);
        assert_eq!(char_span_to_tokens(&e, 1, 3), None);
        // A span of only the space between tokens, and an empty span.
        assert_eq!(char_span_to_tokens(&e, 3, 4), None);
        assert_eq!(char_span_to_tokens(&e, 2, 2), None);
        // Leading whitespace: first overlapping token starts after `start`.
        assert_eq!(char_span_to_tokens(&e, 3, 8), None);
    }
}
