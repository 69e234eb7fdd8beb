//! A global allocator that keeps large freed blocks for reuse.
//!
//! A training step allocates and frees the same large activation buffers every time. The system
//! allocator hands blocks above 128 KiB back to the OS on free, so every step faulted in and
//! zeroed its buffers afresh (15% of a minilm step was the kernel clearing pages). This wrapper
//! rounds large requests up to one of four size classes per power of two (at most 25% slack) and
//! keeps freed blocks of each class in a free list, up to a total of [`CACHE_LIMIT`] bytes, so
//! from the second step on the buffers come back warm. Small requests, and requests above
//! [`CACHE_LIMIT`] (which the cache could never hold), go straight to the system.
//!
//! Batches of varying length (every real dataset) ask for a buffer of a slightly different size each
//! step, so a cache that only grew would end up holding a block of every size a buffer ever had
//! (3.4 GB of peak RSS training minilm-l6 on CoNLL-2003). A request its class cannot serve
//! therefore first frees cached blocks of the nearest other classes, as many bytes as it needs
//! (most likely the same buffer at last step's length): what the process holds grows only when
//! the cache is empty, so it stays near the largest step's live working set.
//!
//! A free list is linked through the cached blocks themselves (each block's first word holds the
//! address of the next): pushing and popping allocate nothing, so no allocation ever happens
//! while a list's lock is held. (The lists were `Vec`s: a list outgrowing 8,192 entries asked
//! this allocator for a 128 KiB buffer while holding its own lock, and the thread waited for
//! itself.) Nothing here panics or unwinds, as `GlobalAlloc` requires.
//!
//! The `gp-lite` binary installs it with `#[global_allocator]`; library users may do the same.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Requests at least this large are cached.
pub const MIN_CACHED: usize = 1 << 17;
/// Most bytes kept in free lists; beyond this, freed blocks go back to the system. Also the
/// largest request that is cached (the block of the last class): larger ones go to the system.
pub const CACHE_LIMIT: usize = 4 << 30;
/// Classes 0 ..= 4 log2(CACHE_LIMIT): the last one's block is CACHE_LIMIT. (Classes below
/// `4 log2(MIN_CACHED)` stay empty; indexing by `4 p + q` keeps [`class_of`] two shifts.)
const CLASSES: usize = 4 * CACHE_LIMIT.trailing_zeros() as usize + 1;
const ALIGN: usize = 64;
const _: () = assert!(CACHE_LIMIT.is_power_of_two() && MIN_CACHED.is_power_of_two());
// Every block size is a multiple of ALIGN (a quarter of a power of two >= MIN_CACHED) and at most
// CACHE_LIMIT, far below isize::MAX: the system layout of every block is valid (see
// `system_layout`).
const _: () = assert!((MIN_CACHED / 4).is_multiple_of(ALIGN) && CACHE_LIMIT < isize::MAX as usize / 2);

/// The caching allocator (zero-sized; the state is global).
pub struct CachingAlloc;

/// The free blocks of one class: `head` is the address of the first (0: none), and each block's
/// first word holds the address of the next.
struct FreeList {
    head: usize,
    len: usize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Mutex<FreeList> = Mutex::new(FreeList { head: 0, len: 0 });
static FREE: [Mutex<FreeList>; CLASSES] = [EMPTY; CLASSES];
static CACHED: AtomicUsize = AtomicUsize::new(0);

/// The free list of `class`, locked. No code panics while holding one, so a poisoned lock (which
/// would need a panic) still holds a consistent list.
fn free_list(class: usize) -> MutexGuard<'static, FreeList> {
    FREE[class].lock().unwrap_or_else(|p| p.into_inner())
}

impl FreeList {
    /// Adds a block.
    ///
    /// # Safety
    /// `p` is a block of this list's class, aligned to ALIGN, owned by no one else from now on.
    unsafe fn push(&mut self, p: *mut u8) {
        // SAFETY: the block has at least MIN_CACHED bytes (more than a word) and is ALIGN-aligned
        // (so aligned for usize), and no one else reads or writes it (the caller's contract).
        unsafe { (p as *mut usize).write(self.head) };
        self.head = p as usize;
        self.len += 1;
    }

