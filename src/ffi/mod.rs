//! The C interface: load a model directory and extract entities from UTF-8 text (or, with a
//! reader model, answer a question about a context: `answer.rs`).
//!
//! include/gp_lite.h is generated from this file and `error.rs` by cbindgen (tests/it/header.rs
//! checks that the committed header is current; `GP_LITE_BLESS=1 cargo test --release --test it
//! header::` rewrites it); `args.rs` reads the arguments.
//! Every entry point catches panics and turns them into errors; NULL arguments are errors; freeing
//! NULL is a no-op. Offsets handed to C are byte offsets into the caller's text. An error carries
//! a code (`gp_error_code`: the kind of failure, from the typed Rust error, see `error.rs`) and
//! a message.

pub mod answer;
mod args;
mod error;

use crate::decode::{DecodeMode, DEFAULT_THRESHOLD};
use crate::infer::Workspace;
use crate::model_dir::load_model;
use crate::predict::{PredEntity, PredictOptions, Predictor};
use crate::workers::Workers;
use args::{c_path, c_text, non_null, not_null, valid_len};
use error::{c_string, guard, report, Res};
pub use error::{
    gp_error_code, gp_error_free, gp_error_message, GpError, GP_ERR, GP_ERR_ARGUMENT, GP_ERR_INPUT,
    GP_ERR_IO, GP_ERR_MODEL, GP_ERR_PANIC, GP_ERR_SYSTEM, GP_OK,
};
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// A loaded model: weights, tokenizer, labels and a pool of worker threads.
///
/// Immutable once loaded: `gp_predict` and `gp_predict_batch` may be called from many threads at
/// once on the same model. Concurrent calls share the model's worker threads (at most
/// `gp_model_num_threads` run at any time).
pub struct GpModel {
    predictor: Predictor<f32>,
    workers: Workers,
    labels: Vec<CString>,
    /// Scratch buffers of finished calls, reused by later ones (one per concurrent call).
    workspaces: Mutex<Vec<Workspace>>,
}

/// The entities found in one text, in order of start, then end, then label index.
pub struct GpEntities {
    items: Vec<GpEntity>,
    /// Owns the strings `items[i].type` points to (moving a `CString` does not move its bytes).
    _types: Vec<CString>,
}

/// One entity: the bytes `[start, end)` of the text, its type and its score.
///
/// `type` is a NUL-terminated label (one of `gp_model_label`) owned by the `GpEntities` the
/// entity came from; it lives until that `GpEntities` is freed.
/// cbindgen:field-names=[start, end, type, score]
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GpEntity {
    /// The byte offset of the entity's first byte in the text.
    pub start: usize,
    /// The byte offset just past its last byte.
    pub end: usize,
    /// The entity type (the label), NUL-terminated; `type` in C, `ty` in Rust (a keyword there).
    pub ty: *const c_char,
    /// The head's score of the span: a logit for the pointer heads, the smallest marginal
    /// probability of its tags for the CRF.
    pub score: f64,
}

/// How texts are decoded (see `gp_predict_options_default`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GpPredictOptions {
    /// A span whose score exceeds this is an entity (default 0).
    pub threshold: f64,
    /// `true`: non-overlapping entities (the best of overlapping spans); `false` (default): the
    /// model's own output, nested unless it was trained on data without overlapping entities
    /// (as `gp-lite predict` without `--flat`).
    pub flat: bool,
    /// Texts (or windows of long texts) per forward pass; 0 means the default (32).
    pub batch_size: usize,
}

/// `PredictOptions` of C options (NULL = defaults).
fn predict_options(opts: Option<&GpPredictOptions>) -> PredictOptions {
    let o = opts.copied().unwrap_or_else(|| gp_predict_options_default());
    PredictOptions {
        // false: the model's own default (flat when it was trained without overlapping entities).
        mode: o.flat.then_some(DecodeMode::Flat),
        threshold: o.threshold,
        batch_size: if o.batch_size == 0 { 32 } else { o.batch_size },
        // long texts in the default windows: the struct stays as it was, so that programs
        // built against the earlier header keep working
        ..PredictOptions::default()
    }
}

impl GpModel {
    /// `f` run in the model's pool with a workspace of a finished call (or a new one), given
    /// back to the model afterwards.
    fn with_workspace<R: Send>(&self, f: impl FnOnce(&mut Workspace) -> R + Send) -> R {
        let mut ws = self
            .workspaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        let r = self.workers.pool().install(|| f(&mut ws));
        self.workspaces.lock().unwrap_or_else(|p| p.into_inner()).push(ws);
        r
    }

    /// Entities of each text, in the model's pool with a reused workspace.
    fn predict(&self, texts: &[&str], opts: &PredictOptions) -> Res<Vec<Vec<PredEntity>>> {
        Ok(self.with_workspace(|ws| self.predictor.predict(texts, opts, ws))?)
    }
}

