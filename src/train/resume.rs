//! `--resume`: after each epoch (and, with `--checkpoint-every N`, every N steps inside one),
//! `OUT/resume/` keeps the weights, the optimizer state and the progress of the run, so that an
//! interrupted run continues to the same model bit for bit.

use super::error::TrainError;
use super::record::TrainingRecord;
use crate::model_dir::{self, ModelDirError};
use crate::predict::Predictor;
use crate::tensor_io;
use crate::tokenize::Tokenizer;
use crate::trainer::Trainer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// State for `--resume`, kept in `OUT/resume/` after each epoch and at each checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResumeState {
    /// Epochs completed; the resumed run continues the next one (from `in_epoch`).
    pub epochs_done: usize,
    /// Optimizer updates made so far (the schedule's position).
    pub step: usize,
    /// Best dev F1 so far (None without dev data).
    pub best_f1: Option<f64>,
    /// training.json as of the last completed epoch.
    pub record: TrainingRecord,
    /// How far the next epoch got: nothing at an epoch's end (and in the state of versions
    /// that saved only there), some batches at a mid-epoch checkpoint.
    #[serde(default)]
    pub in_epoch: EpochProgress,
}

/// The part of an epoch already trained: its first `batches` batches (in the epoch's seeded
/// order), with the sums its record is made of.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochProgress {
    /// Batches trained on (0: the epoch has not started).
    pub batches: usize,
    /// Sum of their losses.
    pub loss_sum: f64,
    /// Real tokens in them.
    pub tokens: usize,
    /// Wall time spent on them.
    pub seconds: f64,
}

/// The resume directory's name inside the output directory.
pub const RESUME_DIR: &str = "resume";

/// The model's structure (config.json and the tokenizer) inside the resume directory: a resume
/// rebuilds the model from it, also when OUT has no model yet (a checkpoint of the first epoch).
pub const STRUCTURE_DIR: &str = "structure";

/// `OUT/resume/state.json`, and the weights and optimizer state of the position it names:
/// `model-E.safetensors` after E epochs, `model-E+B.safetensors` after B batches more (a
/// mid-epoch checkpoint), and `optimizer-…` alike. The tensor files carry the position in their
/// names and state.json is written last: a run killed while saving leaves state.json naming the
/// previous position's files, still complete.
pub fn resume_paths(out: &Path, epochs_done: usize, in_epoch: &EpochProgress) -> (PathBuf, PathBuf, PathBuf) {
    let d = out.join(RESUME_DIR);
    let position = match in_epoch.batches {
        0 => epochs_done.to_string(),
        b => format!("{epochs_done}+{b}"),
    };
    (
        d.join("state.json"),
        d.join(format!("model-{position}.safetensors")),
        d.join(format!("optimizer-{position}.safetensors")),
    )
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelDirError + '_ {
    move |source| ModelDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `trainer`'s weights and optimizer state and then `state` into `out/resume/` (see
/// [`resume_paths`]), first the model's structure when the directory lacks it, and removes the
/// files of earlier positions.
pub fn save_resume(
    out: &Path,
    trainer: &Trainer<f32>,
    tokenizer: &Tokenizer,
    state: &ResumeState,
) -> Result<(), TrainError> {
    let dir = out.join(RESUME_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    save_structure(&dir, trainer, tokenizer)?;
    let (state_p, model_p, opt_p) = resume_paths(out, state.epochs_done, &state.in_epoch);
    model_dir::save_weights(&model_p, &trainer.model)?;
    let tensors = trainer.opt.state_tensors();
    model_dir::write_atomic(&opt_p, &tensor_io::named_to_bytes(&tensors))?;
    model_dir::write_atomic(
        &state_p,
        &serde_json::to_vec_pretty(state).expect("state serialises"),
    )?;
    // Older positions' files (and temporary files or directories of a killed run) are no longer
    // named by state.json; the directory holds nothing else.
    let keep = [
        model_p.file_name(),
        opt_p.file_name(),
        state_p.file_name(),
        Some(STRUCTURE_DIR.as_ref()),
    ];
    for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
        let Ok(entry) = entry else { continue };
        if !keep.contains(&Some(entry.file_name().as_os_str())) {
            let _ = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(entry.path()),
                _ => std::fs::remove_file(entry.path()),
            };
        }
    }
    Ok(())
}