    /// Takes a block, if there is one.
    fn pop(&mut self) -> Option<*mut u8> {
        if self.head == 0 {
            return None;
        }
        let p = self.head as *mut u8;
        // SAFETY: `head` is a block pushed by `push`, whose first word holds the next address; no
        // one else reads or writes a cached block.
        self.head = unsafe { (p as *const usize).read() };
        self.len -= 1;
        Some(p)
    }
}

/// Size class of a cacheable request (MIN_CACHED ..= CACHE_LIMIT bytes): 4 classes per power of
/// two. Returns (class, block size); the class is below CLASSES.
fn class_of(size: usize) -> (usize, usize) {
    debug_assert!((MIN_CACHED..=CACHE_LIMIT).contains(&size));
    let p = usize::BITS as usize - 1 - size.leading_zeros() as usize; // floor(log2 size)
    let quarter = 1usize << (p - 2);
    let q = (size - (1 << p)).div_ceil(quarter); // 0..=4
    let block = (1 << p) + q * quarter;
    (4 * p + q, block)
}

/// The layout asked of the system for a block of `block` bytes: `2 ALIGN` bytes more, at the
/// system's own alignment, so that the block can start at an ALIGN boundary with the system's
/// address stored in the word before it ([`system_block`]).
///
/// Why not ask for ALIGN directly: the system allocator clears an over-aligned zeroed request
/// itself (Rust's `System` calls `posix_memalign` and then writes zeros), which touches every
/// page, where `calloc` hands out fresh pages untouched. Model parameters' gradients (as large
/// as the weights) are allocated zeroed and never written when a model is only run, so with
/// ALIGN-aligned requests an inference process held them all in memory (91 MB of the 338 MB
/// peak RSS of predicting with minilm).
fn system_layout(block: usize) -> Layout {
    // SAFETY: 16 is a power of two and `block + 2 ALIGN` (a class's size is at most CACHE_LIMIT)
    // is far below isize::MAX (the constants' assertions above).
    unsafe { Layout::from_size_align_unchecked(block + 2 * ALIGN, 16) }
}

/// A fresh block of `block` bytes from the system, ALIGN-aligned, all zero when `zeroed`
/// (null if the system has none).
///
/// # Safety
/// `block` is a class's block size.
unsafe fn system_block(block: usize, zeroed: bool) -> *mut u8 {
    // SAFETY: `system_layout` is valid and of nonzero size.
    let raw = unsafe {
        if zeroed {
            System.alloc_zeroed(system_layout(block))
        } else {
            System.alloc(system_layout(block))
        }
    };
    if raw.is_null() {
        return raw;
    }
    // The first ALIGN boundary at least a word past `raw`: `raw + 8 <= p` and
    // `p + block <= raw + 8 + ALIGN - 1 + block < raw + block + 2 ALIGN`, inside the allocation.
    let p = (raw as usize + size_of::<usize>()).next_multiple_of(ALIGN) as *mut u8;
    // SAFETY: the word before `p` lies inside the allocation (above) and is word-aligned (`p` is
    // ALIGN-aligned); no one else has the block yet.
    unsafe { (p as *mut usize).sub(1).write(raw as usize) };
    p
}

