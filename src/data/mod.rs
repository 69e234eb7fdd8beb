//! Training and evaluation data: one reader per format, all producing [`Example`]s with character
//! spans, and format detection by content.
//!
//! Every problem in a file is a [`DataError`] naming `FILE:LINE`; nothing is dropped silently.

pub mod bio;
pub mod cluener;
pub mod cmeee;
mod dataset;
mod error;
mod format;
mod json;
pub mod jsonl;

pub(crate) use dataset::read_text;
pub use dataset::{Dataset, Entity, Example};
pub use error::{DataError, Problem};
pub use format::{detect, read_dataset, read_dataset_with, Format, ReadOptions};
