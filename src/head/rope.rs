//! Rotary position embedding (RoPE) as GlobalPointer uses it: the pair of coordinates
//! `(2m, 2m+1)` of a vector at position `i` is rotated by the angle `i θ_m`, `θ_m = 10000^(-2m/d)`.
//! The backward pass is the rotation by the negative angle (`R_iᵀ = R_{-i}`).

use crate::scalar::Scalar;

/// Precomputed `cos(i θ_m)` and `sin(i θ_m)` for positions `0..len`, grown on demand and reused
/// across calls.
#[derive(Clone, Debug, Default)]
pub struct RopeTable<T> {
    /// Vector size d (even).
    dim: usize,
    /// `[len, d/2]` row-major.
    cos: Vec<T>,
    sin: Vec<T>,
    len: usize,
}

impl<T: Scalar> RopeTable<T> {
    /// An empty table for vectors of size `dim` (must be even).
    pub fn new(dim: usize) -> Self {
        assert!(dim.is_multiple_of(2), "RoPE needs an even head size, got {dim}");
        RopeTable {
            dim,
            cos: Vec::new(),
            sin: Vec::new(),
            len: 0,
        }
    }

    /// The vector size d.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Positions covered so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before any position is covered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes the table cover positions `0..n` for vectors of size `dim` (rebuilt if `dim`
    /// differs, extended if `n` is larger, untouched otherwise).
    pub fn ensure(&mut self, dim: usize, n: usize) {
        if dim != self.dim {
            *self = RopeTable::new(dim);
        }
        let half = self.dim / 2;
        for i in self.len..n {
            for m in 0..half {
                // θ_m = 10000^(-2m/d), angles in f64 then rounded to T.
                let theta = 10000f64.powf(-2.0 * m as f64 / self.dim as f64);
                let (s, c) = (i as f64 * theta).sin_cos();
                self.cos.push(T::c(c));
                self.sin.push(T::c(s));
            }
        }
        self.len = self.len.max(n);
    }

    /// `x ← R_pos x` for one vector of size d: pairs `(x[2m], x[2m+1])` rotated by `pos θ_m`.
    #[inline]
    pub fn rotate(&self, x: &mut [T], pos: usize) {
        self.rotate_signed(x, pos, T::one());
    }

    /// `x ← R_posᵀ x` (rotation by the negative angle): the backward of [`Self::rotate`].
    #[inline]
    pub fn rotate_back(&self, x: &mut [T], pos: usize) {
        self.rotate_signed(x, pos, -T::one());
    }

    #[inline]
    fn rotate_signed(&self, x: &mut [T], pos: usize, sign: T) {
        let half = self.dim / 2;
        debug_assert_eq!(x.len(), self.dim);
        assert!(
            pos < self.len,
            "RoPE table covers {} positions, asked for {pos}",
            self.len
        );
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        for ((pair, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
            let s = sign * s;
            // x'[2m] = x[2m] cos - x[2m+1] sin;  x'[2m+1] = x[2m+1] cos + x[2m] sin
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = b * c + a * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_hand() {
        let mut t = RopeTable::<f64>::new(4);
        t.ensure(4, 3);
        // position 2: θ_0 = 1, θ_1 = 10000^(-1/2) = 0.01.
        let mut x = [1.0, 2.0, 3.0, -1.0];
        t.rotate(&mut x, 2);
        let (c0, s0) = (2f64.cos(), 2f64.sin());
        let (c1, s1) = (0.02f64.cos(), 0.02f64.sin());
        let want = [c0 - 2.0 * s0, 2.0 * c0 + s0, 3.0 * c1 + s1, -c1 + 3.0 * s1];
        for (g, w) in x.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{x:?} vs {want:?}");
        }
        t.rotate_back(&mut x, 2);
        for (g, w) in x.iter().zip([1.0, 2.0, 3.0, -1.0]) {
            assert!((g - w).abs() < 1e-15);
        }
    }

    #[test]
    fn scores_depend_on_relative_offset_only() {
        let mut t = RopeTable::<f64>::new(6);
        t.ensure(6, 20);
        let q = [0.3, -0.2, 0.5, 0.9, -1.1, 0.4];
        let k = [0.7, 0.1, -0.6, 0.2, 0.05, -0.3];
        let dot = |i: usize, j: usize| {
            let (mut a, mut b) = (q, k);
            t.rotate(&mut a, i);
            t.rotate(&mut b, j);
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>()
        };
        assert!((dot(2, 5) - dot(10, 13)).abs() < 1e-12);
        assert!((dot(2, 5) - dot(2, 6)).abs() > 1e-6);
    }

    #[test]
    fn table_grows_and_keeps_earlier_rows() {
        let mut t = RopeTable::<f32>::new(8);
        t.ensure(8, 4);
        let mut a = [1.0f32; 8];
        t.rotate(&mut a, 3);
        t.ensure(8, 50);
        let mut b = [1.0f32; 8];
        t.rotate(&mut b, 3);
        assert_eq!(a, b);
        assert_eq!(t.len(), 50);
    }
}
