//! The rows of a narrow (int8, bf16) product in blocks that stay in cache. Each kernel's loop
//! runs every column block of B past a block of A's rows; over all of A at once, a large
//! product (2,048 rows of a batch of 32) reads A from beyond L2 once per column block and writes
//! C in fragments spread over more pages than the TLB holds. A block's prepared rows of A (at
//! most [`A_BYTES`]) stay in L2 and its rows of C (at most [`MAX_ROWS`]) span few pages.

use std::ops::Range;

/// A block's prepared rows of A, at most: half of a 2 MiB L2.
pub const A_BYTES: usize = 1 << 20;
/// Rows of C a block writes, at most (at 3,072 columns, 3 MiB of C: 768 pages of 4 KiB).
pub const MAX_ROWS: usize = 256;

/// `0..m` in blocks of whole multiples of `align` rows (the kernel's tile height) of at most
/// [`MAX_ROWS`] rows and [`A_BYTES`] of `row_bytes` each, at least one `align`.
pub fn row_blocks(m: usize, row_bytes: usize, align: usize) -> impl Iterator<Item = Range<usize>> {
    let fit = (A_BYTES / row_bytes.max(1)).min(MAX_ROWS);
    let block = (fit / align * align).max(align);
    (0..m).step_by(block).map(move |i| i..(i + block).min(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks cover 0..m in order, each a multiple of `align` rows (but the last), within both
    /// caps unless one `align` exceeds them.
    #[test]
    fn blocks_cover_the_rows_within_the_caps() {
        for (m, row_bytes, align) in [
            (0, 384, 32),
            (1, 384, 32),
            (2048, 384, 32),
            (2048, 3072, 32),
            (300, 1 << 21, 16),
            (1000, 768, 4),
        ] {
            let blocks: Vec<_> = row_blocks(m, row_bytes, align).collect();
            let mut next = 0;
            for (i, b) in blocks.iter().enumerate() {
                assert_eq!(b.start, next);
                assert!(b.end > b.start && b.end <= m);
                let len = b.len();
                if i + 1 < blocks.len() {
                    assert_eq!(len % align, 0);
                }
                assert!(len <= MAX_ROWS.max(align) && (len * row_bytes <= A_BYTES || len <= align));
                next = b.end;
            }
            assert_eq!(next, m, "{m} {row_bytes} {align}");
        }
        assert_eq!(row_blocks(2048, 3072, 32).next(), Some(0..256));
        assert_eq!(row_blocks(2048, 1536 * 2, 16).nth(1), Some(256..512));
    }
}
