//! Reading the C API's arguments: raw pointers kept raw, NULL and impossible lengths refused
//! with an error naming the argument (`GP_ERR_ARGUMENT`), texts read as UTF-8 (`GP_ERR_INPUT`).

use super::error::{CError, Kind, Res};
use std::ffi::{c_char, CStr};
use std::path::PathBuf;

/// An error of the caller's: `message` names the argument.
fn argument(message: String) -> CError {
    CError::new(Kind::Argument, message)
}

/// A reference to `*p`, or an error naming the NULL argument.
///
/// # Safety
/// `p` is NULL or points to a live `T` that outlives `'a`.
pub(crate) unsafe fn non_null<'a, T>(p: *const T, name: &str) -> Res<&'a T> {
    // SAFETY: `p` is NULL (then None) or points to a live `T` that outlives `'a` (the caller's
    // contract).
    unsafe { p.as_ref() }.ok_or_else(|| argument(format!("`{name}` is NULL")))
}

/// An error naming the argument when `p` is NULL. Only the address is looked at: `p` may point
/// to uninitialised memory (an out-slot) or, where no element is read, dangle.
pub(crate) fn not_null<T>(p: *const T, name: &str) -> Res<()> {
    if p.is_null() {
        Err(argument(format!("`{name}` is NULL")))
    } else {
        Ok(())
    }
}

/// An error when `n` elements of `T` cannot be one object (more than isize::MAX bytes): such a
/// number is no size of anything the caller holds (most likely `(size_t)-1`). `what` names it.
pub(crate) fn valid_len<T>(n: usize, what: &str) -> Res<()> {
    let max = isize::MAX as usize / std::mem::size_of::<T>().max(1);
    if n > max {
        Err(argument(format!(
            "{what} is {n}, more than the {max} any array can hold"
        )))
    } else {
        Ok(())
    }
}

/// The path in a NUL-terminated C string.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
pub(crate) unsafe fn c_path(p: *const c_char, name: &str) -> Res<PathBuf> {
    not_null(p, name)?;
    // SAFETY: `p` is not NULL, so a NUL-terminated string (the caller's contract).
    let s = unsafe { CStr::from_ptr(p) };
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        s.to_str()
            .map(PathBuf::from)
            .map_err(|e| argument(format!("`{name}` is not valid UTF-8: {e}")))
    }
}

/// The UTF-8 text in `len` bytes at `p`. NULL is an error; with `len == 0` any other pointer,
/// dangling included (an empty Rust `&str` passed through C has address 1), is the empty text and
/// is not read.
///
/// # Safety
/// `p` is NULL or valid for reads of `len` bytes (any value when `len == 0`).
pub(crate) unsafe fn c_text<'a>(p: *const c_char, len: usize, name: &str) -> Res<&'a str> {
    not_null(p, name)?;
    if len == 0 {
        return Ok("");
    }
    valid_len::<u8>(len, &format!("the length of `{name}`")).map_err(|e| {
        argument(format!(
            "{} (texts are not NUL-terminated: pass their length in bytes)",
            e.message
        ))
    })?;
    // SAFETY: `p` is not NULL and valid for reads of `len` bytes (the caller's contract), and
    // `len` is at most isize::MAX (checked above).
    let bytes = unsafe { std::slice::from_raw_parts(p as *const u8, len) };
    std::str::from_utf8(bytes).map_err(|e| {
        CError::new(
            Kind::Input,
            format!(
                "`{name}` is not valid UTF-8: invalid byte at position {}",
                e.valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths: 0 is the empty text whatever non-NULL pointer comes with it (an empty `&str`
    /// passed through C has address 1; it must not be read nor referenced), NULL stays an error,
    /// and a length above isize::MAX (`(size_t)-1` for "NUL-terminated") is an error naming the
    /// length instead of a slice no object can be (undefined behaviour; natively it read past
    /// the text).
    #[test]
    fn text_lengths_at_the_edges() {
        // address 1, and an address in the first page (never mapped)
        let dangling = std::ptr::dangling::<c_char>();
        let unmapped = std::ptr::without_provenance::<c_char>(4096);
        // SAFETY: with length 0 nothing is read; "abc" is valid for 3 bytes.
        unsafe {
            assert_eq!(c_text(dangling, 0, "text"), Ok(""));
            assert_eq!(c_text(unmapped, 0, "text"), Ok(""));
            let null = c_text(std::ptr::null(), 0, "text").unwrap_err();
            assert_eq!(null, CError::new(Kind::Argument, "`text` is NULL"));
            let abc = "abc".as_ptr() as *const c_char;
            assert_eq!(c_text(abc, 3, "text"), Ok("abc"));
            let bad = "ab\u{FFFD}".as_ptr() as *const c_char; // cut inside the last character
            let e = c_text(bad, 3, "text").unwrap_err();
            assert_eq!(e.kind, Kind::Input, "{}", e.message);
            assert!(e.message.contains("position 2"), "{}", e.message);
            for len in [usize::MAX, isize::MAX as usize + 1] {
                let e = c_text(abc, len, "texts[1]").unwrap_err();
                assert_eq!(e.kind, Kind::Argument);
                let e = e.message;
                assert!(
                    e.contains("the length of `texts[1]`")
                        && e.contains(&len.to_string())
                        && e.contains("NUL"),
                    "{e}"
                );
            }
        }
    }
}
