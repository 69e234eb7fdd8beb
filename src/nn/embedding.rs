//! Embedding table: `y[i] = W[ids[i]]`; the backward scatter-adds into the rows that were used.

use crate::param::{join, Param2, ParamMut, Params};
use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayView1, ArrayView2, ArrayViewD, Axis, Zip};
use rand::Rng;
use rayon::prelude::*;

/// Columns per parallel task of the backward's scatter-add.
const COLUMN_BLOCK: usize = 64;

/// A lookup table of `[vocab, dim]` rows.
#[derive(Clone, Debug)]
pub struct Embedding<T> {
    /// `[vocab, dim]` (0 x 0 while the table is held narrow: [`Embedding::narrow_rows`])
    pub weight: Param2<T>,
    /// The table in int8 or bf16, in place of `weight`, for a model that is only run.
    narrow: Option<NarrowTable>,
    /// Set by [`Embedding::narrow_on_load`]: the next mutable walk (the load) narrows the table
    /// after it ([`Embedding::narrow_rows`]).
    narrow_on_load: Option<Precision>,
}

/// A table held in a narrow format, row-major.
#[derive(Clone, Debug)]
struct NarrowTable {
    rows: usize,
    dim: usize,
    values: NarrowValues,
}

#[derive(Clone, Debug)]
enum NarrowValues {
    /// Quantised per row (symmetric, `matmul::int8::quantize_symmetric`): value `q` of row `r`
    /// stands for `q * scales[r]`.
    Int8 { values: Vec<i8>, scales: Vec<f32> },
    /// Rounded to bf16 (to nearest even).
    Bf16(Vec<u16>),
}

impl NarrowTable {
    /// `rows` in `precision` (int8 or bf16).
    fn new<'a>(
        rows: impl ExactSizeIterator<Item = ArrayView1<'a, f32>>,
        dim: usize,
        precision: Precision,
    ) -> Self {
        let n = rows.len();
        let values = match precision {
            Precision::Int8 => {
                let (mut values, mut scales) = (Vec::with_capacity(n * dim), Vec::with_capacity(n));
                for row in rows {
                    let (scale, q) = crate::matmul::int8::quantize_symmetric(row.iter().copied());
                    values.extend(q);
                    scales.push(scale);
                }
                NarrowValues::Int8 { values, scales }
            }
            Precision::Bf16 | Precision::F32 => NarrowValues::Bf16(
                rows.flat_map(|r| r.into_iter().map(|&v| crate::bf16::from_f32(v)))
                    .collect(),
            ),
        };
        NarrowTable { rows: n, dim, values }
    }

    /// Row `r`, column `c`, widened.
    fn get(&self, r: usize, c: usize) -> f32 {
        match &self.values {
            NarrowValues::Int8 { values, scales } => values[r * self.dim + c] as f32 * scales[r],
            NarrowValues::Bf16(values) => crate::bf16::to_f32(values[r * self.dim + c]),
        }
    }

    /// The whole table widened.
    fn table<T: Scalar>(&self) -> Array2<T> {
        Array2::from_shape_fn((self.rows, self.dim), |(r, c)| T::c(self.get(r, c) as f64))
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
            narrow: None,
            narrow_on_load: None,
        }
    }

    /// For a model about to be filled from an int8 or bf16 directory: the walk that loads the
    /// table narrows it right after ([`Embedding::narrow_rows`]), so that a load never holds it
    /// in f32 beside the rest.
    pub fn narrow_on_load(&mut self, precision: Precision) {
        self.narrow_on_load = Some(precision);
    }

    /// Holds the table in `precision` and drops the f32 one (and its gradient): int8 with a
    /// scale a row, or bf16; f32 keeps it. For a model loaded from an int8 or bf16 directory,
    /// whose table is stored so (its f32 values are those of the file widened, so narrowing them
    /// again gives the file's values). A lookup widens the rows it reads; any walk of the
    /// parameters or backward pass gives the f32 table back first. f32 tables only (an f64
    /// model keeps its table).
    pub fn narrow_rows(&mut self, precision: Precision) {
        let Some(table) = T::view_f32(self.weight.value.view()) else {
            return;
        };
        if self.narrow.is_some() || precision.is_f32() {
            return;
        }
        self.narrow = Some(NarrowTable::new(
            table.rows().into_iter(),
            table.ncols(),
            precision,
        ));
        self.weight = Param2::new(Array2::zeros((0, 0)));
    }

    /// Gives a narrow table its f32 one back (and a zero gradient).
    fn restore(&mut self) {
        if let Some(t) = self.narrow.take() {
            self.weight = Param2::new(t.table());
        }
    }

    /// Rows of the table (ids are below it).
    pub fn vocab(&self) -> usize {
        match &self.narrow {
            Some(t) => t.rows,
            None => self.weight.value.nrows(),
        }
    }

    /// The width of a row.
    pub fn dim(&self) -> usize {
        match &self.narrow {
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
        if let Some(t) = &self.narrow {
            return Zip::from(y.rows_mut()).and(ids).par_for_each(|mut row, &id| {
                for (c, y) in row.iter_mut().enumerate() {
                    *y += T::c(t.get(id as usize, c) as f64);
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
        match &self.narrow {
            Some(t) => f(&join(prefix, "weight"), t.table::<T>().view().into_dyn()),
            None => f(&join(prefix, "weight"), self.weight.view_dyn()),
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.restore();
        f(&join(prefix, "weight"), self.weight.views_mut_dyn());
        if let Some(precision) = self.narrow_on_load.take() {
            self.narrow_rows(precision);
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

    /// A table held in int8 or bf16 looks rows up as their narrow values widened (int8: times
    /// the row's scale), walks as that table, and a mutable walk or a backward pass gives the f32
    /// table back.
    #[test]
    fn a_narrow_table_looks_up_walks_and_comes_back() {
        let table: Array2<f32> = fixed_random(Ix2(7, 5), 1).mapv(|v| v as f32);
        for precision in [Precision::Int8, Precision::Bf16] {
            let mut e = Embedding::from_array(table.clone());
            e.narrow_rows(precision);
            assert_eq!((e.vocab(), e.dim(), e.weight.value.len()), (7, 5, 0));
            let mut walked = Array2::zeros((0, 0));
            e.visit("", &mut |_, v| {
                walked = v.to_owned().into_dimensionality::<Ix2>().unwrap()
            });
            for (r, row) in table.rows().into_iter().enumerate() {
                let want: Vec<f32> = match precision {
                    Precision::Int8 => {
                        let (scale, q) = crate::matmul::int8::quantize_symmetric(row.iter().copied());
                        q.iter().map(|&q| q as f32 * scale).collect()
                    }
                    _ => row
                        .iter()
                        .map(|&v| crate::bf16::to_f32(crate::bf16::from_f32(v)))
                        .collect(),
                };
                assert_eq!(walked.row(r).to_vec(), want, "{precision}");
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
            let mut f = Embedding::from_array(table.clone());
            f.narrow_rows(precision);
            f.visit_mut("", &mut |_, _| {});
            assert_eq!(f.weight.value, walked);
            assert_eq!(f.forward(&ids), y);
            // f32 keeps the table
            f.narrow_rows(Precision::F32);
            assert_eq!(f.weight.value, walked);
        }
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
