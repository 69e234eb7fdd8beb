//! f32 operands rounded to bf16 into the layouts the kernels read: B's pair-interleaved panels
//! and A's rows, from row-major or column-major views. Training packs both operands of every
//! product, so these run 16 values an instruction on AVX-512 with the integer rounding of
//! [`crate::bf16::from_f32`] (the same bits, NaN included), and in plain loops elsewhere.

use super::{LANES, PAIR};
use crate::bf16::from_f32;
use ndarray::ArrayView2;

/// Index of B's value `(p, j)` in its panels (`kp` padded rows): panel `j / 16`, pair `p / 2`,
/// lane `j % 16`, value `p % 2` of the lane.
pub fn panel_index(kp: usize, p: usize, j: usize) -> usize {
    (j / LANES) * kp * LANES + (p / PAIR) * PAIR * LANES + (j % LANES) * PAIR + p % PAIR
}

/// Writes `b` (`k x n`) rounded into `panels` (`n.div_ceil(16)` panels of `kp * 16` values),
/// every value of them (zeros past k and n, so a reused buffer needs no clearing), reading `b`
/// in its memory order: by pairs of rows when its rows are contiguous (an activation, or W for
/// an input gradient), by columns otherwise (a weight's Wᵀ).
pub fn pack_b(b: ArrayView2<f32>, kp: usize, panels: &mut [u16]) {
    let (k, n) = b.dim();
    let width = n.div_ceil(LANES) * LANES;
    assert!(k <= kp && kp.is_multiple_of(PAIR) && panels.len() == width / LANES * kp * LANES);
    if b.strides()[1] == 1 && n > 1 {
        let row = |p: usize| (p < k).then(|| b.row(p).to_slice().expect("contiguous rows"));
        for g in 0..kp / PAIR {
            pair_rows(row(PAIR * g), row(PAIR * g + 1), n, kp, g, panels);
        }
        return;
    }
    let mut col = vec![0u16; kp];
    for j in 0..width {
        if j < n {
            let c = b.column(j);
            match c.as_slice() {
                Some(s) => self::row(s, &mut col[..k]),
                None => col.iter_mut().zip(c.iter()).for_each(|(d, &v)| *d = from_f32(v)),
            }
        } else {
            col[..k].fill(0);
        }
        for (p, &h) in col.iter().enumerate() {
            panels[panel_index(kp, p, j)] = h;
        }
    }
}

/// [`pack_b`] split over the current rayon pool's threads by blocks of whole panels (B's
/// columns), when B is large enough for the split to pay: training packs B on every product,
/// and a serial packing would leave the other threads waiting.
pub fn pack_b_parallel(b: ArrayView2<f32>, kp: usize, panels: &mut [u16]) {
    use rayon::prelude::*;
    let (k, n) = b.dim();
    let threads = rayon::current_num_threads();
    let per_thread = n.div_ceil(LANES).div_ceil(threads);
    if threads <= 1 || k * n < 1 << 16 || per_thread == 0 {
        return pack_b(b, kp, panels);
    }
    let block = per_thread * kp * LANES;
    panels.par_chunks_mut(block).enumerate().for_each(|(q, dst)| {
        let j0 = q * per_thread * LANES;
        let j1 = (j0 + per_thread * LANES).min(n);
        pack_b(b.slice(ndarray::s![.., j0..j1]), kp, dst);
    });
}

/// Rows `2g` and `2g + 1` of B (None: zeros, past k) into pair `g` of every panel, the lanes
/// past `n` zero.
fn pair_rows(r0: Option<&[f32]>, r1: Option<&[f32]>, n: usize, kp: usize, g: usize, panels: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        // SAFETY: the CPU has AVX-512F; the callee writes pair g of every panel, inside
        // `panels` (pack_b asserted their length).
        return unsafe { pair_rows_avx512(r0, r1, n, kp, g, panels) };
    }
    let value = |r: Option<&[f32]>, j: usize| r.map_or(0, |r| if j < n { from_f32(r[j]) } else { 0 });
    for j in 0..n.div_ceil(LANES) * LANES {
        let i = panel_index(kp, PAIR * g, j);
        panels[i] = value(r0, j);
        panels[i + 1] = value(r1, j);
    }
}

