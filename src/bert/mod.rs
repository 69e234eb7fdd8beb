//! The compact BERT encoder: configuration, layers composed into an encoder, checkpoints.

pub mod config;

pub use config::BertConfig;
pub mod checkpoint;
pub mod encoder;

pub use encoder::{BertEncoder, EncoderError, EncoderInput};
