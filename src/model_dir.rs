//! A model directory: config.json (encoder, head, labels, max length), model.safetensors, the
//! tokenizer (tokenizer.json or the character vocab.txt) and training.json. Every file is written
//! atomically (a temporary file in the same directory, then a rename).

use crate::bert::checkpoint::{
    load_params_from_bytes_as, params_to_bytes, params_to_bytes_as, CheckpointError,
};
use crate::model::{ModelConfig, NerModel};
use crate::precision::Precision;
use crate::predict::Predictor;
use crate::scalar::Scalar;
use crate::tokenize::{TokenizeError, Tokenizer};
use std::path::{Path, PathBuf};

/// The model's configuration ([`ModelConfig`] as JSON).
pub const CONFIG_FILE: &str = "config.json";
/// The model's parameters (safetensors).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The record of the training run that wrote the model (`TrainingRecord` as JSON).
pub const RECORD_FILE: &str = "training.json";

/// Why a model directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    /// A file or directory could not be read, written, created or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file (config.json, a resume state) does not parse as what gp-lite writes.
    #[error("{}: not a gp-lite model configuration: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The weights file cannot be read or does not match the model (a missing, unknown or
    /// misshapen tensor, a malformed file).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The tokenizer could not be loaded or saved.
    /// The tokenizer's own errors already name the file, so only they are shown.
    #[error("{source}")]
    Tokenizer {
        /// The directory it was loaded from or saved to.
        path: PathBuf,
        /// The tokenizer's error.
        source: TokenizeError,
    },
    /// The model path is missing or is not a directory.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory's files are readable but do not make a usable model: no labels, sizes out
    /// of limits or that disagree with each other.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The file (or directory) at fault.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelDirError + '_ {
    move |source| ModelDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees a
/// half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelDirError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes config.json, model.safetensors and the tokenizer into `dir` (created if needed).
pub fn save_model<T: Scalar>(
    dir: &Path,
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
) -> Result<(), ModelDirError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    save_weights(&dir.join(WEIGHTS_FILE), model)?;
    save_structure(dir, model, tokenizer)
}

/// Writes what rebuilds the model without its weights, the tokenizer and config.json, into
/// `dir` (created if needed).
pub fn save_structure<T: Scalar>(
    dir: &Path,
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
) -> Result<(), ModelDirError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let staging = dir.join(format!(".tokenizer.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
    tokenizer
        .save(&staging)
        .map_err(|source| ModelDirError::Tokenizer {
            path: staging.clone(),
            source,
        })?;
    for entry in std::fs::read_dir(&staging).map_err(io_err(&staging))? {
        let entry = entry.map_err(io_err(&staging))?;
        let target = dir.join(entry.file_name());
        std::fs::rename(entry.path(), &target).map_err(io_err(&target))?;
    }
    std::fs::remove_dir(&staging).map_err(io_err(&staging))?;
    let config = serde_json::to_vec_pretty(&model.config).expect("a config always serialises");
    write_atomic(&dir.join(CONFIG_FILE), &config)
}

/// Writes the model's parameters (encoder HF names, head under `head.`).
/// In an int8 model (`config.precision`), the matrices [`NerModel::stored_narrow`] picks are
/// written in int8 with a scale per row; in a bf16 model, in bf16 (docs/model-format.md).
pub fn save_weights<T: Scalar>(path: &Path, model: &NerModel<T>) -> Result<(), ModelDirError> {
    let family = crate::family::of(&model.config.encoder).map_err(CheckpointError::from)?;
    let bytes = match model.config.precision {
        Precision::F32 => params_to_bytes(model, &family),
        Precision::Int8 | Precision::Bf16 => params_to_bytes_as(
            model,
            &family,
            model.config.precision,
            NerModel::<T>::stored_narrow,
        ),
    };
    write_atomic(path, &bytes)
}

/// Reads config.json.
pub fn load_config(dir: &Path) -> Result<ModelConfig, ModelDirError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let config: ModelConfig = serde_json::from_str(&text).map_err(|source| ModelDirError::Config {
        path: path.clone(),
        source,
    })?;
    if config.labels.is_empty() {
        return Err(ModelDirError::Invalid {
            path,
            what: "`labels` is empty".into(),
        });
    }
    Ok(config)
}

