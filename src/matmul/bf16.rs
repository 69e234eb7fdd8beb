//! Bf16 products for inference: a frozen weight rounded once to bf16 ([`crate::bf16`], nearest
//! even), the rows of A rounded to bf16 on every product, each product of two bf16 values exact
//! in f32 and summed in f32; an epilogue then adds alpha, beta and the bias as the f32 packed
//! path does.
//!
//! Layout: B's columns in panels of [`LANES`] = 16; inside a panel, k in pairs, each pair one
//! 64-byte row holding column j's 2 values at `u16` indices `2j, 2j + 1` — what one VDPBF16PS
//! multiplies against a pair of A's row broadcast to every lane, and AMX-BF16's B tile format
//! (16 pairs of one panel are one tile). k is padded with zeros to a multiple of [`K_STEP`] = 32
//! (one AMX tile step) and n to a multiple of 16, and A's rows are zero past k, so the padding
//! adds `0 · 0`.
//!
//! Three kernels read this layout: AMX tiles ([`crate::cpu::amx_bf16`], [`crate::matmul::amx`]), AVX512-BF16
//! ([`crate::cpu::avx512_bf16`]) and plain loops (every other CPU, valgrind,
//! `GP_LITE_KERNEL=portable`). They multiply the same bf16 operands but sum them in different
//! orders (AMX and VDPBF16PS also flush subnormal inputs and results to zero), so their bits may
//! differ by the f32 rounding of the sums; each kernel is deterministic. `GP_LITE_KERNEL=avx512`
//! keeps AMX off.

mod round;

use super::row_blocks::row_blocks;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::cell::RefCell;

/// Columns of a panel (one 16-lane register of f32 sums).
pub const LANES: usize = 16;
/// Consecutive k values one lane multiplies and sums in one step.
pub const PAIR: usize = 2;
/// k is padded to a multiple of this: one AMX tile step (64 bytes of a row of A).
pub const K_STEP: usize = 32;
/// Rows of A padded to a multiple of this (whole AMX tiles).
const ROW_STEP: usize = 16;
/// Rows of A a micro-tile takes.
const MR: usize = 4;
/// Panels a micro-tile takes (64 columns).
const NP: usize = 4;

/// B (`k x n`, a frozen weight's `Wᵀ`) rounded to bf16 and packed (see the module docs).
#[derive(Clone)]
pub struct Bf16B {
    /// k rounded up to a multiple of [`K_STEP`].
    kp: usize,
    /// B's columns.
    n: usize,
    /// `n / 16` (rounded up) panels of `kp * 16` values.
    panels: Vec<u16>,
}

impl Bf16B {
    /// Rounds and packs `b` (`k x n`).
    pub fn new(b: ArrayView2<f32>) -> Bf16B {
        Bf16B::pack_reusing(b, Vec::new())
    }

    /// [`Bf16B::new`] into `buffer` (a product's operand packed on every call reuses its
    /// allocation; see [`Bf16B::into_buffer`]).
    pub fn pack_reusing(b: ArrayView2<f32>, mut buffer: Vec<u16>) -> Bf16B {
        let (k, n) = b.dim();
        let kp = k.next_multiple_of(K_STEP);
        // pack_b writes every value, so the buffer only grows (a shorter length, then a longer
        // one, would write zeros that pack_b overwrites)
        let len = n.div_ceil(LANES) * kp * LANES;
        if buffer.len() < len {
            buffer.resize(len, 0);
        }
        round::pack_b_parallel(b, kp, &mut buffer[..len]);
        Bf16B {
            kp,
            n,
            panels: buffer,
        }
    }

    /// The packed values' buffer, for the next [`Bf16B::pack_reusing`].
    pub fn into_buffer(self) -> Vec<u16> {
        self.panels
    }

    /// k rounded up to a multiple of [`K_STEP`]: the row length A is rounded to.
    pub fn kp(&self) -> usize {
        self.kp
    }

