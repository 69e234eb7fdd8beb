//! The compact BERT encoder: configuration, layers composed into an encoder, checkpoints.

pub mod config;

pub use config::BertConfig;
