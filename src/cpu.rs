//! Which vector code paths this CPU runs, decided once per process.
//!
//! The default x86-64 build targets SSE2, so loops the compiler vectorises run 4 lanes wide.
//! The hot paths of inference (the product kernel of `matmul::avx512`, GELU, softmax) have
//! AVX-512F versions chosen at run time by [`avx512`]; everything else, and every other CPU,
//! runs the portable code.

use std::sync::OnceLock;

/// True when the AVX-512F paths run: an x86-64 CPU with AVX-512F, not under valgrind (which does
/// not emulate AVX-512), and `GP_LITE_MATMUL` is not `portable` (which keeps every path portable,
/// to compare the two).
pub fn avx512() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let portable = std::env::var("GP_LITE_MATMUL").is_ok_and(|v| v == "portable");
        #[cfg(target_arch = "x86_64")]
        if !portable && !crate::valgrind::running() && is_x86_feature_detected!("avx512f") {
            return true;
        }
        let _ = portable;
        false
    })
}

/// True when int8 products run on AVX512-VNNI ([`crate::matmul::int8`]): where the AVX-512 paths
/// run ([`avx512`]) and the CPU has AVX512-VNNI; elsewhere they run on plain loops (the same
/// results, bit for bit).
pub fn vnni() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if avx512() && is_x86_feature_detected!("avx512vnni") {
            return true;
        }
        false
    })
}
