//! gp-lite: GlobalPointer named-entity recognition, a pure-Rust CPU trainer and runtime.
//!
//! Every component is written over `ndarray` with explicit forward and backward passes; every
//! matrix product goes through [`matmul`].

pub mod alloc;
pub mod batch;
pub mod bench;
pub mod bert;
pub mod cpu;
pub mod data;
pub mod decode;
pub mod evaluate;
pub mod ffi;
pub mod gradcheck;
pub mod head;
pub mod infer;
pub mod init;
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
pub mod predict;
pub mod sample;
pub mod scalar;
pub mod shared;
pub mod span;
pub mod tensor_io;
pub mod tokenize;
pub mod train;
pub mod trainer;
pub mod valgrind;

pub use scalar::Scalar;