/// Writes config.json and the tokenizer into `resume/structure/` unless it is there: into a
/// temporary directory first, renamed into place when complete. The structure does not change
/// during a run, so it is written once.
fn save_structure(dir: &Path, trainer: &Trainer<f32>, tokenizer: &Tokenizer) -> Result<(), TrainError> {
    let target = dir.join(STRUCTURE_DIR);
    if target.is_dir() {
        return Ok(());
    }
    let staging = dir.join(format!(".{STRUCTURE_DIR}.tmp-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    model_dir::save_structure(&staging, &trainer.model, tokenizer)?;
    std::fs::rename(&staging, &target).map_err(io_err(&target))?;
    Ok(())
}

/// What a resumed run starts from: its progress, the model with the saved weights, and the
/// optimizer state file (for [`restore_optimizer`], once the trainer is built).
pub struct Restored {
    /// The progress of the interrupted run.
    pub state: ResumeState,
    /// The model (saved weights, unpacked for training) and its tokenizer.
    pub predictor: Predictor<f32>,
    /// The optimizer state of the same position.
    pub optimizer: PathBuf,
}

/// Reads `out/resume/`: state.json, then the model it names, built from `resume/structure/` (or,
/// in a resume directory of a version that did not keep one, from the model directory `out`).
pub fn restore(out: &Path) -> Result<Restored, TrainError> {
    let dir = out.join(RESUME_DIR);
    let (state_p, _, _) = resume_paths(out, 0, &EpochProgress::default());
    let text = std::fs::read_to_string(&state_p).map_err(io_err(&state_p))?;
    let state: ResumeState = serde_json::from_str(&text).map_err(|source| ModelDirError::Config {
        path: state_p.clone(),
        source,
    })?;
    let (_, mut model_p, mut opt_p) = resume_paths(out, state.epochs_done, &state.in_epoch);
    if !model_p.exists() && dir.join("model.safetensors").exists() {
        // The layout before epoch-named files (model.safetensors, optimizer.safetensors).
        (model_p, opt_p) = (dir.join("model.safetensors"), dir.join("optimizer.safetensors"));
    }
    let structure = dir.join(STRUCTURE_DIR);
    let structure = if structure.is_dir() {
        structure
    } else {
        out.to_path_buf()
    };
    let predictor = model_dir::load_unpacked::<f32>(&structure, &model_p)?;
    Ok(Restored {
        state,
        predictor,
        optimizer: opt_p,
    })
}

/// Loads the optimizer state file `path` (from [`restore`]) into `trainer`.
pub fn restore_optimizer(trainer: &mut Trainer<f32>, path: &Path) -> Result<(), TrainError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let tensors = tensor_io::named_from_bytes::<f32>(&bytes, path)?;
    trainer
        .opt
        .load_state(&trainer.model, &tensors)
        .map_err(|source| TrainError::OptimizerState {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::record::EpochRecord;

    fn state(in_epoch: EpochProgress) -> ResumeState {
        ResumeState {
            epochs_done: 1,
            step: 90,
            best_f1: Some(0.3507781168498593),
            record: TrainingRecord {
                epochs: vec![EpochRecord {
                    epoch: 1,
                    train_loss: 98.11911461128071,
                    train_tokens: 1234,
                    seconds: 1.7304663238213813,
                    tokens_per_s: 713.1083790418843,
                    dev_precision: Some(0.9590317297689149),
                    dev_recall: Some(0.0009663628498444243),
                    dev_f1: Some(96.22163995104181),
                    dev_em: None,
                }],
                ..TrainingRecord::default()
            },
            in_epoch,
        }
    }

    #[test]
    fn position_names_the_tensor_files() {
        let out = Path::new("/o");
        let at_end = resume_paths(out, 2, &EpochProgress::default());
        assert_eq!(at_end.1, Path::new("/o/resume/model-2.safetensors"));
        assert_eq!(at_end.2, Path::new("/o/resume/optimizer-2.safetensors"));
        let mid = EpochProgress {
            batches: 40,
            ..EpochProgress::default()
        };
        let (s, m, o) = resume_paths(out, 2, &mid);
        assert_eq!(s, Path::new("/o/resume/state.json"));
        assert_eq!(m, Path::new("/o/resume/model-2+40.safetensors"));
        assert_eq!(o, Path::new("/o/resume/optimizer-2+40.safetensors"));
    }

    /// The figures carried over must come back bit for bit: 98.11911461128071,
    /// 1.7304663238213813, 0.9590317297689149, 96.22163995104181 and 0.0009663628498444243 parse
    /// one ulp off with serde_json's default float parser (without `float_roundtrip`).
    #[test]
    fn state_json_round_trips_every_float_exactly() {
        let s = state(EpochProgress {
            batches: 40,
            loss_sum: 1.7304663238213813,
            tokens: 5678,
            seconds: 0.9590317297689149,
        });
        let back: ResumeState = serde_json::from_slice(&serde_json::to_vec_pretty(&s).unwrap()).unwrap();
        let bits = |s: &ResumeState| {
            let e = &s.record.epochs[0];
            [
                s.in_epoch.loss_sum,
                s.in_epoch.seconds,
                s.best_f1.unwrap(),
                e.train_loss,
                e.seconds,
                e.tokens_per_s,
                e.dev_precision.unwrap(),
                e.dev_recall.unwrap(),
                e.dev_f1.unwrap(),
            ]
            .map(f64::to_bits)
        };
        assert_eq!(bits(&back), bits(&s));
        assert_eq!(back.in_epoch, s.in_epoch);
    }

    /// A state.json of a version that saved only at epochs' ends (no `in_epoch`) reads as the
    /// end of its epoch.
    #[test]
    fn a_state_without_a_position_in_the_epoch_is_at_the_epochs_end() {
        let mut json = serde_json::to_value(state(EpochProgress::default())).unwrap();
        assert!(json.as_object_mut().unwrap().remove("in_epoch").is_some());
        let old: ResumeState = serde_json::from_value(json).unwrap();
        assert_eq!(old.in_epoch, EpochProgress::default());
        assert_eq!((old.epochs_done, old.step), (1, 90));
    }
}
