//! The C API's errors: the code a C program branches on (the kind of failure, taken from the
//! typed Rust error: each match below is exhaustive, so a new error variant must be given its
//! kind here), the message a person reads, and the entry points that read and free them.

use crate::bert::checkpoint::CheckpointError;
use crate::model_dir::ModelDirError;
use crate::predict::PredictError;
use crate::tokenize::TokenizeError;
use crate::workers::WorkersError;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Returned by functions that return `int` when they succeed; `gp_error_code(NULL)`.
pub const GP_OK: c_int = 0;
/// Returned by functions that return `int` when they fail, whatever the failure: the error in
/// `*err` tells which (`gp_error_code`). `gp_error_code` never returns it.
pub const GP_ERR: c_int = 1;
/// `gp_error_code`: an argument is NULL, or a length or count is more than any array can hold
/// (such as `(size_t)-1`). The message names the argument.
pub const GP_ERR_ARGUMENT: c_int = 2;
/// `gp_error_code`: a file or directory of the model could not be read: the directory is
/// missing or not a directory, or config.json, model.safetensors or the tokenizer is missing or
/// unreadable. The message names the path.
pub const GP_ERR_IO: c_int = 3;
/// `gp_error_code`: the model directory was read but is not a model gp-lite can run:
/// config.json malformed or unsupported (unknown head, sizes out of limits), model.safetensors
/// truncated or not matching the configuration, the tokenizer malformed or not the model's.
pub const GP_ERR_MODEL: c_int = 4;
/// `gp_error_code`: a text is not valid UTF-8 (the message names the text and the byte
/// position), or the tokenizer could not encode it.
pub const GP_ERR_INPUT: c_int = 5;
/// `gp_error_code`: the system refused a resource: the model's worker threads could not be
/// started.
pub const GP_ERR_SYSTEM: c_int = 6;
/// `gp_error_code`: an internal error of gp-lite (a panic, caught before it reached the caller);
/// please report it with the message.
pub const GP_ERR_PANIC: c_int = 7;

/// An error: a code to branch on (`gp_error_code`) and a message to show to a person
/// (`gp_error_message`). Free it with `gp_error_free`.
pub struct GpError {
    code: c_int,
    message: CString,
}

/// What kind of failure an error of the C API reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A NULL pointer, or a length or count no array can have: the caller's mistake.
    Argument,
    /// A file or directory of the model could not be read: missing, unreadable, not a directory.
    Io,
    /// The model directory's files were read but do not make a model gp-lite can run.
    Model,
    /// A text is not valid UTF-8, or the tokenizer cannot encode it.
    Input,
    /// The system refused a resource (the model's worker threads).
    System,
    /// gp-lite panicked (a bug), caught before it reached the caller.
    Panic,
}

/// An error of the C API before it is handed to C: its kind and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CError {
    pub kind: Kind,
    pub message: String,
}

/// A result of the C API's internals.
pub(crate) type Res<T> = Result<T, CError>;

impl CError {
    /// An error of `kind` with `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> CError {
        CError {
            kind,
            message: message.into(),
        }
    }
}

/// Loading a model directory: what could not be read is I/O, what was read but is unusable is
/// the model's fault.
impl From<ModelDirError> for CError {
    fn from(e: ModelDirError) -> CError {
        let kind = match &e {
            ModelDirError::Io { .. } | ModelDirError::NotADirectory { .. } => Kind::Io,
            ModelDirError::Config { .. } | ModelDirError::Invalid { .. } => Kind::Model,
            ModelDirError::Checkpoint(c) => match c {
                CheckpointError::Io { .. } => Kind::Io,
                CheckpointError::Config { .. }
                | CheckpointError::Tensors(_)
                | CheckpointError::Unknown { .. }
                | CheckpointError::Encoder { .. }
                | CheckpointError::TooLarge { .. } => Kind::Model,
            },
            ModelDirError::Tokenizer { source, .. } => match source {
                // tokenizer.json and vocab.txt both absent is a missing file like any other
                TokenizeError::Io { .. } | TokenizeError::NotFound { .. } => Kind::Io,
                TokenizeError::Hf { .. }
                | TokenizeError::MissingToken { .. }
                | TokenizeError::BadVocab { .. }
                | TokenizeError::Encode(_)
                | TokenizeError::UnknownKind { .. }
                | TokenizeError::NotPretrained { .. }
                | TokenizeError::Mismatch { .. }
                | TokenizeError::BadWindow { .. }
                | TokenizeError::NoRoomForContext { .. }
                | TokenizeError::NoQuestion
                | TokenizeError::NoSpecials => Kind::Model,
            },
        };
        CError::new(kind, e.to_string())
    }
}

/// Predicting: the texts are valid UTF-8 by then, so only the tokenizer's refusal of a text is
/// the input's fault; everything else is the loaded model's (its tokenizer and encoder disagree).
impl From<PredictError> for CError {
    fn from(e: PredictError) -> CError {
        let kind = match &e {
            PredictError::Tokenize {
                source: TokenizeError::Encode(_),
                ..
            } => Kind::Input,
            PredictError::Tokenize { .. } | PredictError::Encoder(_) => Kind::Model,
        };
        CError::new(kind, e.to_string())
    }
}

impl From<WorkersError> for CError {
    fn from(e: WorkersError) -> CError {
        CError::new(Kind::System, e.to_string())
    }
}

/// The `GP_ERR_*` code of a kind of failure.
fn code(kind: Kind) -> c_int {
    match kind {
        Kind::Argument => GP_ERR_ARGUMENT,
        Kind::Io => GP_ERR_IO,
        Kind::Model => GP_ERR_MODEL,
        Kind::Input => GP_ERR_INPUT,
        Kind::System => GP_ERR_SYSTEM,
        Kind::Panic => GP_ERR_PANIC,
    }
}

