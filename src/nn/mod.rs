//! Neural-network layers, each a struct of its parameters with `forward` and `backward`.

pub mod linear;

pub use linear::Linear;
