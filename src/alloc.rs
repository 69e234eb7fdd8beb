//! A global allocator that keeps large freed blocks for reuse.
//!
//! A training step allocates and frees the same large activation buffers every time. The system
//! allocator hands blocks above 128 KiB back to the OS on free, so every step faulted in and
//! zeroed its buffers afresh (15% of a minilm step was the kernel clearing pages). This wrapper
//! rounds large requests up to one of four size classes per power of two (at most 25% slack) and
//! keeps freed blocks of each class in a free list, up to a total of [`CACHE_LIMIT`] bytes, so
//! from the second step on the buffers come back warm. Small requests go straight to the system.
//!
//! Batches of varying length (every real dataset) ask for a buffer of a slightly different size each
//! step, so a cache that only grew would end up holding a block of every size a buffer ever had
//! (3.4 GB of peak RSS training minilm-l6 on CoNLL-2003). A request its class cannot serve
//! therefore first frees cached blocks of the nearest other classes, as many bytes as it needs
//! (most likely the same buffer at last step's length): what the process holds grows only when
//! the cache is empty, so it stays near the largest step's live working set.
//!
//! The `gp-lite` binary installs it with `#[global_allocator]`; library users may do the same.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Requests at least this large are cached.
pub const MIN_CACHED: usize = 1 << 17;
/// Most bytes kept in free lists; beyond this, freed blocks go back to the system.
pub const CACHE_LIMIT: usize = 4 << 30;
const CLASSES: usize = 4 * 48;
const ALIGN: usize = 64;

/// The caching allocator (zero-sized; the state is global).
pub struct CachingAlloc;

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Mutex<Vec<usize>> = Mutex::new(Vec::new());
static FREE: [Mutex<Vec<usize>>; CLASSES] = [EMPTY; CLASSES];
static CACHED: AtomicUsize = AtomicUsize::new(0);

/// Size class of a request: 4 classes per power of two. Returns (class, block size).
fn class_of(size: usize) -> (usize, usize) {
    let p = usize::BITS as usize - 1 - size.leading_zeros() as usize; // floor(log2 size)
    let quarter = 1usize << (p - 2);
    let q = (size - (1 << p)).div_ceil(quarter); // 0..=4
    let block = (1 << p) + q * quarter;
    (4 * p + q, block)
}

/// A cached block of `class` (`block` bytes), if one is free.
fn take_cached(class: usize, block: usize) -> Option<*mut u8> {
    let p = FREE[class].lock().ok().and_then(|mut v| v.pop())?;
    CACHED.fetch_sub(block, Ordering::Relaxed);
    Some(p as *mut u8)
}

