//! Loading a [`BertEncoder`] from an HF `model.safetensors` (+ `config.json`) and saving it back.
//!
//! Loading is one walk over the encoder's parameters by HF name, each filled from the file tensor
//! of that name in the encoder's family (`crate::family`: with or without its prefix, `bert.`,
//! `roberta.`, ...), converted from f32/f16/bf16/f64 to `T`. Integer buffers
//! (`embeddings.position_ids`) and tensors outside the encoder (`pooler.*`, `cls.*`) are skipped
//! and listed in the [`LoadReport`]. Saving writes the family's names, so HF loads them back.

use crate::bert::config::BertConfig;
use crate::bert::config::ConfigError;
use crate::bert::encoder::{BertEncoder, EncoderError};
use crate::family::{self, EncoderFamily};
use crate::param::Params;
use crate::precision::Precision;
use crate::scalar::Scalar;
use crate::tensor_io::{self, TensorFileError, TensorReadError};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The safetensors file, or one of the tensors the model takes from it, could not be read.
    #[error(transparent)]
    Tensors(#[from] TensorFileError),
    /// The file holds a float tensor the model has no parameter for (under a name it would
    /// otherwise take).
    #[error("{path}: tensor `{tensor}` is not a parameter of this encoder")]
    Unknown {
        /// The tensor's name in the file.
        tensor: String,
        /// The safetensors file.
        path: PathBuf,
    },
    /// The configuration does not make an encoder (see [`EncoderError`]).
    #[error("{path}: {source}")]
    Encoder {
        /// The config.json.
        path: PathBuf,
        /// Why the encoder cannot be built.
        source: EncoderError,
    },
    /// The configuration cannot be read, or names a family or setting gp-lite does not compute.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration declares more parameters than the weights file has bytes for (checked
    /// before anything is allocated).
    #[error(
        "{path}: the configuration declares at least {params} parameters, more than this file of {file_len} bytes can hold"
    )]
    TooLarge {
        /// The weights file.
        path: PathBuf,
        /// A lower bound of the parameter count (u64, saturated: a u128 would double the size of
        /// every `Result` carrying this error).
        params: u64,
        /// The file's size in bytes.
        file_len: usize,
    },
}

/// What loading left aside: file tensors gp-lite does not use (pooler, heads, integer buffers).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// file names, sorted
    pub skipped: Vec<String>,
}

/// Reads HF's config.json of any registered encoder family (see [`family::read_config`]).
pub fn load_config(path: &Path) -> Result<BertConfig, CheckpointError> {
    Ok(family::read_config(path)?)
}

/// Writes the configuration as HF's config.json.
pub fn save_config(cfg: &BertConfig, path: &Path) -> Result<(), CheckpointError> {
    let text = serde_json::to_string_pretty(cfg).expect("a config always serialises");
    std::fs::write(path, text).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads an encoder of configuration `cfg` from a safetensors file.
pub fn load_encoder<T: Scalar>(
    cfg: &BertConfig,
    path: &Path,
) -> Result<(BertEncoder<T>, LoadReport), CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_encoder_from_bytes(cfg, &bytes, path)
}

/// [`load_encoder`] from the file's bytes; `path` names the file in errors.
pub fn load_encoder_from_bytes<T: Scalar>(
    cfg: &BertConfig,
    bytes: &[u8],
    path: &Path,
) -> Result<(BertEncoder<T>, LoadReport), CheckpointError> {
    // Every parameter takes at least 2 bytes (f16): refuse sizes the file cannot hold before
    // allocating them.
    let params = cfg.min_params();
    if params.saturating_mul(2) > bytes.len() as u128 {
        return Err(CheckpointError::TooLarge {
            path: path.to_path_buf(),
            params: u64::try_from(params).unwrap_or(u64::MAX),
            file_len: bytes.len(),
        });
    }
    let family = family::of(cfg)?;
    let mut enc = BertEncoder::<T>::zeroed(cfg).map_err(|source| CheckpointError::Encoder {
        path: path.to_path_buf(),
        source,
    })?;
    // Tensors outside the encoder (pooler, pre-training heads) are not ours to load.
    let report = load_params_from_bytes(&mut enc, bytes, path, &family, |name| {
        family.outside_encoder(cfg, name)
    })?;
    Ok((enc, report))
}

