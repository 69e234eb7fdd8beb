//! The encoder's input: a batch of texts as token ids, right-padded to one width.

/// A right-padded batch of token ids.
#[derive(Clone, Debug)]
pub struct EncoderInput {
    /// `[B, n]`, padded with 0
    pub input_ids: ndarray::Array2<u32>,
    /// `[B, n]`, padded with 0
    pub token_type_ids: ndarray::Array2<u32>,
    /// real tokens per text (`[B]`)
    pub lengths: Vec<usize>,
}

impl EncoderInput {
    /// The number of texts B.
    pub fn batch(&self) -> usize {
        self.input_ids.nrows()
    }

    /// The padded length n.
    pub fn width(&self) -> usize {
        self.input_ids.ncols()
    }
}
