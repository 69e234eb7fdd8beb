//! Lockstep teams: every thread of the pool runs one closure, the stages of a computation
//! separated by spin barriers, each thread writing its own block of shared buffers.
//!
//! Batch-1 inference is a chain of small steps (a product of 50 rows, a softmax per head, a
//! LayerNorm), each worth tens of microseconds. As rayon regions each one wakes the pool's
//! other threads and parks them again; on 2 threads a fifth of an int8 minilm forward went to
//! that (docs/speed.md), and a second thread made it no faster. A team instead starts once per
//! layer ([`rayon::broadcast`]) and its threads meet at barriers that spin (a barrier is a few
//! hundred nanoseconds when the threads are running; a rayon region's wake-up is microseconds).
//!
//! A pool takes part only where it was built by `crate::matmul::thread_pool_builder`, which
//! gives its threads one shared "team in use" flag ([`enrol`]): [`lockstep`] runs nothing and
//! returns false (the caller goes on with its rayon path) on one thread, outside such a pool,
//! and while another team of the pool runs (two host threads calling into one model). That
//! keeps a thread from spinning in one team while the thread it waits for spins in another.
//!
//! A team needs every thread of the pool. Where a pool thread is running another caller's job
//! when the team forms (two host threads calling into one model at once), the team's other
//! threads wait, yielding their cores, until that job ends and the thread joins: calls overlap
//! less than on the rayon path, never deadlock. A host serving concurrent requests does better
//! with a pool per request stream, or with batches.

use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Spins before a waiting thread starts yielding its core (a descheduled teammate).
const SPINS_BEFORE_YIELD: u32 = 1 << 14;

thread_local! {
    /// The "team in use" flag of the pool this thread works for.
    static POOL_TEAM: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// `builder` with threads that can form lockstep teams (one flag shared by the pool's threads).
pub fn enrol(builder: rayon::ThreadPoolBuilder) -> rayon::ThreadPoolBuilder {
    let flag = Arc::new(AtomicBool::new(false));
    builder.start_handler(move |_| POOL_TEAM.with_borrow_mut(|t| *t = Some(flag.clone())))
}

/// One thread's place in a team: its index, the team's size, and the barrier they share.
pub struct Part<'a> {
    /// This thread's place, `0..count`.
    pub index: usize,
    /// The number of threads in the team.
    pub count: usize,
    barrier: &'a SpinBarrier,
}

impl Part<'_> {
    /// Waits until every thread of the team has reached this point; what each wrote before
    /// is visible to all after.
    pub fn sync(&self) {
        self.barrier.wait();
    }

    /// This thread's share of `0..n`, in blocks that are multiples of `align` (the last one
    /// shorter; empty where `n` runs out).
    pub fn block(&self, n: usize, align: usize) -> Range<usize> {
        let w = n.div_ceil(self.count).next_multiple_of(align.max(1));
        (self.index * w).min(n)..((self.index + 1) * w).min(n)
    }
}

/// Runs `f` once on every thread of the current pool, as one team, and returns true; returns
/// false without running it where no team can form (see the module's comment).
pub fn lockstep(f: impl Fn(&Part) + Sync) -> bool {
    let count = rayon::current_num_threads();
    let Some(flag) = POOL_TEAM.with_borrow(|t| t.clone()) else {
        return false;
    };
    if count < 2 || flag.swap(true, Ordering::Acquire) {
        return false;
    }
    // Frees the flag however the broadcast ends (a panic in `f` included).
    struct Release(Arc<AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Release);
        }
    }
    let _release = Release(flag);
    let barrier = SpinBarrier::new(count);
    rayon::broadcast(|ctx| {
        let part = Part {
            index: ctx.index(),
            count,
            barrier: &barrier,
        };
        // A thread that panics would leave its teammates spinning at the next barrier: it
        // marks the barrier broken first, and they panic there too.
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&part))) {
            barrier.broken.store(true, Ordering::Release);
            std::panic::resume_unwind(panic);
        }
    });
    true
}

/// A barrier for `count` running threads: the last to arrive opens the next generation.
struct SpinBarrier {
    count: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    broken: AtomicBool,
}

