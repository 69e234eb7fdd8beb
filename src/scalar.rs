//! The numeric element type: everything numeric in gp-lite is generic over `f32` and `f64`, so
//! gradient checks run in f64 with tight tolerances while training and inference run in f32.

use ndarray::{ArrayView, ArrayViewMut, Dimension};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A floating-point element type: `f32` or `f64` (sealed: the matrix kernels and the f32-only
/// vector paths know no other).
pub trait Scalar:
    num_traits::Float
    + num_traits::FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + sealed::Sealed
    + 'static
{
    /// The safetensors dtype this type is stored as.
    const DTYPE: safetensors::Dtype;
    /// Short name for messages ("f32", "f64").
    const NAME: &'static str;

    /// Converts an f64 constant (lossy for f32).
    fn c(x: f64) -> Self;
    /// Widens to f64.
    fn f64(self) -> f64;

    /// `s` as f32 values when `Self` is f32 (the same slice), `None` for f64: how generic code
    /// hands its f32 data to the f32-only vector paths, without a cast.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// [`Scalar::as_f32`] for a mutable slice.
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// `v` (any shape and strides) as an f32 view when `Self` is f32, `None` for f64.
    fn view_f32<D: Dimension>(v: ArrayView<'_, Self, D>) -> Option<ArrayView<'_, f32, D>>;
    /// [`Scalar::view_f32`] for a mutable view.
    fn view_f32_mut<D: Dimension>(v: ArrayViewMut<'_, Self, D>) -> Option<ArrayViewMut<'_, f32, D>>;
    /// `v` as an f64 view when `Self` is f64, `None` for f32.
    fn view_f64<D: Dimension>(v: ArrayView<'_, Self, D>) -> Option<ArrayView<'_, f64, D>>;
    /// [`Scalar::view_f64`] for a mutable view.
    fn view_f64_mut<D: Dimension>(v: ArrayViewMut<'_, Self, D>) -> Option<ArrayViewMut<'_, f64, D>>;
}

mod sealed {
    /// Implemented for f32 and f64 only, so that no other type can be a [`super::Scalar`].
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Scalar for f32 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F32;
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn c(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline(always)]
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
    #[inline(always)]
    fn view_f32<D: Dimension>(v: ArrayView<'_, Self, D>) -> Option<ArrayView<'_, f32, D>> {
        Some(v)
    }
    #[inline(always)]
    fn view_f32_mut<D: Dimension>(v: ArrayViewMut<'_, Self, D>) -> Option<ArrayViewMut<'_, f32, D>> {
        Some(v)
    }
    #[inline(always)]
    fn view_f64<D: Dimension>(_: ArrayView<'_, Self, D>) -> Option<ArrayView<'_, f64, D>> {
        None
    }
    #[inline(always)]
    fn view_f64_mut<D: Dimension>(_: ArrayViewMut<'_, Self, D>) -> Option<ArrayViewMut<'_, f64, D>> {
        None
    }
}

impl Scalar for f64 {
    const DTYPE: safetensors::Dtype = safetensors::Dtype::F64;
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn c(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    #[inline(always)]
    fn view_f32<D: Dimension>(_: ArrayView<'_, Self, D>) -> Option<ArrayView<'_, f32, D>> {
        None
    }
    #[inline(always)]
    fn view_f32_mut<D: Dimension>(_: ArrayViewMut<'_, Self, D>) -> Option<ArrayViewMut<'_, f32, D>> {
        None
    }
    #[inline(always)]
    fn view_f64<D: Dimension>(v: ArrayView<'_, Self, D>) -> Option<ArrayView<'_, f64, D>> {
        Some(v)
    }
    #[inline(always)]
    fn view_f64_mut<D: Dimension>(v: ArrayViewMut<'_, Self, D>) -> Option<ArrayViewMut<'_, f64, D>> {
        Some(v)
    }
}
