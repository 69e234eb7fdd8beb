//! The span vocabulary shared by heads, the loss and decoding: gold and predicted spans in token
//! indices, which tokens may begin and end an entity, and the score of an excluded span.

use ndarray::{ArrayView1, ArrayView2};
use serde::Serialize;

/// A gold entity of one text: `(type, start, end)`, token indices, `end` inclusive.
pub type GoldSpan = (usize, usize, usize);

/// A decoded entity of one text, in token indices (`end` inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SpanPred {
    /// Entity type (index into the model's labels).
    pub ty: usize,
    /// First token.
    pub start: usize,
    /// Last token (inclusive).
    pub end: usize,
    /// The head's score of the span.
    pub score: f64,
}

/// The score of an excluded span (`i > j`, or a boundary that is not allowed): large and
/// negative so that it contributes nothing to the loss and is never decoded (exactly -1e12 in
/// f64, the nearest f32 in f32), as in the reference implementation.
pub const MASKED_SCORE: f64 = -1e12;

/// Which tokens of each text may begin (`starts[b, i]`) and end (`ends[b, j]`) an entity.
#[derive(Clone, Copy, Debug)]
pub struct Bounds<'a> {
    /// `[B, n]`: token `i` of text `b` may begin an entity.
    pub starts: ArrayView2<'a, bool>,
    /// `[B, n]`: token `j` of text `b` may end an entity.
    pub ends: ArrayView2<'a, bool>,
}

/// [`Bounds`] of one text.
#[derive(Clone, Copy, Debug)]
pub struct RowBounds<'a> {
    /// Token `i` may begin an entity.
    pub starts: ArrayView1<'a, bool>,
    /// Token `j` may end an entity.
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
