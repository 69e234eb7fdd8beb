//! Int8 products for inference: a frozen weight quantised once, per output column; activations
//! quantised per row on every product (dynamic quantisation); products summed in i32 and
//! dequantised in one epilogue that also adds the bias.
//!
//! A column `b` of B has scale `s_b = max|b| / 127` and values `q_b = round(b / s_b)` in
//! [-127, 127] (symmetric). A row `a` of A is quantised asymmetrically onto the unsigned bytes
//! VPDPBUSD multiplies by signed ones: its range `[lo, hi]` (0 included) in 255 steps
//! `s_a = (hi − lo) / 255`, a zero point `z_a = round(−lo / s_a)` and `u_a = round(a / s_a + z_a)`
//! in 0..=255 (ties to even), so `a ≈ s_a (u_a − z_a)`: a row of GELU outputs (almost all ≥ 0) keeps twice the
//! resolution a symmetric scale would give it. The zero point is taken back with the column sums
//! kept next to the weight:
//!
//! `a·b ≈ s_a s_b Σ_k (u_a − z_a) q_b = s_a s_b (Σ_k u_a q_b − z_a Σ_k q_b)`
//!
//! Layout: B's columns in panels of [`LANES`] = 16; inside a panel, k in groups of [`GROUP`] = 4,
//! each group one 64-byte row holding column j's 4 values at bytes `4j..4j+4` — what one
//! VPDPBUSD multiplies against 4 bytes of a row of A broadcast to every lane. k is padded to a
//! multiple of 4 and n to a multiple of 16 with zeros (a zero weight adds nothing, whatever A's
//! padding holds).
//!
//! Three kernels read this layout: AMX tiles ([`crate::cpu::amx`], [`super::amx`]: B's tiles
//! load straight from the panels), AVX512-VNNI ([`crate::cpu::vnni`]) and plain loops (every
//! other CPU, valgrind, `GP_LITE_KERNEL=portable`). All sum the same integers exactly and share
//! the quantisation of A ([`QuantA`]) and the epilogue, so they write the same bits.
//! `GP_LITE_KERNEL=avx512` keeps AMX off.

mod activations;
mod kernel;

use super::row_blocks::row_blocks;
pub use activations::QuantA;
pub use kernel::Kernel;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::cell::RefCell;

/// Columns of a panel (one 16-lane register of i32 sums).
pub const LANES: usize = 16;
/// Consecutive k values one lane multiplies and sums in one step.
pub const GROUP: usize = 4;
/// Zero bytes after the last panel ([`super::amx::B_SLACK`] where the AMX kernel exists).
#[cfg(target_arch = "x86_64")]
const SLACK: usize = super::amx::B_SLACK;
#[cfg(not(target_arch = "x86_64"))]
const SLACK: usize = 0;
/// Rows of A a micro-tile takes.
const MR: usize = 4;
/// Panels a micro-tile takes (64 columns).
const NP: usize = 4;

/// B (`k x n`, a frozen weight's `Wᵀ`) quantised per column and packed (see the module docs).
#[derive(Clone)]
pub struct QuantB {
    /// k rounded up to a multiple of [`GROUP`].
    kp: usize,
    /// `s_b` of each of the n columns.
    scales: Vec<f32>,
    /// `Σ_k q_b` of each column.
    colsum: Vec<i32>,
    /// `n / 16` (rounded up) panels of `kp * 16` bytes.
    panels: Vec<i8>,
}

/// `round(x / scale)` in [-127, 127] (0 where the scale is 0: an all-zero row or column).
fn quantize(x: f32, inv_scale: f32) -> i8 {
    (x * inv_scale).round().clamp(-127.0, 127.0) as i8
}

/// `values` quantised symmetrically: their scale `max|v| / 127` and `round(v / scale)` each. The
/// weights' quantisation, here and in int8 model files (`tensor_io::int8_rows`), so that a file's
/// values are what quantising its f32 model gives.
pub fn quantize_symmetric(values: impl Iterator<Item = f32> + Clone) -> (f32, Vec<i8>) {
    let (scale, inv) = scale_of(values.clone());
    (scale, values.map(|v| quantize(v, inv)).collect())
}

