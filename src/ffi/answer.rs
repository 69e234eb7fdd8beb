//! The C interface of a reader model: the answer to one (question, context) pair.

use super::args::{c_text, non_null, not_null};
use super::error::{guard, report, CError, Kind, Res};
use super::{GpError, GpModel, GP_ERR, GP_OK};
use crate::answer::{answer, AnswerError};
use std::ffi::{c_char, c_int};

/// An answer: the bytes `[start, end)` of the context and the span's score; `found` is false
/// (and the rest 0) when the context has no span to answer with (an empty context).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GpAnswer {
    /// Whether there is an answer.
    pub found: bool,
    /// The byte offset of the answer's first byte in the context.
    pub start: usize,
    /// The byte offset just past its last byte.
    pub end: usize,
    /// The reader's score of the span (a logit).
    pub score: f64,
}

impl From<AnswerError> for CError {
    fn from(e: AnswerError) -> CError {
        match e {
            AnswerError::Predict(p) => p.into(),
            AnswerError::NotAReader(_) | AnswerError::Head(_) => CError::new(Kind::Model, e.to_string()),
        }
    }
}

impl GpModel {
    /// The answer to `question` about `context`, in the model's pool with a reused workspace.
    fn answer(&self, question: &str, context: &str) -> Res<GpAnswer> {
        let (model, tokenizer) = (&self.predictor.model, &self.predictor.tokenizer);
        let found = self.with_workspace(|ws| answer(model, tokenizer, &[(question, context)], ws))?;
        let Some(a) = found.into_iter().next().flatten() else {
            return Ok(GpAnswer::default());
        };
        // Character offsets to byte offsets of the context.
        let byte = |c: usize| context.char_indices().nth(c).map_or(context.len(), |(b, _)| b);
        Ok(GpAnswer {
            found: true,
            start: byte(a.start),
            end: byte(a.end),
            score: a.score,
        })
    }
}

/// Answers `question` (`question_len` bytes of UTF-8) about `context` (`context_len` bytes) with
/// a reader model (trained with `--head reader`): the best span of the context over all its
/// windows, as byte offsets into `context`.
///
/// Returns `GP_OK` and writes `*out`, or returns `GP_ERR` and sets `*err` (when not NULL), whose
/// `gp_error_code` is `GP_ERR_ARGUMENT` (a NULL argument, an impossible length), `GP_ERR_INPUT`
/// (invalid UTF-8), `GP_ERR_MODEL` (not a reader, or the model cannot run the text) or
/// `GP_ERR_PANIC`; `*out` is then left as it was. Safe to call from many threads at once on the
/// same model.
///
/// # Safety
/// `model` is NULL or a live model; `question` and `context` are NULL or valid for reads of
/// their lengths; `out` and `err` are NULL or valid for writes (they need not be initialised).
#[no_mangle]
pub unsafe extern "C" fn gp_answer(
    model: *const GpModel,
    question: *const c_char,
    question_len: usize,
    context: *const c_char,
    context_len: usize,
    out: *mut GpAnswer,
    err: *mut *mut GpError,
) -> c_int {
    let r = guard(|| {
        // SAFETY: `model` is NULL or a live model, which outlives the call (the caller's contract).
        let model = unsafe { non_null(model, "model") }?;
        not_null(out, "out")?;
        // SAFETY: each text is NULL or valid for reads of its length for the whole call (the
        // caller's contract).
        let question = unsafe { c_text(question, question_len, "question") }?;
        // SAFETY: as above.
        let context = unsafe { c_text(context, context_len, "context") }?;
        model.answer(question, context)
    });
    // SAFETY: `err` is NULL or valid for writes (the caller's contract).
    match unsafe { report(r, err) } {
        Some(a) => {
            // SAFETY: success means `out` is not NULL (checked), so valid for writes (the
            // caller's contract); it may be uninitialised, so it is written, not assigned.
            unsafe { out.write(a) };
            GP_OK
        }
        None => GP_ERR,
    }
}
