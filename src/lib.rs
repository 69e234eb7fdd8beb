//! gp-lite: GlobalPointer named-entity recognition, a pure-Rust CPU trainer and runtime.
//!
//! Every component is written over `ndarray` with explicit forward and backward passes; every
//! matrix product goes through [`matmul`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// Until its rewrite (issue 21) documents its unsafe: the lints above, off for this file.
#[allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
pub mod alloc;
pub mod batch;
pub mod bench;
pub mod bert;
pub mod cpu;
pub mod data;
pub mod decode;
// Until its rewrite (issue 21) documents its unsafe: the lints above, off for this file.
#[allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
pub mod ffi;
pub mod gradcheck;
pub mod head;
pub mod init;
pub mod loss;
pub mod matmul;
pub mod metrics;
pub mod model;
pub mod model_dir;
pub mod model_limits;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod param;
pub mod predict;
pub mod scalar;
pub mod shared;
pub mod tensor_io;
pub mod tokenize;
pub mod train;
pub mod trainer;
// Until its rewrite (issue 21) documents its unsafe: the lints above, off for this file.
#[allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
pub mod valgrind;

pub use scalar::Scalar;
