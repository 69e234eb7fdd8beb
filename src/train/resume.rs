//! `--resume`: after each epoch, `OUT/resume/` keeps the weights, the optimizer state and the
//! progress of the run, so that an interrupted run continues to the same model bit for bit.

use super::error::TrainError;
use super::record::TrainingRecord;
use crate::model_dir::{self, ModelDirError};
use crate::tensor_io;
use crate::trainer::Trainer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// State for `--resume`, kept in `OUT/resume/` after each epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResumeState {
    /// Epochs completed; the resumed run starts with the next.
    pub epochs_done: usize,
    /// Optimizer updates made so far (the schedule's position).
    pub step: usize,
    /// Best dev F1 so far (None without dev data).
    pub best_f1: Option<f64>,
    /// training.json as of the last completed epoch.
    pub record: TrainingRecord,
}

/// The resume directory's name inside the output directory.
pub const RESUME_DIR: &str = "resume";

/// `OUT/resume/state.json`, and the weights and optimizer state of the epoch it names. The two
/// tensor files carry the epoch in their names and state.json is written last: a run killed
/// while saving leaves state.json naming the previous epoch's files, still complete.
pub fn resume_paths(out: &Path, epochs_done: usize) -> (PathBuf, PathBuf, PathBuf) {
    let d = out.join(RESUME_DIR);
    (
        d.join("state.json"),
        d.join(format!("model-{epochs_done}.safetensors")),
        d.join(format!("optimizer-{epochs_done}.safetensors")),
    )
}

/// Writes `trainer`'s weights and optimizer state and then `state` into `out/resume/` (see
/// [`resume_paths`]), and removes the files of earlier epochs.
pub fn save_resume(out: &Path, trainer: &Trainer<f32>, state: &ResumeState) -> Result<(), TrainError> {
    let dir = out.join(RESUME_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| ModelDirError::Io {
        path: dir.clone(),
        source,
    })?;
    let (state_p, model_p, opt_p) = resume_paths(out, state.epochs_done);
    model_dir::save_weights(&model_p, &trainer.model)?;
    let tensors = trainer.opt.state_tensors();
    model_dir::write_atomic(&opt_p, &tensor_io::named_to_bytes(&tensors))?;
    model_dir::write_atomic(
        &state_p,
        &serde_json::to_vec_pretty(state).expect("state serialises"),
    )?;
    // Older epochs' files (and temporary files of a killed run) are no longer named by
    // state.json; the directory holds nothing else.
    let keep = [model_p.file_name(), opt_p.file_name(), state_p.file_name()];
    for entry in std::fs::read_dir(&dir).map_err(|source| ModelDirError::Io {
        path: dir.clone(),
        source,
    })? {
        let Ok(entry) = entry else { continue };
        if !keep.contains(&Some(entry.file_name().as_os_str())) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Weights and optimizer state from `out/resume/` into `trainer`; returns the progress there.
pub fn restore(out: &Path, trainer: &mut Trainer<f32>) -> Result<ResumeState, TrainError> {
    let (state_p, _, _) = resume_paths(out, 0);
    let text = std::fs::read_to_string(&state_p).map_err(|source| ModelDirError::Io {
        path: state_p.clone(),
        source,
    })?;
    let state: ResumeState = serde_json::from_str(&text).map_err(|source| ModelDirError::Config {
        path: state_p.clone(),
        source,
    })?;
    let (_, mut model_p, mut opt_p) = resume_paths(out, state.epochs_done);
    let legacy = out.join(RESUME_DIR);
    if !model_p.exists() && legacy.join("model.safetensors").exists() {
        // The layout before epoch-named files (model.safetensors, optimizer.safetensors).
        (model_p, opt_p) = (
            legacy.join("model.safetensors"),
            legacy.join("optimizer.safetensors"),
        );
    }
    model_dir::load_weights(&model_p, &mut trainer.model)?;
    let bytes = std::fs::read(&opt_p).map_err(|source| ModelDirError::Io {
        path: opt_p.clone(),
        source,
    })?;
    let tensors = tensor_io::named_from_bytes::<f32>(&bytes, &opt_p)?;
    trainer
        .opt
        .load_state(&trainer.model, &tensors)
        .map_err(|source| TrainError::OptimizerState { path: opt_p, source })?;
    Ok(state)
}
