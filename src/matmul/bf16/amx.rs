//! The bf16 product's sums on AMX tiles ([`crate::cpu::amx_bf16`]): TDPBF16PS multiplies a tile
//! of 16 rows x 32 bf16 of A by a tile of 16 rows x 32 bf16 of B (16 pairs of k, each row the
//! pair's values of 16 columns) and adds the 16 x 16 f32 sums into a third tile.
//!
//! B's tile is exactly 16 pairs of one panel of [`super::Bf16B`], the layout TDPBF16PS wants, so
//! the tiles load straight from the packed weight; k is padded to whole tile steps, so no load
//! reaches past a panel. The tile configuration is the int8 one ([`crate::matmul::amx`]: every
//! tile 16 rows of 64 bytes). A block is up to 2 x 2 tiles (32 rows by 32 columns), its sums in
//! four tile registers across all of k, then stored for the epilogue.
//!
//! Tile registers: C in tmm0 (rows 0-15, panel 0), tmm1 (rows 0-15, panel 1), tmm2 (rows 16-31,
//! panel 0), tmm3 (rows 16-31, panel 1); A in tmm4, tmm5; B in tmm6, tmm7.

use crate::matmul::amx::{TILE_K, TILE_ROWS};
use std::arch::asm;

/// Bytes of a panel one tile step takes (16 pairs of 64 bytes).
const B_STEP: usize = TILE_ROWS * TILE_K;

/// The f32 sums of a block: `rt` (1 or 2) tiles of 16 rows of A by `pt` (1 or 2) panels of B,
/// over `steps` steps of 32 values of k, into `out` (row r, column c of the block at
/// `out[r][c]`).
///
/// # Safety
/// The tiles are configured ([`crate::matmul::amx::configure`]) on this thread, and
/// [`crate::cpu::amx_bf16`] is true. `a` points at `16 * rt` rows of `a_stride` bytes (at least
/// `64 * steps`); `b` at `pt` panels `panel_bytes` apart, each at least `steps * 1024` bytes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn block(
    a: *const u16,
    a_stride: usize,
    b: *const u16,
    panel_bytes: usize,
    steps: usize,
    rt: usize,
    pt: usize,
    out: &mut [[f32; 32]; 32],
) {
    let (a, b) = (a.cast::<u8>(), b.cast::<u8>());
    let b_stride = TILE_K;
    // SAFETY: (every asm! below) the loads read 16 rows of 64 bytes inside the ranges of the
    // caller's contract; the stores write 16 rows of 64 bytes inside `out` (32 x 32 f32, 128
    // bytes a row); the tile registers are not used by compiled Rust code.
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
                "tdpbf16ps tmm0, tmm4, tmm6",
                a = in(reg) a0, sa = in(reg) a_stride, b = in(reg) b0, sb = in(reg) b_stride,
                options(nostack, readonly)
            );
            if pt == 2 {
                asm!(
                    "tileloadd tmm7, [{b} + {sb}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    b = in(reg) b0.add(panel_bytes), sb = in(reg) b_stride,
                    options(nostack, readonly)
                );
            }
            if rt == 2 {
                asm!(
                    "tileloadd tmm5, [{a} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    a = in(reg) a0.add(TILE_ROWS * a_stride), sa = in(reg) a_stride,
                    options(nostack, readonly)
                );
                if pt == 2 {
                    asm!("tdpbf16ps tmm3, tmm5, tmm7", options(nostack, nomem));
                }
            }
        }
        let o = out.as_mut_ptr().cast::<f32>();
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
