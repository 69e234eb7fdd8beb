//! Reading and writing safetensors tensors as ndarray arrays, converting between storage and
//! compute types (F64, F32, F16, BF16 and integer buffers read into any [`Scalar`]).

use crate::scalar::Scalar;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use safetensors::{tensor::TensorView, Dtype};
use std::path::{Path, PathBuf};

/// Why stored tensors could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TensorReadError {
    /// The bytes are not a safetensors file (header or data malformed or truncated).
    #[error("not a safetensors file: {0}")]
    Format(#[source] safetensors::SafeTensorError),
    /// A tensor the reader needs is not in the file; holds its name.
    #[error("tensor `{0}` is missing")]
    Missing(String),
    /// A tensor is stored in a type that cannot be converted.
    #[error("tensor `{name}` has unsupported dtype {dtype:?}")]
    Dtype {
        /// The tensor's name.
        name: String,
        /// Its storage type.
        dtype: Dtype,
    },
    /// A tensor's shape is not the one expected.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor's name.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the reader needs.
        expected: Vec<usize>,
    },
    /// A tensor is stored in another dtype than its model directory's precision stores it in.
    #[error(
        "tensor `{name}` is stored as {found:?}, expected {expected:?} (the model's precision stores it so)"
    )]
    Stored {
        /// The tensor's name.
        name: String,
        /// Its dtype in the file.
        found: Dtype,
        /// The dtype the model's precision stores it in.
        expected: Dtype,
    },
    /// A bf16 weight holds an infinity or a NaN.
    #[error("tensor `{name}` holds {value} at index {index} (bf16 weights are finite)")]
    NotFinite {
        /// The tensor's name.
        name: String,
        /// The first non-finite value.
        value: f32,
        /// Its index in the tensor (row-major).
        index: usize,
    },
    /// An int8 tensor's scales are not finite non-negative values, one per row.
    #[error("tensor `{name}`: {what}")]
    Int8 {
        /// The int8 tensor's name.
        name: String,
        /// What is wrong with it or its scales.
        what: String,
    },
}

/// A safetensors file that could not be read: which file, and what failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct TensorFileError {
    /// The safetensors file.
    pub path: PathBuf,
    /// What failed.
    pub source: TensorReadError,
}