/// Entities with byte offsets into `text`, from entities with character offsets.
fn to_c_entities(text: &str, ents: &[PredEntity], labels: &[CString]) -> GpEntities {
    // byte[i]: byte offset of character i; byte[number of characters] = text.len()
    let byte: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect();
    // One copy of each label that occurs, owned by the list.
    let mut copy: Vec<Option<CString>> = vec![None; labels.len()];
    for e in ents {
        copy[e.ty].get_or_insert_with(|| labels[e.ty].clone());
    }
    let items = ents
        .iter()
        .map(|e| GpEntity {
            start: byte[e.start],
            end: byte[e.end],
            ty: copy[e.ty].as_ref().expect("copied above").as_ptr(),
            score: e.score,
        })
        .collect();
    GpEntities {
        items,
        _types: copy.into_iter().flatten().collect(),
    }
}

/// The version of gp-lite, e.g. "0.1.0". A static string: do not free it.
#[no_mangle]
pub extern "C" fn gp_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Loads the model directory `model_dir` (written by `gp-lite train`), with one worker thread
/// per logical core. Same as `gp_model_load_threads(model_dir, 0, err)`.
///
/// Returns NULL on failure and sets `*err` (when `err` is not NULL; free it with
/// `gp_error_free`): `gp_error_code` gives `GP_ERR_IO` (a file or directory missing or
/// unreadable), `GP_ERR_MODEL` (files that do not make a usable model), `GP_ERR_ARGUMENT` (NULL
/// `model_dir`), `GP_ERR_SYSTEM` or `GP_ERR_PANIC`. On success `*err` is set to NULL. Free the
/// model with `gp_model_free`.
///
/// # Safety
/// `model_dir` is NULL or a NUL-terminated path; `err` is NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn gp_model_load(model_dir: *const c_char, err: *mut *mut GpError) -> *mut GpModel {
    // SAFETY: the same arguments, under the same contract.
    unsafe { gp_model_load_threads(model_dir, 0, err) }
}

/// Loads the model directory `model_dir` with `num_threads` worker threads (0 = one per logical
/// core). Every prediction on this model runs on these threads: concurrent calls share them.
///
/// Returns NULL on failure and sets `*err` (when `err` is not NULL; codes as for
/// `gp_model_load`). On success `*err` is set to NULL. Free the model with `gp_model_free`.
///
/// # Safety
/// `model_dir` is NULL or a NUL-terminated path; `err` is NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn gp_model_load_threads(
    model_dir: *const c_char,
    num_threads: usize,
    err: *mut *mut GpError,
) -> *mut GpModel {
    let r = guard(|| {
        // SAFETY: `model_dir` is NULL or a NUL-terminated path (the caller's contract).
        let dir = unsafe { c_path(model_dir, "model_dir") }?;
        let predictor: Predictor<f32> = load_model(&dir)?;
        let workers = Workers::new(num_threads)?;
        let labels = predictor
            .model
            .config
            .labels
            .iter()
            .map(|l| c_string(l))
            .collect();
        Ok(GpModel {
            predictor,
            workers,
            labels,
            workspaces: Mutex::new(Vec::new()),
        })
    });
    // SAFETY: `err` is NULL or valid for writes (the caller's contract).
    unsafe { report(r, err) }.map_or(std::ptr::null_mut(), |m| Box::into_raw(Box::new(m)))
}

/// Frees a model (NULL: nothing happens). No call may be using it.
///
/// # Safety
/// `model` is NULL or a model from `gp_model_load*` not freed before.
#[no_mangle]
pub unsafe extern "C" fn gp_model_free(model: *mut GpModel) {
    if !model.is_null() {
        // SAFETY: every model handed to C is a `Box` turned into a raw pointer
        // (`gp_model_load_threads`), and this one is not freed before nor in use (the caller's
        // contract): it is taken back once. Its drop joins the worker threads; a panic there
        // must not cross into C.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

/// The number of entity types (labels) of the model; 0 when `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn gp_model_num_labels(model: *const GpModel) -> usize {
    // SAFETY: `model` is NULL (then None) or a live model (the caller's contract).
    unsafe { model.as_ref() }.map_or(0, |m| m.labels.len())
}

/// The `i`-th label of the model (NUL-terminated, owned by the model: valid until
/// `gp_model_free`); NULL when `model` is NULL or `i >= gp_model_num_labels(model)`.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn gp_model_label(model: *const GpModel, i: usize) -> *const c_char {
    // SAFETY: `model` is NULL (then None) or a live model (the caller's contract).
    unsafe { model.as_ref() }
        .and_then(|m| m.labels.get(i))
        .map_or(std::ptr::null(), |l| l.as_ptr())
}