/// [`pair_rows`], one 64-byte pair row of a panel per store.
///
/// # Safety
/// The CPU must have AVX-512F; `panels` holds `n.div_ceil(16)` panels of `kp * 16` values,
/// `2g < kp`, and the rows given hold `n` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pair_rows_avx512(
    r0: Option<&[f32]>,
    r1: Option<&[f32]>,
    n: usize,
    kp: usize,
    g: usize,
    panels: &mut [u16],
) {
    use std::arch::x86_64::*;
    assert!(r0.is_none_or(|r| r.len() == n) && r1.is_none_or(|r| r.len() == n) && PAIR * g < kp);
    assert!(panels.len() >= n.div_ceil(LANES) * kp * LANES);
    let load = |r: Option<&[f32]>, j: usize, mask: u16| match r {
        // SAFETY: the mask covers columns j..min(j + 16, n) of a row of n values.
        Some(r) => unsafe { round16(_mm512_maskz_loadu_ps(mask, r.as_ptr().add(j))) },
        None => _mm512_setzero_si512(),
    };
    for j in (0..n).step_by(LANES) {
        let mask = lanes_mask(n - j);
        let pairs = _mm512_or_si512(load(r0, j, mask), _mm512_slli_epi32::<16>(load(r1, j, mask)));
        // SAFETY: pair g of panel j / 16 is 16 u32 inside `panels` (asserted above); the lanes
        // past n store the zeros the masked loads gave.
        unsafe {
            let dst = panels.as_mut_ptr().add(panel_index(kp, PAIR * g, j));
            _mm512_storeu_si512(dst.cast(), pairs);
        }
    }
}

/// `src` rounded into `dst` (one length).
pub fn row(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::avx512() {
        // SAFETY: the CPU has AVX-512F; the lengths are equal (asserted above).
        return unsafe { row_avx512(src, dst) };
    }
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = from_f32(v);
    }
}

/// [`row`], 16 values an instruction.
///
/// # Safety
/// The CPU must have AVX-512F; `dst` and `src` have one length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = src.len();
    assert_eq!(dst.len(), n);
    for i in (0..n).step_by(LANES) {
        let mask = lanes_mask(n - i);
        // SAFETY: the mask covers only indices i..n, inside src and dst (asserted above).
        unsafe {
            let h = round16(_mm512_maskz_loadu_ps(mask, src.as_ptr().add(i)));
            _mm512_mask_cvtepi32_storeu_epi16(dst.as_mut_ptr().add(i).cast(), mask, h);
        }
    }
}

/// `a`'s rows rounded into `dst` (`kp` values a row, zeros past k): row by row, or, for a
/// column-major `a` (a transposed activation, in a weight's gradient), 16 rows at a time through
/// `scratch`.
pub fn rows(a: ArrayView2<f32>, kp: usize, dst: &mut [u16], scratch: &mut Vec<u16>) {
    let (m, k) = a.dim();
    assert_eq!(dst.len(), m * kp);
    if a.strides()[0] == 1 && m > 1 && k > 1 {
        for (q, block) in dst.chunks_mut(LANES * kp).enumerate() {
            let rows = block.len() / kp;
            transposed_rows(a, q * LANES, rows, block, kp, scratch);
        }
        dst.chunks_exact_mut(kp).for_each(|r| r[k..].fill(0));
        return;
    }
    for (values, d) in a.rows().into_iter().zip(dst.chunks_exact_mut(kp)) {
        match values.as_slice() {
            Some(r) => row(r, &mut d[..k]),
            None => d
                .iter_mut()
                .zip(values.iter())
                .for_each(|(d, &v)| *d = from_f32(v)),
        }
        d[k..].fill(0);
    }
}

/// Rows `i0..i0 + rows` of a column-major `a` (`rows <= 16`, `a[i, p]` at `i + p * ld`)
/// rounded into `dst`, one row of `stride` values each (values past k are left alone): each
/// column's values of those rows are read at once, rounded into a scratch block, and written out
/// by rows.
pub fn transposed_rows(
    a: ArrayView2<f32>,
    i0: usize,
    rows: usize,
    dst: &mut [u16],
    stride: usize,
    scratch: &mut Vec<u16>,
) {
    let (m, k) = a.dim();
    assert!(rows <= LANES && i0 + rows <= m && dst.len() >= rows * stride && k <= stride);
    assert!(
        a.strides()[0] == 1 && a.strides()[1] >= 0,
        "transposed_rows: a column-major view"
    );
    let ld = a.strides()[1] as usize;
    scratch.resize(k * LANES, 0);
    // SAFETY: `a` is an (m, k) view with strides (1, ld) (asserted above), so a[i, p] for i < m,
    // p < k lies at base + i + p * ld, inside the memory it views; i0 + rows <= m.
    let column = |p: usize| unsafe { std::slice::from_raw_parts(a.as_ptr().add(i0 + p * ld), rows) };
    for p in 0..k {
        let out = &mut scratch[p * LANES..p * LANES + rows];
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx512() {
            // SAFETY: the CPU has AVX-512F; both slices hold `rows` values.
            unsafe { round_short(column(p), out) };
            continue;
        }
        out.iter_mut().zip(column(p)).for_each(|(d, &v)| *d = from_f32(v));
    }
    for (di, d) in dst.chunks_exact_mut(stride).take(rows).enumerate() {
        for (p, v) in d[..k].iter_mut().enumerate() {
            *v = scratch[p * LANES + di];
        }
    }
}