impl TensorFileError {
    /// `source` in the file at `path`.
    pub fn new(path: &Path, source: TensorReadError) -> TensorFileError {
        TensorFileError {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24.
            let v = m as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Converts one stored tensor to an array of `T`.
pub fn to_array<T: Scalar>(name: &str, view: &TensorView<'_>) -> Result<ArrayD<T>, TensorReadError> {
    let mut a = ArrayD::zeros(IxDyn(view.shape()));
    decode_into(name, view, a.view_mut())?;
    Ok(a)
}

/// Reads one value from its little-endian bytes.
type Decode = fn(&[u8]) -> f64;

/// The bytes a value takes and how to read one, for the dtypes read as numbers.
fn decoder(dtype: Dtype) -> Option<(usize, Decode)> {
    Some(match dtype {
        Dtype::F64 => (8, |c| f64::from_le_bytes(c.try_into().unwrap())),
        Dtype::F32 => (4, |c| f32::from_le_bytes(c.try_into().unwrap()) as f64),
        Dtype::F16 => (2, |c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64),
        Dtype::BF16 => (2, |c| {
            crate::bf16::to_f32(u16::from_le_bytes([c[0], c[1]])) as f64
        }),
        Dtype::I64 => (8, |c| i64::from_le_bytes(c.try_into().unwrap()) as f64),
        Dtype::I32 => (4, |c| i32::from_le_bytes(c.try_into().unwrap()) as f64),
        _ => return None,
    })
}

/// The tensor's values into `out` (its shape; logical order, as the file's row-major bytes).
fn decode_into<T: Scalar>(
    name: &str,
    view: &TensorView<'_>,
    mut out: ArrayViewMutD<'_, T>,
) -> Result<(), TensorReadError> {
    let (size, read) = decoder(view.dtype()).ok_or_else(|| TensorReadError::Dtype {
        name: name.to_string(),
        dtype: view.dtype(),
    })?;
    debug_assert_eq!(out.shape(), view.shape());
    for (o, c) in out.iter_mut().zip(view.data().chunks_exact(size)) {
        *o = T::c(read(c));
    }
    Ok(())
}

/// Reads tensor `name` from a parsed file.
pub fn read<T: Scalar>(st: &safetensors::SafeTensors<'_>, name: &str) -> Result<ArrayD<T>, TensorReadError> {
    let view = st
        .tensor(name)
        .map_err(|_| TensorReadError::Missing(name.to_string()))?;
    to_array(name, &view)
}

/// The name of the F32 tensor holding the per-row scales of the int8 tensor `name`.
pub fn scale_name(name: &str) -> String {
    format!("{name}_scale")
}

/// Reads tensor `name` and checks its shape. An I8 tensor is read with its scales
/// ([`scale_name`]: F32, one per row of the 2-D tensor) as `value × scale of its row`.
pub fn read_shaped<T: Scalar>(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    expected: &[usize],
) -> Result<ArrayD<T>, TensorReadError> {
    let mut a = ArrayD::zeros(IxDyn(expected));
    read_into(st, name, a.view_mut())?;
    Ok(a)
}

/// [`read_shaped`] into `out`, whose shape the tensor must have: no copy of the tensor is made
/// (a model's largest table is read straight into its parameter).
pub fn read_into<T: Scalar>(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    mut out: ArrayViewMutD<'_, T>,
) -> Result<(), TensorReadError> {
    let view = st
        .tensor(name)
        .map_err(|_| TensorReadError::Missing(name.to_string()))?;
    if view.shape() != out.shape() {
        return Err(TensorReadError::Shape {
            name: name.to_string(),
            found: view.shape().to_vec(),
            expected: out.shape().to_vec(),
        });
    }
    if view.dtype() == Dtype::I8 {
        let scales = int8_scales(st, name, &view)?;
        let cols = view.shape()[1].max(1);
        let q = view.data();
        // logical (row-major) order, as the file's
        for (i, o) in out.iter_mut().enumerate() {
            *o = T::c(q[i] as i8 as f64 * scales[i / cols]);
        }
        return Ok(());
    }
    decode_into(name, &view, out)
}

/// The per-row scales of an I8 tensor (2-D), checked: one a row, finite, not negative.
fn int8_scales(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    view: &TensorView<'_>,
) -> Result<ArrayD<f64>, TensorReadError> {
    let bad = |what: String| TensorReadError::Int8 {
        name: name.to_string(),
        what,
    };
    let &[rows, _] = view.shape() else {
        return Err(bad(format!(
            "int8 tensors are 2-D, this one is {:?}",
            view.shape()
        )));
    };
    let scales: ArrayD<f64> = read(st, &scale_name(name))?;
    if scales.shape() != [rows] {
        return Err(bad(format!("{} scales for {rows} rows", scales.len())));
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
        return Err(bad(format!("a scale of {s} (scales are finite and >= 0)")));
    }
    Ok(scales)
}

/// A 2-D f32 array as int8 with a symmetric scale per row (`max|row| / 127`, see
/// `matmul::int8`): the I8 bytes (row-major) and the scales.
pub fn int8_rows(a: ndarray::ArrayView2<'_, f32>) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::with_capacity(a.len());
    let mut scales = Vec::with_capacity(a.nrows());
    for row in a.rows() {
        let (scale, q) = crate::matmul::int8::quantize_symmetric(row.iter().copied());
        bytes.extend(q.into_iter().map(|v| v as u8));
        scales.push(scale);
    }
    (bytes, scales)
}

/// A 2-D f32 array as BF16 bytes (row-major, little-endian), each value rounded to nearest even
/// ([`crate::bf16::from_f32`]).
pub fn bf16_bytes(a: ndarray::ArrayView2<'_, f32>) -> Vec<u8> {
    a.iter()
        .flat_map(|&v| crate::bf16::from_f32(v).to_le_bytes())
        .collect()
}

/// Checks that the tensor `name` is stored as `expected` and, when that is BF16, holds finite
/// values only (a bf16 model directory's weights).
pub fn check_stored(name: &str, view: &TensorView<'_>, expected: Dtype) -> Result<(), TensorReadError> {
    if view.dtype() != expected {
        return Err(TensorReadError::Stored {
            name: name.to_string(),
            found: view.dtype(),
            expected,
        });
    }
    if expected == Dtype::BF16 {
        let values = view
            .data()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        if let Some((index, h)) = values.enumerate().find(|(_, h)| !crate::bf16::is_finite(*h)) {
            return Err(TensorReadError::NotFinite {
                name: name.to_string(),
                value: crate::bf16::to_f32(h),
                index,
            });
        }
    }
    Ok(())
}

/// Little-endian bytes of an array in `T`'s own dtype (row-major), for writing.
pub fn to_bytes<T: Scalar>(a: ArrayViewD<'_, T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<T>());
    for &v in a.iter() {
        match T::DTYPE {
            Dtype::F32 => out.extend_from_slice(&(v.f64() as f32).to_le_bytes()),
            _ => out.extend_from_slice(&v.f64().to_le_bytes()),
        }
    }
    out
}

/// Serialises named arrays (any shapes) into safetensors bytes in `T`'s dtype.
pub fn named_to_bytes<T: Scalar>(tensors: &[(String, ndarray::ArrayD<T>)]) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, a)| (n.clone(), a.shape().to_vec(), to_bytes(a.view())))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, shape, bytes)| {
            (
                n.clone(),
                TensorView::new(T::DTYPE, shape.clone(), bytes).expect("shape matches data"),
            )
        })
        .collect();
    safetensors::serialize(views, &None).expect("in-memory tensors always serialise")
}

