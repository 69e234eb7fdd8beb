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
    /// `[vocab, dim]` (0 x 0 while the table is held in int8: [`Embedding::quantize_rows`])
    pub weight: Param2<T>,
    /// The table in int8 with a scale a row, in place of `weight`, for a model that is only run.
    int8: Option<Int8Rows>,
    /// Set by [`Embedding::int8_on_load`]: the next mutable walk (the load) quantises the table
    /// after it ([`Embedding::quantize_rows`]).
    int8_on_load: bool,
}

/// A table quantised per row (symmetric, `matmul::int8::quantize_symmetric`): row `r` is
/// `values[r * dim..][..dim]` times `scales[r]`.
#[derive(Clone, Debug)]
struct Int8Rows {
    dim: usize,
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Rows {
    /// Row `r` widened: `q * scale` each.
    fn row(&self, r: usize) -> impl Iterator<Item = f32> + '_ {
        let scale = self.scales[r];
        self.values[r * self.dim..][..self.dim]
            .iter()
            .map(move |&q| q as f32 * scale)
    }

    /// The whole table widened.
    fn table<T: Scalar>(&self) -> Array2<T> {
        let rows = self.scales.len();
        let values = (0..rows)
            .flat_map(|r| self.row(r))
            .map(|v| T::c(v as f64))
            .collect();
        Array2::from_shape_vec((rows, self.dim), values).expect("rows x dim values")
    }
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
            int8: None,
            int8_on_load: false,
        }
    }

    /// For a model about to be filled from an int8 directory: the walk that loads the table
    /// quantises it right after, so that a load never holds it in f32 beside the rest.
    pub fn int8_on_load(&mut self) {
        self.int8_on_load = true;
    }

    /// Holds the table in int8, a scale a row, and drops the f32 one (and its gradient): for
    /// a model loaded from an int8 directory, whose table is stored so (its f32 values are
    /// those of the file widened, so quantising them again gives the file's integers). A
    /// lookup widens the rows it reads; any walk of the parameters or backward pass gives the
    /// f32 table back first. f32 tables only (an f64 model keeps its table).
    pub fn quantize_rows(&mut self) {
        if self.int8.is_some() || T::view_f32(self.weight.value.view()).is_none() {
            return;
        }
        let dim = self.dim();
        let mut values = Vec::with_capacity(self.weight.value.len());
        let mut scales = Vec::with_capacity(self.vocab());
        for row in self.weight.value.rows() {
            let (scale, q) = crate::matmul::int8::quantize_symmetric(row.iter().map(|v| v.f64() as f32));
            values.extend(q);
            scales.push(scale);
        }
        self.int8 = Some(Int8Rows { dim, values, scales });
        self.weight = Param2::new(Array2::zeros((0, 0)));
    }

    /// Gives an int8 table its f32 one back (and a zero gradient).
    fn restore(&mut self) {
        if let Some(t) = self.int8.take() {
            self.weight = Param2::new(t.table());
        }
    }

    /// Rows of the table (ids are below it).
    pub fn vocab(&self) -> usize {
        match &self.int8 {
            Some(t) => t.scales.len(),
            None => self.weight.value.nrows(),
        }
    }

    /// The width of a row.
    pub fn dim(&self) -> usize {
        match &self.int8 {
            Some(t) => t.dim,
            None => self.weight.value.ncols(),
        }
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
        if let Some(t) = &self.int8 {
            return Zip::from(y.rows_mut()).and(ids).par_for_each(|mut row, &id| {
                for (y, w) in row.iter_mut().zip(t.row(id as usize)) {
                    *y += T::c(w as f64);
                }
            });
        }
        Zip::from(y.rows_mut())
            .and(ids)
            .par_for_each(|mut row, &id| row += &self.weight.value.row(id as usize));
    }

    /// `dW[ids[i]] += dy[i]`: only the rows that were looked up receive gradient. A repeated id
    /// gets its rows added in order; blocks of columns run in parallel, so the sums are the same
    /// for any thread count.
    pub fn backward(&mut self, ids: &[u32], dy: ArrayView2<T>) {
        assert_eq!(dy.nrows(), ids.len(), "Embedding: gradient rows differ from ids");
        self.restore();
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
        match &self.int8 {
            Some(t) => f(&join(prefix, "weight"), t.table::<T>().view().into_dyn()),
            None => f(&join(prefix, "weight"), self.weight.view_dyn()),
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.restore();
        f(&join(prefix, "weight"), self.weight.views_mut_dyn());
        if std::mem::take(&mut self.int8_on_load) {
            self.quantize_rows();
            crate::alloc::release_cached();
        }
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

    /// A table held in int8 looks rows up as their int8 values times the row's scale, walks as
    /// that table, and a mutable walk or a backward pass gives the f32 table back.
    #[test]
    fn an_int8_table_looks_up_walks_and_comes_back() {
        let table: Array2<f32> = fixed_random(Ix2(7, 5), 1).mapv(|v| v as f32);
        let mut e = Embedding::from_array(table.clone());
        e.quantize_rows();
        assert_eq!((e.vocab(), e.dim(), e.weight.value.len()), (7, 5, 0));
        let mut walked = Array2::zeros((0, 0));
        e.visit("", &mut |_, v| {
            walked = v.to_owned().into_dimensionality::<Ix2>().unwrap()
        });
        for (r, row) in table.rows().into_iter().enumerate() {
            let (scale, q) = crate::matmul::int8::quantize_symmetric(row.iter().copied());
            let want: Vec<f32> = q.iter().map(|&q| q as f32 * scale).collect();
            assert_eq!(walked.row(r).to_vec(), want);
        }
        assert!((&walked - &table).iter().all(|d| d.abs() < 0.01));
        let ids = [3u32, 0, 3, 6];
        let y = e.forward(&ids);
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(y.row(i), walked.row(id as usize));
        }
        e.backward(&ids, y.view());
        assert_eq!(e.weight.value, walked);
        assert_eq!(e.weight.grad.row(0), y.row(1));
        let mut f = Embedding::from_array(table);
        f.quantize_rows();
        f.visit_mut("", &mut |_, _| {});
        assert_eq!(f.weight.value, walked);
        assert_eq!(f.forward(&ids), y);
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