/// At most 16 values rounded, in one masked load and store.
///
/// # Safety
/// The CPU must have AVX-512F; `src` and `dst` have one length, at most 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn round_short(src: &[f32], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() == dst.len() && src.len() <= LANES);
    let mask = lanes_mask(src.len());
    // SAFETY: the mask covers the slices' lengths (the caller's contract).
    unsafe {
        let h = round16(_mm512_maskz_loadu_ps(mask, src.as_ptr()));
        _mm512_mask_cvtepi32_storeu_epi16(dst.as_mut_ptr().cast(), mask, h);
    }
}

/// The mask of the first `min(left, 16)` lanes.
#[cfg(target_arch = "x86_64")]
fn lanes_mask(left: usize) -> u16 {
    if left >= LANES {
        u16::MAX
    } else {
        ((1u32 << left) - 1) as u16
    }
}

/// 16 f32 rounded to bf16 ([`from_f32`]: nearest even, NaN kept quiet), each in the low half of
/// its 32-bit lane.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn round16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let (one, half, quiet) = (
        _mm512_set1_epi32(1),
        _mm512_set1_epi32(0x7fff),
        _mm512_set1_epi32(0x40),
    );
    let bits = _mm512_castps_si512(x);
    let top = _mm512_srli_epi32::<16>(bits);
    let round = _mm512_add_epi32(half, _mm512_and_si512(top, one));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, round));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(top, quiet))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Values that exercise the rounding: ties both ways, NaN, infinities, subnormals.
    fn values(k: usize, n: usize) -> Array2<f32> {
        let special = [
            1.0f32 + f32::EPSILON * 64.0,
            1.0 + f32::EPSILON * 192.0,
            f32::NAN,
            f32::INFINITY,
            -1e-40,
            3.0e38,
        ];
        Array2::from_shape_fn((k, n), |(p, j)| {
            let i = p * n + j;
            if i % 7 == 3 {
                special[i % special.len()]
            } else {
                ((i as f32) * 0.37).sin() * 10f32.powi((i % 9) as i32 - 4)
            }
        })
    }

    /// Both memory orders of B (odd k and a partial panel included) give exactly the scalar
    /// layout.
    #[test]
    fn pack_b_matches_the_scalar_layout_in_both_orders() {
        for (k, n) in [(1, 1), (5, 17), (33, 40), (64, 16), (7, 3)] {
            let b = values(k, n);
            let kp = k.next_multiple_of(32);
            let mut want = vec![0u16; n.div_ceil(LANES) * kp * LANES];
            let stale = vec![0x5555u16; want.len()]; // a reused buffer's old contents
            for ((p, j), &v) in b.indexed_iter() {
                want[panel_index(kp, p, j)] = from_f32(v);
            }
            let bt = b.t().to_owned(); // column-major view of the same values through .t()
            for view in [b.view(), bt.t()] {
                let mut got = stale.clone();
                pack_b(view, kp, &mut got);
                let same = got.iter().zip(&want).all(|(g, w)| g == w);
                assert!(same, "k {k} n {n} strides {:?}", view.strides());
            }
        }
    }

    /// Split over threads by blocks of panels (a partial last panel included), both memory
    /// orders give the serial packing's values.
    #[test]
    fn the_parallel_packing_writes_the_serial_one() {
        let pool = crate::matmul::thread_pool(3).unwrap();
        for (k, n) in [(300, 250), (257, 1000), (64, 4097)] {
            let b = values(k, n);
            let kp = k.next_multiple_of(32);
            let len = n.div_ceil(LANES) * kp * LANES;
            let bt = b.t().to_owned();
            for view in [b.view(), bt.t()] {
                let mut want = vec![0u16; len];
                pack_b(view, kp, &mut want);
                let mut got = vec![0x5555u16; len];
                pool.install(|| pack_b_parallel(view, kp, &mut got));
                assert!(got == want, "k {k} n {n} strides {:?}", view.strides());
            }
        }
    }

    /// Transposed rows read from a column-major view equal the rows rounded one by one.
    #[test]
    fn transposed_rows_match_rounding_each_value() {
        let x = values(40, 21); // x is [tokens, features]; A = xᵀ
        let a = x.t();
        let stride = 64;
        let mut scratch = Vec::new();
        for (i0, rows) in [(0, 16), (16, 5)] {
            let mut dst = vec![7u16; rows * stride];
            transposed_rows(a, i0, rows, &mut dst, stride, &mut scratch);
            for di in 0..rows {
                for p in 0..40 {
                    assert_eq!(
                        dst[di * stride + p],
                        from_f32(a[[i0 + di, p]]),
                        "row {di} col {p}"
                    );
                }
                assert!(dst[di * stride + 40..(di + 1) * stride].iter().all(|&v| v == 7));
            }
        }
    }
}
