//! Whole-buffer passes split over the rayon pool: zeroed and copied buffers, fills, bias rows
//! broadcast down a matrix, column sums.
//!
//! Each of these was a serial pass in the training step (zeroing every activation gradient and
//! every parameter gradient, writing the bias rows a product starts from, summing a bias
//! gradient): about a tenth of a `tiny` step's work ran on one thread while the others waited.
//! Every element is computed the same way whatever the number of threads (a column sum adds its
//! rows in order), so results are bit-identical across thread counts.

use crate::scalar::Scalar;
use ndarray::{
    Array, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Dimension, Zip,
};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per task: below two of these a pass stays on the calling thread.
pub(crate) const CHUNK: usize = 1 << 14;

/// Rows per task for a matrix with rows of `width` elements (at least one).
fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

/// `a[..] = v`.
pub fn fill<T: Copy + Send + Sync>(a: &mut [T], v: T) {
    if a.len() < 2 * CHUNK {
        return a.fill(v);
    }
    a.par_chunks_mut(CHUNK).for_each(|c| c.fill(v));
}

/// A new buffer of `len` elements, written by `init(start, block)` for blocks of [`CHUNK`]
/// elements in parallel (the block's k-th element is element `start + k`; `start` is a multiple
/// of `CHUNK`, and below two chunks one call writes the whole buffer). `init` writes its block
/// through [`Block::push`] and [`Block::fill`]; a block left short panics (no element is ever
/// read before it is written, whatever `init` does).
pub(crate) fn build<T: Send>(len: usize, init: impl Fn(usize, &mut Block<T>) + Sync) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    let spare = &mut v.spare_capacity_mut()[..len];
    let write = |start: usize, slots: &mut [MaybeUninit<T>]| {
        let mut block = Block { slots, written: 0 };
        init(start, &mut block);
        assert_eq!(
            block.written,
            block.slots.len(),
            "parallel::build: the block at {start} was left short"
        );
    };
    if len < 2 * CHUNK {
        write(0, spare);
    } else {
        spare
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, c)| write(i * CHUNK, c));
    }
    // SAFETY: every block of `spare` was written in full: `Block` writes its slots in order and
    // counts them, and a block whose count fell short panicked above (the vector then drops
    // with length 0, leaking what was written).
    unsafe { v.set_len(len) };
    v
}

/// One block of a buffer [`build`] writes: slots written in order, counted.
pub(crate) struct Block<'a, T> {
    slots: &'a mut [MaybeUninit<T>],
    written: usize,
}

impl<T> Block<'_, T> {
    /// Writes the next element; panics when the block is full.
    #[inline]
    pub fn push(&mut self, v: T) {
        self.slots[self.written].write(v);
        self.written += 1;
    }

    /// Writes `v` into every element not written yet.
    pub fn fill(&mut self, v: T)
    where
        T: Clone,
    {
        for s in &mut self.slots[self.written..] {
            s.write(v.clone());
        }
        self.written = self.slots.len();
    }

    /// Elements still to write.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.slots.len() - self.written
    }
}

/// An array of zeros, written in parallel (`Array::zeros` zeroes on the calling thread).
pub fn zeros<T: Scalar, D: Dimension>(dim: D) -> Array<T, D> {
    let v = build(dim.size(), |_, block| block.fill(T::zero()));
    Array::from_shape_vec(dim, v).expect("one element per index")
}

/// A copy of `x` in standard layout, rows copied in parallel.
pub fn copy<T: Scalar>(x: ArrayView2<T>) -> Array2<T> {
    let mut y = Array2::uninit(x.raw_dim());
    Zip::from(y.rows_mut())
        .and(x.rows())
        .into_par_iter()
        .with_min_len(rows_per_task(x.ncols()))
        .for_each(|(y, x)| {
            x.assign_to(y);
        });
    // SAFETY: every row of `y` was written from the same row of `x`.
    unsafe { y.assume_init() }
}

/// `[rows, row.len()]` with `row` in every row (the bias a product adds to), written in parallel.
pub fn broadcast_rows<T: Scalar>(row: ArrayView1<T>, rows: usize) -> Array2<T> {
    let mut y = Array2::uninit((rows, row.len()));
    y.axis_iter_mut(Axis(0))
        .into_par_iter()
        .with_min_len(rows_per_task(row.len()))
        .for_each(|y| {
            row.assign_to(y);
        });
    // SAFETY: every row of `y` was written.
    unsafe { y.assume_init() }
}

/// `y[i, ..] = row` for every row of `y`, in parallel.
pub fn assign_rows<T: Scalar>(mut y: ArrayViewMut2<T>, row: ArrayView1<T>) {
    let min = rows_per_task(y.ncols());
    y.axis_iter_mut(Axis(0))
        .into_par_iter()
        .with_min_len(min)
        .for_each(|mut y| y.assign(&row));
}

