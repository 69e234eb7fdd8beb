//! An f32 product kernel in AVX-512: inference products on weights packed once, and every other
//! f32 product with B packed per call.
//!
//! `C = alpha A B + beta C` where C has unit column stride (rows contiguous) and A any strides.
//! The micro-tile is [`MR`] rows by [`NR`] = 32 columns (two zmm registers a row, `2 MR`
//! accumulators): for every p it loads row p of B's packed column panel (two vector loads) and
//! broadcasts the tile's MR values of A's column p. A whose rows are contiguous (activations) is
//! read in place, MR rows at a time; any other A (a transposed view) is first copied block by
//! block into a thread-local buffer (no allocation per call) laid out as the loop reads it.
//!
//! Why: matrixmultiply packs both operands on every call. At batch 1 (50 rows) that means
//! packing a whole weight matrix to use each element 50 times: 23% of a batch-1 inference call
//! of the `tiny` preset went to packing (perf). A model loaded for inference packs each weight
//! once ([`PackedB`](super::PackedB)) and every product reads the panels as they are.
//! Training's products pack B per call ([`sgemm_unpacked`]) but still skip packing A: 3-9%
//! faster steps than matrixmultiply since A is read in place (commit 5259a28 had measured no gain when A was packed).

use std::arch::x86_64::*;

/// Rows of the micro-tile.
pub const MR: usize = 8;
/// Columns of the micro-tile (two 16-lane registers).
pub const NR: usize = 32;

