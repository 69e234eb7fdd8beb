//! The number format of the general f32 products ([`products_in`]): f32, or bf16 for training in
//! bf16. Inside the scope every f32 product of `gemm` and `gemm_batched` on the pool's threads
//! rounds both operands to bf16 and sums in f32 on the kernels of [`super::bf16`] (B packed on
//! each call), so that one switch covers the forward and backward products of every layer; f64
//! products (the gradient checks) never change.

use super::bf16;
use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::cell::Cell;

thread_local! {
    /// The number format this thread's f32 general products run in ([`products_in`]).
    static PRODUCTS: Cell<Precision> = const { Cell::new(Precision::F32) };
    /// The buffer [`gemm_bf16`] packs B into, reused from call to call.
    static PACKED_B: Cell<Vec<u16>> = const { Cell::new(Vec::new()) };
}

/// The number format the f32 products of [`gemm`](crate::matmul::gemm) run in on this thread:
/// f32, or bf16 inside [`products_in`].
pub fn product_precision() -> Precision {
    PRODUCTS.get()
}

/// Runs `f` with every f32 product of [`gemm`](crate::matmul::gemm) and
/// [`gemm_batched`](crate::matmul::gemm_batched) in `precision` on the threads of the current
/// rayon pool (the global one outside any pool) and on the calling thread, then gives each
/// thread its setting back. `Precision::Bf16`: both operands rounded to bf16 (nearest
/// even), their products summed in f32 ([`bf16`]); the output, alpha, beta and everything
/// outside the products stay f32. Two scopes of different precisions must not share a pool at
/// the same time.
///
/// # Panics
/// For `Precision::Int8`: int8 is for frozen weights
/// ([`PackedB::for_inference`](crate::matmul::PackedB::for_inference)) only.
pub fn products_in<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    assert!(
        precision != Precision::Int8,
        "products_in: general products run in f32 or bf16, not int8"
    );
    /// Gives every thread its previous setting back, also when `f` panics: the caller first,
    /// then the workers (so that a caller which is one of them ends with its own value).
    struct Restore {
        workers: Vec<Precision>,
        caller: Precision,
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            PRODUCTS.set(self.caller);
            let workers = &self.workers;
            rayon::broadcast(|ctx| PRODUCTS.set(workers[ctx.index()]));
        }
    }
    let workers = rayon::broadcast(|_| PRODUCTS.replace(precision));
    // The caller's previous value, when it is not a worker of the pool (when it is, this reads
    // the `precision` just set, and the workers' restore gives its own back).
    let caller = PRODUCTS.replace(precision);
    let _restore = Restore { workers, caller };
    f()
}

/// True when this f32 product runs on the bf16 kernel ([`products_in`]): the output's rows must
/// be contiguous (the kernel's epilogue writes whole rows).
pub(super) fn bf16_product<T: Scalar>(c: &ArrayViewMut2<T>) -> bool {
    product_precision() == Precision::Bf16 && (c.ncols() == 1 || c.strides()[1] == 1)
}

/// `c = alpha a·b + beta c` with a and b rounded to bf16 and the products summed in f32: B
/// packed for this call, the rows of c split over threads (on one below `min_macs`
/// multiply-adds). The caller has checked the shapes and done the empty products.
fn gemm_bf16(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    c: ArrayViewMut2<f32>,
    min_macs: usize,
) {
    // B is packed on every call, into this thread's buffer (taken, so that a product run
    // nested in this one on the same thread packs into a buffer of its own).
    let packed = bf16::Bf16B::pack_reusing(b, PACKED_B.take());
    super::packed_split::narrow_parallel(alpha, a, &packed, beta, None, c, min_macs);
    PACKED_B.set(packed.into_buffer());
}

/// Runs the product on the bf16 kernel when [`bf16_product`] says so (splitting it over threads
/// from `min_macs` multiply-adds); false when it did not.
pub(super) fn try_bf16<T: Scalar>(
    alpha: T,
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    beta: T,
    c: &mut ArrayViewMut2<T>,
    min_macs: usize,
) -> bool {
    if !bf16_product(c) {
        return false;
    }
    let (Some(a), Some(b), Some(c)) = (T::view_f32(a), T::view_f32(b), T::view_f32_mut(c.view_mut())) else {
        return false; // f64: the gradient checks' products stay f64
    };
    // The scalars convert exactly (T is f32).
    gemm_bf16(alpha.f64() as f32, a, b, beta.f64() as f32, c, min_macs);
    true
}
