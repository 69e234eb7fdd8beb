//! Embedding table: `y[i] = W[ids[i]]`; the backward scatter-adds into the rows that were used.

use crate::param::{join, Param2, ParamMut, Params};
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView2, ArrayViewD, Axis, Zip};
use rand::Rng;
use rayon::prelude::*;

/// Columns per parallel task of the backward's scatter-add.
const COLUMN_BLOCK: usize = 64;

/// A lookup table of `[vocab, dim]` rows.
#[derive(Clone, Debug)]
pub struct Embedding<T> {
    /// `[vocab, dim]`
    pub weight: Param2<T>,
}

impl<T: Scalar> Embedding<T> {
    /// BERT initialisation: rows ~ N(0, std²).
    pub fn new(vocab: usize, dim: usize, std: f64, rng: &mut impl Rng) -> Self {
        Embedding::from_array(crate::init::normal((vocab, dim), std, rng))
    }

    /// Wraps a given table `[vocab, dim]`.
    pub fn from_array(weight: Array2<T>) -> Self {
        Embedding {
            weight: Param2::new(weight),
        }
    }

    /// Rows of the table (ids are below it).
    pub fn vocab(&self) -> usize {
        self.weight.value.nrows()
    }

    /// The width of a row.
    pub fn dim(&self) -> usize {
        self.weight.value.ncols()
    }

    /// `y[i] = W[ids[i]]`; ids `[N]` -> y `[N, dim]`. Panics on an id outside the table.
    pub fn forward(&self, ids: &[u32]) -> Array2<T> {
        let mut y = crate::parallel::zeros(ndarray::Ix2(ids.len(), self.dim()));
        self.forward_acc(ids, &mut y);
        y
    }

    /// `y[i] += W[ids[i]]` (sums several embeddings in one pass over `y`).
    pub fn forward_acc(&self, ids: &[u32], y: &mut Array2<T>) {
        assert_eq!(y.nrows(), ids.len(), "Embedding: output rows differ from ids");
        Zip::from(y.rows_mut())
            .and(ids)
            .par_for_each(|mut row, &id| row += &self.weight.value.row(id as usize));
    }

    /// `dW[ids[i]] += dy[i]`: only the rows that were looked up receive gradient. A repeated id
    /// gets its rows added in order; blocks of columns run in parallel, so the sums are the same
    /// for any thread count.
    pub fn backward(&mut self, ids: &[u32], dy: ArrayView2<T>) {
        assert_eq!(dy.nrows(), ids.len(), "Embedding: gradient rows differ from ids");
        let cols = COLUMN_BLOCK.min(self.dim().max(1));
        self.weight
            .grad
            .axis_chunks_iter_mut(Axis(1), cols)
            .into_par_iter()
            .zip(dy.axis_chunks_iter(Axis(1), cols).into_par_iter())
            .for_each(|(mut grad, dy)| {
                for (&id, d) in ids.iter().zip(dy.axis_iter(Axis(0))) {
                    let mut g = grad.row_mut(id as usize);
                    g += &d;
                }
            });
    }
}

impl<T: Scalar> Params<T> for Embedding<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        f(&join(prefix, "weight"), self.weight.view_dyn());
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        f(&join(prefix, "weight"), self.weight.views_mut_dyn());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Ix2};

    #[test]
    fn forward_by_hand() {
        let e = Embedding::from_array(array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
        assert_eq!(e.forward(&[2, 0, 2]), array![[5.0, 6.0], [1.0, 2.0], [5.0, 6.0]]);
    }

    #[test]
    fn backward_touches_only_used_rows() {
        let mut e = Embedding::<f64>::from_array(Array2::zeros((4, 2)));
        e.backward(&[1, 3, 1], array![[1.0, 2.0], [3.0, 4.0], [0.5, 0.5]].view());
        assert_eq!(
            e.weight.grad,
            array![[0.0, 0.0], [1.5, 2.5], [0.0, 0.0], [3.0, 4.0]]
        );
    }

    /// Wider than one column block: the parallel scatter-add is the serial one, bit for bit, at
    /// any thread count (repeated ids added in order).
    #[test]
    fn wide_backward_is_the_serial_scatter_add() {
        let dim = 2 * COLUMN_BLOCK + 9;
        let ids = [3u32, 0, 3, 5, 1, 3];
        let dy: Array2<f32> = fixed_random(Ix2(ids.len(), dim), 4).mapv(|v| v as f32);
        let mut want: Array2<f32> = fixed_random(Ix2(6, dim), 5).mapv(|v| v as f32);
        let start = want.clone();
        for (&id, d) in ids.iter().zip(dy.rows()) {
            for (w, &v) in want.row_mut(id as usize).iter_mut().zip(d) {
                *w += v;
            }
        }
        for threads in [1, 3] {
            let mut e = Embedding::<f32>::from_array(Array2::zeros((6, dim)));
            e.weight.grad.assign(&start);
            crate::matmul::thread_pool(threads)
                .unwrap()
                .install(|| e.backward(&ids, dy.view()));
            assert_eq!(e.weight.grad, want, "{threads} threads");
        }
    }

    #[test]
    fn gradcheck() {
        let ids = [3u32, 0, 3, 5, 1];
        let mut e = Embedding::<f64>::from_array(fixed_random(Ix2(6, 4), 1));
        let proj = fixed_random(Ix2(5, 4), 2);
        e.zero_grad();
        e.backward(&ids, proj.view());
        GradCheck::default()
            .params(&mut e, |e| proj_loss(&e.forward(&ids), &proj))
            .assert_below(1e-6);
    }
}