    /// Bytes the packed weight takes.
    pub fn bytes(&self) -> usize {
        2 * self.panels.len()
    }

    /// B's value at row `p`, column `j` (as f32, exactly the bf16 it holds).
    pub fn get(&self, p: usize, j: usize) -> f32 {
        crate::bf16::to_f32(self.panels[round::panel_index(self.kp, p, j)])
    }
}

/// Rows of A rounded to bf16: row-major, `stride` (B's kp) values a row, zero past k, followed
/// by zero rows up to a multiple of 16 (whole AMX tiles).
#[derive(Default)]
pub struct Bf16A {
    values: Vec<u16>,
    stride: usize,
    rows: usize,
    /// A transposed block's rounded columns, reused ([`round::transposed_rows`]).
    scratch: Vec<u16>,
}

impl Bf16A {
    /// `a`'s rows rounded for a weight of `kp` (padded) rows, split over the current rayon
    /// pool's threads by blocks of rows when large (threads that share A's rows, in a product
    /// split by columns, round them once, here).
    pub fn new(a: ArrayView2<f32>, kp: usize) -> Bf16A {
        let mut r = Bf16A::default();
        let (m, k) = a.dim();
        let threads = rayon::current_num_threads();
        let block = m.div_ceil(threads.max(1)).next_multiple_of(ROW_STEP);
        if threads <= 1 || m * k < 1 << 16 || block >= m {
            r.fill(a, kp);
            return r;
        }
        use rayon::prelude::*;
        let filled = r.reserve(m, k, kp);
        filled
            .par_chunks_mut(block * kp)
            .enumerate()
            .for_each(|(q, dst)| {
                let rows = a.slice(ndarray::s![q * block..q * block + dst.len() / kp, ..]);
                round::rows(rows, kp, dst, &mut Vec::new());
            });
        r
    }

    /// Rounds `a`'s rows into `self`, reusing its buffer.
    pub fn fill(&mut self, a: ArrayView2<f32>, kp: usize) {
        let (m, k) = a.dim();
        let mut scratch = std::mem::take(&mut self.scratch);
        round::rows(a, kp, self.reserve(m, k, kp), &mut scratch);
        self.scratch = scratch;
    }

    /// Sizes the buffer for `m` rows of `kp` values (the padding rows zero) and returns the
    /// first `m` rows, for the caller to write every value of. The buffer only grows and is not
    /// cleared first.
    fn reserve(&mut self, m: usize, k: usize, kp: usize) -> &mut [u16] {
        assert!(k <= kp, "bf16: a row of {k} values for a weight of {kp} rows");
        let rows = m.next_multiple_of(ROW_STEP);
        self.stride = kp;
        self.rows = m;
        if self.values.len() < rows * kp {
            self.values.resize(rows * kp, 0);
        }
        let (filled, pad) = self.values[..rows * kp].split_at_mut(m * kp);
        pad.fill(0);
        filled
    }
}

thread_local! {
    /// Each thread's rounded rows of A, reused from call to call (no allocation per product).
    static ROWS: RefCell<Bf16A> = RefCell::new(Bf16A::default());
}

/// Which kernel sums the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain loops, on any CPU.
    Portable,
    /// AVX512-BF16 (VDPBF16PS).
    Avx512,
    /// AMX tiles (TDPBF16PS, [`crate::matmul::amx`]).
    Amx,
}

impl Kernel {
    /// The fastest kernel this CPU runs ([`crate::cpu::amx_bf16`], [`crate::cpu::avx512_bf16`]).
    pub fn best() -> Kernel {
        if crate::cpu::amx_bf16() {
            Kernel::Amx
        } else if crate::cpu::avx512_bf16() {
            Kernel::Avx512
        } else {
            Kernel::Portable
        }
    }
}

/// The epilogue's inputs that do not change within one product.
struct Epilogue<'a> {
    alpha: f32,
    beta: f32,
    bias: Option<&'a [f32]>,
}