/// The longest token sequence the model runs on, `[CLS]` and `[SEP]` included; 0 when `model` is
/// NULL. Longer texts are handled: they are scored in windows overlapping by half.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn gp_model_max_len(model: *const GpModel) -> usize {
    // SAFETY: `model` is NULL (then None) or a live model (the caller's contract).
    unsafe { model.as_ref() }.map_or(0, |m| m.predictor.max_len())
}

/// The number of worker threads of the model; 0 when `model` is NULL.
///
/// # Safety
/// `model` is NULL or a live model.
#[no_mangle]
pub unsafe extern "C" fn gp_model_num_threads(model: *const GpModel) -> usize {
    // SAFETY: `model` is NULL (then None) or a live model (the caller's contract).
    unsafe { model.as_ref() }.map_or(0, |m| m.workers.pool().current_num_threads())
}

/// The default options: threshold 0, the model's own output (`flat` false), 32 texts per
/// forward pass.
#[no_mangle]
pub extern "C" fn gp_predict_options_default() -> GpPredictOptions {
    GpPredictOptions {
        threshold: DEFAULT_THRESHOLD,
        flat: false,
        batch_size: 32,
    }
}

/// Finds the entities of `text`: `text_len` bytes of UTF-8 (no NUL terminator needed), with the
/// default options. Entity offsets are byte offsets into `text`.
///
/// Returns `GP_OK` and sets `*out` (free it with `gp_entities_free`; an empty text gives an
/// empty list), or returns `GP_ERR`, sets `*out` to NULL (when `out` is not NULL) and `*err`
/// (when `err` is not NULL), whose `gp_error_code` is `GP_ERR_ARGUMENT` (a NULL argument, an
/// impossible length), `GP_ERR_INPUT` (invalid UTF-8: the message gives the byte position),
/// `GP_ERR_MODEL` (the model cannot run the text) or `GP_ERR_PANIC`.
/// `text_len` 0 is the empty text whatever non-NULL `text` points to (it is not read); a
/// `text_len` above `PTRDIFF_MAX` (such as `(size_t)-1`) is an error. Safe to call from many
/// threads at once on the same model.
///
/// # Safety
/// `model` is NULL or a live model; `text` is NULL or valid for reads of `text_len` bytes;
/// `out` and `err` are NULL or valid for writes (they need not be initialised).
#[no_mangle]
pub unsafe extern "C" fn gp_predict(
    model: *const GpModel,
    text: *const c_char,
    text_len: usize,
    out: *mut *mut GpEntities,
    err: *mut *mut GpError,
) -> c_int {
    // SAFETY: `&text` and `&text_len` are arrays of one element, alive for the call, and the text
    // is valid for reads of its length; `model`, `out` (one slot) and `err` are passed on under
    // the caller's contract, which is `gp_predict_batch`'s for n = 1.
    unsafe { gp_predict_batch(model, &text, &text_len, 1, std::ptr::null(), out, err) }
}