/// Fills every parameter of `model` from a safetensors file by its name in `family` (the
/// family's prefix in the file is accepted), converting the stored dtype to `T`. A file tensor
/// that no parameter takes is skipped (and listed in the report) when it is an integer buffer or
/// `skippable(name without prefix)`, and is an error otherwise; a missing tensor or a wrong shape
/// is an error naming it.
pub fn load_params_from_bytes<T: Scalar, M: Params<T> + ?Sized>(
    model: &mut M,
    bytes: &[u8],
    path: &Path,
    family: &EncoderFamily,
    skippable: impl Fn(&str) -> bool,
) -> Result<LoadReport, CheckpointError> {
    load_params_from_bytes_as(model, bytes, path, family, skippable, |_| None)
}

/// [`load_params_from_bytes`], with the dtype each parameter must be stored in where
/// `stored(parameter name)` names one (a bf16 model directory's): another dtype is an error
/// naming the tensor, and a BF16 tensor must hold finite values only.
pub fn load_params_from_bytes_as<T: Scalar, M: Params<T> + ?Sized>(
    model: &mut M,
    bytes: &[u8],
    path: &Path,
    family: &EncoderFamily,
    skippable: impl Fn(&str) -> bool,
    stored: impl Fn(&str) -> Option<Dtype>,
) -> Result<LoadReport, CheckpointError> {
    let err_path = || path.to_path_buf();
    let tensor_err = |source| CheckpointError::Tensors(TensorFileError::new(path, source));
    let st = SafeTensors::deserialize(bytes).map_err(|e| tensor_err(TensorReadError::Format(e)))?;
    // Name without the family's prefix -> name in the file.
    let prefix = format!("{}.", family.prefix);
    let file_names: BTreeMap<String, String> = st
        .names()
        .into_iter()
        .map(|n| (n.strip_prefix(&prefix).unwrap_or(n).to_string(), n.to_string()))
        .collect();
    let mut used = BTreeSet::new();
    let mut result = Ok(());
    model.visit_mut("", &mut |name, mut p| {
        if result.is_err() {
            return;
        }
        let expected = stored(name);
        let name = (family.file_name)(name);
        let Some(file_name) = file_names.get(&name) else {
            result = Err(tensor_err(TensorReadError::Missing(name)));
            return;
        };
        if let (Some(expected), Ok(view)) = (expected, st.tensor(file_name)) {
            if let Err(e) = tensor_io::check_stored(file_name, &view, expected) {
                result = Err(tensor_err(e));
                return;
            }
        }
        if st.tensor(file_name).is_ok_and(|t| t.dtype() == Dtype::I8) {
            // its scales are read with it
            used.insert(tensor_io::scale_name(&name));
        }
        used.insert(name.clone());
        if let Err(source) = tensor_io::read_into::<T>(&st, file_name, p.value.view_mut()) {
            result = Err(tensor_err(source));
        }
    });
    result?;
    let mut report = LoadReport::default();
    for (name, file_name) in &file_names {
        if used.contains(name) {
            continue;
        }
        let integer = st
            .tensor(file_name)
            .map(|t| is_integer(t.dtype()))
            .unwrap_or(false);
        if !integer && !skippable(name) {
            return Err(CheckpointError::Unknown {
                tensor: file_name.clone(),
                path: err_path(),
            });
        }
        report.skipped.push(file_name.clone());
    }
    report.skipped.sort();
    Ok(report)
}

fn is_integer(d: Dtype) -> bool {
    matches!(
        d,
        Dtype::I64
            | Dtype::I32
            | Dtype::I16
            | Dtype::I8
            | Dtype::U8
            | Dtype::U16
            | Dtype::U32
            | Dtype::U64
            | Dtype::BOOL
    )
}

