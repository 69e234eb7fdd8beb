//! The compact BERT encoder: configuration, the input batch, embeddings and layers composed into
//! an encoder, checkpoints.

pub mod checkpoint;
pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod input;
pub mod layer;

pub use config::BertConfig;
pub use encoder::{BertEncoder, EncoderError};
pub use input::EncoderInput;