impl SpinBarrier {
    fn new(count: usize) -> SpinBarrier {
        SpinBarrier {
            count,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.count {
            // The reset is ordered before the release below, so the next generation's
            // arrivals count from zero.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            assert!(
                !self.broken.load(Ordering::Acquire),
                "lockstep: a thread of the team panicked"
            );
            if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A row-major matrix that the threads of a team read whole and write in disjoint blocks,
/// the two separated by [`Part::sync`].
pub struct Shared<'a, T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    row_stride: usize,
    _borrow: PhantomData<&'a mut T>,
}

// SAFETY: a Shared is a `&mut` matrix handed to a team; the accessors' contracts (disjoint
// blocks, writes and reads separated by barriers) are what makes sharing it sound.
unsafe impl<T: Send> Send for Shared<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    /// `m`, which must be in standard (row-major, forward) layout: blocks of distinct rows
    /// and columns are then distinct memory.
    pub fn new(mut m: ArrayViewMut2<'a, T>) -> Shared<'a, T> {
        let (rows, cols) = m.dim();
        assert!(
            m.is_standard_layout(),
            "lockstep: a shared matrix must be in standard layout"
        );
        Shared {
            ptr: m.as_mut_ptr(),
            rows,
            cols,
            row_stride: m.strides()[0].max(0) as usize,
            _borrow: PhantomData,
        }
    }

    /// `(rows, cols)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The whole matrix, to read.
    ///
    /// # Safety
    /// No thread writes any of it until the caller's next [`Part::sync`].
    pub unsafe fn view(&self) -> ArrayView2<'_, T> {
        // SAFETY: the pointer and strides come from a live `&mut` view of this shape (`new`);
        // the caller guarantees that no thread writes while this view is used.
        unsafe { ArrayView2::from_shape_ptr((self.rows, self.cols).strides((self.row_stride, 1)), self.ptr) }
    }

    /// The block `rows` x `cols`, to write.
    ///
    /// # Safety
    /// No other view of any element of the block is used while this one lives (on this thread
    /// or another), and no other thread reads or writes the block until the caller's next
    /// [`Part::sync`].
    pub unsafe fn block_mut(&self, rows: Range<usize>, cols: Range<usize>) -> ArrayViewMut2<'_, T> {
        assert!(
            rows.start <= rows.end && rows.end <= self.rows,
            "lockstep: rows out of range"
        );
        assert!(
            cols.start <= cols.end && cols.end <= self.cols,
            "lockstep: cols out of range"
        );
        let (r, c) = (rows.end - rows.start, cols.end - cols.start);
        if r == 0 || c == 0 {
            // no element: no pointer to offset (the start may lie past the buffer's end)
            return ArrayViewMut2::from_shape((r, c), &mut []).expect("an empty view");
        }
        // SAFETY: the block lies inside the matrix (checked above) and is not empty; the caller
        // guarantees that no other view of it is used while this one lives.
        unsafe {
            let first = self.ptr.add(rows.start * self.row_stride + cols.start);
            ArrayViewMut2::from_shape_ptr((r, c).strides((self.row_stride, 1)), first)
        }
    }

    /// Rows `rows`, every column, to write (see [`Shared::block_mut`]).
    ///
    /// # Safety
    /// As [`Shared::block_mut`].
    pub unsafe fn rows_mut(&self, rows: Range<usize>) -> ArrayViewMut2<'_, T> {
        // SAFETY: the caller's guarantee is block_mut's.
        unsafe { self.block_mut(rows, 0..self.cols) }
    }

    /// Columns `cols`, every row, to write (see [`Shared::block_mut`]).
    ///
    /// # Safety
    /// As [`Shared::block_mut`].
    pub unsafe fn cols_mut(&self, cols: Range<usize>) -> ArrayViewMut2<'_, T> {
        // SAFETY: the caller's guarantee is block_mut's.
        unsafe { self.block_mut(0..self.rows, cols) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn pool(threads: usize) -> rayon::ThreadPool {
        enrol(rayon::ThreadPoolBuilder::new().num_threads(threads))
            .build()
            .unwrap()
    }

    #[test]
    fn stages_see_each_others_blocks_after_a_barrier() {
        for threads in [2, 3, 4] {
            let mut m = Array2::<usize>::zeros((7, 10));
            let mut sums = Array2::<usize>::zeros((7, 1));
            let ran = pool(threads).install(|| {
                let (a, s) = (Shared::new(m.view_mut()), Shared::new(sums.view_mut()));
                lockstep(|p| {
                    for round in 0..50 {
                        let cols = p.block(10, 1);
                        // SAFETY: each thread writes its own columns; reads follow a barrier.
                        unsafe { a.cols_mut(cols.clone()).fill(round * 100 + p.index) };
                        p.sync();
                        let rows = p.block(7, 1);
                        // SAFETY: the whole matrix is read between two barriers; each thread
                        // writes its own rows of `sums`.
                        unsafe {
                            let v = a.view();
                            for r in rows.clone() {
                                s.rows_mut(r..r + 1)[[0, 0]] = v.row(r).sum();
                            }
                        }
                        p.sync();
                    }
                })
            });
            assert!(ran);
            // the last round: every column holds 4900 + the index of the thread that owns it
            let w = 10usize.div_ceil(threads);
            let want: usize = (0..10).map(|j| 4900 + j / w).sum();
            assert!(sums.iter().all(|&s| s == want), "{threads} threads: {sums:?}");
        }
    }

    #[test]
    fn no_team_on_one_thread_outside_an_enrolled_pool_or_inside_a_running_team() {
        assert!(!pool(1).install(|| lockstep(|_| unreachable!())));
        let plain = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        assert!(!plain.install(|| lockstep(|_| unreachable!())));
        let nested = AtomicUsize::new(0);
        assert!(pool(2).install(|| lockstep(|_| {
            if !lockstep(|_| unreachable!()) {
                nested.fetch_add(1, Ordering::Relaxed);
            }
        })));
        assert_eq!(nested.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_panic_in_one_thread_ends_the_team_instead_of_hanging_it() {
        let p = pool(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.install(|| {
                lockstep(|part| {
                    assert!(part.index != 1, "planted");
                    part.sync();
                })
            })
        }));
        assert!(r.is_err());
        // the pool's flag was freed: a team forms again
        assert!(p.install(|| lockstep(|part| part.sync())));
    }

    #[test]
    fn blocks_cover_the_range_aligned() {
        let b = SpinBarrier::new(3);
        let parts: Vec<_> = (0..3)
            .map(|index| {
                Part {
                    index,
                    count: 3,
                    barrier: &b,
                }
                .block(100, 16)
            })
            .collect();
        assert_eq!(parts, vec![0..48, 48..96, 96..100]);
    }
}