impl Epilogue<'_> {
    /// `out[j] = alpha acc[j] + beta out[j] + bias[j0 + j]`; `out` is not read when beta = 0.
    fn write(&self, acc: &[f32], j0: usize, out: &mut [f32]) {
        let (alpha, beta) = (self.alpha, self.beta);
        let acc = &acc[..out.len()];
        // One loop per case, so that each vectorises (the same operations in the same order).
        match self.bias.map(|b| &b[j0..j0 + out.len()]) {
            None if beta == 0.0 => out.iter_mut().zip(acc).for_each(|(o, &s)| *o = alpha * s),
            None => out
                .iter_mut()
                .zip(acc)
                .for_each(|(o, &s)| *o = alpha * s + beta * *o),
            Some(b) if beta == 0.0 => {
                for ((o, &s), &b) in out.iter_mut().zip(acc).zip(b) {
                    *o = alpha * s + b;
                }
            }
            Some(b) => {
                for ((o, &s), &b) in out.iter_mut().zip(acc).zip(b) {
                    *o = alpha * s + beta * *o + b;
                }
            }
        }
    }
}

/// `c = alpha a·B + beta c (+ bias)` where `c` holds B's columns `j0..j0 + c.ncols()` (`j0` a
/// multiple of [`LANES`]; `bias` holds `c`'s columns). `c`'s rows must be contiguous; with
/// beta = 0 `c` is not read. A is rounded into this thread's buffer.
#[allow(clippy::too_many_arguments)]
pub fn gemm_serial(
    kernel: Kernel,
    alpha: f32,
    a: ArrayView2<f32>,
    b: &Bf16B,
    j0: usize,
    beta: f32,
    bias: Option<&[f32]>,
    c: ArrayViewMut2<f32>,
) {
    assert!(a.ncols() <= b.kp && b.kp - a.ncols() < K_STEP);
    ROWS.with_borrow_mut(|rows| {
        rows.fill(a, b.kp);
        gemm_rounded(kernel, alpha, rows, b, j0, beta, bias, c)
    })
}

/// [`gemm_serial`] on rows of A already rounded ([`Bf16A::new`]), so that threads sharing A's
/// rows (a split by columns) round them once.
#[allow(clippy::too_many_arguments)]
pub fn gemm_rounded(
    kernel: Kernel,
    alpha: f32,
    rows: &Bf16A,
    b: &Bf16B,
    j0: usize,
    beta: f32,
    bias: Option<&[f32]>,
    mut c: ArrayViewMut2<f32>,
) {
    let (m, n) = c.dim();
    assert_eq!(j0 % LANES, 0, "bf16 gemm: columns start on a panel");
    assert!(j0 + n <= b.n && rows.rows == m && rows.stride == b.kp);
    assert!(
        n <= 1 || c.strides()[1] == 1,
        "bf16 gemm: the output's rows must be contiguous"
    );
    if let Some(v) = bias {
        assert_eq!(
            v.len(),
            n,
            "bf16 gemm: a bias of {} values for {n} columns",
            v.len()
        );
    }
    match kernel {
        Kernel::Avx512 => assert!(
            crate::cpu::avx512_bf16(),
            "bf16 gemm: AVX512-BF16 on a CPU without it"
        ),
        Kernel::Amx => assert!(crate::cpu::amx_bf16(), "bf16 gemm: AMX-BF16 on a CPU without it"),
        Kernel::Portable => {}
    }
    let ep = Epilogue { alpha, beta, bias };
    let kp = b.kp;
    let panel_len = kp * LANES;
    let panels = &b.panels[(j0 / LANES) * panel_len..];
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Amx {
        return gemm_amx(&ep, rows, kp, panels, c);
    }
    let mut acc = [[0f32; NP * LANES]; MR];
    // B's tile (64 columns, 48 KiB at k = 384) stays in L2 while every row of a block of A
    // (row_blocks.rs) passes it.
    for rows_block in row_blocks(m, 2 * kp, MR) {
        for jt in (0..n).step_by(NP * LANES) {
            let cols = (NP * LANES).min(n - jt);
            let np = cols.div_ceil(LANES);
            let b_tile = &panels[(jt / LANES) * panel_len..(jt / LANES + np) * panel_len];
            for i0 in rows_block.clone().step_by(MR) {
                let r = MR.min(m - i0);
                let a_tile = &rows.values[i0 * kp..(i0 + r) * kp];
                match kernel {
                    Kernel::Portable => tile_portable(a_tile, kp, r, b_tile, np, &mut acc),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU has AVX512-BF16 (asserted above); the tile holds r rows of
                    // kp values and np panels of kp * 16 values (sliced above).
                    Kernel::Avx512 => unsafe { tile_avx512(a_tile, kp, r, b_tile, np, &mut acc) },
                    #[cfg(not(target_arch = "x86_64"))]
                    Kernel::Avx512 => unreachable!("cpu::avx512_bf16() is false off x86-64"),
                    Kernel::Amx => unreachable!("AMX products return above"),
                }
                for (ri, sums) in acc.iter().take(r).enumerate() {
                    let mut row = c.row_mut(i0 + ri);
                    let out = row.as_slice_mut().expect("contiguous rows");
                    ep.write(&sums[..cols], jt, &mut out[jt..jt + cols]);
                }
            }
        }
    }
}

