#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
//! gp-lite: GlobalPointer named-entity recognition, a pure-Rust CPU trainer and runtime.
//!
//! Every component is written over `ndarray` with explicit forward and backward passes; every
//! matrix product goes through [`matmul`]. What a user needs is re-exported here: read data,
//! train with [`TrainOptions`], load a model directory and predict.
//!
//! ```no_run
//! use gp_lite::{load_model, read_dataset, train, PredictOptions, Predictor, TrainOptions, Workspace};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = read_dataset("fixtures/cluener-sample/train.json", None)?;
//! let opts = TrainOptions { epochs: 5, ..TrainOptions::default() };
//! train(&opts, &data, None, "my-model".as_ref(), false, Default::default(), &mut |_| {})?;
//! let model: Predictor<f32> = load_model("my-model".as_ref())?;
//! let found = model.predict(&["我们在北京"], &PredictOptions::default(), &mut Workspace::new())?;
//! # Ok(())
//! # }
//! ```
//!
//! `docs/architecture.md` maps the layers, from the product kernel up to the CLI and the C API.

pub use data::{read_dataset, read_dataset_with, Dataset, Entity, Example};
pub use infer::Workspace;
pub use model_dir::{load_model, save_model};
pub use predict::{PredEntity, PredictOptions, Predictor};
pub use scalar::Scalar;
pub use train::{train, Event, TrainError, TrainOptions, TrainingRecord};

pub mod alloc;
pub mod answer;
pub mod batch;
pub mod bench;
pub mod bert;
pub mod bf16;
pub mod cmrc;
pub mod cpu;
pub mod data;
pub mod decode;
pub mod evaluate;
pub mod family;
pub mod ffi;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod head;
pub mod infer;
pub mod init;
pub mod lockstep;
pub mod loss;
pub mod matmul;
pub mod metrics;
pub mod model;
pub mod model_dir;
pub mod model_limits;
pub mod nn;
pub mod optim;
pub mod out_dir;
pub mod parallel;
pub mod param;
pub mod precision;
pub mod predict;
pub mod sample;
pub mod scalar;
pub mod span;
pub mod span_softmax;
pub mod tensor_io;
pub mod tokenize;
pub mod train;
pub mod trainer;
pub mod valgrind;
pub mod workers;
