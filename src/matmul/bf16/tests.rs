use super::*;
use crate::bf16::round;
use ndarray::Array2;
use rand::{Rng, SeedableRng};

fn random(m: usize, n: usize, seed: u64) -> Array2<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((m, n), |_| rng.gen_range(-1.0f32..1.0))
}

fn kernels() -> Vec<Kernel> {
    let mut k = vec![Kernel::Portable];
    if crate::cpu::avx512_bf16() {
        k.push(Kernel::Avx512);
    }
    if crate::cpu::amx_bf16() {
        k.push(Kernel::Amx);
    }
    k
}

/// The f64 product of the bf16-rounded operands (what every kernel computes, summed exactly),
/// and the bound of an f32 sum of its k terms: each of the k additions rounds by at most half
/// an ulp of the running sum, `|err| <= k · 2⁻²⁴ · Σ|a b|` (plus the alpha and beta
/// multiplications, a few ulps of the result).
fn want_and_bound(a: &Array2<f32>, b: &Array2<f32>, i: usize, j: usize) -> (f64, f64) {
    let k = a.ncols();
    let (mut sum, mut abs) = (0f64, 0f64);
    for p in 0..k {
        let t = round(a[[i, p]]) as f64 * round(b[[p, j]]) as f64;
        sum += t;
        abs += t.abs();
    }
    (sum, k as f64 * 2f64.powi(-24) * abs)
}

/// Every kernel the CPU runs, against the f64 product of the bf16 operands: tails in m, n and
/// k (odd k, k not a multiple of 32, one panel, partial panels), alpha, beta and a bias.
#[test]
fn kernels_match_the_f64_product_of_bf16_operands() {
    for (m, k, n) in [
        (1, 1, 1),
        (3, 5, 17),
        (7, 64, 70),
        (13, 384, 130),
        (4, 31, 64),
        (2, 9, 33),
        (40, 101, 50),
        (33, 130, 96),
        (17, 767, 16),
        (35, 33, 31),
        (300, 40, 70),   // two blocks of rows (row_blocks.rs): 256 + 44
        (270, 4100, 20), // blocks of 224 rows: A's bytes bound them
    ] {
        let a = random(m, k, 1 + m as u64);
        let b = random(k, n, 100 + n as u64);
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 0.1).collect();
        let init = random(m, n, 7);
        let packed = Bf16B::new(b.view());
        for p in 0..k {
            for j in 0..n {
                assert_eq!(packed.get(p, j), round(b[[p, j]]));
            }
        }
        for kernel in kernels() {
            for (alpha, beta, with_bias) in [(1.0f32, 0.0f32, true), (0.5, 1.0, false), (2.0, -0.25, true)] {
                let mut c = if beta == 0.0 {
                    Array2::from_elem((m, n), f32::NAN)
                } else {
                    init.clone()
                };
                let bias = with_bias.then_some(&bias[..]);
                gemm_serial(kernel, alpha, a.view(), &packed, 0, beta, bias, c.view_mut());
                for i in 0..m {
                    for j in 0..n {
                        let (sum, bound) = want_and_bound(&a, &b, i, j);
                        let mut want = alpha as f64 * sum + bias.map_or(0.0, |v| v[j] as f64);
                        if beta != 0.0 {
                            want += beta as f64 * init[[i, j]] as f64;
                        }
                        let err = (c[[i, j]] as f64 - want).abs();
                        let tol = alpha as f64 * bound + 4.0 * f32::EPSILON as f64 * (1.0 + want.abs());
                        assert!(
                            err <= tol,
                            "{kernel:?} {m}x{k}x{n} alpha {alpha} beta {beta} at ({i}, {j}): {} vs {want} (err {err:e}, bound {tol:e})",
                            c[[i, j]]
                        );
                    }
                }
            }
        }
    }
}

/// Each kernel computes the same bf16 operands' products, so against the exact (unrounded)
/// product every kernel is off by about bf16's rounding (2⁻⁹ of each operand), and the kernels
/// agree with each other to the f32 rounding of their sums.
#[test]
fn kernels_agree_and_stay_near_the_exact_product() {
    let (m, k, n) = (37, 385, 67);
    let (a, b) = (random(m, k, 11), random(k, n, 12));
    let packed = Bf16B::new(b.view());
    let mut outs = Vec::new();
    println!("bf16 kernels run: {:?}", kernels());
    for kernel in kernels() {
        let mut c = Array2::zeros((m, n));
        gemm_serial(kernel, 1.0, a.view(), &packed, 0, 0.0, None, c.view_mut());
        // deterministic: the same call writes the same bits
        let mut again = Array2::zeros((m, n));
        gemm_serial(kernel, 1.0, a.view(), &packed, 0, 0.0, None, again.view_mut());
        assert_eq!(c, again, "{kernel:?}");
        outs.push(c);
    }
    for i in 0..m {
        for j in 0..n {
            let exact: f64 = (0..k).map(|p| a[[i, p]] as f64 * b[[p, j]] as f64).sum();
            // |ab − a'b'| <= (|a||b|)(2 · 2⁻⁹ + 2⁻¹⁸) per term
            let bound: f64 = (0..k)
                .map(|p| (a[[i, p]] as f64 * b[[p, j]] as f64).abs())
                .sum::<f64>()
                * (2f64.powi(-8) + 2f64.powi(-18));
            for c in &outs {
                assert!((c[[i, j]] as f64 - exact).abs() <= bound + 1e-5);
            }
            let (_, sum_bound) = want_and_bound(&a, &b, i, j);
            for c in &outs[1..] {
                assert!((c[[i, j]] - outs[0][[i, j]]).abs() as f64 <= 2.0 * sum_bound + 1e-6);
            }
        }
    }
}

