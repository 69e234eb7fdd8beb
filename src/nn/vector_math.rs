//! `exp` on 16 f32 lanes (AVX-512F), for the loops the compiler cannot vectorise because they
//! call libm value by value: softmax's exponentials and GELU's derivative (whose 16-lane erf is
//! in [`crate::nn::erf`]).

use std::arch::x86_64::*;

/// `exp(x)` within 2 ulp of libm's: `2^n e^r` with `n = round(x log2 e)`, `r = x - n ln 2`
/// (ln 2 in two parts, as Cephes' expf), e^r by Cephes' degree-7 polynomial, `2^n` applied
/// by `scalef` (so results below the normal range come out as denormals or 0, as libm's).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let x = _mm512_min_ps(_mm512_max_ps(x, c(-104.0)), c(88.72283));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
        x,
        c(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, c(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, c(-2.121_944_4e-4), r);
    let mut p = c(1.987_569_1e-4);
    for k in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, c(k));
    }
    // e^r = p r² + r + 1
    let e = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, c(1.0)));
    _mm512_scalef_ps(e, n)
}

/// The mask of lanes `0..len.min(16)`.
#[inline]
pub fn lanes(len: usize) -> __mmask16 {
    if len >= 16 {
        0xffff
    } else {
        ((1u32 << len) - 1) as u16
    }
}
