//! The number format an inference model's weight products run in.

use std::fmt;
use std::str::FromStr;

/// The number format of a loaded model's products: f32, or int8 weights (per output channel)
/// times int8 activations (per row, quantised on every product), summed in i32
/// ([`crate::matmul::int8`]), or bf16 weights times bf16 activations summed in f32
/// ([`crate::matmul::bf16`]). Training is always f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Every product in f32.
    #[default]
    F32,
    /// The encoder's dense layers in int8; embeddings, LayerNorm, attention scores, softmax and
    /// the head in f32.
    Int8,
    /// The encoder's dense layers with both operands rounded to bf16 ([`crate::bf16`]), their
    /// products summed in f32; the rest as in int8.
    Bf16,
}

impl Precision {
    /// Every precision, by name.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Int8, Precision::Bf16];

    /// True for f32 (config.json then leaves `precision` out, as before it existed).
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// The name `--precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision `{s}` (expected f32, int8 or bf16)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        assert!("fp16"
            .parse::<Precision>()
            .unwrap_err()
            .contains("f32, int8 or bf16"));
        assert_eq!(serde_json::to_string(&Precision::Bf16).unwrap(), "\"bf16\"");
    }
}