/// Columns from a panel offset (a split by columns), with the bias of those columns, onto
/// beta = 1: the same as the full product's columns.
#[test]
fn columns_from_a_panel_offset() {
    let (m, k, n) = (5, 47, 80);
    let (a, b) = (random(m, k, 7), random(k, n, 8));
    let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
    let packed = Bf16B::new(b.view());
    let rows = Bf16A::new(a.view(), packed.kp());
    for kernel in kernels() {
        let mut full = Array2::<f32>::zeros((m, n));
        gemm_rounded(kernel, 1.0, &rows, &packed, 0, 0.0, None, full.view_mut());
        let mut part = Array2::<f32>::ones((m, n - 32));
        gemm_rounded(
            kernel,
            2.0,
            &rows,
            &packed,
            32,
            1.0,
            Some(&bias[32..]),
            part.view_mut(),
        );
        for i in 0..m {
            for j in 32..n {
                let want = 2.0 * full[[i, j]] + 1.0 + bias[j];
                assert!(
                    (part[[i, j - 32]] - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{kernel:?} ({i}, {j})"
                );
            }
        }
    }
}

#[test]
fn packed_weight_is_half_of_f32() {
    let b = Bf16B::new(random(384, 1536, 3).view());
    assert_eq!(b.bytes(), 384 * 1536 * 2);
    assert_eq!(Bf16B::new(random(33, 17, 3).view()).kp(), 64);
}

/// Through [`crate::matmul::gemm_packed`]: a weight packed in bf16 on every CPU, split over
/// threads by rows (m >= n) or by panels of columns (m < n), with a layer's bias.
#[test]
fn packed_products_split_over_threads() {
    use crate::matmul::{gemm_packed, thread_pool, PackedB};
    use crate::precision::Precision;
    for (m, k, n) in [(600, 64, 40), (20, 129, 1290), (50, 128, 33)] {
        let (a, b) = (random(m, k, 21), random(k, n, 22));
        let bias = ndarray::Array1::from_shape_fn(n, |j| (j as f32 * 0.37).sin());
        let packed = PackedB::for_inference(b.view(), Precision::Bf16).expect("bf16 packs f32");
        assert_eq!((packed.precision(), packed.dim()), (Precision::Bf16, (k, n)));
        assert!(PackedB::for_inference(b.mapv(f64::from).view(), Precision::Bf16).is_none());
        for threads in [1, 2, 3] {
            let mut c = Array2::from_elem((m, n), f32::NAN);
            thread_pool(threads)
                .unwrap()
                .install(|| gemm_packed(1.0, a.view(), &packed, 0.0, Some(bias.view()), c.view_mut()));
            for i in 0..m {
                for j in 0..n {
                    let (sum, bound) = want_and_bound(&a, &b, i, j);
                    let want = sum + bias[j] as f64;
                    let err = (c[[i, j]] as f64 - want).abs();
                    assert!(
                        err <= bound + 4.0 * f32::EPSILON as f64 * (1.0 + want.abs()),
                        "{m}x{k}x{n}, {threads} threads, ({i}, {j}): {err:e}"
                    );
                }
            }
        }
    }
}

/// The AVX-512 rounding of A's rows writes the bits of [`crate::bf16::from_f32`]: random bit
/// patterns (NaN, infinities and subnormals among them), ties, every tail length.
#[test]
fn both_roundings_of_a_write_the_same_bits() {
    if !crate::cpu::avx512() {
        return;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut values: Vec<f32> = (0..4000).map(|_| f32::from_bits(rng.gen())).collect();
    values.extend([
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::MAX,
        f32::from_bits(0x3f81_8000),
        1e-40,
    ]);
    for n in (1..40).chain([values.len()]) {
        let src = &values[values.len() - n..];
        let x: Vec<u16> = src.iter().map(|&v| crate::bf16::from_f32(v)).collect();
        let mut y = vec![0u16; n];
        super::round::row(src, &mut y);
        assert_eq!(x, y, "n = {n}");
    }
}