/// `C = alpha A B + beta C + bias` (beta = 0: C is not read; `bias`, when not null, holds n
/// values added to every row, so that a layer's output needs no pass writing its bias first).
///
/// A is taken in blocks of up to 512 rows (about 192 KiB), which stay in L2 while every column
/// panel of B passes them. A block whose rows are contiguous (`csa == 1`) is read in place: each
/// micro-tile broadcasts from its MR rows directly (8% of a `small` batch-1 call went to copying
/// A before). Any other block is first copied into a thread-local buffer laid out as the
/// micro-kernel reads it (`MR` values of one column after another).
///
/// # Safety
/// The CPU must support AVX-512F ([`crate::cpu::avx512`]). `a` must be valid for an `m x k` matrix with
/// strides `(rsa, csa)`, `b` must hold B (`k x n`) as [`pack_panels`] lays it out, `c` must be
/// valid for `m x n` with strides `(rsc, 1)`, `c` must not alias `a` or `b`, and `bias` must be
/// null or valid for `n` values.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: &[f32],
    beta: f32,
    bias: *const f32,
    c: *mut f32,
    rsc: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert_eq!(
        b.len(),
        n.div_ceil(NR) * k * NR,
        "avx512::sgemm: packed B has the wrong size"
    );
    if k == 0 {
        // An empty product: C = beta C (+ bias); beta = 0 does not read C.
        for i in 0..m {
            for j in 0..n {
                // SAFETY: the caller guarantees C holds m rows of n values at row stride `rsc`
                // and `bias` is null or holds n values (this function's contract).
                unsafe {
                    let p = c.offset(i as isize * rsc).add(j);
                    let mut v = if beta == 0.0 { 0.0 } else { beta * *p };
                    if !bias.is_null() {
                        v += *bias.add(j);
                    }
                    *p = v;
                }
            }
        }
        return;
    }
    // Rows per packed block: about 192 KiB of A, a multiple of MR.
    let mc = ((48 * 1024 / k) / MR * MR).clamp(MR, 512);
    PACKED_A.with(|buf| {
        let buf = &mut *buf.borrow_mut();
        let need = mc.min(m).div_ceil(MR) * MR * k;
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
        // SAFETY: the caller's contract (see # Safety) covers every pointer formed here: rows
        // i0 + i < m of A and C, columns j < n of C and of `bias` (when not null), and panel
        // j / NR of `b`, which holds n.div_ceil(NR) panels of k x NR (asserted above). `pack_a`
        // reads `rows` rows of A from row i0 into `buf`, which holds rows.div_ceil(MR) * MR * k
        // values (`need`, as rows <= mc). Each `run` reads R <= rows - i rows of A from row i0 + i
        // (or R panel rows of `buf` from i * k) and k rows of the panel (and prefetches rows
        // lo..lo + pf_rows <= k of panel j / NR + 1, which exists when j + NR < n), and writes R rows of C
        // in the lanes of `lo` and `hi`, which stop at column n; the CPU has AVX-512F.
        unsafe {
            let mut i0 = 0;
            while i0 < m {
                let rows = mc.min(m - i0);
                // Rows of A that are contiguous are read where they are; others are packed.
                let direct = csa == 1;
                if !direct {
                    pack_a(rows, k, a.offset(i0 as isize * rsa), rsa, csa, buf);
                }
                let mut j = 0;
                while j < n {
                    let nr = (n - j).min(NR);
                    // Lane masks of the two halves of the column tile.
                    let lo = if nr >= 16 { 0xffff } else { (1u32 << nr) as u16 - 1 };
                    let hi = if nr >= NR {
                        0xffff
                    } else if nr > 16 {
                        (1u32 << (nr - 16)) as u16 - 1
                    } else {
                        0
                    };
                    let panel = b.as_ptr().add(j / NR * k * NR);
                    let t = Tile {
                        k,
                        alpha,
                        beta,
                        bias: if bias.is_null() { bias } else { bias.add(j) },
                        b: panel,
                        rsc,
                        lo,
                        hi,
                    };
                    // The next column tile's panel, fetched toward L2 while this one runs, each
                    // micro-tile a share of its k rows (at batch 1 a weight is read from memory
                    // once a product, by few micro-tiles).
                    let next = (j + NR < n).then(|| panel.add(k * NR));
                    let share = k.div_ceil(rows.div_ceil(MR));
                    let mut i = 0;
                    while i < rows {
                        let lo = (i / MR * share).min(k);
                        let (pf, pf_rows) = match next {
                            Some(next) => (next.add(lo * NR), share.min(k - lo)),
                            None => (panel, 0),
                        };
                        let ci = c.offset((i0 + i) as isize * rsc).add(j);
                        if direct {
                            let ap = a.offset((i0 + i) as isize * rsa);
                            match rows - i {
                                1 => t.run::<1, false>(ap, rsa, ci, pf, pf_rows),
                                2 => t.run::<2, false>(ap, rsa, ci, pf, pf_rows),
                                3 => t.run::<3, false>(ap, rsa, ci, pf, pf_rows),
                                4 => t.run::<4, false>(ap, rsa, ci, pf, pf_rows),
                                5 => t.run::<5, false>(ap, rsa, ci, pf, pf_rows),
                                6 => t.run::<6, false>(ap, rsa, ci, pf, pf_rows),
                                7 => t.run::<7, false>(ap, rsa, ci, pf, pf_rows),
                                _ => t.run::<MR, false>(ap, rsa, ci, pf, pf_rows),
                            }
                        } else {
                            let ap = buf.as_ptr().add(i * k);
                            match rows - i {
                                1 => t.run::<1, true>(ap, 0, ci, pf, pf_rows),
                                2 => t.run::<2, true>(ap, 0, ci, pf, pf_rows),
                                3 => t.run::<3, true>(ap, 0, ci, pf, pf_rows),
                                4 => t.run::<4, true>(ap, 0, ci, pf, pf_rows),
                                5 => t.run::<5, true>(ap, 0, ci, pf, pf_rows),
                                6 => t.run::<6, true>(ap, 0, ci, pf, pf_rows),
                                7 => t.run::<7, true>(ap, 0, ci, pf, pf_rows),
                                _ => t.run::<MR, true>(ap, 0, ci, pf, pf_rows),
                            }
                        }
                        i += MR;
                    }
                    j += NR;
                }
                i0 += rows;
            }
        }
    });
}

/// B (`k x n`, any strides) as the kernel's column panels: panel `q` holds, for p = 0..k, the
/// [`NR`] values `B[p, q NR ..]` (zeros past column n).
pub fn pack_panels(b: ndarray::ArrayView2<f32>) -> Vec<f32> {
    let (k, n) = b.dim();
    let mut out = vec![0.0; n.div_ceil(NR) * k * NR];
    let s = b.strides();
    // SAFETY: the view describes valid memory for `k x n` with its strides.
    unsafe { pack_panels_into(k, n, b.as_ptr(), s[0], s[1], &mut out) };
    out
}

