//! bfloat16: the top 16 bits of an f32 (sign, the same 8 exponent bits, 7 of the 23 mantissa
//! bits). An f32 becomes a bf16 by rounding to nearest, ties to even; a bf16 becomes an f32
//! exactly (16 zero bits appended). The product of two bf16 values is exact in f32 (8 + 8
//! significant bits), so a bf16 product summed in f32 rounds only in its sums.

/// `x` rounded to the nearest bf16 (ties to even) as its 16 bits. A NaN stays a NaN (quiet,
/// with its sign); a value past the largest bf16 rounds to infinity, as IEEE rounding does.
pub fn from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        // the top bits with the quiet bit set: truncating alone could clear every mantissa bit
        return ((bits >> 16) | 0x0040) as u16;
    }
    // adding 0x7fff and the lowest kept bit carries into the kept bits exactly when the dropped
    // ones are above half, or at half with the kept value odd
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 a bf16 holds (exact).
pub fn to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to bf16 and back: the f32 a bf16 product multiplies.
pub fn round(x: f32) -> f32 {
    to_f32(from_f32(x))
}

/// True when the bf16 `h` is finite (its exponent bits not all ones).
pub fn is_finite(h: u16) -> bool {
    h & 0x7f80 != 0x7f80
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The nearest bf16 by search in f64: the two bf16 values around `x` (truncated, and one
    /// step away from zero), the nearer one, or the even one on a tie.
    fn nearest(x: f32) -> u16 {
        let down = (x.to_bits() >> 16) as u16;
        let up = down + 1;
        let (d, u) = (
            (x as f64 - to_f32(down) as f64).abs(),
            (to_f32(up) as f64 - x as f64).abs(),
        );
        if d < u || (d == u && down.is_multiple_of(2)) {
            down
        } else {
            up
        }
    }

    #[test]
    fn rounds_to_nearest_even_and_back_exactly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut values: Vec<f32> = (0..20000).map(|_| f32::from_bits(rng.gen())).collect();
        values.retain(|x| x.is_finite() && x.abs() < 3.38e38);
        // ties: the dropped 16 bits exactly 0x8000, below an even and an odd kept value
        values.extend([
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0xbf81_8000),
            f32::from_bits(0x0000_8000), // a subnormal tie
            f32::from_bits(0x3f80_7fff),
            f32::from_bits(0x3f80_8001),
            0.0,
            -0.0,
            1.0,
            f32::MIN_POSITIVE,
        ]);
        for x in values {
            let h = from_f32(x);
            assert_eq!(h, nearest(x), "{x:e} ({:#010x})", x.to_bits());
            // back to f32 and again: a bf16 value is its own rounding
            assert_eq!(from_f32(to_f32(h)), h);
            assert_eq!(round(x), to_f32(h));
        }
        assert_eq!(from_f32(1.0), 0x3f80);
        assert_eq!(
            from_f32(f32::from_bits(0x3f80_8000)),
            0x3f80,
            "a tie to even, down"
        );
        assert_eq!(from_f32(f32::from_bits(0x3f81_8000)), 0x3f82, "a tie to even, up");
    }

    #[test]
    fn nan_stays_nan_and_large_values_reach_infinity() {
        for bits in [0x7fc0_0000u32, 0x7f80_0001, 0xff80_0001, 0x7f80_ffff] {
            let h = from_f32(f32::from_bits(bits));
            assert!(to_f32(h).is_nan(), "{bits:#x} -> {h:#x}");
            assert!(!is_finite(h));
        }
        assert_eq!(to_f32(from_f32(f32::INFINITY)), f32::INFINITY);
        assert_eq!(to_f32(from_f32(f32::NEG_INFINITY)), f32::NEG_INFINITY);
        assert_eq!(to_f32(from_f32(f32::MAX)), f32::INFINITY);
        assert!(!is_finite(from_f32(f32::MAX)));
        assert!(is_finite(from_f32(3.0e38)));
    }
}
