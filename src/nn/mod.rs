//! Neural-network layers, each a struct of its parameters with `forward` and `backward`.

pub mod attention;
pub mod dropout;
pub mod embedding;
pub mod erf;
pub mod feed_forward;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod softmax;
#[cfg(target_arch = "x86_64")]
pub mod vector_math;

pub use attention::SelfAttention;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use feed_forward::FeedForward;
pub use gelu::Gelu;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
