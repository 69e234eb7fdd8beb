//! Optimisation: AdamW, the learning-rate schedule and gradient clipping.

pub mod adamw;
pub mod clip;
pub mod schedule;

pub use adamw::{default_decay, AdamW, AdamWConfig, OptimError};
pub use clip::clip_grad_norm;
pub use schedule::LinearSchedule;