/// [`pack_panels`] from a raw `k x n` matrix into `out` (exactly `n.div_ceil(NR) * k * NR` long).
///
/// # Safety
/// `b` must be valid for a `k x n` matrix with strides `(rsb, csb)`.
unsafe fn pack_panels_into(k: usize, n: usize, b: *const f32, rsb: isize, csb: isize, out: &mut [f32]) {
    if k == 0 {
        return; // no rows: `out` is empty (and panels of 0 values cannot be cut)
    }
    for (q, panel) in out.chunks_exact_mut(k * NR).enumerate() {
        let j0 = q * NR;
        let nr = (n - j0).min(NR);
        if csb == 1 {
            // Rows of B are contiguous: each panel row is one copy.
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                // SAFETY: row p < k, columns j0..j0 + nr <= n of B, contiguous (csb = 1): inside
                // the matrix the caller vouched for.
                let src = unsafe { std::slice::from_raw_parts(b.offset(p as isize * rsb).add(j0), nr) };
                row[..nr].copy_from_slice(src);
                row[nr..].fill(0.0);
            }
        } else {
            // Column by column, so that a transposed B (columns contiguous) is read in order.
            for j in 0..NR {
                if j < nr {
                    // SAFETY: column j0 + j < n and rows p < k of B, inside the matrix the caller
                    // vouched for; p * NR + j < k * NR, the panel's length.
                    unsafe {
                        let src = b.offset((j0 + j) as isize * csb);
                        for p in 0..k {
                            *panel.get_unchecked_mut(p * NR + j) = *src.offset(p as isize * rsb);
                        }
                    }
                } else {
                    // Past the last column (no pointer is formed there).
                    (0..k).for_each(|p| panel[p * NR + j] = 0.0);
                }
            }
        }
    }
}

/// `C = alpha A B + beta C` for a B that is not packed: B is first copied into the calling
/// thread's panel buffer. Every f32 product that is not on a packed weight: attention's and the
/// span scores' (where matrixmultiply's packing of both operands and its 8x8 tiles cost more than
/// the products) and training's.
///
/// # Safety
/// As [`sgemm`], with `b` valid for a `k x n` matrix with strides `(rsb, csb)`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub unsafe fn sgemm_unpacked(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    PACKED_B.with(|buf| {
        let buf = &mut *buf.borrow_mut();
        let need = n.div_ceil(NR) * k * NR;
        if buf.len() < need {
            buf.resize(need, 0.0);
        }
        // SAFETY: the caller's contract: `b` is valid for k x n with its strides, and the rest
        // of `sgemm`'s (the CPU has AVX-512F, A and C valid, C aliasing neither); `buf[..need]`
        // is B packed as `sgemm` reads it, and no bias.
        unsafe {
            pack_panels_into(k, n, b, rsb, csb, &mut buf[..need]);
            sgemm(
                m,
                k,
                n,
                alpha,
                a,
                rsa,
                csa,
                &buf[..need],
                beta,
                std::ptr::null(),
                c,
                rsc,
            );
        }
    });
}

