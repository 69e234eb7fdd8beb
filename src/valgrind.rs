//! Running under valgrind: detection, and a matrix product valgrind runs at a usable speed.
//!
//! Valgrind hides AVX-512 from the program, so matrixmultiply picks its AVX2+FMA kernel; valgrind
//! does not execute FMA instructions but emulates each lane through a helper call that saves and
//! restores the FP control register (`h_generic_calc_MAddF32`). Measured with `valgrind
//! --tool=none` on the 2-layer sample model: one 33-character prediction took 2.4 s against
//! 1 ms natively, and almost all of the time was in that helper. A C program that predicts a long
//! text and then 200 short ones from 4 threads looked hung (its main thread waiting on the pool in
//! `LockLatch::wait_and_reset` while the workers ground through emulated FMAs). Under valgrind
//! every product therefore goes through [`gemm_plain`], plain loops the compiler vectorises with
//! SSE only (no FMA: the default x86-64 target has none), which valgrind runs natively.

use crate::scalar::Scalar;
use std::sync::OnceLock;

/// True when the process runs under valgrind (the RUNNING_ON_VALGRIND client request; always
/// false off x86-64 Linux). Asked once, then cached.
pub fn running() -> bool {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    *RUNNING.get_or_init(|| client_request_running() != 0)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn client_request_running() -> u64 {
    // VG_USERREQ__RUNNING_ON_VALGRIND; the request is read from the array rax points to.
    const RUNNING_ON_VALGRIND: u64 = 0x1001;
    let args: [u64; 6] = [RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0];
    // The answer when not under valgrind.
    let mut result: u64 = 0;
    // SAFETY: valgrind's "special instruction" sequence: four rotations of rdi by 3+13+61+51 =
    // 128 bits (rdi ends unchanged, declared clobbered all the same) and `xchg rbx, rbx` (a
    // no-op). Natively nothing else changes and rdx keeps the default 0; under valgrind rdx
    // receives the answer. rax points to `args`, which outlives the instruction. The flags are
    // not preserved (no `preserves_flags`): `rol` writes CF and leaves OF undefined, and
    // valgrind's own macro clobbers "cc".
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") result,
            out("rdi") _,
            options(nostack, readonly)
        );
    }
    result
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn client_request_running() -> u64 {
    0
}

/// `c = alpha * a · b + beta * c` by plain loops, with matrixmultiply's calling convention
/// (strides in elements; with `beta = 0`, `c` is only written).
///
/// # Safety
/// As matrixmultiply's gemm: valid `m x k`, `k x n` and `m x n` matrices, `c` not aliasing `a`, `b`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_plain<T: Scalar>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
) {
    let mut row = vec![T::zero(); n];
    for i in 0..m as isize {
        row.fill(T::zero());
        for p in 0..k as isize {
            // SAFETY: i < m and p < k: element (i, p) of the `m x k` matrix `a`, and row p of
            // the `k x n` matrix `b` (the caller's contract), so every offset stays inside them.
            let (aip, bp) = unsafe { (*a.offset(i * rsa + p * csa), b.offset(p * rsb)) };
            for (j, r) in row.iter_mut().enumerate() {
                // SAFETY: j < n: element (p, j) of `b`.
                *r += aip * unsafe { *bp.offset(j as isize * csb) };
            }
        }
        for (j, &r) in row.iter().enumerate() {
            // SAFETY: i < m and j < n: element (i, j) of the `m x n` matrix `c`, which aliases
            // neither `a` nor `b`, so writing it changes no element read above.
            unsafe {
                let cij = c.offset(i * rsc + j as isize * csc);
                *cij = if beta == T::zero() {
                    alpha * r
                } else {
                    alpha * r + beta * *cij
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn not_running_under_valgrind_in_tests() {
        // `cargo test` runs natively; the C test runs the library under valgrind and checks there.
        if std::env::var_os("GP_LITE_EXPECT_VALGRIND").is_none() {
            assert!(!running());
        }
    }

    #[test]
    fn plain_product_matches_the_kernel() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (8, 0, 4)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (2.0, -0.5)] {
                let (mut want, mut got) = (c0.clone(), c0.clone());
                // a row-major, b column-major (transposed strides), c row-major
                // SAFETY: the buffers hold the matrices the strides describe.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        1,
                        k as isize,
                        beta,
                        want.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                    gemm_plain(
                        m,
                        k,
                        n,
                        alpha,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        1,
                        k as isize,
                        beta,
                        got.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
                for (w, g) in want.iter().zip(&got) {
                    assert!(
                        (w - g).abs() <= 1e-5 * w.abs().max(1.0),
                        "{m}x{k}x{n}: {w} vs {g}"
                    );
                }
            }
        }
    }
}