/// A block from [`system_block`] moved to one of `new_block` bytes by the system's `realloc`
/// (which may remap its pages instead of copying them), its first `keep` bytes kept; null, with
/// `p` still valid, if the system has no room.
///
/// # Safety
/// `p` came from `system_block(block, _)`; `new_block` is a class's block size; `keep <= block`
/// and `keep <= new_block`.
unsafe fn grow_system_block(p: *mut u8, block: usize, new_block: usize, keep: usize) -> *mut u8 {
    // SAFETY: the word before `p` holds the system's address (`system_block`).
    let raw = unsafe { (p as *const usize).sub(1).read() } as *mut u8;
    let offset = p as usize - raw as usize;
    // SAFETY: `raw` is System's allocation of `system_layout(block)`, and the new size is
    // nonzero and far below isize::MAX.
    let new_raw = unsafe { System.realloc(raw, system_layout(block), system_layout(new_block).size()) };
    if new_raw.is_null() {
        return new_raw;
    }
    let new = (new_raw as usize + size_of::<usize>()).next_multiple_of(ALIGN) as *mut u8;
    // SAFETY: realloc kept the first `offset + keep` bytes (at most the old size), so the data
    // is at `new_raw + offset`; both ranges lie inside the new allocation (`new + keep` and
    // `new_raw + offset + keep` are at most `new_raw + 2 ALIGN + keep`), and `copy` allows
    // overlap. The word before `new` is inside it too (`system_block`).
    unsafe {
        std::ptr::copy(new_raw.add(offset), new, keep);
        (new as *mut usize).sub(1).write(new_raw as usize);
    }
    new
}

/// Gives a block from [`system_block`] back to the system.
///
/// # Safety
/// `p` came from `system_block(block, _)` with the same `block`, and is given up.
unsafe fn free_system_block(p: *mut u8, block: usize) {
    // SAFETY: `system_block` wrote the system's address in the word before `p`, and no block's
    // user writes before its start.
    let raw = unsafe { (p as *const usize).sub(1).read() } as *mut u8;
    // SAFETY: `raw` is what System returned for `system_layout(block)`.
    unsafe { System.dealloc(raw, system_layout(block)) };
}

/// A cached block of `class` (`block` bytes), if one is free.
fn take_cached(class: usize, block: usize) -> Option<*mut u8> {
    let p = free_list(class).pop()?;
    CACHED.fetch_sub(block, Ordering::Relaxed);
    Some(p)
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
                // The lock is released at the end of this statement, before the system call.
                let Some(p) = free_list(c).pop() else {
                    break;
                };
                let block = block_of_class(c);
                CACHED.fetch_sub(block, Ordering::Relaxed);
                // SAFETY: every cached block came from `system_block` with its class's size.
                unsafe { free_system_block(p, block) };
                freed += block;
            }
            if freed >= bytes || CACHED.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
    }
}

/// Gives every cached block back to the system: for a process whose large buffers will not
/// come back in the same sizes (a model just loaded and packed, whose f32 copies were dropped).
/// Harmless where the allocator is not installed (the lists are empty).
pub fn release_cached() {
    for class in class_of(MIN_CACHED).0..CLASSES {
        let block = block_of_class(class);
        while let Some(p) = take_cached(class, block) {
            // SAFETY: a cached block, from `system_block` with its class's size, now ours.
            unsafe { free_system_block(p, block) };
        }
    }
}

/// The block size of a class (the inverse of [`class_of`]; classes of cached blocks only, from
/// `class_of(MIN_CACHED)` on: below class 8 the formula would shift by a negative amount).
fn block_of_class(class: usize) -> usize {
    let (p, q) = (class / 4, class % 4);
    (1 << p) + q * (1 << (p - 2))
}

/// A cached block of the class, or a fresh one from the system after making room for it.
/// `zero_bytes` > 0 asks for that many leading bytes cleared (a fresh system block is all zero).
///
/// # Safety
/// `zero_bytes <= block`.
unsafe fn alloc_block(class: usize, block: usize, zero_bytes: usize) -> *mut u8 {
    if let Some(p) = take_cached(class, block) {
        // SAFETY: the cached block has `block` bytes, `zero_bytes <= block` (the caller's
        // contract), and it was taken off its free list, so it is ours alone.
        unsafe { std::ptr::write_bytes(p, 0, zero_bytes) };
        return p;
    }
    evict_near(class, block);
    // SAFETY: `block` is the class's block size.
    unsafe { system_block(block, zero_bytes > 0) }
}

/// Whether a request goes through the cache: large (and not too large), alignment at most ALIGN.
fn cacheable(layout: &Layout) -> bool {
    (MIN_CACHED..=CACHE_LIMIT).contains(&layout.size()) && layout.align() <= ALIGN
}