/// [`gemm_rounded`] on AMX tiles: blocks of 32 columns (2 panels) by 32 rows, each block's sums
/// over all of k in four tile registers ([`crate::matmul::amx::block`]), then the epilogue.
#[cfg(target_arch = "x86_64")]
fn gemm_amx(ep: &Epilogue, rows: &Bf16A, kp: usize, panels: &[u16], mut c: ArrayViewMut2<f32>) {
    use crate::matmul::amx::{self, TILE_ROWS};
    let (m, n) = c.dim();
    assert!(rows.values.len() >= m.next_multiple_of(TILE_ROWS) * kp && kp.is_multiple_of(K_STEP));
    assert!(panels.len() >= n.div_ceil(LANES) * kp * LANES);
    // SAFETY: gemm_rounded asserted cpu::amx_bf16(), which implies the tile state was granted.
    // A holds m.next_multiple_of(16) rows of kp values (2 kp bytes, a multiple of 64: kp is a
    // multiple of 32; rows are padded with zero rows; asserted above), and `panels` holds
    // n.div_ceil(16) whole panels of kp * 16 values (asserted above), kp / 32 whole steps each.
    unsafe {
        amx::products::<amx::Bf16>(
            rows.values.as_ptr().cast(),
            2 * kp,
            panels.as_ptr().cast(),
            2 * kp * LANES,
            kp / K_STEP,
            m,
            n,
            |i, j0, sums| {
                let mut row = c.row_mut(i);
                let out = row.as_slice_mut().expect("contiguous rows");
                ep.write(sums, j0, &mut out[j0..j0 + sums.len()]);
            },
        )
    };
}

/// The f32 sums of a tile of `r` rows (`kp` values each) by `np` panels, plain loops: each
/// product of two bf16 values is exact in f32, summed pair by pair in k order.
fn tile_portable(a: &[u16], kp: usize, r: usize, b: &[u16], np: usize, acc: &mut [[f32; NP * LANES]; MR]) {
    use crate::bf16::to_f32;
    for (ri, sums) in acc.iter_mut().enumerate().take(r) {
        let row = &a[ri * kp..(ri + 1) * kp];
        for p in 0..np {
            let panel = &b[p * kp * LANES..(p + 1) * kp * LANES];
            let mut s = [0f32; LANES];
            for (pair, w) in row.chunks_exact(PAIR).zip(panel.chunks_exact(PAIR * LANES)) {
                let (x0, x1) = (to_f32(pair[0]), to_f32(pair[1]));
                for (lane, s) in s.iter_mut().enumerate() {
                    *s += x0 * to_f32(w[PAIR * lane]);
                    *s += x1 * to_f32(w[PAIR * lane + 1]);
                }
            }
            sums[p * LANES..(p + 1) * LANES].copy_from_slice(&s);
        }
    }
}