/// `max|x| / 127` and its inverse (0 and 0 for an all-zero or non-finite-free empty slice).
fn scale_of(values: impl Iterator<Item = f32>) -> (f32, f32) {
    let amax = values.fold(0f32, |m, v| m.max(v.abs()));
    if amax > 0.0 && amax.is_finite() {
        (amax / 127.0, 127.0 / amax)
    } else {
        (0.0, 0.0)
    }
}

impl QuantB {
    /// Quantises and packs `b` (`k x n`).
    pub fn new(b: ArrayView2<f32>) -> QuantB {
        let (k, n) = b.dim();
        let kp = k.next_multiple_of(GROUP);
        // the AMX kernel's last tile step may read past the last panel (super::amx::B_SLACK)
        let mut panels = vec![0i8; n.div_ceil(LANES) * kp * LANES + SLACK];
        let (mut scales, mut colsum) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for (j, col) in b.columns().into_iter().enumerate() {
            let (scale, q) = quantize_symmetric(col.iter().copied());
            let panel = &mut panels[(j / LANES) * kp * LANES..];
            let mut sum = 0i32;
            for (p, q) in q.into_iter().enumerate() {
                sum += q as i32;
                // group p / 4, lane j % 16, byte p % 4 of the lane
                panel[(p / GROUP) * GROUP * LANES + (j % LANES) * GROUP + p % GROUP] = q;
            }
            scales.push(scale);
            colsum.push(sum);
        }
        QuantB {
            kp,
            scales,
            colsum,
            panels,
        }
    }

    /// k rounded up to a multiple of [`GROUP`]: the row length A is quantised to.
    pub fn kp(&self) -> usize {
        self.kp
    }

    /// B's value at row `p`, column `j` as the products use it: its int8 times its column's
    /// scale.
    pub fn get(&self, p: usize, j: usize) -> f32 {
        let i = (j / LANES) * self.kp * LANES + (p / GROUP) * GROUP * LANES + (j % LANES) * GROUP + p % GROUP;
        self.panels[i] as f32 * self.scales[j]
    }

    /// Bytes the packed weight takes (values, scales and column sums).
    pub fn bytes(&self) -> usize {
        self.panels.len() + 8 * self.scales.len()
    }
}

thread_local! {
    /// Each thread's quantised rows of A, reused from call to call (no allocation per product).
    static ROWS: RefCell<QuantA> = RefCell::new(QuantA::default());
}

/// The epilogue's inputs that do not change within one product.
struct Epilogue<'a> {
    alpha: f32,
    beta: f32,
    scales: &'a [f32],
    colsum: &'a [i32],
    bias: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// `out[j] = alpha s_a s_b (acc − z_a colsum) + beta out[j] + bias[j]` for the columns
    /// `j0..j0 + out.len()` (of this product's columns); `out` is not read when beta = 0.
    fn write(&self, acc: &[i32], row_scale: f32, row_zero: i32, j0: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx512() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { self.write_avx512(acc, row_scale, row_zero, j0, out) };
        }
        self.write_portable(acc, row_scale, row_zero, j0, out)
    }

    /// [`Epilogue::write`] in plain loops.
    fn write_portable(&self, acc: &[i32], row_scale: f32, row_zero: i32, j0: usize, out: &mut [f32]) {
        for (j, (o, &sum)) in out.iter_mut().zip(acc).enumerate() {
            let j = j0 + j;
            let exact = sum - row_zero * self.colsum[j];
            let mut v = self.alpha * row_scale * self.scales[j] * exact as f32;
            if self.beta != 0.0 {
                v += self.beta * *o;
            }
            if let Some(b) = self.bias {
                v += b[j];
            }
            *o = v;
        }
    }

    /// [`Epilogue::write`] 16 columns at a time, the same operations in the same order (so the
    /// same bits).
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn write_avx512(&self, acc: &[i32], row_scale: f32, row_zero: i32, j0: usize, out: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = out.len();
        assert!(acc.len() >= n && j0 + n <= self.scales.len() && j0 + n <= self.colsum.len());
        if let Some(b) = self.bias {
            assert!(j0 + n <= b.len());
        }
        let (scales, colsum) = (&self.scales[j0..], &self.colsum[j0..]);
        let (t, zero, beta) = (
            _mm512_set1_ps(self.alpha * row_scale),
            _mm512_set1_epi32(row_zero),
            _mm512_set1_ps(self.beta),
        );
        for j in (0..n).step_by(16) {
            let mask = if j + 16 <= n {
                u16::MAX
            } else {
                ((1u32 << (n - j)) - 1) as u16
            };
            // SAFETY: (the loads and the store) the mask covers only indices j..n, inside acc,
            // out, scales, colsum and the bias (asserted above).
            unsafe {
                let sum = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(j));
                let cs = _mm512_maskz_loadu_epi32(mask, colsum.as_ptr().add(j));
                let exact = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zero, cs));
                let sb = _mm512_maskz_loadu_ps(mask, scales.as_ptr().add(j));
                let mut v = _mm512_mul_ps(_mm512_mul_ps(t, sb), _mm512_cvtepi32_ps(exact));
                if self.beta != 0.0 {
                    let o = _mm512_maskz_loadu_ps(mask, out.as_ptr().add(j));
                    v = _mm512_add_ps(v, _mm512_mul_ps(beta, o));
                }
                if let Some(b) = self.bias {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, b.as_ptr().add(j0 + j)));
                }
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), mask, v);
            }
        }
    }
}