/// `out[j] += Σ_i x[i, j]`, each column's rows added in order 0, 1, ...: the same result as a
/// serial `x.sum_axis(Axis(0))` added to `out`, bit for bit, for any thread count. One block of
/// columns per thread.
pub fn column_sums_acc<T: Scalar>(x: ArrayView2<T>, mut out: ArrayViewMut1<T>) {
    assert_eq!(x.ncols(), out.len(), "column_sums_acc: width differs");
    let (rows, cols) = x.dim();
    let threads = rayon::current_num_threads();
    let width = if threads == 1 || rows * cols < 2 * CHUNK {
        cols
    } else {
        cols.div_ceil(threads).next_multiple_of(16)
    };
    let add_sums = |mut out: ArrayViewMut1<T>, x: ArrayView2<T>| {
        let mut s = Array1::zeros(x.ncols());
        for r in x.rows() {
            s += &r;
        }
        out += &s;
    };
    if width >= cols {
        return add_sums(out, x);
    }
    out.axis_chunks_iter_mut(Axis(0), width)
        .into_par_iter()
        .zip(x.axis_chunks_iter(Axis(1), width).into_par_iter())
        .for_each(|(o, xb)| add_sums(o, xb));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::fixed_random;
    use ndarray::{s, Ix2, Ix4};

    /// `build` writes through counted blocks: an `init` that writes nothing, or too little, or
    /// too much panics instead of handing out unwritten elements (`build::<String>(n, |_, _|
    /// {})` was a vector of uninitialised strings, from safe code). Below and above the
    /// parallel threshold.
    #[test]
    fn build_refuses_blocks_left_short() {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        for len in [1, 5, 3 * CHUNK + 7] {
            let nothing = catch_unwind(|| build::<String>(len, |_, _| {}));
            assert!(nothing.is_err(), "{len}: a block written not at all was accepted");
            let short = catch_unwind(|| {
                build::<String>(len, |start, b| {
                    if start == 0 {
                        // all but the last element of the first block
                        for _ in 1..b.remaining() {
                            b.push("x".into());
                        }
                    } else {
                        b.fill(String::new());
                    }
                })
            });
            assert!(short.is_err(), "{len}: a block written in part was accepted");
            let over = catch_unwind(AssertUnwindSafe(|| {
                build::<u32>(len, |_, b| {
                    b.fill(1);
                    b.push(2);
                })
            }));
            assert!(over.is_err(), "{len}: a write past the block was accepted");
            // Blocks written in full: every element as written, in order.
            let v = build::<String>(len, |start, b| {
                let mut i = start;
                while b.remaining() > 0 {
                    b.push(i.to_string());
                    i += 1;
                }
            });
            assert!(v.iter().enumerate().all(|(i, s)| *s == i.to_string()));
        }
    }

    /// Each helper against its serial definition, on sizes below and above the parallel
    /// threshold, at 1 and 3 threads (bit-identical).
    #[test]
    fn helpers_match_their_serial_definitions() {
        for threads in [1, 3] {
            let pool = crate::matmul::thread_pool(threads).unwrap();
            pool.install(|| {
                for (rows, cols) in [(3, 5), (700, 130), (40_000, 3)] {
                    let x: Array2<f32> = fixed_random(Ix2(rows, cols), 7).mapv(|v| v as f32);
                    // zeros, over a used block first (the allocator may hand it back)
                    drop(x.mapv(|v| v + 1.0));
                    assert!(zeros::<f32, _>(Ix2(rows, cols)).iter().all(|&v| v == 0.0));
                    assert_eq!(copy(x.view()), x);
                    // a strided view copies into standard layout
                    let t = x.t();
                    let ct = copy(t);
                    assert!(ct.is_standard_layout());
                    assert_eq!(ct, t);
                    let row = x.row(rows / 2);
                    let b = broadcast_rows(row, rows);
                    assert!(b.rows().into_iter().all(|r| r == row));
                    let mut y = Array2::zeros((rows, cols));
                    assign_rows(y.view_mut(), row);
                    assert_eq!(y, b);
                    let mut out = Array1::from_elem(cols, 0.5f32);
                    column_sums_acc(x.view(), out.view_mut());
                    let want = x.sum_axis(Axis(0)) + 0.5;
                    assert_eq!(out, want, "column sums {rows} x {cols}, {threads} threads");
                    let mut v = x.clone().into_raw_vec_and_offset().0;
                    fill(&mut v, 2.5);
                    assert!(v.iter().all(|&e| e == 2.5));
                }
                let z = zeros::<f64, _>(Ix4(2, 3, 70, 90));
                assert_eq!(z.dim(), (2, 3, 70, 90));
                assert!(z.slice(s![1, 2, .., ..]).iter().all(|&v| v == 0.0));
            });
        }
    }
}
