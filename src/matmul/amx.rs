//! Int8 and bf16 products' sums on AMX tiles ([`crate::cpu::amx`], [`crate::cpu::amx_bf16`]).
//! TDPBUSD multiplies a tile of 16 rows x 64 unsigned bytes of A by a tile of 16 rows x 64
//! signed bytes of B and adds the 16 x 16 i32 sums into a third tile, 16,384 multiply-adds an
//! instruction; TDPBF16PS does the same with 16 rows x 32 bf16 (pairs of k) and f32 sums.
//!
//! B's tile is exactly 16 rows of one panel of [`super::int8::QuantB`] (group g's 64-byte row
//! holds the 4 bytes of k = 4g..4g+4 of each of the panel's 16 columns) or of the bf16 panels
//! (pair p's row holds the 2 values of k = 2p, 2p+1 of each column): the layouts TDPBUSD and
//! TDPBF16PS want. So the tiles load straight from the packed weight: no second packing. A
//! block ([`block`], the same code for both, [`TileDot`] picks the instruction) is up to 2 x 2
//! tiles (32 rows by 32 columns), its sums in four tile registers across all of k, then stored
//! for the epilogue.
//!
//! Tile registers: C in tmm0 (rows 0-15, panel 0), tmm1 (rows 0-15, panel 1), tmm2 (rows 16-31,
//! panel 0), tmm3 (rows 16-31, panel 1); A in tmm4, tmm5; B in tmm6, tmm7.

use super::row_blocks::row_blocks;
use std::arch::asm;

/// Rows of a tile.
pub const TILE_ROWS: usize = 16;
/// Columns of a tile's sums: one panel of B.
pub const TILE_COLS: usize = 16;
/// Bytes of k one tile step takes.
pub const TILE_K: usize = 64;
/// Readable bytes a B tile may reach past its panel's last group (a last step of fewer than 16
/// groups still loads 16 rows; A's bytes there are 0, so the extra bytes add nothing).
pub const B_SLACK: usize = (TILE_K / 4 - 1) * TILE_K;
/// Bytes of a panel one tile step takes (16 groups of 64 bytes).
const B_STEP: usize = TILE_K / 4 * TILE_K;

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    const fn all_full() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = TILE_K as u8; // bytes a row (u16, little-endian)
            c[48 + t] = TILE_ROWS as u8; // rows
            t += 1;
        }
        TileConfig(c)
    }
}

static CONFIG: TileConfig = TileConfig::all_full();

/// Configures this thread's tiles for [`block`]. Call [`release`] when done.
///
/// # Safety
/// [`crate::cpu::amx`] must be true (the CPU has AMX and Linux granted the tile state).
pub unsafe fn configure() {
    // SAFETY: the caller's contract; CONFIG is a valid palette-1 configuration, 64-byte aligned.
    unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
}

/// Returns this thread's tiles to their initial state (so a context switch saves no tile data).
///
/// # Safety
/// As [`configure`].
pub unsafe fn release() {
    // SAFETY: the caller's contract.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// Which tile product [`block`] runs: TDPBUSD (u8 by i8, i32 sums) or TDPBF16PS (pairs of bf16,
/// f32 sums). Both take 64 bytes of k a row a step, from the same layout of B.
pub trait TileDot {
    /// The sums' type (4 bytes).
    type Sum: Copy + Default;
    /// `tmm{c} += tmm{a} · tmm{b}` for the three register pairs [`block`] uses.
    ///
    /// # Safety
    /// The tiles are configured and hold loaded operands.
    unsafe fn dot(which: Pair);
}

/// An `m x n` product's sums on tiles, 32 x 32 at a time ([`block`]) in blocks of rows that stay
/// in L2 (`matmul/row_blocks.rs`): `write(i, j0, sums)` gets row i's sums of columns `j0..j0 +
/// sums.len()` as each block is done. Configures the tiles and releases them after.
///
/// # Safety
/// The CPU runs `D` ([`crate::cpu::amx`], [`crate::cpu::amx_bf16`]). `a` points at
/// `m.next_multiple_of(16)` rows of `a_stride` bytes (a multiple of 64, at least `64 * steps`),
/// zero from k onwards; `b` at `n.div_ceil(16)` panels `panel_bytes` apart, each readable for
/// `steps * 1024` bytes (for int8, the panel and [`B_SLACK`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn products<D: TileDot>(
    a: *const u8,
    a_stride: usize,
    b: *const u8,
    panel_bytes: usize,
    steps: usize,
    m: usize,
    n: usize,
    mut write: impl FnMut(usize, usize, &[D::Sum]),
) {
    const BLOCK: usize = 2 * TILE_ROWS;
    let mut sums = [[D::Sum::default(); BLOCK]; BLOCK];
    // SAFETY: the caller's contract (the CPU has the tiles and Linux granted them).
    unsafe { configure() };
    for rows in row_blocks(m, a_stride, BLOCK) {
        for j0 in (0..n).step_by(BLOCK) {
            let cols = BLOCK.min(n - j0);
            for i0 in rows.clone().step_by(BLOCK) {
                let r = BLOCK.min(m - i0);
                // SAFETY: the tiles are configured above; by the caller's contract, the
                // r.div_ceil(16) tiles of A's rows from i0 lie within its m.next_multiple_of(16)
                // rows, and the cols.div_ceil(16) panels of B from j0 / 16 within its
                // n.div_ceil(16) panels.
                unsafe {
                    block::<D>(
                        a.add(i0 * a_stride),
                        a_stride,
                        b.add(j0 / TILE_COLS * panel_bytes),
                        panel_bytes,
                        steps,
                        r.div_ceil(TILE_ROWS),
                        cols.div_ceil(TILE_COLS),
                        &mut sums,
                    )
                };
                for (ri, s) in sums.iter().take(r).enumerate() {
                    write(i0 + ri, j0, &s[..cols]);
                }
            }
        }
    }
    // SAFETY: as configure above.
    unsafe { release() };
}