/// `c = alpha a·B + beta c (+ bias)` where `c` holds B's columns `j0..j0 + c.ncols()` (`j0` a
/// multiple of [`LANES`]; `bias` and the epilogue's scales are indexed from `j0`). `c`'s rows
/// must be contiguous; with beta = 0 `c` is not read. A is quantised into this thread's buffer.
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial(
    kernel: Kernel,
    alpha: f32,
    a: ArrayView2<f32>,
    b: &QuantB,
    j0: usize,
    beta: f32,
    bias: Option<&[f32]>,
    c: ArrayViewMut2<f32>,
) {
    assert!(a.ncols() <= b.kp && b.kp - a.ncols() < GROUP);
    ROWS.with_borrow_mut(|rows| {
        rows.fill(kernel, a, b.kp);
        gemm_quantized(kernel, alpha, rows, b, j0, beta, bias, c)
    })
}

/// [`gemm_serial`] on rows of A already quantised for `kernel` ([`QuantA::new`]), so that
/// threads sharing A's rows (a split by columns) quantise them once.
#[allow(clippy::too_many_arguments)]
pub fn gemm_quantized(
    kernel: Kernel,
    alpha: f32,
    rows: &QuantA,
    b: &QuantB,
    j0: usize,
    beta: f32,
    bias: Option<&[f32]>,
    mut c: ArrayViewMut2<f32>,
) {
    let (m, n) = c.dim();
    assert_eq!(j0 % LANES, 0, "int8 gemm: columns start on a panel");
    assert!(j0 + n <= b.scales.len() && rows.scales.len() == m);
    assert!(
        n <= 1 || c.strides()[1] == 1,
        "int8 gemm: the output's rows must be contiguous"
    );
    match kernel {
        Kernel::Vnni => assert!(crate::cpu::vnni(), "int8 gemm: VNNI on a CPU without it"),
        Kernel::Amx => assert!(crate::cpu::amx(), "int8 gemm: AMX on a CPU without it"),
        Kernel::Portable => {}
    }
    let ep = Epilogue {
        alpha,
        beta,
        scales: &b.scales[j0..j0 + n],
        colsum: &b.colsum[j0..j0 + n],
        bias,
    };
    let panel_bytes = b.kp * LANES;
    let panels = &b.panels[(j0 / LANES) * panel_bytes..];
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Amx {
        return gemm_amx(&ep, rows, b.kp, panels, c);
    }
    assert_eq!(rows.stride, b.kp, "int8 gemm: A quantised for another kernel");
    let mut acc = [[0i32; NP * LANES]; MR];
    // B's tile (64 columns, 24 KiB at k = 384) stays in L1 while every row of a block of A
    // (row_blocks.rs, in L2) passes it.
    for rows_block in row_blocks(m, b.kp, MR) {
        for jt in (0..n).step_by(NP * LANES) {
            let cols = (NP * LANES).min(n - jt);
            let np = cols.div_ceil(LANES);
            let b_tile = &panels[(jt / LANES) * panel_bytes..(jt / LANES + np) * panel_bytes];
            for i0 in rows_block.clone().step_by(MR) {
                let r = MR.min(m - i0);
                let a_tile = &rows.values[i0 * b.kp..(i0 + r) * b.kp];
                match kernel {
                    Kernel::Portable => tile_portable(a_tile, b.kp, r, b_tile, np, &mut acc),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU has AVX512-VNNI (asserted above); the tile holds r rows of
                    // kp bytes and np panels of kp * 16 bytes (sliced above).
                    Kernel::Vnni => unsafe { tile_vnni(a_tile, b.kp, r, b_tile, np, &mut acc) },
                    #[cfg(not(target_arch = "x86_64"))]
                    Kernel::Vnni => unreachable!("cpu::vnni() is false off x86-64"),
                    Kernel::Amx => unreachable!("AMX products return above"),
                }
                for (ri, sums) in acc.iter().take(r).enumerate() {
                    let mut row = c.row_mut(i0 + ri);
                    let out = row.as_slice_mut().expect("contiguous rows");
                    let (scale, zero) = (rows.scales[i0 + ri], rows.zeros[i0 + ri]);
                    ep.write(&sums[..cols], scale, zero, jt, &mut out[jt..jt + cols]);
                }
            }
        }
    }
}

