//! Which vector code paths this CPU runs, decided once per process.
//!
//! The default x86-64 build targets SSE2, so loops the compiler vectorises run 4 lanes wide.
//! The hot paths of inference (the product kernel of `matmul::avx512`, GELU, softmax) have
//! AVX-512F versions chosen at run time by [`avx512`]; int8 products run on AMX tiles
//! ([`amx`]) or AVX512-VNNI ([`vnni`]), bf16 products on AMX tiles ([`amx_bf16`]) or
//! AVX512-BF16 ([`avx512_bf16`]); everything else, and every other CPU, runs the portable code.
//!
//! `GP_LITE_KERNEL` caps the choice ([`Ceiling`]): `portable` (plain loops everywhere),
//! `avx512` (AVX-512, VNNI and AVX512-BF16, no AMX) or `amx` (everything the CPU has; the default), so that
//! tests and benchmarks run every path a machine can run. `GP_LITE_MATMUL=portable`, the older
//! name, is `GP_LITE_KERNEL=portable`.

use std::sync::OnceLock;

/// The fastest family of paths `GP_LITE_KERNEL` allows, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ceiling {
    /// Plain loops (and matrixmultiply) only.
    Portable,
    /// AVX-512F, with AVX512-VNNI for int8 products and AVX512-BF16 for bf16 ones; no AMX.
    Avx512,
    /// Everything, AMX tiles included.
    Amx,
}

impl Ceiling {
    /// `GP_LITE_KERNEL` (and the older `GP_LITE_MATMUL=portable`) as set in the environment;
    /// unset is [`Ceiling::Amx`]. An unknown value is an error naming the values there are.
    pub fn from_env() -> Result<Ceiling, String> {
        if std::env::var("GP_LITE_MATMUL").is_ok_and(|v| v == "portable") {
            return Ok(Ceiling::Portable);
        }
        match std::env::var("GP_LITE_KERNEL") {
            Err(_) => Ok(Ceiling::Amx),
            Ok(v) => match v.as_str() {
                "portable" => Ok(Ceiling::Portable),
                "avx512" => Ok(Ceiling::Avx512),
                "amx" | "" => Ok(Ceiling::Amx),
                other => Err(format!(
                    "GP_LITE_KERNEL={other}: expected portable, avx512 or amx"
                )),
            },
        }
    }
}

/// The ceiling in force (an unknown `GP_LITE_KERNEL` counts as unset here; the CLI refuses it
/// before anything runs).
fn ceiling() -> Ceiling {
    static C: OnceLock<Ceiling> = OnceLock::new();
    *C.get_or_init(|| Ceiling::from_env().unwrap_or(Ceiling::Amx))
}

/// True when the AVX-512F paths run: an x86-64 CPU with AVX-512F, not under valgrind (which does
/// not emulate AVX-512), and `GP_LITE_KERNEL` allows it.
pub fn avx512() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if ceiling() >= Ceiling::Avx512 && !crate::valgrind::running() && is_x86_feature_detected!("avx512f")
        {
            return true;
        }
        false
    })
}

/// True when int8 products can run on AVX512-VNNI ([`crate::matmul::int8`]): where the AVX-512
/// paths run ([`avx512`]) and the CPU has AVX512-VNNI; elsewhere they run on plain loops (the
/// same results, bit for bit).
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

/// True when int8 products run on AMX tiles ([`crate::matmul::amx`]): where VNNI runs
/// ([`vnni`]), the CPU has AMX-INT8, and AMX tiles may run (`GP_LITE_KERNEL` allows AMX, the
/// CPU has AMX-TILE and Linux grants the tile state, asked for once).
pub fn amx() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if vnni() && amx_cpuid(AMX_INT8) {
            return amx_tiles();
        }
        false
    })
}

/// True when bf16 products can run on AVX512-BF16 (VDPBF16PS, [`crate::matmul::bf16`]): where
/// the AVX-512 paths run ([`avx512`]) and the CPU has AVX512-BF16; elsewhere they run on plain
/// loops (the same bf16 operands, summed in another order).
pub fn avx512_bf16() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if avx512() && is_x86_feature_detected!("avx512bf16") {
            return true;
        }
        false
    })
}

/// True when bf16 products run on AMX tiles (TDPBF16PS): where AVX512-BF16 runs
/// ([`avx512_bf16`]), the CPU has AMX-BF16, and AMX tiles may run (`GP_LITE_KERNEL` allows
/// AMX, the CPU has AMX-TILE and Linux grants the tile state, asked for once).
pub fn amx_bf16() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if avx512_bf16() && amx_cpuid(AMX_BF16) {
            return amx_tiles();
        }
        false
    })
}

/// True when `GP_LITE_KERNEL` allows AMX, the CPU has AMX-TILE, and Linux grants this process
/// the tile state (asked for here, once, on Linux; elsewhere false).
#[cfg(target_arch = "x86_64")]
fn amx_tiles() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        #[cfg(target_os = "linux")]
        if ceiling() >= Ceiling::Amx && amx_cpuid(AMX_TILE) {
            return request_tile_state();
        }
        false
    })
}

/// CPUID leaf 7, EDX: AMX-BF16.
#[cfg(target_arch = "x86_64")]
const AMX_BF16: u32 = 22;
/// CPUID leaf 7, EDX: AMX-TILE.
#[cfg(target_arch = "x86_64")]
const AMX_TILE: u32 = 24;
/// CPUID leaf 7, EDX: AMX-INT8.
#[cfg(target_arch = "x86_64")]
const AMX_INT8: u32 = 25;

/// Whether bit `bit` of CPUID leaf 7's EDX is set (AMX-BF16 22, AMX-TILE 24, AMX-INT8 25).
#[cfg(target_arch = "x86_64")]
fn amx_cpuid(bit: u32) -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // leaf 7 is read only where the CPU has it (leaf 0's EAX is the highest leaf)
    if __cpuid(0).eax < 7 {
        return false;
    }
    __cpuid_count(7, 0).edx & (1 << bit) != 0
}

/// Asks Linux for the AMX tile data state: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`.
/// Before this a tile instruction faults; the permission holds for every thread of the process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain Linux system call with two integer arguments; it reads and writes no
    // memory of ours, and the kernel clobbers only rax (the result), rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}