/// The encoder's tensors as safetensors bytes, by its family's HF names, in `T`'s dtype.
pub fn encoder_to_bytes<T: Scalar>(enc: &BertEncoder<T>) -> Result<Vec<u8>, CheckpointError> {
    Ok(params_to_bytes(enc, &family::of(enc.config())?))
}

/// Every parameter of `model` as safetensors bytes, by its name in `family`, in `T`'s dtype.
pub fn params_to_bytes<T: Scalar, M: Params<T> + ?Sized>(model: &M, family: &EncoderFamily) -> Vec<u8> {
    params_to_bytes_as(model, family, Precision::F32, |_| false)
}

/// [`params_to_bytes`], with every 2-D f32 parameter whose name `narrow` picks written in
/// `precision`: int8, a symmetric scale per row (`tensor_io::int8_rows`), as `NAME` in I8 and
/// `NAME_scale` in F32; bf16 as `NAME` in BF16 (`tensor_io::bf16_bytes`); f32 as f32.
pub fn params_to_bytes_as<T: Scalar, M: Params<T> + ?Sized>(
    model: &M,
    family: &EncoderFamily,
    precision: Precision,
    narrow: impl Fn(&str) -> bool,
) -> Vec<u8> {
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    model.visit("", &mut |name, v| {
        let file_name = (family.file_name)(name);
        let shape = v.shape().to_vec();
        let matrix = T::view_f32(v.view()).and_then(|m| m.into_dimensionality::<ndarray::Ix2>().ok());
        match matrix.filter(|_| narrow(name) && !precision.is_f32()) {
            Some(m) if precision == Precision::Bf16 => {
                tensors.push((file_name, Dtype::BF16, shape, tensor_io::bf16_bytes(m)));
            }
            Some(m) => {
                let (bytes, scales) = tensor_io::int8_rows(m);
                let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
                tensors.push((
                    tensor_io::scale_name(&file_name),
                    Dtype::F32,
                    vec![scales.len()],
                    scale_bytes,
                ));
                tensors.push((file_name, Dtype::I8, shape, bytes));
            }
            None => tensors.push((file_name, T::DTYPE, shape, tensor_io::to_bytes(v))),
        }
    });
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = TensorView::new(*dtype, shape.clone(), data).expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    let meta = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    safetensors::serialize(views, &meta).expect("in-memory tensors always serialise")
}