/// [`gemm_serial`] on AMX tiles: blocks of 32 columns (2 panels, in L1) by 32 rows, each
/// block's sums over all of k in four tile registers ([`super::amx::block`]), then the epilogue.
#[cfg(target_arch = "x86_64")]
fn gemm_amx(ep: &Epilogue, rows: &QuantA, kp: usize, panels: &[i8], mut c: ArrayViewMut2<f32>) {
    use super::amx::{self, TILE_K, TILE_ROWS};
    let (m, n) = c.dim();
    let stride = rows.stride;
    assert_eq!(
        stride,
        kp.next_multiple_of(TILE_K),
        "AMX: A quantised for another kernel"
    );
    assert!(rows.values.len() >= m.next_multiple_of(TILE_ROWS) * stride);
    assert!(panels.len() >= n.div_ceil(LANES) * kp * LANES);
    // SAFETY: gemm_quantized asserted cpu::amx() for this kernel. A holds m.next_multiple_of(16)
    // rows of `stride` bytes (a multiple of 64; rows were padded to a multiple of 16 with zero
    // rows, and each row is zero past k; asserted above); `panels` holds n.div_ceil(16) panels
    // of kp * 16 bytes (asserted above), and every panel is followed by at least amx::B_SLACK
    // readable bytes (the next panel, or the slack QuantB::new allocates after the last one).
    unsafe {
        amx::products::<amx::Int8>(
            rows.values.as_ptr(),
            stride,
            panels.as_ptr().cast(),
            kp * LANES,
            stride / TILE_K,
            m,
            n,
            |i, j0, sums| {
                let mut row = c.row_mut(i);
                let out = row.as_slice_mut().expect("contiguous rows");
                let (scale, zero) = (rows.scales[i], rows.zeros[i]);
                ep.write(sums, scale, zero, j0, &mut out[j0..j0 + sums.len()]);
            },
        )
    };
}

/// The i32 sums of a tile of `r` rows (`kp` bytes each) by `np` panels, plain loops.
fn tile_portable(a: &[u8], kp: usize, r: usize, b: &[i8], np: usize, acc: &mut [[i32; NP * LANES]; MR]) {
    for (ri, sums) in acc.iter_mut().enumerate().take(r) {
        let row = &a[ri * kp..(ri + 1) * kp];
        for p in 0..np {
            let panel = &b[p * kp * LANES..(p + 1) * kp * LANES];
            for lane in 0..LANES {
                let mut s = 0i32;
                for (g, quad) in row.chunks_exact(GROUP).enumerate() {
                    let w = &panel[g * GROUP * LANES + lane * GROUP..][..GROUP];
                    s += (0..GROUP).map(|t| quad[t] as i32 * w[t] as i32).sum::<i32>();
                }
                sums[p * LANES + lane] = s;
            }
        }
    }
}

/// [`tile_portable`] on AVX512-VNNI: one VPDPBUSD per row, panel and group of 4 k.
///
/// # Safety
/// The CPU must have AVX512F and AVX512-VNNI; `a` holds `r` (1..=4) rows of `kp` bytes and `b`
/// `np` (1..=4) panels of `kp * 16` bytes, `kp` a multiple of 4.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile_vnni(a: &[u8], kp: usize, r: usize, b: &[i8], np: usize, acc: &mut [[i32; NP * LANES]; MR]) {
    // SAFETY: every arm is the caller's contract, with R = r.
    unsafe {
        match r {
            4 => tiles::<4>(a, kp, b, np, acc),
            3 => tiles::<3>(a, kp, b, np, acc),
            2 => tiles::<2>(a, kp, b, np, acc),
            1 => tiles::<1>(a, kp, b, np, acc),
            _ => unreachable!("a tile of {r} rows"),
        }
    }
}