/// The C, A, B tile registers of one product in [`block`].
#[derive(Clone, Copy)]
pub enum Pair {
    /// tmm0 += tmm4 · tmm6
    R0P0,
    /// tmm1 += tmm4 · tmm7
    R0P1,
    /// tmm2 += tmm5 · tmm6
    R1P0,
    /// tmm3 += tmm5 · tmm7
    R1P1,
}

/// The dot-product instruction `$op` on the four register triples of [`Pair`].
macro_rules! tile_dot {
    ($ty:ident, $sum:ty, $op:literal, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty;

        impl TileDot for $ty {
            type Sum = $sum;
            unsafe fn dot(which: Pair) {
                // SAFETY: the caller's contract; the instruction reads and writes tile registers
                // only.
                unsafe {
                    match which {
                        Pair::R0P0 => asm!(concat!($op, " tmm0, tmm4, tmm6"), options(nostack, nomem)),
                        Pair::R0P1 => asm!(concat!($op, " tmm1, tmm4, tmm7"), options(nostack, nomem)),
                        Pair::R1P0 => asm!(concat!($op, " tmm2, tmm5, tmm6"), options(nostack, nomem)),
                        Pair::R1P1 => asm!(concat!($op, " tmm3, tmm5, tmm7"), options(nostack, nomem)),
                    }
                }
            }
        }
    };
}

tile_dot!(
    Int8,
    i32,
    "tdpbusd",
    "TDPBUSD: unsigned bytes of A by signed bytes of B, i32 sums."
);
tile_dot!(
    Bf16,
    f32,
    "tdpbf16ps",
    "TDPBF16PS: pairs of bf16 of A by pairs of bf16 of B, f32 sums."
);

/// The sums of a block: `rt` (1 or 2) tiles of 16 rows of A by `pt` (1 or 2) panels of B, over
/// `steps` steps of 64 bytes of k, into `out` (row r, column c of the block at `out[r][c]`),
/// with the tile product `D` ([`Int8`] or [`Bf16`]).
///
/// # Safety
/// The tiles are configured ([`configure`]) on this thread, and the CPU runs `D`
/// ([`crate::cpu::amx`], [`crate::cpu::amx_bf16`]). `a` points at `16 * rt` rows of `a_stride`
/// bytes (a multiple of 64, at least `64 * steps`), zero from k onwards; `b` at `pt` panels
/// `panel_bytes` apart, each readable for `steps * 1024` bytes (for int8, the panel and
/// [`B_SLACK`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn block<D: TileDot>(
    a: *const u8,
    a_stride: usize,
    b: *const u8,
    panel_bytes: usize,
    steps: usize,
    rt: usize,
    pt: usize,
    out: &mut [[D::Sum; 32]; 32],
) {
    const { assert!(std::mem::size_of::<D::Sum>() == 4) };
    let b_stride = TILE_K;
    // SAFETY: (every asm! and dot below) the loads read 16 rows of 64 bytes inside the ranges
    // of the caller's contract; the stores write 16 rows of 64 bytes inside `out` (32 x 32 sums
    // of 4 bytes, 128 bytes a row); the tile registers are not used by compiled Rust code.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for s in 0..steps {
            let a0 = a.add(s * TILE_K);
            let b0 = b.add(s * B_STEP);
            asm!(
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm6, [{b} + {sb}*1]",
                a = in(reg) a0, sa = in(reg) a_stride, b = in(reg) b0, sb = in(reg) b_stride,
                options(nostack, readonly)
            );
            D::dot(Pair::R0P0);
            if pt == 2 {
                asm!(
                    "tileloadd tmm7, [{b} + {sb}*1]",
                    b = in(reg) b0.add(panel_bytes), sb = in(reg) b_stride,
                    options(nostack, readonly)
                );
                D::dot(Pair::R0P1);
            }
            if rt == 2 {
                asm!(
                    "tileloadd tmm5, [{a} + {sa}*1]",
                    a = in(reg) a0.add(TILE_ROWS * a_stride), sa = in(reg) a_stride,
                    options(nostack, readonly)
                );
                D::dot(Pair::R1P0);
                if pt == 2 {
                    D::dot(Pair::R1P1);
                }
            }
        }
        let o = out.as_mut_ptr().cast::<u32>();
        let so: usize = 32 * 4;
        asm!("tilestored [{o} + {s}*1], tmm0", o = in(reg) o, s = in(reg) so, options(nostack));
        if pt == 2 {
            asm!("tilestored [{o} + {s}*1], tmm1", o = in(reg) o.add(16), s = in(reg) so, options(nostack));
        }
        if rt == 2 {
            asm!("tilestored [{o} + {s}*1], tmm2", o = in(reg) o.add(16 * 32), s = in(reg) so, options(nostack));
            if pt == 2 {
                asm!(
                    "tilestored [{o} + {s}*1], tmm3",
                    o = in(reg) o.add(16 * 32 + 16),
                    s = in(reg) so,
                    options(nostack)
                );
            }
        }
    }
}
