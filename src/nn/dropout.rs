//! Inverted dropout: keep each element with probability 1-p and scale it by 1/(1-p); identity
//! when not training or when p = 0. The mask (0 or 1/(1-p) per element) is the backward's cache.

use crate::scalar::Scalar;
use ndarray::{Array, Dimension, Zip};
use rand::Rng;

/// Dropout with drop probability `p`.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    /// The probability that an element is dropped, in `[0, 1)`.
    pub p: f64,
}

/// The kept-and-scaled mask of one application; `None` when dropout was the identity.
pub type DropoutMask<T, D> = Option<Array<T, D>>;

/// SplitMix64's increment: the state after i outputs is `seed + i·GAMMA`.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 (Steele, Lea & Flood 2014): a fast, well-mixed 64-bit generator.
#[inline(always)]
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Dropout {
    /// Dropout with probability `p`; panics outside `[0, 1)`.
    pub fn new(p: f64) -> Self {
        assert!((0.0..1.0).contains(&p), "dropout probability {p} outside [0, 1)");
        Dropout { p }
    }

    /// Whether a call with this `train` flag changes anything.
    pub fn active(&self, training: bool) -> bool {
        training && self.p > 0.0
    }

    /// The mask for a tensor of `shape`: 1/(1-p) with probability 1-p, else 0.
    ///
    /// One u64 is drawn from `rng` to seed a SplitMix64 stream, each of whose outputs gives two
    /// 32-bit uniforms (ChaCha per element cost as much as a tenth of a training step). Same
    /// `rng` state, same mask. Blocks of the mask are filled in parallel, each from its own
    /// position in the stream (the state is a counter), so the mask does not depend on the
    /// number of threads.
    pub fn sample_mask<T: Scalar, D: Dimension>(&self, shape: D, rng: &mut impl Rng) -> Array<T, D> {
        let keep = T::c(1.0 / (1.0 - self.p));
        // Drop when a uniform u32 falls below p · 2³².
        let threshold = (self.p * 4_294_967_296.0) as u64;
        let pick = |u: u64| if u < threshold { T::zero() } else { keep };
        let seed = rng.next_u64();
        let data = crate::parallel::build(shape.size(), |start, block| {
            // Elements 2i and 2i+1 come from output i, drawn from state seed + i·GAMMA (blocks
            // start at even elements).
            let mut state = seed.wrapping_add(((start / 2) as u64).wrapping_mul(GAMMA));
            while block.remaining() > 0 {
                let r = splitmix64(&mut state);
                block.push(pick(r & 0xffff_ffff));
                if block.remaining() > 0 {
                    block.push(pick(r >> 32));
                }
            }
        });
        Array::from_shape_vec(shape, data).expect("one element per index")
    }

    /// x ← x · mask in place when `rng` is given (training) and p > 0; returns the mask.
    pub fn forward_inplace<T: Scalar, D: Dimension, R: Rng>(
        &self,
        x: &mut Array<T, D>,
        rng: Option<&mut R>,
    ) -> DropoutMask<T, D> {
        let rng = rng.filter(|_| self.p > 0.0)?;
        let mask = self.sample_mask(x.raw_dim(), rng);
        Zip::from(&mut *x).and(&mask).par_for_each(|x, &m| *x *= m);
        Some(mask)
    }

    /// dy ← dy · mask in place (nothing when the forward was the identity).
    pub fn backward_inplace<T: Scalar, D: Dimension>(mask: &DropoutMask<T, D>, dy: &mut Array<T, D>) {
        if let Some(m) = mask {
            Zip::from(dy).and(m).par_for_each(|d, &m| *d *= m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Array2, Ix2};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn forward_by_hand() {
        let d = Dropout::new(0.5);
        let mut x = array![[1.0, 2.0, 3.0, 4.0]];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mask = d.forward_inplace(&mut x, Some(&mut rng)).unwrap();
        for (j, &m) in mask.iter().enumerate() {
            assert!(m == 0.0 || m == 2.0);
            assert_eq!(x[[0, j]], (j + 1) as f64 * m);
        }
        // Identity when not training or when p = 0.
        let mut y = array![[1.0, 2.0]];
        assert!(d.forward_inplace(&mut y, None::<&mut ChaCha8Rng>).is_none());
        assert!(Dropout::new(0.0)
            .forward_inplace(&mut y, Some(&mut rng))
            .is_none());
        assert_eq!(y, array![[1.0, 2.0]]);
        // Same seed, same mask; the kept fraction is near 1-p.
        let big =
            |s| Dropout::new(0.3).sample_mask::<f64, _>(Ix2(100, 100), &mut ChaCha8Rng::seed_from_u64(s));
        assert_eq!(big(9), big(9));
        let kept = big(9).iter().filter(|&&m| m > 0.0).count() as f64 / 1e4;
        assert!((kept - 0.7).abs() < 0.02, "kept {kept}");
    }

    /// The mask, filled in parallel blocks, is the one stream read in order: the same for every
    /// thread count and equal to a serial reading (an odd size over several blocks).
    #[test]
    fn mask_is_one_stream_whatever_the_threads() {
        let d = Dropout::new(0.25);
        let n = 3 * crate::parallel::CHUNK + 7;
        let mask = |threads| {
            crate::matmul::thread_pool(threads)
                .unwrap()
                .install(|| d.sample_mask::<f32, _>(ndarray::Ix1(n), &mut ChaCha8Rng::seed_from_u64(11)))
        };
        let (one, two) = (mask(1), mask(2));
        assert_eq!(one, two);
        let mut state = rand::RngCore::next_u64(&mut ChaCha8Rng::seed_from_u64(11));
        let mut serial = Vec::new();
        while serial.len() < n {
            let r = splitmix64(&mut state);
            for u in [r & 0xffff_ffff, r >> 32] {
                serial.push(if u < (0.25 * 4_294_967_296.0) as u64 {
                    0.0
                } else {
                    1.0 / 0.75
                });
            }
        }
        serial.truncate(n);
        assert_eq!(one.to_vec(), serial);
    }

    #[test]
    fn gradcheck() {
        let d = Dropout::new(0.4);
        let x: Array2<f64> = fixed_random(Ix2(4, 5), 1);
        let proj = fixed_random(Ix2(4, 5), 2);
        // The same seed gives the same mask in every evaluation.
        let run = |x: &Array2<f64>| {
            let mut y = x.clone();
            let mask = d.forward_inplace(&mut y, Some(&mut ChaCha8Rng::seed_from_u64(5)));
            (y, mask)
        };
        let (_, mask) = run(&x);
        let mut dx = proj.clone();
        Dropout::backward_inplace(&mask, &mut dx);
        GradCheck::default()
            .input("x", &x, &dx, |x| proj_loss(&run(x).0, &proj))
            .assert_below(1e-6);
    }
}