/// R rows by `np` panels: all four in one pass, or (the last columns) one panel at a time.
///
/// # Safety
/// As [`tile_vnni`], with r = R.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tiles<const R: usize>(a: &[u8], kp: usize, b: &[i8], np: usize, acc: &mut [[i32; NP * LANES]; MR]) {
    if np == NP {
        // SAFETY: the caller's contract.
        return unsafe { tile::<R, NP>(a, kp, b, 0, acc) };
    }
    for p in 0..np {
        // SAFETY: panel p of b is kp * 16 bytes (the caller's contract).
        unsafe { tile::<R, 1>(a, kp, &b[p * kp * LANES..], p, acc) };
    }
}

/// The sums of R rows by P panels, in R * P registers, stored from panel `p0` of `acc`.
///
/// # Safety
/// As [`tile_vnni`], with `a` at least R rows and `b` at least P panels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn tile<const R: usize, const P: usize>(
    a: &[u8],
    kp: usize,
    b: &[i8],
    p0: usize,
    acc: &mut [[i32; NP * LANES]; MR],
) {
    use std::arch::x86_64::*;
    assert!(a.len() >= R * kp && b.len() >= P * kp * LANES && kp.is_multiple_of(GROUP) && p0 + P <= NP);
    let mut sums = [[_mm512_setzero_si512(); P]; R];
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for g in 0..kp / GROUP {
        let mut w = [_mm512_setzero_si512(); P];
        for (p, w) in w.iter_mut().enumerate() {
            // SAFETY: group g of panel p lies inside b (asserted above); loadu has no alignment
            // requirement.
            *w = unsafe { _mm512_loadu_si512(b.add(p * kp * LANES + g * GROUP * LANES).cast()) };
        }
        for (ri, row) in sums.iter_mut().enumerate() {
            // SAFETY: bytes 4g..4g+4 of row ri lie inside a (asserted above).
            let quad = unsafe { a.add(ri * kp + g * GROUP).cast::<i32>().read_unaligned() };
            let x = _mm512_set1_epi32(quad);
            for (s, &w) in row.iter_mut().zip(&w) {
                *s = _mm512_dpbusd_epi32(*s, x, w);
            }
        }
    }
    for (dst, row) in acc.iter_mut().zip(&sums) {
        for (p, s) in row.iter().enumerate() {
            let lanes = &mut dst[(p0 + p) * LANES..(p0 + p + 1) * LANES];
            // SAFETY: `lanes` is 16 i32 (p0 + P <= NP, asserted above); storeu has no alignment
            // requirement.
            unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), *s) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};

    fn random(m: usize, n: usize, seed: u64) -> Array2<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((m, n), |_| rng.gen_range(-1.0f32..1.0))
    }

    fn kernels() -> Vec<Kernel> {
        let mut k = vec![Kernel::Portable];
        if crate::cpu::vnni() {
            k.push(Kernel::Vnni);
        }
        if crate::cpu::amx() {
            k.push(Kernel::Amx);
        }
        k
    }

    /// Every kernel the CPU runs gives the same bits, equal (to f32 rounding) to the f64 product
    /// of the dequantised operands and within the quantisation bound of the exact product.
    #[test]
    fn kernels_agree_and_stay_within_the_quantisation_bound() {
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 17),
            (7, 64, 70),
            (13, 384, 130),
            (4, 30, 64),
            (2, 9, 33),
            (40, 100, 50),
            (33, 130, 96),
            (17, 768, 16),
            (300, 40, 70),   // two blocks of rows (row_blocks.rs): 256 + 44
            (270, 4100, 20), // blocks of 224 rows: A's bytes bound them
        ] {
            let a = random(m, k, 1 + m as u64);
            let bt = random(k, n, 100 + n as u64);
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01).collect();
            let q = QuantB::new(bt.view());
            let rows = QuantA::new(Kernel::Portable, a.view(), q.kp);
            let mut outs = Vec::new();
            for kernel in kernels() {
                let mut c = Array2::<f32>::from_elem((m, n), f32::NAN);
                gemm_serial(kernel, 1.0, a.view(), &q, 0, 0.0, Some(&bias), c.view_mut());
                outs.push(c);
            }
            for c in &outs[1..] {
                assert_eq!(c, &outs[0], "the kernels differ at {m}x{k}x{n}");
            }
            let c = &outs[0];
            for i in 0..m {
                let sa = rows.scales[i] as f64;
                for j in 0..n {
                    let sb = q.scales[j] as f64;
                    let (mut deq, mut exact, mut bound) = (0f64, 0f64, 0f64);
                    for p in 0..k {
                        let qa = rows.values[i * q.kp + p] as f64 - rows.zeros[i] as f64;
                        let qb = q.panels[(j / LANES) * q.kp * LANES + (p / 4) * 64 + (j % LANES) * 4 + p % 4]
                            as f64;
                        deq += qa * sa * qb * sb;
                        let (x, y) = (a[[i, p]] as f64, bt[[p, j]] as f64);
                        exact += x * y;
                        // |xy − x'y'| <= |x| δy + |y| δx + δx δy with δ <= scale / 2
                        bound += x.abs() * sb / 2.0 + y.abs() * sa / 2.0 + sa * sb / 4.0;
                    }
                    let got = c[[i, j]] as f64 - bias[j] as f64;
                    assert!((got - deq).abs() <= 1e-5 * (1.0 + deq.abs()), "{got} vs {deq}");
                    assert!(
                        (got - exact).abs() <= bound + 1e-5,
                        "{got} vs {exact} (bound {bound})"
                    );
                }
            }
        }
    }

    #[test]
    fn columns_from_a_panel_offset_alpha_beta_and_zero_rows() {
        let (m, k, n) = (5, 20, 80);
        let mut a = random(m, k, 7);
        a.row_mut(2).fill(0.0);
        let bt = random(k, n, 8);
        let q = QuantB::new(bt.view());
        for kernel in kernels() {
            let mut full = Array2::<f32>::zeros((m, n));
            gemm_serial(kernel, 1.0, a.view(), &q, 0, 0.0, None, full.view_mut());
            assert!(full.row(2).iter().all(|&v| v == 0.0), "an all-zero row gives 0");
            // columns 32..80 alone, with alpha 2 onto beta 1 * ones
            let mut part = Array2::<f32>::ones((m, n - 32));
            gemm_serial(kernel, 2.0, a.view(), &q, 32, 1.0, None, part.view_mut());
            for i in 0..m {
                for j in 32..n {
                    let want = 2.0 * full[[i, j]] + 1.0;
                    assert!((part[[i, j - 32]] - want).abs() <= 1e-6 * (1.0 + want.abs()));
                }
            }
        }
    }

    /// The AVX-512 epilogue writes the loop's bits, with and without beta and bias, at every
    /// tail length.
    #[test]
    fn both_epilogues_write_the_same_bits() {
        if !crate::cpu::avx512() {
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for n in 1..40 {
            let scales: Vec<f32> = (0..n + 3).map(|_| rng.gen_range(0.0f32..0.01)).collect();
            let colsum: Vec<i32> = (0..n + 3).map(|_| rng.gen_range(-5000..5000)).collect();
            let bias: Vec<f32> = (0..n + 3).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let acc: Vec<i32> = (0..n).map(|_| rng.gen_range(-90000..90000)).collect();
            let init: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            for (beta, bias) in [(0.0, None), (1.0, Some(&bias[..])), (0.5, None)] {
                let ep = Epilogue {
                    alpha: 0.7,
                    beta,
                    scales: &scales,
                    colsum: &colsum,
                    bias,
                };
                let (mut x, mut y) = (init.clone(), init.clone());
                for (out, vector) in [(&mut x, false), (&mut y, true)] {
                    if vector {
                        // SAFETY: the CPU has AVX-512F (checked above).
                        unsafe { ep.write_avx512(&acc, 0.003, 17, 3, out) };
                    } else {
                        ep.write_portable(&acc, 0.003, 17, 3, out);
                    }
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&x), bits(&y), "n = {n}, beta = {beta}");
            }
        }
    }

    #[test]
    fn quantised_weight_is_a_quarter_of_f32() {
        let q = QuantB::new(random(384, 1536, 3).view());
        assert!(q.bytes() * 100 <= 384 * 1536 * 4 * 26, "{} bytes", q.bytes());
    }
}