/// Saves the encoder as a safetensors file HF's model class of its family loads.
pub fn save_encoder<T: Scalar>(enc: &BertEncoder<T>, path: &Path) -> Result<(), CheckpointError> {
    std::fs::write(path, encoder_to_bytes(enc)?).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bert::encoder::fixtures::{tiny_config, tiny_input};
    use ndarray::ArrayD;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn tiny() -> BertEncoder<f32> {
        BertEncoder::new(&tiny_config(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap()
    }

    /// Serialises named f32 tensors.
    fn file(tensors: &[(String, ArrayD<f32>, Dtype)]) -> Vec<u8> {
        let data: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = tensors
            .iter()
            .map(|(n, a, d)| {
                let bytes = match d {
                    Dtype::I64 => a.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect(),
                    _ => tensor_io::to_bytes(a.view()),
                };
                (n.clone(), a.shape().to_vec(), bytes, *d)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = data
            .iter()
            .map(|(n, s, b, d)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, &None).unwrap()
    }

    /// The encoder's tensors, renamed by `rename`, plus `extra`.
    fn tensors_of(
        enc: &BertEncoder<f32>,
        rename: impl Fn(&str) -> String,
    ) -> Vec<(String, ArrayD<f32>, Dtype)> {
        let mut out = Vec::new();
        enc.visit("", &mut |n, v| out.push((rename(n), v.to_owned(), Dtype::F32)));
        out
    }

    fn load(bytes: &[u8]) -> Result<(BertEncoder<f32>, LoadReport), CheckpointError> {
        load_encoder_from_bytes(&tiny_config(), bytes, Path::new("test.safetensors"))
    }

    #[test]
    fn round_trip_through_a_file() {
        let enc = tiny();
        let path = std::env::temp_dir().join(format!("gp_lite_ckpt_{}.safetensors", std::process::id()));
        save_encoder(&enc, &path).unwrap();
        let (back, report) = load_encoder::<f32>(&tiny_config(), &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(report.skipped.is_empty());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        enc.visit("", &mut |n, v| a.push((n.to_string(), v.to_owned())));
        back.visit("", &mut |n, v| b.push((n.to_string(), v.to_owned())));
        assert_eq!(a, b);
        assert_eq!(
            enc.encode(&tiny_input()).unwrap(),
            back.encode(&tiny_input()).unwrap()
        );
    }

    #[test]
    fn accepts_bert_prefix_and_skips_unused_tensors() {
        let enc = tiny();
        let mut t = tensors_of(&enc, |n| format!("bert.{n}"));
        t.push((
            "bert.embeddings.position_ids".into(),
            ArrayD::zeros(vec![1, 12]),
            Dtype::I64,
        ));
        t.push((
            "bert.pooler.dense.bias".into(),
            ArrayD::zeros(vec![8]),
            Dtype::F32,
        ));
        t.push(("cls.predictions.bias".into(), ArrayD::zeros(vec![20]), Dtype::F32));
        let (back, report) = load(&file(&t)).unwrap();
        assert_eq!(
            report.skipped,
            vec![
                "bert.embeddings.position_ids",
                "bert.pooler.dense.bias",
                "cls.predictions.bias"
            ]
        );
        assert_eq!(
            enc.encode(&tiny_input()).unwrap(),
            back.encode(&tiny_input()).unwrap()
        );
        // f64 storage converts to f32 compute.
        let bytes64 = {
            let e64 = BertEncoder::<f64>::new(&tiny_config(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
            encoder_to_bytes(&e64).unwrap()
        };
        let (from64, _) = load(&bytes64).unwrap();
        assert!(
            (enc.encode(&tiny_input()).unwrap() - from64.encode(&tiny_input()).unwrap())
                .iter()
                .all(|d| d.abs() < 1e-5)
        );
    }

    #[test]
    fn missing_mismatched_and_unknown_tensors_are_errors() {
        let enc = tiny();
        let all = tensors_of(&enc, |n| n.to_string());
        let missing: Vec<_> = all
            .iter()
            .filter(|t| t.0 != "encoder.layer.1.output.dense.bias")
            .cloned()
            .collect();
        match load(&file(&missing)) {
            Err(CheckpointError::Tensors(TensorFileError {
                path,
                source: TensorReadError::Missing(tensor),
            })) => {
                assert_eq!(tensor, "encoder.layer.1.output.dense.bias");
                assert_eq!(path, Path::new("test.safetensors"));
            }
            other => panic!("expected Missing, got {:?}", other.map(|r| r.1)),
        }
        let mut wrong = all.clone();
        let i = wrong
            .iter()
            .position(|t| t.0 == "embeddings.LayerNorm.weight")
            .unwrap();
        wrong[i].1 = ArrayD::zeros(vec![9]);
        match load(&file(&wrong)) {
            Err(CheckpointError::Tensors(TensorFileError {
                source:
                    TensorReadError::Shape {
                        name,
                        found,
                        expected,
                    },
                ..
            })) => {
                assert_eq!(
                    (name.as_str(), found, expected),
                    ("embeddings.LayerNorm.weight", vec![9], vec![8])
                );
            }
            other => panic!("expected Shape, got {:?}", other.map(|r| r.1)),
        }
        let mut unknown = all.clone();
        unknown.push((
            "encoder.layer.2.output.dense.bias".into(),
            ArrayD::zeros(vec![8]),
            Dtype::F32,
        ));
        match load(&file(&unknown)) {
            Err(CheckpointError::Unknown { tensor, .. }) => {
                assert_eq!(tensor, "encoder.layer.2.output.dense.bias")
            }
            other => panic!("expected Unknown, got {:?}", other.map(|r| r.1)),
        }
    }
}