// SAFETY: every block handed out is either the system's answer to the caller's layout (requests
// that are not cacheable) or a block of the request's class (at least the requested size, ALIGN
// >= the requested alignment), owned by one caller at a time: a freed block goes back to the
// system or onto one free list, and `pop` hands each pushed block out once.
unsafe impl GlobalAlloc for CachingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !cacheable(&layout) {
            // SAFETY: `layout` has a nonzero size (GlobalAlloc::alloc's contract, passed on).
            return unsafe { System.alloc(layout) };
        }
        let (class, block) = class_of(layout.size());
        // SAFETY: nothing to clear (0 <= block).
        unsafe { alloc_block(class, block, 0) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !cacheable(&layout) {
            // SAFETY: `layout` has a nonzero size (the caller's contract, passed on).
            return unsafe { System.alloc_zeroed(layout) };
        }
        let (class, block) = class_of(layout.size());
        // SAFETY: the request's size is at most its class's block (`class_of`).
        unsafe { alloc_block(class, block, layout.size()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !cacheable(&layout) {
            // SAFETY: a request that is not cacheable was served by System with this very
            // layout (`alloc`, `alloc_zeroed`, `realloc` all hand such layouts to System).
            return unsafe { System.dealloc(ptr, layout) };
        }
        let (class, block) = class_of(layout.size());
        if CACHED.fetch_add(block, Ordering::Relaxed) + block <= CACHE_LIMIT {
            // SAFETY: `ptr` was handed out for a layout of the same size, hence the same class:
            // a block of `class`, ALIGN-aligned, which the caller gives up.
            unsafe { free_list(class).push(ptr) };
            return;
        }
        CACHED.fetch_sub(block, Ordering::Relaxed);
        // SAFETY: every block of a cacheable request comes from `system_block` with its class's
        // size, and the caller gives it up.
        unsafe { free_system_block(ptr, block) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to `layout.align()`, does not
        // overflow isize (GlobalAlloc::realloc's contract), and the alignment is `layout`'s.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let keep = layout.size().min(new_size);
        match (cacheable(&layout), cacheable(&new_layout)) {
            // SAFETY: a block System allocated with `layout` (see `dealloc`); `new_size` is
            // nonzero and fits isize (the caller's contract, passed on).
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                let ((class, block), (new_class, new_block)) = (class_of(layout.size()), class_of(new_size));
                if class == new_class {
                    return ptr; // same block
                }
                // A growing buffer (a Vec, a String): into a cached block of the new size if there
                // is one, else the system may move it without copying. The block it grows out of
                // goes back to the system: caching it would keep every size it passed through.
                match take_cached(new_class, new_block) {
                    // SAFETY: `ptr` holds at least `keep` bytes (the old size) and `new` at least
                    // `keep` (its block >= new_size); `new` came off a free list, so it is a
                    // different block from `ptr`, which came from `system_block(block, _)`.
                    Some(new) => unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, keep);
                        free_system_block(ptr, block);
                        new
                    },
                    None => {
                        evict_near(new_class, new_block);
                        // SAFETY: `ptr` came from `system_block(block, _)`; `new_block` is a
                        // class's block size.
                        unsafe { grow_system_block(ptr, block, new_block, keep) }
                    }
                }
            }
            // Out of the cached sizes, smaller or larger: a block of the system's.
            (true, false) => {
                // SAFETY: `new_layout` is valid (above) and of nonzero size (the caller's
                // contract).
                let new = unsafe { System.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks hold at least `keep` bytes and are distinct (`new` is
                    // fresh); `ptr` came from `system_block` with its class's size.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, keep);
                        free_system_block(ptr, class_of(layout.size()).1);
                    }
                }
                new
            }
            (false, true) => {
                // SAFETY: as in `(true, false)`.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks hold at least `keep` bytes and are distinct (`new` is
                    // fresh); `ptr` was allocated by System with `layout` (not cacheable).
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, keep);
                        System.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;

    /// The blocks cached in `class`.
    fn cached(class: usize) -> usize {
        free_list(class).len
    }

    /// Every test here uses the global free lists: one at a time, each starting from an empty
    /// cache, so that counts are exact.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: Mutex<()> = Mutex::new(());
        let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        release_cached();
        assert_eq!(CACHED.load(Ordering::Relaxed), 0);
        guard
    }

    /// This process's resident memory, in bytes (Linux).
    fn resident() -> Option<usize> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        Some(kb.trim().trim_end_matches("kB").trim().parse::<usize>().ok()? * 1024)
    }

    /// A large zeroed request served by the system (an empty cache) comes back untouched: the
    /// pages are the system's fresh zero pages, not written by the allocator (parameters'
    /// gradients of a model that is only run are allocated so and never written). Also: aligned,
    /// zero, and still usable after growing in place or moving.
    #[test]
    fn a_fresh_zeroed_block_is_not_written_and_grows_aligned() {
        let _guard = serial();
        let size = 1 << 30;
        let layout = Layout::from_size_align(size, 4).unwrap();
        let before = resident();
        // SAFETY: a valid layout of nonzero size.
        let p = unsafe { CachingAlloc.alloc_zeroed(layout) };
        assert!(!p.is_null() && (p as usize).is_multiple_of(ALIGN));
        if let (Some(before), Some(after)) = (before, resident()) {
            // Other tests run beside this one and may allocate meanwhile; 1 GiB written would be
            // far above what they do.
            assert!(after < before + (512 << 20), "{before} -> {after} bytes resident");
        }
        // SAFETY: `p` holds `size` zeroed bytes and is ours.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, size) };
        assert!(bytes.iter().step_by(4096).all(|&b| b == 0));
        for (i, b) in bytes.iter_mut().enumerate().step_by(1 << 20) {
            *b = (i >> 20) as u8 | 1;
        }
        let grown_size = size + size / 2 + 1;
        // SAFETY: `p` is this allocator's block of `layout`; the new size is nonzero.
        let q = unsafe { CachingAlloc.realloc(p, layout, grown_size) };
        assert!(!q.is_null() && (q as usize).is_multiple_of(ALIGN));
        // SAFETY: `q` holds at least `size` bytes, the first `size` of them kept.
        let kept = unsafe { std::slice::from_raw_parts(q, size) };
        for (i, b) in kept.iter().enumerate().step_by(1 << 20) {
            assert_eq!(*b, (i >> 20) as u8 | 1, "byte {i}");
        }
        // SAFETY: `q` is this allocator's block of the grown layout.
        unsafe { CachingAlloc.dealloc(q, Layout::from_size_align(grown_size, 4).unwrap()) };
    }

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
            CACHE_LIMIT - 1,
            CACHE_LIMIT,
        ] {
            let (class, block) = class_of(size);
            assert!(block >= size && block <= size + size / 4 + 1, "{size} -> {block}");
            assert!(class < CLASSES);
            // Every size of the class maps to the same block.
            assert_eq!(class_of(block), (class, block));
        }
        assert_eq!(class_of(CACHE_LIMIT), (CLASSES - 1, CACHE_LIMIT));
    }

    /// 8,193 freed blocks of 128 KiB cached at once in one list (linked through the blocks),
    /// then handed out again: each exactly once, and the list empty after. (With the allocator
    /// installed globally the 8,193rd free deadlocked; tests/it/fuzz.rs, which installs it, checks
    /// that; here the test binary's allocator is the system's.)
    #[test]
    fn a_long_free_list_hands_out_every_block_once() {
        let _serial = serial();
        const BLOCKS: usize = 8_193;
        let layout = Layout::from_size_align(MIN_CACHED, 8).unwrap();
        let a = CachingAlloc;
        let (class, block) = class_of(MIN_CACHED);
        // SAFETY: each block is allocated with `layout` and freed once with it.
        unsafe {
            let blocks: BTreeSet<usize> = (0..BLOCKS).map(|_| a.alloc(layout) as usize).collect();
            assert!(!blocks.contains(&0), "allocation failed");
            assert_eq!(blocks.len(), BLOCKS);
            for &p in &blocks {
                a.dealloc(p as *mut u8, layout);
            }
            assert_eq!(cached(class), BLOCKS);
            assert_eq!(CACHED.load(Ordering::Relaxed), BLOCKS * block);
            let again: BTreeSet<usize> = (0..BLOCKS).map(|_| a.alloc(layout) as usize).collect();
            assert_eq!(again, blocks, "the cache did not hand out each block once");
            assert_eq!(cached(class), 0);
            for &p in &again {
                a.dealloc(p as *mut u8, layout);
            }
        }
    }

    /// Requests too large to cache, up to the largest a `Layout` allows, go to the system, which
    /// refuses them with NULL: `try_reserve_exact(1 << 48)` gets an error. (Sizes past the last
    /// class indexed past the free lists and panicked inside the allocator, which aborted.)
    #[test]
    fn requests_past_the_last_class_go_to_the_system() {
        let _serial = serial();
        let a = CachingAlloc;
        let huge = [1usize << 48, 7 << 46, isize::MAX as usize - 63];
        for size in huge {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a nonzero layout; nothing is returned to free (the system has no such memory).
            unsafe {
                assert!(a.alloc(layout).is_null(), "{size} bytes were allocated");
                assert!(a.alloc_zeroed(layout).is_null(), "{size} bytes were allocated");
                // Growing a cached block past the classes: NULL, and the old block stays valid.
                let small = Layout::from_size_align(300_000, 8).unwrap();
                let p = a.alloc(small);
                assert!(!p.is_null());
                *p = 5;
                assert!(a.realloc(p, small, size).is_null());
                assert_eq!(*p, 5);
                a.dealloc(p, small);
            }
        }
    }

    #[test]
    fn blocks_are_reused_and_zeroed() {
        let _serial = serial();
        let a = CachingAlloc;
        let layout = Layout::from_size_align(300_000, 8).unwrap();
        let (class, _) = class_of(layout.size());
        // SAFETY: blocks allocated with `layout`, written within it, freed once.
        unsafe {
            let p = a.alloc(layout);
            std::ptr::write_bytes(p, 7, layout.size());
            a.dealloc(p, layout);
            assert_eq!(cached(class), 1, "the freed block was not cached");
            // Another size of the same class: the same block, cleared.
            let smaller = Layout::from_size_align(290_000, 8).unwrap();
            assert_eq!(class_of(smaller.size()).0, class);
            let q = a.alloc_zeroed(smaller);
            assert_eq!(q, p, "the cached block was not reused");
            assert_eq!(cached(class), 0);
            assert!((0..smaller.size()).all(|i| *q.add(i) == 0));
            a.dealloc(q, smaller);
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
        let _serial = serial();
        // the same activation at a different batch length each step: 24 sizes from 5 MB up by 8%
        let a = CachingAlloc;
        let sizes: Vec<usize> = (0..24)
            .map(|i| (5_000_000.0 * 1.08f64.powi(i)) as usize)
            .collect();
        let classes: Vec<usize> = sizes.iter().map(|&s| class_of(s).0).collect();
        // SAFETY: each block is allocated with its layout, written within it, freed once.
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
        let held: usize = distinct.iter().map(|&c| cached(c)).sum();
        assert!(held <= 1, "{held} blocks cached for one drifting buffer");
    }

    #[test]
    fn a_buffer_grown_again_and_again_reuses_one_cached_block() {
        let _serial = serial();
        // a Vec filled anew for every segment of a long text: 140 kB, grown to 600 kB, freed
        let a = CachingAlloc;
        let small = Layout::from_size_align(140_000, 8).unwrap();
        let big = Layout::from_size_align(600_000, 8).unwrap();
        let (small_class, _) = class_of(small.size());
        let (big_class, _) = class_of(big.size());
        // SAFETY: the block is allocated with `small`, grown to `big`'s size, freed with `big`.
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

    /// What one thread of the stress test did.
    #[derive(Default, Debug)]
    struct Counts {
        allocs: usize,
        zeroed: usize,
        frees: usize,
        grows: usize,
        shrinks: usize,
        /// Requests per category: below MIN_CACHED, each class, above CACHE_LIMIT.
        per_class: Vec<usize>,
    }

    /// A block a stress thread owns: its address, size, and the tag written at both ends.
    struct Live {
        p: *mut u8,
        size: usize,
        tag: u64,
    }

    /// Blocks above this are only allocated, tagged at both ends and freed: not zeroed from the
    /// cache nor copied by a realloc, so that memory stays low.
    const TOUCH_MAX: usize = 8 << 20;

    /// Writes `tag` into the first and the last 8 bytes of the block.
    ///
    /// # Safety
    /// `p` is valid for `size >= 16` bytes.
    unsafe fn put_tag(p: *mut u8, size: usize, tag: u64) {
        // SAFETY: bytes 0..8 and size-8..size lie in the block (size >= 16, the caller's
        // contract); unaligned writes need no alignment.
        unsafe {
            (p as *mut u64).write_unaligned(tag);
            (p.add(size - 8) as *mut u64).write_unaligned(tag);
        }
    }

    /// # Safety
    /// `p` is valid for `size >= 16` bytes, written by [`put_tag`].
    unsafe fn tags(p: *const u8, size: usize) -> (u64, u64) {
        // SAFETY: bytes 0..8 and size-8..size lie in the block (size >= 16) and were written by
        // `put_tag` (the caller's contract); unaligned reads need no alignment.
        unsafe {
            (
                (p as *const u64).read_unaligned(),
                (p.add(size - 8) as *const u64).read_unaligned(),
            )
        }
    }

    /// One stress thread: `ops` random operations on up to 12 live blocks, sizes drawn from every
    /// class, below and above the cached sizes. Every block carries a tag unique to it at both
    /// ends, checked before it is freed or moved: a block handed to two owners at once, or a
    /// realloc that loses data, shows as a wrong tag. Zeroed blocks are checked for zeros.
    fn stress_thread(seed: u64, ops: usize) -> Counts {
        let a = CachingAlloc;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let first = class_of(MIN_CACHED).0;
        let categories = CLASSES - first + 2; // small, the classes, huge
        let mut counts = Counts {
            per_class: vec![0; categories],
            ..Counts::default()
        };
        // A size from a random category; returns (category, size).
        let pick = |rng: &mut rand_chacha::ChaCha8Rng| {
            let cat = rng.gen_range(0..categories);
            let size = if cat == 0 {
                rng.gen_range(16..MIN_CACHED)
            } else if cat == categories - 1 {
                rng.gen_range(CACHE_LIMIT + 1..=CACHE_LIMIT + (1 << 30))
            } else {
                let class = first + cat - 1;
                let low = block_of_class(class - 1) + 1;
                rng.gen_range(low.max(MIN_CACHED)..=block_of_class(class))
            };
            (cat, size)
        };
        let mut live: Vec<Live> = Vec::new();
        let mut next_tag = seed << 32;
        // SAFETY: every block is allocated with its size and alignment 16, used within its size,
        // and freed or reallocated once, with the size it has.
        unsafe {
            for _ in 0..ops {
                next_tag += 1;
                let choice = rng.gen_range(0..10);
                if live.is_empty() || (live.len() < 12 && choice < 4) {
                    let (cat, size) = pick(&mut rng);
                    counts.per_class[cat] += 1;
                    let layout = Layout::from_size_align(size, 16).unwrap();
                    let zero = size <= TOUCH_MAX && rng.gen_bool(0.5);
                    let p = if zero {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    };
                    assert!(!p.is_null(), "{size} bytes: allocation failed");
                    assert_eq!(p as usize % 16, 0);
                    if zero {
                        counts.zeroed += 1;
                        let check = |i: usize| assert_eq!(*p.add(i), 0, "byte {i} of a zeroed {size}");
                        (0..size.min(4096)).for_each(check);
                        (size.saturating_sub(4096)..size).for_each(check);
                        (0..64).for_each(|_| check(rng.gen_range(0..size)));
                    }
                    counts.allocs += 1;
                    put_tag(p, size, next_tag);
                    live.push(Live {
                        p,
                        size,
                        tag: next_tag,
                    });
                    continue;
                }
                let i = rng.gen_range(0..live.len());
                let b = &live[i];
                assert_eq!(tags(b.p, b.size), (b.tag, b.tag), "a live block was overwritten");
                let layout = Layout::from_size_align(b.size, 16).unwrap();
                if choice < 7 || b.size > TOUCH_MAX {
                    a.dealloc(b.p, layout);
                    counts.frees += 1;
                    live.swap_remove(i);
                    continue;
                }
                let (cat, size) = loop {
                    let (cat, size) = pick(&mut rng);
                    if size <= TOUCH_MAX || cat == categories - 1 {
                        break (cat, size);
                    }
                };
                counts.per_class[cat] += 1;
                let p = a.realloc(b.p, layout, size);
                assert!(!p.is_null(), "{} -> {size} bytes: realloc failed", b.size);
                // The first bytes moved with the block (both sizes are at least 16).
                assert_eq!((p as *const u64).read_unaligned(), b.tag, "realloc lost the data");
                if size > b.size {
                    counts.grows += 1;
                } else {
                    counts.shrinks += 1;
                }
                put_tag(p, size, next_tag);
                live[i] = Live {
                    p,
                    size,
                    tag: next_tag,
                };
            }
            for b in live {
                assert_eq!(tags(b.p, b.size), (b.tag, b.tag), "a live block was overwritten");
                a.dealloc(b.p, Layout::from_size_align(b.size, 16).unwrap());
                counts.frees += 1;
            }
        }
        counts
    }

    /// Several threads allocate, free, grow and shrink blocks of every class at once (and of
    /// sizes below and above the cached ones); the blocks' tags must survive, zeroed blocks
    /// must be zero, every class must be used, and the cache's byte count must equal what its
    /// lists hold afterwards.
    #[test]
    fn stress_every_class_from_several_threads() {
        let _serial = serial();
        const THREADS: u64 = 4;
        const OPS: usize = 4_000;
        let all: Vec<Counts> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| s.spawn(move || stress_thread(1000 + t, OPS)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let sum = |f: fn(&Counts) -> usize| all.iter().map(f).sum::<usize>();
        let categories = all[0].per_class.len();
        let per_class: Vec<usize> = (0..categories)
            .map(|c| all.iter().map(|t| t.per_class[c]).sum())
            .collect();
        let (cached_blocks, cached_bytes) = (class_of(MIN_CACHED).0..CLASSES)
            .map(|c| (cached(c), cached(c) * block_of_class(c)))
            .fold((0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
        println!(
            "allocator stress: {THREADS} threads x {OPS} operations: {} allocations ({} zeroed), {} frees, \
             {} grows, {} shrinks; requests per category (below MIN_CACHED, {} classes, above \
             CACHE_LIMIT): min {}, max {}; afterwards {cached_blocks} blocks ({cached_bytes} bytes) cached",
            sum(|c| c.allocs),
            sum(|c| c.zeroed),
            sum(|c| c.frees),
            sum(|c| c.grows),
            sum(|c| c.shrinks),
            categories - 2,
            per_class.iter().min().unwrap(),
            per_class.iter().max().unwrap(),
        );
        assert_eq!(sum(|c| c.allocs), sum(|c| c.frees), "every block was freed");
        assert!(
            per_class.iter().all(|&n| n > 0),
            "a category was never requested: {per_class:?}"
        );
        assert!(sum(|c| c.grows) > 0 && sum(|c| c.shrinks) > 0 && sum(|c| c.zeroed) > 0);
        assert_eq!(
            CACHED.load(Ordering::Relaxed),
            cached_bytes,
            "the cache's count drifted"
        );
        assert!(cached_bytes <= CACHE_LIMIT);
    }
}