/// [`tile_portable`] on AVX512-BF16: one VDPBF16PS per row, panel and pair of k.
///
/// # Safety
/// The CPU must have AVX512F and AVX512-BF16; `a` holds `r` (1..=4) rows of `kp` values and `b`
/// `np` (1..=4) panels of `kp * 16` values, `kp` even.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_avx512(
    a: &[u16],
    kp: usize,
    r: usize,
    b: &[u16],
    np: usize,
    acc: &mut [[f32; NP * LANES]; MR],
) {
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
/// As [`tile_avx512`], with r = R.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tiles<const R: usize>(
    a: &[u16],
    kp: usize,
    b: &[u16],
    np: usize,
    acc: &mut [[f32; NP * LANES]; MR],
) {
    if np == NP {
        // SAFETY: the caller's contract.
        return unsafe { tile::<R, NP>(a, kp, b, 0, acc) };
    }
    for p in 0..np {
        // SAFETY: panel p of b is kp * 16 values (the caller's contract).
        unsafe { tile::<R, 1>(a, kp, &b[p * kp * LANES..], p, acc) };
    }
}

/// The sums of R rows by P panels, in R * P registers, stored from panel `p0` of `acc`.
///
/// # Safety
/// As [`tile_avx512`], with `a` at least R rows and `b` at least P panels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const R: usize, const P: usize>(
    a: &[u16],
    kp: usize,
    b: &[u16],
    p0: usize,
    acc: &mut [[f32; NP * LANES]; MR],
) {
    use std::arch::x86_64::*;
    assert!(a.len() >= R * kp && b.len() >= P * kp * LANES && kp.is_multiple_of(PAIR) && p0 + P <= NP);
    let mut sums = [[_mm512_setzero_ps(); P]; R];
    let (a, b) = (a.as_ptr(), b.as_ptr());
    for g in 0..kp / PAIR {
        let mut w = [_mm512_setzero_si512(); P];
        for (p, w) in w.iter_mut().enumerate() {
            // SAFETY: pair g of panel p lies inside b (asserted above); loadu has no alignment
            // requirement.
            *w = unsafe { _mm512_loadu_si512(b.add(p * kp * LANES + g * PAIR * LANES).cast()) };
        }
        for (ri, row) in sums.iter_mut().enumerate() {
            // SAFETY: values 2g, 2g + 1 of row ri lie inside a (asserted above).
            let pair = unsafe { a.add(ri * kp + g * PAIR).cast::<i32>().read_unaligned() };
            let x = bf16_lanes(_mm512_set1_epi32(pair));
            for (s, &w) in row.iter_mut().zip(&w) {
                *s = _mm512_dpbf16_ps(*s, x, bf16_lanes(w));
            }
        }
    }
    for (dst, row) in acc.iter_mut().zip(&sums) {
        for (p, s) in row.iter().enumerate() {
            let lanes = &mut dst[(p0 + p) * LANES..(p0 + p + 1) * LANES];
            // SAFETY: `lanes` is 16 f32 (p0 + P <= NP, asserted above); storeu has no alignment
            // requirement.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *s) };
        }
    }
}

/// The 32 bf16 values a register of 16 i32 holds, typed for VDPBF16PS.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bf16_lanes(v: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512bh {
    // SAFETY: both are 512-bit vectors of plain bits; every bit pattern is a valid __m512bh.
    unsafe { std::mem::transmute(v) }
}

#[cfg(test)]
mod tests;