/// Gives cached blocks of classes other than `class` back to the system, nearest classes first,
/// until at least `bytes` bytes are freed or the cache is empty: a miss makes room for itself.
fn evict_near(class: usize, bytes: usize) {
    let mut freed = 0;
    for dist in 1..CLASSES {
        for c in [class.wrapping_sub(dist), class + dist] {
            if c >= CLASSES {
                continue;
            }
            while freed < bytes {
                let Some(p) = FREE[c].lock().ok().and_then(|mut v| v.pop()) else {
                    break;
                };
                let block = block_of_class(c);
                CACHED.fetch_sub(block, Ordering::Relaxed);
                // SAFETY: every cached pointer came from System with this block size and ALIGN.
                unsafe { System.dealloc(p as *mut u8, Layout::from_size_align_unchecked(block, ALIGN)) };
                freed += block;
            }
            if freed >= bytes || CACHED.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
    }
}

/// The block size of a class (the inverse of [`class_of`]).
fn block_of_class(class: usize) -> usize {
    let (p, q) = (class / 4, class % 4);
    (1 << p) + q * (1 << (p - 2))
}

/// A cached block of the class, or a fresh one from the system after making room for it.
/// `zero_bytes` > 0 asks for that many leading bytes cleared (a fresh system block is all zero).
unsafe fn alloc_block(class: usize, block: usize, zero_bytes: usize) -> *mut u8 {
    if let Some(p) = take_cached(class, block) {
        std::ptr::write_bytes(p, 0, zero_bytes);
        return p;
    }
    evict_near(class, block);
    let layout = Layout::from_size_align_unchecked(block, ALIGN);
    if zero_bytes > 0 {
        System.alloc_zeroed(layout)
    } else {
        System.alloc(layout)
    }
}

fn cacheable(layout: &Layout) -> bool {
    layout.size() >= MIN_CACHED && layout.align() <= ALIGN
}

unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !cacheable(&layout) {
            return System.alloc(layout);
        }
        let (class, block) = class_of(layout.size());
        alloc_block(class, block, 0)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !cacheable(&layout) {
            return System.alloc_zeroed(layout);
        }
        let (class, block) = class_of(layout.size());
        alloc_block(class, block, layout.size())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !cacheable(&layout) {
            return System.dealloc(ptr, layout);
        }
        let (class, block) = class_of(layout.size());
        if CACHED.fetch_add(block, Ordering::Relaxed) + block <= CACHE_LIMIT {
            if let Ok(mut v) = FREE[class].lock() {
                v.push(ptr as usize);
                return;
            }
        }
        CACHED.fetch_sub(block, Ordering::Relaxed);
        System.dealloc(ptr, Layout::from_size_align_unchecked(block, ALIGN));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        match (cacheable(&layout), cacheable(&new_layout)) {
            (false, false) => System.realloc(ptr, layout, new_size),
            (true, true) => {
                let ((class, block), (new_class, new_block)) = (class_of(layout.size()), class_of(new_size));
                if class == new_class {
                    return ptr; // same block
                }
                // A growing buffer (a Vec, a String): into a cached block of the new size if there
                // is one, else the system may move it without copying. The block it grows out of
                // goes back to the system: caching it would keep every size it passed through.
                let old = Layout::from_size_align_unchecked(block, ALIGN);
                match take_cached(new_class, new_block) {
                    Some(new) => {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        System.dealloc(ptr, old);
                        new
                    }
                    None => {
                        evict_near(new_class, new_block);
                        System.realloc(ptr, old, new_block)
                    }
                }
            }
            (true, false) => {
                let new = System.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, new_size);
                    let block = class_of(layout.size()).1;
                    System.dealloc(ptr, Layout::from_size_align_unchecked(block, ALIGN));
                }
                new
            }
            (false, true) => {
                let new = self.alloc(new_layout);
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size());
                    System.dealloc(ptr, layout);
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_the_request_with_at_most_a_quarter_slack() {
        for size in [
            MIN_CACHED,
            MIN_CACHED + 1,
            200_000,
            1 << 20,
            (1 << 20) + 1,
            3_000_000,
            123_456_789,
        ] {
            let (class, block) = class_of(size);
            assert!(block >= size && block <= size + size / 4 + 1, "{size} -> {block}");
            assert!(class < CLASSES);
            // Every size of the class maps to the same block.
            assert_eq!(class_of(block), (class, block));
        }
    }

    #[test]
    fn blocks_are_reused_and_zeroed() {
        let a = CachingAlloc;
        let layout = Layout::from_size_align(300_000, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            std::ptr::write_bytes(p, 7, layout.size());
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            assert!((0..layout.size()).all(|i| *q.add(i) == 0));
            a.dealloc(q, layout);
        }
    }

    #[test]
    fn block_of_class_inverts_class_of() {
        for size in [MIN_CACHED, 200_000, 1 << 20, 3_000_000, 123_456_789] {
            let (class, block) = class_of(size);
            assert_eq!(block_of_class(class), block, "{size}");
        }
    }

    #[test]
    fn a_buffer_whose_size_drifts_keeps_one_block_cached_not_one_per_size() {
        // the same activation at a different batch length each step: 24 sizes from 5 MB up by 8%
        let a = CachingAlloc;
        let sizes: Vec<usize> = (0..24)
            .map(|i| (5_000_000.0 * 1.08f64.powi(i)) as usize)
            .collect();
        let classes: Vec<usize> = sizes.iter().map(|&s| class_of(s).0).collect();
        unsafe {
            for _ in 0..3 {
                for &size in &sizes {
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    let p = a.alloc(layout);
                    *p = 1;
                    a.dealloc(p, layout);
                }
            }
        }
        let mut distinct = classes.clone();
        distinct.dedup();
        assert!(distinct.len() >= 8, "the sizes span {} classes", distinct.len());
        let held: usize = distinct.iter().map(|&c| FREE[c].lock().unwrap().len()).sum();
        assert!(held <= 1, "{held} blocks cached for one drifting buffer");
    }

    #[test]
    fn a_buffer_grown_again_and_again_reuses_one_cached_block() {
        // a Vec filled anew for every segment of a long text: 140 kB, grown to 600 kB, freed
        let a = CachingAlloc;
        let small = Layout::from_size_align(140_000, 8).unwrap();
        let big = Layout::from_size_align(600_000, 8).unwrap();
        let (small_class, _) = class_of(small.size());
        let (big_class, _) = class_of(big.size());
        let cached = |class: usize| FREE[class].lock().unwrap().len();
        unsafe {
            for _ in 0..20 {
                let p = a.alloc(small);
                *p = 1;
                let q = a.realloc(p, small, big.size());
                assert_eq!(*q, 1);
                a.dealloc(q, big);
            }
        }
        assert!(
            cached(big_class) <= 1,
            "{} blocks of 600 kB cached",
            cached(big_class)
        );
        assert!(
            cached(small_class) <= 1,
            "{} blocks of 140 kB cached",
            cached(small_class)
        );
    }
}
