//! The portable product kernel, which every product runs on where the AVX-512 kernel does not:
//! matrixmultiply's sgemm or dgemm by the element type, or, under valgrind, the plain loops of
//! [`crate::valgrind::gemm_plain`] (valgrind emulates matrixmultiply's FMA kernel lane by lane).

use crate::scalar::Scalar;
use ndarray::{ArrayView2, ArrayViewMut2};

/// `c = alpha * a · b + beta * c` on any strides; the caller checked the shapes, and that `c`
/// is not empty and the inner dimension not 0.
pub(super) fn gemm<T: Scalar>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    beta: T,
    mut c: ArrayViewMut2<T>,
) {
    let (m, k) = a.dim();
    let n = b.ncols();
    let (sa, sb, sc) = (a.strides(), b.strides(), c.strides());
    let (rsa, csa, rsb, csb, rsc, csc) = (sa[0], sa[1], sb[0], sb[1], sc[0], sc[1]);
    if crate::valgrind::running() {
        // SAFETY: the views are valid for their shapes and strides; `c` is a unique mutable view,
        // so it aliases neither `a` nor `b`.
        return unsafe {
            crate::valgrind::gemm_plain(
                m,
                k,
                n,
                alpha,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta,
                c.as_mut_ptr(),
                rsc,
                csc,
            )
        };
    }
    // The scalars convert exactly: `alpha.f64() as f32` is alpha itself when T is f32.
    if let (Some(a), Some(b), Some(mut c)) = (T::view_f32(a), T::view_f32(b), T::view_f32_mut(c.view_mut())) {
        // SAFETY: as above, for the same views seen as f32.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                alpha.f64() as f32,
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta.f64() as f32,
                c.as_mut_ptr(),
                rsc,
                csc,
            );
        }
    } else if let (Some(a), Some(b), Some(mut c)) = (T::view_f64(a), T::view_f64(b), T::view_f64_mut(c)) {
        // SAFETY: as above, for the same views seen as f64.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                alpha.f64(),
                a.as_ptr(),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta.f64(),
                c.as_mut_ptr(),
                rsc,
                csc,
            );
        }
    } else {
        unreachable!("a Scalar is f32 or f64 (the trait is sealed)");
    }
}
