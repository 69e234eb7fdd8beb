//! The int8 product's sums on AMX tiles ([`crate::cpu::amx`]): TDPBUSD multiplies a tile of
//! 16 rows x 64 unsigned bytes of A by a tile of 16 rows x 64 signed bytes of B and adds the
//! 16 x 16 i32 sums into a third tile, 16,384 multiply-adds an instruction.
//!
//! B's tile is exactly 16 groups of one panel of [`super::int8::QuantB`]: group g's 64-byte row
//! holds the 4 bytes of k = 4g..4g+4 of each of the panel's 16 columns, which is the layout
//! TDPBUSD wants (its "VNNI" B format). So the tiles load straight from the packed weight: no
//! second packing. A block is up to 2 x 2 tiles (32 rows by 32 columns), its sums in four tile
//! registers across all of k, then stored for the epilogue.
//!
//! Tile registers: C in tmm0 (rows 0-15, panel 0), tmm1 (rows 0-15, panel 1), tmm2 (rows 16-31,
//! panel 0), tmm3 (rows 16-31, panel 1); A in tmm4, tmm5; B in tmm6, tmm7.

use std::arch::asm;

/// Rows of a tile.
pub const TILE_ROWS: usize = 16;
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

/// The i32 sums of a block: `rt` (1 or 2) tiles of 16 rows of A by `pt` (1 or 2) panels of B,
/// over `steps` steps of 64 bytes of k, into `out` (row r, column c of the block at
/// `out[r][c]`).
///
/// # Safety
/// The tiles are configured ([`configure`]) on this thread. `a` points at `16 * rt` rows of
/// `a_stride` bytes (a multiple of 64, at least `64 * steps`), zero from k onwards; `b` at `pt`
/// panels `panel_bytes` apart, each readable for `steps * 1024` bytes (the panel and
/// [`B_SLACK`]).
#[allow(clippy::too_many_arguments)]
pub unsafe fn block(
    a: *const u8,
    a_stride: usize,
    b: *const i8,
    panel_bytes: usize,
    steps: usize,
    rt: usize,
    pt: usize,
    out: &mut [[i32; 32]; 32],
) {
    let b_stride = TILE_K;
    // SAFETY: (every asm! below) the loads read 16 rows of 64 bytes inside the ranges of the
    // caller's contract; the stores write 16 rows of 64 bytes inside `out` (32 x 32 i32, 128
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
                "tdpbusd tmm0, tmm4, tmm6",
                a = in(reg) a0, sa = in(reg) a_stride, b = in(reg) b0, sb = in(reg) b_stride,
                options(nostack, readonly)
            );
            if pt == 2 {
                asm!(
                    "tileloadd tmm7, [{b} + {sb}*1]",
                    "tdpbusd tmm1, tmm4, tmm7",
                    b = in(reg) b0.add(panel_bytes), sb = in(reg) b_stride,
                    options(nostack, readonly)
                );
            }
            if rt == 2 {
                asm!(
                    "tileloadd tmm5, [{a} + {sa}*1]",
                    "tdpbusd tmm2, tmm5, tmm6",
                    a = in(reg) a0.add(TILE_ROWS * a_stride), sa = in(reg) a_stride,
                    options(nostack, readonly)
                );
                if pt == 2 {
                    asm!("tdpbusd tmm3, tmm5, tmm7", options(nostack, nomem));
                }
            }
        }
        let o = out.as_mut_ptr().cast::<i32>();
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
