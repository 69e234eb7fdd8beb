//! The BIO tag scheme of the CRF head: `O` = 0, `B-a` = 1 + 2a, `I-a` = 2 + 2a; which tokens a
//! text's tag sequence runs over, gold spans as tags and tag paths as spans.

use crate::span::{Bounds, GoldSpan};

/// Number of BIO tags for `c` types.
pub fn num_tags(c: usize) -> usize {
    1 + 2 * c
}

/// The B tag of type `a`.
pub fn tag_b(a: usize) -> usize {
    1 + 2 * a
}

/// The tokens of text `b` the tag sequence runs over (those that may start or end an entity).
pub fn positions(bounds: &Bounds, b: usize) -> Vec<usize> {
    let row = bounds.row(b);
    (0..row.starts.len())
        .filter(|&i| row.starts[i] || row.ends[i])
        .collect()
}

/// BIO tags over `pos` for non-overlapping `gold` spans (token indices).
pub fn gold_tags(gold: &[GoldSpan], pos: &[usize]) -> Vec<usize> {
    pos.iter()
        .map(|&i| match gold.iter().find(|&&(_, s, e)| s <= i && i <= e) {
            Some(&(a, s, _)) if s == i => tag_b(a),
            Some(&(a, _, _)) => tag_b(a) + 1,
            None => 0,
        })
        .collect()
}

/// Spans `(type, first, last)` (indices into the path) of a BIO path.
pub fn tags_to_spans(tags: &[usize]) -> Vec<GoldSpan> {
    let mut out = Vec::new();
    let mut open: Option<(usize, usize)> = None;
    for (t, &y) in tags.iter().enumerate() {
        let continues = y != 0 && y % 2 == 0 && open.is_some_and(|(a, _)| tag_b(a) + 1 == y);
        if continues {
            continue;
        }
        if let Some((a, s)) = open.take() {
            out.push((a, s, t - 1));
        }
        if y != 0 {
            open = Some(((y - 1) / 2, t));
        }
    }
    if let Some((a, s)) = open {
        out.push((a, s, tags.len() - 1));
    }
    out
}