/// Every tensor of a safetensors file as a named array of `T`; `path` names the file in errors.
pub fn named_from_bytes<T: Scalar>(
    bytes: &[u8],
    path: &Path,
) -> Result<std::collections::HashMap<String, ArrayD<T>>, TensorFileError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| TensorFileError::new(path, TensorReadError::Format(e)))?;
    st.names()
        .into_iter()
        .map(|n| {
            read::<T>(&st, n)
                .map(|a| (n.to_string(), a))
                .map_err(|source| TensorFileError::new(path, source))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_decodes() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn round_trip_through_safetensors() {
        let a = ndarray::Array::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as f32 * 0.5).into_dyn();
        let bytes = to_bytes(a.view());
        let view = TensorView::new(Dtype::F32, vec![2, 3], &bytes).unwrap();
        let data = safetensors::serialize([("x", view)], &None).unwrap();
        let st = safetensors::SafeTensors::deserialize(&data).unwrap();
        let back: ArrayD<f64> = read(&st, "x").unwrap();
        assert_eq!(back.mapv(|v| v as f32), a);
        assert!(matches!(
            read_shaped::<f32>(&st, "x", &[3, 2]),
            Err(TensorReadError::Shape { .. })
        ));
        assert!(matches!(read::<f32>(&st, "y"), Err(TensorReadError::Missing(_))));
    }

    #[test]
    fn file_errors_name_the_file_and_keep_their_source() {
        let path = std::path::Path::new("opt.safetensors");
        let err = named_from_bytes::<f32>(b"not safetensors", path).unwrap_err();
        assert!(matches!(err.source, TensorReadError::Format(_)));
        assert!(
            err.to_string()
                .starts_with("opt.safetensors: not a safetensors file: "),
            "{err}"
        );
        let source = std::error::Error::source(&err).expect("the read error");
        assert!(
            std::error::Error::source(source).is_some(),
            "the safetensors error"
        );
        let data = named_to_bytes(&[("x".to_string(), ndarray::ArrayD::<f32>::zeros(vec![2]))]);
        let st = safetensors::SafeTensors::deserialize(&data).unwrap();
        let err = TensorFileError::new(path, read_shaped::<f32>(&st, "x", &[3]).unwrap_err());
        assert_eq!(
            err.to_string(),
            "opt.safetensors: tensor `x` has shape [2], expected [3]"
        );
    }
}
