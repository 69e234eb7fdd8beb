//! Why a training run failed: each variant one cause, with its source kept.

use crate::bert::checkpoint::CheckpointError;
use crate::bert::config::ConfigError;
use crate::bert::EncoderError;
use crate::data::DataError;
use crate::head::HeadError;
use crate::model::ModelError;
use crate::model_dir::ModelDirError;
use crate::optim::adamw::OptimError;
use crate::predict::PredictError;
use crate::tensor_io::TensorFileError;
use crate::tokenize::TokenizeError;
use std::path::PathBuf;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the training or dev data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The pretrained encoder's or `--config`'s config.json.
    #[error(transparent)]
    EncoderConfig(#[from] ConfigError),
    /// The pretrained encoder's weights.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Reading or writing the model directory.
    #[error(transparent)]
    ModelDir(#[from] ModelDirError),
    /// Loading a tokenizer (`path`: where from).
    #[error("{}: {source}", path.display())]
    Tokenizer {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: TokenizeError,
    },
    /// Tokenizing the example at `path:line`.
    #[error("{}:{line}: {source}", path.display())]
    Tokenize {
        /// The data file.
        path: PathBuf,
        /// 1-based line where the example starts.
        line: usize,
        /// What went wrong.
        source: TokenizeError,
    },
    /// Building the encoder.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// Building the model from its configuration.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The head's configuration.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Evaluating on the dev data.
    #[error(transparent)]
    Predict(#[from] PredictError),
    /// Answering the dev questions (a reader) failed.
    #[error(transparent)]
    Answer(#[from] crate::answer::AnswerError),
    /// Reading `--resume`'s optimizer state file.
    #[error(transparent)]
    ResumeTensors(#[from] TensorFileError),
    /// The optimizer state of `--resume` does not fit the model.
    #[error("{}: {source}", path.display())]
    OptimizerState {
        /// The optimizer state file.
        path: PathBuf,
        /// What does not fit.
        source: OptimError,
    },
    /// An option out of its range (`what` says which and why).
    #[error("{option} = {value}: {reason}")]
    Option {
        /// The option, as the command line spells it.
        option: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// The training data has no entity.
    #[error("{}: no entities to learn from", path.display())]
    NoEntities {
        /// The training file.
        path: PathBuf,
    },
    /// `--resume` from inside an epoch that has fewer batches in this run than the interrupted
    /// run had trained on (other data or another `--batch-size`).
    #[error("{}: the interrupted run had trained on {done} batches of epoch {epoch}, but the epoch has {steps} here (not the same data or --batch-size?)", path.display())]
    ResumePosition {
        /// The resume state file.
        path: PathBuf,
        /// 1-based epoch.
        epoch: usize,
        /// Batches the state says were done.
        done: usize,
        /// Batches of the epoch in this run.
        steps: usize,
    },
    /// `--resume` with another `--precision` than the interrupted run's (its steps would not be
    /// the ones an uninterrupted run takes).
    #[error("{}: the interrupted run trained in {was}, this one asks for {now} (resume with --precision {was})", out.display())]
    ResumePrecision {
        /// The run's directory.
        out: PathBuf,
        /// The interrupted run's precision.
        was: crate::precision::Precision,
        /// This run's.
        now: crate::precision::Precision,
    },
    /// `--resume` of a run that already has all its epochs.
    #[error("{}: the run already completed {done} of {epochs} epochs", out.display())]
    AlreadyDone {
        /// The run's directory.
        out: PathBuf,
        /// Epochs done.
        done: usize,
        /// Epochs asked for.
        epochs: usize,
    },
}

impl TrainError {
    /// An option out of its range.
    pub fn option(option: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        TrainError::Option {
            option,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
