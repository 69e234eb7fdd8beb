//! A reusable, grow-only tensor buffer: the span scores `[B, C, n, n]` and the heads' scratch
//! live in these so that a training step allocates nothing once the largest batch has been seen.
//!
//! The memory is O(B·C·n²) for scores: [`Buffer::capacity_bytes`] makes it visible.

use crate::scalar::Scalar;
use ndarray::{ArrayView2, ArrayView4, ArrayViewMut2, ArrayViewMut4, Ix2, Ix4};

/// Grow-only storage viewed with the shape of its last [`Buffer::reshape`].
#[derive(Clone, Debug, Default)]
pub struct Buffer<T> {
    data: Vec<T>,
    shape: Vec<usize>,
}

impl<T: Scalar> Buffer<T> {
    /// An empty buffer (no allocation until the first `reshape`).
    pub fn new() -> Self {
        Buffer {
            data: Vec::new(),
            shape: Vec::new(),
        }
    }

    /// Sets the logical shape; reallocates only when it needs more elements than ever before.
    /// Contents are unspecified afterwards (callers overwrite them).
    pub fn reshape(&mut self, shape: &[usize]) {
        let need: usize = shape.iter().product();
        if need > self.data.len() {
            self.data.resize(need, T::zero());
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
    }

    /// The current logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Bytes held (the high-water mark, not the current shape).
    pub fn capacity_bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<T>()
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The current contents as a flat slice.
    pub fn as_slice(&self) -> &[T] {
        &self.data[..self.len()]
    }

    /// The current contents as a flat mutable slice.
    pub fn as_slice_mut(&mut self) -> &mut [T] {
        let n = self.len();
        &mut self.data[..n]
    }

    /// 2-D view (the shape must have 2 axes).
    pub fn view2(&self) -> ArrayView2<'_, T> {
        let sh = self.dims::<2>();
        ArrayView2::from_shape(Ix2(sh[0], sh[1]), self.as_slice()).unwrap()
    }

    /// 2-D mutable view (the shape must have 2 axes).
    pub fn view2_mut(&mut self) -> ArrayViewMut2<'_, T> {
        let sh = self.dims::<2>();
        ArrayViewMut2::from_shape(Ix2(sh[0], sh[1]), self.as_slice_mut()).unwrap()
    }

    /// 4-D view (the shape must have 4 axes).
    pub fn view4(&self) -> ArrayView4<'_, T> {
        let s = self.dims::<4>();
        ArrayView4::from_shape(Ix4(s[0], s[1], s[2], s[3]), self.as_slice()).unwrap()
    }

    /// 4-D mutable view (the shape must have 4 axes).
    pub fn view4_mut(&mut self) -> ArrayViewMut4<'_, T> {
        let s = self.dims::<4>();
        ArrayViewMut4::from_shape(Ix4(s[0], s[1], s[2], s[3]), self.as_slice_mut()).unwrap()
    }

    fn dims<const K: usize>(&self) -> [usize; K] {
        assert_eq!(
            self.shape.len(),
            K,
            "Buffer: shape {:?} viewed with {K} axes",
            self.shape
        );
        let mut out = [0; K];
        out.copy_from_slice(&self.shape);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_only_and_views_current_shape() {
        let mut b = Buffer::<f32>::new();
        b.reshape(&[2, 3, 4, 4]);
        assert_eq!(b.capacity_bytes(), 96 * 4);
        b.view4_mut().fill(1.0);
        b.reshape(&[1, 3, 2, 2]);
        assert_eq!(b.view4().dim(), (1, 3, 2, 2));
        assert_eq!(b.capacity_bytes(), 96 * 4);
        b.reshape(&[5, 7]);
        assert_eq!(b.view2().dim(), (5, 7));
        b.reshape(&[10, 10]);
        assert_eq!(b.capacity_bytes(), 100 * 4);
    }
}
