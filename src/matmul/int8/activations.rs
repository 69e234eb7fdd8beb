//! The rows of A quantised on every product (dynamic quantisation): each row's range `[lo, hi]`
//! (0 included) in 255 steps, `s_a = (hi − lo) / 255`, a zero point `z_a = round(−lo / s_a)`
//! and `u_a = round(a / s_a + z_a)` clamped to 0..=255 (ties to even), so `a ≈ s_a (u_a − z_a)`.
//!
//! Two versions write the same bytes: plain loops, and AVX-512F (16 values an instruction,
//! [`crate::cpu::avx512`]). Both multiply and then add (no fused multiply-add), round ties to
//! even, and send NaN to 0.

use super::kernel::Kernel;
use ndarray::ArrayView2;

/// Quantised rows of A: `values` row-major, `stride` bytes a row (zero past k), followed by zero
/// rows up to the row count the kernel loads; `s_a` and `z_a` of each row.
#[derive(Default)]
pub struct QuantA {
    pub(super) values: Vec<u8>,
    pub(super) stride: usize,
    pub(super) scales: Vec<f32>,
    pub(super) zeros: Vec<i32>,
}

impl QuantA {
    /// `a`'s rows quantised for `kernel` and a weight of `kp` (padded) rows.
    pub fn new(kernel: Kernel, a: ArrayView2<f32>, kp: usize) -> QuantA {
        let mut q = QuantA::default();
        q.fill(kernel, a, kp);
        q
    }

    /// Quantises `a`'s rows into `self` (reusing its buffers): rows of `kp` bytes, or for AMX
    /// of k rounded up to 64 bytes and a multiple of 16 rows (whole tiles).
    pub fn fill(&mut self, kernel: Kernel, a: ArrayView2<f32>, kp: usize) {
        let m = a.nrows();
        let (stride, rows) = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => {
                use super::super::amx::{TILE_K, TILE_ROWS};
                (kp.next_multiple_of(TILE_K), m.next_multiple_of(TILE_ROWS))
            }
            _ => (kp, m),
        };
        self.stride = stride;
        self.values.clear();
        self.values.resize(rows * stride, 0);
        self.scales.clear();
        self.zeros.clear();
        for (i, row) in a.rows().into_iter().enumerate() {
            let dst = &mut self.values[i * stride..i * stride + row.len()];
            let (scale, zero) = match row.as_slice() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F (cpu::avx512); dst and row have one length.
                Some(r) if crate::cpu::avx512() => unsafe { quantize_row_avx512(r, dst) },
                _ => quantize_row(row.iter().copied(), dst),
            };
            self.scales.push(scale);
            self.zeros.push(zero);
        }
    }
}

/// `s_a`, `1 / s_a` and `z_a` of a row whose values span `[lo, hi]` (`lo ≤ 0 ≤ hi`); all 0 for
/// an all-zero row or an infinite range.
fn row_scale(lo: f32, hi: f32) -> (f32, f32, f32) {
    if hi > lo && (hi - lo).is_finite() {
        let scale = (hi - lo) / 255.0;
        (
            scale,
            1.0 / scale,
            (-lo / scale).round_ties_even().clamp(0.0, 255.0),
        )
    } else {
        (0.0, 0.0, 0.0)
    }
}

/// One row, plain loops: its bytes into `dst`; returns `(s_a, z_a)`.
fn quantize_row(row: impl Iterator<Item = f32> + Clone, dst: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = row
        .clone()
        .fold((0f32, 0f32), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (scale, inv, zero) = row_scale(lo, hi);
    for (d, v) in dst.iter_mut().zip(row) {
        // NaN clamps to NaN, which `as` turns into 0
        *d = (v * inv + zero).round_ties_even().clamp(0.0, 255.0) as u8;
    }
    (scale, zero as i32)
}

/// [`quantize_row`] 16 values at a time.
///
/// # Safety
/// The CPU must have AVX-512F; `dst.len() == row.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_row_avx512(row: &[f32], dst: &mut [u8]) -> (f32, i32) {
    use std::arch::x86_64::*;
    assert_eq!(row.len(), dst.len());
    let n = row.len();
    let tail = (1u32 << (n % 16)) as u16 - 1;
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for j in (0..n).step_by(16) {
        let mask = if j + 16 <= n { u16::MAX } else { tail };
        // SAFETY: the mask covers only values j..n of row.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, row.as_ptr().add(j)) };
        // MINPS returns its second operand when the first is NaN: NaN is skipped, as
        // f32::min skips it; masked-off lanes are 0, inside [lo, hi] already.
        lo = _mm512_min_ps(x, lo);
        hi = _mm512_max_ps(x, hi);
    }
    let (lo, hi) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    let (scale, inv, zero) = row_scale(lo, hi);
    let (inv, zero_v) = (_mm512_set1_ps(inv), _mm512_set1_ps(zero));
    let (floor, ceil) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
    for j in (0..n).step_by(16) {
        let mask = if j + 16 <= n { u16::MAX } else { tail };
        // SAFETY: as above.
        let x = unsafe { _mm512_maskz_loadu_ps(mask, row.as_ptr().add(j)) };
        let v = _mm512_add_ps(_mm512_mul_ps(x, inv), zero_v);
        let v = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
        // MAXPS / MINPS return the second operand for NaN: NaN becomes 0, as in the loop.
        let v = _mm512_min_ps(_mm512_max_ps(v, floor), ceil);
        // VPMOVDB to memory under the mask (AVX-512F; a byte-masked store of a 128-bit
        // register would need AVX512BW and VL, which `cpu::avx512` does not check).
        // SAFETY: the mask covers only bytes j..n of dst.
        unsafe {
            _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr().add(j).cast(), mask, _mm512_cvtps_epi32(v))
        };
    }
    (scale, zero as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 rows equal the plain loops' byte for byte, on ranges with ties, NaN, inf,
    /// all-zero rows and every tail length.
    #[test]
    fn both_versions_write_the_same_bytes() {
        if !crate::cpu::avx512() {
            return;
        }
        let rows: Vec<Vec<f32>> = (0..40)
            .map(|n| (0..n).map(|j| ((j * 37 % 23) as f32 - 9.0) * 0.173).collect())
            .chain([
                vec![0.0; 20],
                vec![1.0, f32::NAN, -2.0, 3.5],
                vec![f32::INFINITY, 1.0, 2.0],
                (0..33).map(|j| j as f32 * 0.5).collect(), // x.5 ties after scaling by 255/16
                vec![-1.0; 17],
            ])
            .collect();
        for row in rows {
            let (mut a, mut b) = (vec![7u8; row.len()], vec![9u8; row.len()]);
            let pa = quantize_row(row.iter().copied(), &mut a);
            // SAFETY: the CPU has AVX-512F (checked above); one length.
            let pb = unsafe { quantize_row_avx512(&row, &mut b) };
            assert_eq!(pa.0.to_bits(), pb.0.to_bits(), "{row:?}");
            assert_eq!((pa.1, &a), (pb.1, &b), "{row:?}");
        }
    }
}