/// Finds the entities of `n` texts in one call (they are batched together: faster than `n` calls
/// of `gp_predict` for short texts). Text `i` is `text_lens[i]` bytes of UTF-8 at `texts[i]`.
/// `opts` may be NULL (the defaults).
///
/// Returns `GP_OK` and sets `out[0..n]` (free each with `gp_entities_free`), or returns `GP_ERR`,
/// sets every `out[i]` to NULL (when `out` is not NULL) and `*err` (when `err` is not NULL; codes
/// as for `gp_predict`, the message naming the text at fault). `n = 0` succeeds and writes
/// nothing. Lengths are as in `gp_predict`; an `n` no array can have (more than `PTRDIFF_MAX`
/// bytes of pointers) is an error and writes nothing to `out`.
/// Safe to call from many threads at once on the same model.
///
/// # Safety
/// `model` is NULL or a live model; `texts` and `text_lens` are NULL or arrays of `n` elements,
/// each text valid for reads of its length; `opts` is NULL or valid; `out` is NULL or valid for
/// writes of `n` pointers; `err` is NULL or valid for writes (`out` and `err` need not be
/// initialised).
#[no_mangle]
pub unsafe extern "C" fn gp_predict_batch(
    model: *const GpModel,
    texts: *const *const c_char,
    text_lens: *const usize,
    n: usize,
    opts: *const GpPredictOptions,
    out: *mut *mut GpEntities,
    err: *mut *mut GpError,
) -> c_int {
    let r = guard(|| {
        // SAFETY: `model` is NULL or a live model, which outlives the call (the caller's contract).
        let model = unsafe { non_null(model, "model") }?;
        // `out` may point to uninitialised slots: only written, never read or referenced.
        not_null(out, "out")?;
        if n == 0 {
            return Ok(Vec::new());
        }
        not_null(texts, "texts")?;
        not_null(text_lens, "text_lens")?;
        valid_len::<*const c_char>(n, "`n`")?;
        // SAFETY: both are arrays of `n` initialised elements (the caller's contract), not NULL,
        // and `n` elements fit in isize::MAX bytes (checked above).
        let (ptrs, lens) = unsafe {
            (
                std::slice::from_raw_parts(texts, n),
                std::slice::from_raw_parts(text_lens, n),
            )
        };
        let strs = ptrs
            .iter()
            .zip(lens)
            .enumerate()
            .map(|(i, (&p, &len))| {
                let name = if n == 1 {
                    "text".to_string()
                } else {
                    format!("texts[{i}]")
                };
                // SAFETY: text `i` is NULL or valid for reads of its length (the caller's
                // contract), for the whole call.
                unsafe { c_text(p, len, &name) }
            })
            .collect::<Res<Vec<&str>>>()?;
        // SAFETY: `opts` is NULL (then None) or valid (the caller's contract).
        let opts = unsafe { opts.as_ref() };
        let preds = model.predict(&strs, &predict_options(opts))?;
        Ok(strs
            .iter()
            .zip(&preds)
            .map(|(t, e)| to_c_entities(t, e, &model.labels))
            .collect())
    });
    // SAFETY: `err` is NULL or valid for writes (the caller's contract).
    match unsafe { report(r, err) } {
        Some(lists) => {
            for (i, l) in lists.into_iter().enumerate() {
                // SAFETY: success means `out` is not NULL (checked) and there is one list per
                // text, i < n; `out` is valid for writes of `n` pointers (the caller's contract).
                // The slot may be uninitialised, so it is written, not assigned through a
                // reference.
                unsafe { out.add(i).write(Box::into_raw(Box::new(l))) };
            }
            GP_OK
        }
        None => {
            // An `n` no array can have (the error says so) is no count of slots to write.
            if !out.is_null() && valid_len::<*mut GpEntities>(n, "`n`").is_ok() {
                for i in 0..n {
                    // SAFETY: `out` is not NULL, so valid for writes of `n` pointers (the
                    // caller's contract), and `n` is a possible array length (checked), so
                    // `out.add(i)` stays inside that array.
                    unsafe { out.add(i).write(std::ptr::null_mut()) };
                }
            }
            GP_ERR
        }
    }
}

/// The number of entities in `e`; 0 when `e` is NULL.
///
/// # Safety
/// `e` is NULL or a live `GpEntities`.
#[no_mangle]
pub unsafe extern "C" fn gp_entities_len(e: *const GpEntities) -> usize {
    // SAFETY: `e` is NULL (then None) or a live list (the caller's contract).
    unsafe { e.as_ref() }.map_or(0, |e| e.items.len())
}

/// The `i`-th entity of `e` (valid until `gp_entities_free(e)`); NULL when `e` is NULL or
/// `i >= gp_entities_len(e)`.
///
/// # Safety
/// `e` is NULL or a live `GpEntities`.
#[no_mangle]
pub unsafe extern "C" fn gp_entities_get(e: *const GpEntities, i: usize) -> *const GpEntity {
    // SAFETY: `e` is NULL (then None) or a live list (the caller's contract).
    unsafe { e.as_ref() }
        .and_then(|e| e.items.get(i))
        .map_or(std::ptr::null(), |x| x as *const GpEntity)
}

/// Frees an entity list (NULL: nothing happens).
///
/// # Safety
/// `e` is NULL or a list from `gp_predict*` not freed before.
#[no_mangle]
pub unsafe extern "C" fn gp_entities_free(e: *mut GpEntities) {
    if !e.is_null() {
        // SAFETY: every list handed to C is a `Box` turned into a raw pointer
        // (`gp_predict_batch`), and this one is not freed before (the caller's contract): it is
        // taken back once.
        drop(unsafe { Box::from_raw(e) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn character_offsets_become_byte_offsets() {
        // "北京 is 北京": 北 and 京 are 3 bytes each.
        let text = "北京 is 北京";
        let labels = vec![c_string("address"), c_string("name")];
        let ent = |start, end, ty: usize| PredEntity {
            start,
            end,
            label: labels[ty].to_str().unwrap().into(),
            ty,
            score: 1.5,
        };
        let list = to_c_entities(text, &[ent(0, 2, 0), ent(6, 8, 1), ent(3, 5, 0)], &labels);
        let got: Vec<(usize, usize, &str)> = list
            .items
            .iter()
            // SAFETY: `type` points into `list`, alive here.
            .map(|e| (e.start, e.end, unsafe { CStr::from_ptr(e.ty) }.to_str().unwrap()))
            .collect();
        assert_eq!(got, [(0, 6, "address"), (10, 16, "name"), (7, 9, "address")]);
        assert_eq!(&text[10..16], "北京");
        assert_eq!(list._types.len(), 2);
    }
}