/// Runs `body`, turning a panic into an error.
pub(crate) fn guard<T>(body: impl FnOnce() -> Res<T>) -> Res<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(CError::new(
                Kind::Panic,
                format!("internal error (panic): {what}"),
            ))
        }
    }
}

/// A C string of `s`, with any NUL bytes replaced (they cannot appear in a C string).
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).expect("NUL bytes were replaced")
}

/// Stores the outcome in `*err` (when `err` is not NULL): NULL on success, a new error otherwise.
///
/// # Safety
/// `err` is NULL or valid for writes.
pub(crate) unsafe fn report<T>(r: Res<T>, err: *mut *mut GpError) -> Option<T> {
    let (value, error) = match r {
        Ok(v) => (Some(v), None),
        Err(e) => (
            None,
            Some(Box::new(GpError {
                code: code(e.kind),
                message: c_string(&e.message),
            })),
        ),
    };
    // With `err` NULL the error is dropped here: the caller asked not to see it.
    if !err.is_null() {
        // SAFETY: `err` is not NULL, so valid for writes (the caller's contract); `*err` may be
        // uninitialised, so it is written without reading (or dropping) what was there.
        unsafe { err.write(error.map_or(std::ptr::null_mut(), Box::into_raw)) };
    }
    value
}

/// The message of an error (NUL-terminated, valid until `gp_error_free(err)`); NULL when `err` is
/// NULL.
///
/// # Safety
/// `err` is NULL or a live error.
#[no_mangle]
pub unsafe extern "C" fn gp_error_message(err: *const GpError) -> *const c_char {
    // SAFETY: `err` is NULL (then None) or a live error (the caller's contract).
    unsafe { err.as_ref() }.map_or(std::ptr::null(), |e| e.message.as_ptr())
}

/// The kind of failure `err` reports: one of `GP_ERR_ARGUMENT`, `GP_ERR_IO`, `GP_ERR_MODEL`,
/// `GP_ERR_INPUT`, `GP_ERR_SYSTEM`, `GP_ERR_PANIC` (never `GP_ERR`); `GP_OK` when `err` is NULL
/// (a call that succeeded sets `*err` to NULL). Later versions may add codes: treat an unknown
/// one as a failure described by the message.
///
/// # Safety
/// `err` is NULL or a live error.
#[no_mangle]
pub unsafe extern "C" fn gp_error_code(err: *const GpError) -> c_int {
    // SAFETY: `err` is NULL (then None) or a live error (the caller's contract).
    unsafe { err.as_ref() }.map_or(GP_OK, |e| e.code)
}

/// Frees an error (NULL: nothing happens).
///
/// # Safety
/// `err` is NULL or an error not freed before.
#[no_mangle]
pub unsafe extern "C" fn gp_error_free(err: *mut GpError) {
    if !err.is_null() {
        // SAFETY: every error handed to C is a `Box` turned into a raw pointer (`report`), and
        // this one is not freed before (the caller's contract): it is taken back once.
        drop(unsafe { Box::from_raw(err) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::path::PathBuf;

    #[test]
    fn kinds_follow_the_typed_errors() {
        let path = PathBuf::from("m");
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let kind = |e: ModelDirError| CError::from(e).kind;
        assert_eq!(
            kind(ModelDirError::NotADirectory { path: path.clone() }),
            Kind::Io
        );
        assert_eq!(
            kind(ModelDirError::Io {
                path: path.clone(),
                source: io()
            }),
            Kind::Io
        );
        let config = serde_json::from_str::<u32>("{").unwrap_err();
        assert_eq!(
            kind(ModelDirError::Config {
                path: path.clone(),
                source: config
            }),
            Kind::Model
        );
        let tokenizer = |source| ModelDirError::Tokenizer {
            path: path.clone(),
            source,
        };
        assert_eq!(
            kind(tokenizer(TokenizeError::NotFound { dir: path.clone() })),
            Kind::Io
        );
        assert_eq!(
            kind(tokenizer(TokenizeError::BadVocab {
                path: path.clone(),
                line: 1,
                what: "two characters".into()
            })),
            Kind::Model
        );
        let encode = PredictError::Tokenize {
            index: 0,
            source: TokenizeError::Encode("x".into()),
        };
        assert_eq!(CError::from(encode).kind, Kind::Input);
        let windows = PredictError::Tokenize {
            index: 0,
            source: TokenizeError::NoSpecials,
        };
        assert_eq!(CError::from(windows).kind, Kind::Model);
    }

    #[test]
    fn panics_become_errors() {
        let r: Res<()> = guard(|| panic!("boom {}", 7));
        assert_eq!(
            r.unwrap_err(),
            CError::new(Kind::Panic, "internal error (panic): boom 7")
        );
        let r: Res<()> = guard(|| panic!("static"));
        assert_eq!(r.unwrap_err().message, "internal error (panic): static");
        let mut err: *mut GpError = std::ptr::null_mut();
        // SAFETY: `err` is valid for writes; the error is freed below.
        unsafe {
            assert!(report(guard(|| -> Res<()> { panic!("x") }), &mut err).is_none());
            let msg = CStr::from_ptr(gp_error_message(err)).to_str().unwrap();
            assert_eq!(msg, "internal error (panic): x");
            assert_eq!(gp_error_code(err), GP_ERR_PANIC);
            gp_error_free(err);
            assert_eq!(gp_error_code(std::ptr::null()), GP_OK);
        }
    }

    #[test]
    fn nul_bytes_in_messages_are_replaced() {
        assert_eq!(c_string("a\0b").to_str().unwrap(), "a\u{FFFD}b");
    }
}