/// Fills `model`'s parameters from a safetensors file written by [`save_weights`]: every
/// parameter must be there with its shape, and nothing else may be. In a bf16 model every
/// tensor must be stored as [`save_weights`] writes it (BF16 where
/// [`NerModel::stored_narrow`] says, F32 elsewhere) and the BF16 ones finite.
pub fn load_weights<T: Scalar>(path: &Path, model: &mut NerModel<T>) -> Result<(), ModelDirError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let family = crate::family::of(&model.config.encoder).map_err(CheckpointError::from)?;
    let precision = model.config.precision;
    let stored = |name: &str| match precision {
        Precision::Bf16 if NerModel::<T>::stored_narrow(name) => Some(safetensors::Dtype::BF16),
        Precision::Bf16 => Some(safetensors::Dtype::F32),
        Precision::F32 | Precision::Int8 => None,
    };
    load_params_from_bytes_as(model, &bytes, path, &family, |_| false, stored)?;
    Ok(())
}

/// Loads a model directory for inference.
pub fn load_model<T: Scalar>(dir: &Path) -> Result<Predictor<T>, ModelDirError> {
    // A loaded model is only run: its weights are packed once for the products, in the precision
    // its directory says. An int8 or bf16 directory's f32 weights are its stored values widened:
    // each layer is packed as soon as it is read and its f32 copy dropped (the packed values are
    // all the model needs), so that the load holds one layer at a time in f32.
    let mut predictor = load_with(dir, &dir.join(WEIGHTS_FILE), |model| {
        model.encoder.pack_on_load(model.config.precision)
    })?;
    let precision = predictor.model.config.precision;
    if precision.is_f32() {
        predictor.model.prepack_as(precision);
    } else {
        // packed as loaded (and packing again would widen every layer back first)
        predictor.model.head.prepack();
        crate::alloc::release_cached();
    }
    Ok(predictor)
}

/// The model of the directory `dir` (config.json, the tokenizer) with the weights of the file
/// `weights`, as training uses it: no weight packed for inference (training runs the same
/// products as a model built from scratch, so that a resumed run continues bit for bit).
pub fn load_unpacked<T: Scalar>(dir: &Path, weights: &Path) -> Result<Predictor<T>, ModelDirError> {
    load_with(dir, weights, |_| {})
}

/// [`load_unpacked`], with `before_load` called on the model between its allocation and the
/// load of its weights.
fn load_with<T: Scalar>(
    dir: &Path,
    weights: &Path,
    before_load: impl FnOnce(&mut NerModel<T>),
) -> Result<Predictor<T>, ModelDirError> {
    if !dir.is_dir() {
        return Err(ModelDirError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let config = load_config(dir)?;
    // Sizes are checked against the weights file before the model is allocated.
    let weights = weights.to_path_buf();
    let weights_len = std::fs::metadata(&weights).map_err(io_err(&weights))?.len();
    crate::model_limits::check(&config, weights_len).map_err(|e| ModelDirError::Invalid {
        // a size that does not fit is the weights file's fault as much as the config's
        path: match e {
            crate::model_limits::LimitError::TooLarge { .. } => weights.clone(),
            _ => dir.join(CONFIG_FILE),
        },
        what: e.to_string(),
    })?;
    let mut model = NerModel::zeroed(config).map_err(|e| ModelDirError::Invalid {
        path: dir.join(CONFIG_FILE),
        what: e.to_string(),
    })?;
    before_load(&mut model);
    load_weights(&weights, &mut model)?;
    let tokenizer = match &model.config.tokenization {
        Some(t) => Tokenizer::load_as(dir, t.as_str()),
        None => Tokenizer::load(dir),
    }
    .map_err(|source| ModelDirError::Tokenizer {
        path: dir.to_path_buf(),
        source,
    })?;
    if tokenizer.vocab_size() > model.config.encoder.vocab_size {
        return Err(ModelDirError::Invalid {
            path: dir.to_path_buf(),
            what: format!(
                "tokenizer has {} tokens but the encoder's vocab_size is {}",
                tokenizer.vocab_size(),
                model.config.encoder.vocab_size
            ),
        });
    }
    Ok(Predictor { model, tokenizer })
}