thread_local! {
    /// The packed A block of the calling thread, grown to the largest seen.
    static PACKED_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The packed B of [`sgemm_unpacked`] on the calling thread, grown to the largest seen.
    static PACKED_B: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies `rows x k` of A into `buf` as panels of MR rows: panel q holds, for p = 0..k, the MR
/// values `A[q MR + r, p]` (zeros past the last row).
///
/// # Safety
/// `a` must be valid for a `rows x k` matrix with strides `(rsa, csa)`. (`buf` must hold
/// `rows.div_ceil(MR) * MR * k` values; that is checked.)
unsafe fn pack_a(rows: usize, k: usize, a: *const f32, rsa: isize, csa: isize, buf: &mut [f32]) {
    for (q, panel) in buf[..rows.div_ceil(MR) * MR * k]
        .chunks_exact_mut(MR * k)
        .enumerate()
    {
        let r0 = q * MR;
        let live = (rows - r0).min(MR);
        if csa == 1 && live == MR {
            // Row-major A: read each row once, contiguously.
            for r in 0..MR {
                // SAFETY: row r0 + r < rows and columns p < k (contiguous) of A, as the caller
                // vouched; p * MR + r < MR * k, the panel's length.
                unsafe {
                    let src = a.offset((r0 + r) as isize * rsa);
                    for p in 0..k {
                        *panel.get_unchecked_mut(p * MR + r) = *src.add(p);
                    }
                }
            }
        } else if rsa == 1 && live == MR {
            // Column-major A (a transposed activation, as in a weight's gradient): MR
            // contiguous values a column.
            for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                // SAFETY: rows r0..r0 + MR <= rows (contiguous, rsa = 1) of column p < k of A,
                // as the caller vouched.
                dst.copy_from_slice(unsafe {
                    std::slice::from_raw_parts(a.offset(r0 as isize + p as isize * csa), MR)
                });
            }
        } else {
            for p in 0..k {
                for r in 0..MR {
                    panel[p * MR + r] = if r < live {
                        // SAFETY: row r0 + r < rows, column p < k of A, as the caller vouched.
                        unsafe { *a.offset((r0 + r) as isize * rsa + p as isize * csa) }
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// What every micro-tile of one column tile shares.
struct Tile {
    k: usize,
    alpha: f32,
    beta: f32,
    /// the tile's columns of the bias row, or null
    bias: *const f32,
    /// the packed column tile of B (`k` rows of [`NR`])
    b: *const f32,
    rsc: isize,
    lo: __mmask16,
    hi: __mmask16,
}

impl Tile {
    /// One `R x 32` tile from a packed A panel: `C[0..R, 0..nr] = alpha A B[:, tile] + beta C
    /// (+ bias)`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F. `a` must be valid for the tile's R rows of A: R rows `rsa`
    /// apart, k values each (contiguous), or with `PACKED` a panel of k groups of [`MR`] values;
    /// `self.b` must hold k rows of [`NR`] values, and `prefetch` `prefetch_rows` rows of NR
    /// (of another panel, fetched toward L2 as the loop goes: a row a step); `c` must be valid for R rows `self.rsc` apart
    /// in the lanes of `lo` and `hi`, as must `self.bias` (when not null) for one row; `c`
    /// must alias neither `a` nor `self.b`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const R: usize, const PACKED: bool>(
        &self,
        a: *const f32,
        rsa: isize,
        c: *mut f32,
        prefetch: *const f32,
        prefetch_rows: usize,
    ) {
        // SAFETY: every pointer formed and every load and store stays within what the caller
        // vouched for (see # Safety): A's rows r < R at values p * step < k * step, B's k rows of
        // NR values (and the prefetched panel's, which is only read by prefetches), C's and the bias's lanes masked by `lo` and `hi`.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let mut bp = self.b;
            // A's R rows: a packed panel (MR values per column p) or rows `rsa` apart read in place.
            let rows: [*const f32; R] = std::array::from_fn(|r| {
                if PACKED {
                    a.add(r)
                } else {
                    a.offset(r as isize * rsa)
                }
            });
            let step = if PACKED { MR } else { 1 };
            for p in 0..self.k {
                if p < prefetch_rows {
                    let next = prefetch.add(p * NR);
                    _mm_prefetch::<_MM_HINT_T1>(next.cast());
                    _mm_prefetch::<_MM_HINT_T1>(next.add(16).cast());
                }
                let b0 = _mm512_loadu_ps(bp);
                let b1 = _mm512_loadu_ps(bp.add(16));
                for (acc, row) in acc.iter_mut().zip(&rows) {
                    let av = _mm512_set1_ps(*row.add(p * step));
                    acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
                }
                bp = bp.add(NR);
            }
            let alpha = _mm512_set1_ps(self.alpha);
            let beta = _mm512_set1_ps(self.beta);
            // The bias of the tile's two halves (lanes past n load nothing).
            let mut bias = [None; 2];
            if !self.bias.is_null() {
                for (h, mask) in [self.lo, self.hi].into_iter().enumerate() {
                    if mask != 0 {
                        bias[h] = Some(_mm512_maskz_loadu_ps(mask, self.bias.add(16 * h)));
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let cr = c.offset(r as isize * self.rsc);
                for (h, (&v, mask)) in acc.iter().zip([self.lo, self.hi]).enumerate() {
                    if mask == 0 {
                        continue;
                    }
                    let p = cr.add(16 * h);
                    let mut out = _mm512_mul_ps(alpha, v);
                    if self.beta != 0.0 {
                        out = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mask, p), out);
                    }
                    if let Some(b) = bias[h] {
                        out = _mm512_add_ps(out, b);
                    }
                    _mm512_mask_storeu_ps(p, mask, out);
                }
            }
        }
    }
}
