//! The training run: data preparation, epochs of shuffled length-bucketed batches, evaluation on
//! the dev set after each epoch, the best model kept, and resumable state.
//!
//! Reproducibility: batch order comes from `(seed, epoch)`, dropout from `(seed, step)`, and every
//! parallel computation splits work by the thread count alone, so the same data, seed and thread
//! count give the same model bit for bit, also across `--resume`.

pub mod build;
pub mod choices;
pub mod error;
pub mod options;
pub mod prepare;
pub mod record;
pub mod resume;
pub mod run;

pub use choices::{choose_boundaries, choose_decode};
pub use error::TrainError;
pub use options::{default_head, EncoderSource, Event, TokenizationChoice, TrainOptions};
pub use prepare::{prepare, Prepared};
pub use record::{EpochRecord, TrainingRecord};
pub use run::train;
