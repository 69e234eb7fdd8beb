//! `embeddings.*`: word + position + token type lookups summed, normalised and dropped out
//! (HF's `BertEmbeddings`); rows `[B*n, E]` (E = H but for ELECTRA). Position ids start at the
//! family's offset (RoBERTa: `pad_token_id + 1`); DistilBERT has no token-type table.

use crate::bert::input::EncoderInput;
use crate::nn::dropout::{Dropout, DropoutMask};
use crate::nn::layer_norm::LayerNormCache;
use crate::nn::{Embedding, LayerNorm};
use crate::param::{join, ParamMut, Params};
use crate::scalar::Scalar;
use ndarray::{Array2, ArrayViewD, Ix2};
use rand::Rng;

/// `embeddings.*`: the sum of three lookups, normalised.
#[derive(Clone, Debug)]
pub struct BertEmbeddings<T> {
    /// `word_embeddings`: `[vocab_size, E]`, a row a token id.
    pub word: Embedding<T>,
    /// `position_embeddings`: `[max_position_embeddings, E]`, a row a position.
    pub position: Embedding<T>,
    /// `token_type_embeddings`: `[type_vocab_size, E]`, a row a segment; `None` where the family
    /// has no token types (DistilBERT).
    pub token_type: Option<Embedding<T>>,
    /// `LayerNorm` over the sum.
    pub layer_norm: LayerNorm<T>,
    /// Dropout after the norm (`hidden_dropout_prob`).
    pub dropout: Dropout,
    /// Position id of a text's first token.
    pub position_offset: usize,
}

/// What the embeddings' backward needs.
#[derive(Clone, Debug)]
pub struct EmbeddingsCache<T> {
    /// `[B*n, E]`: word + position + token type, the LayerNorm input
    pub sum: Array2<T>,
    /// The LayerNorm's per-row statistics.
    pub stats: LayerNormCache<T>,
    /// The dropout mask applied after the norm.
    pub drop: DropoutMask<T, Ix2>,
}

/// Row-major ids of a `[B, n]` array.
fn flat_ids(a: &ndarray::Array2<u32>) -> Vec<u32> {
    a.iter().copied().collect()
}

impl<T: Scalar> BertEmbeddings<T> {
    /// Position ids of the `[B, n]` batch, row-major: `offset + i` for token i.
    fn positions(&self, input: &EncoderInput) -> Vec<u32> {
        let (bsz, n) = input.input_ids.dim();
        (0..bsz * n)
            .map(|r| (self.position_offset + r % n) as u32)
            .collect()
    }

    /// The three lookups summed: `[B*n, E]`.
    fn lookup(&self, input: &EncoderInput) -> Array2<T> {
        let (bsz, n) = input.input_ids.dim();
        let mut sum = crate::parallel::zeros(ndarray::Ix2(bsz * n, self.word.dim()));
        self.word.forward_acc(&flat_ids(&input.input_ids), &mut sum);
        self.position.forward_acc(&self.positions(input), &mut sum);
        if let Some(token_type) = &self.token_type {
            token_type.forward_acc(&flat_ids(&input.token_type_ids), &mut sum);
        }
        sum
    }

    /// x `[B*n, E]` for the batch; `rng` given = training.
    pub fn forward<R: Rng>(
        &self,
        input: &EncoderInput,
        rng: Option<&mut R>,
    ) -> (Array2<T>, EmbeddingsCache<T>) {
        let sum = self.lookup(input);
        let (mut y, stats) = self.layer_norm.forward(sum.view());
        let drop = self.dropout.forward_inplace(&mut y, rng);
        (y, EmbeddingsCache { sum, stats, drop })
    }

    /// Inference: x `[B*n, E]`, the three lookups summed and normalised in place (no dropout).
    pub fn forward_inference(&self, input: &EncoderInput) -> Array2<T> {
        let mut x = self.lookup(input);
        self.layer_norm.forward_inplace(x.view_mut());
        x
    }

    /// Accumulates the three tables' rows that were used and the LayerNorm's gradients.
    pub fn backward(&mut self, input: &EncoderInput, cache: &EmbeddingsCache<T>, mut dy: Array2<T>) {
        Dropout::backward_inplace(&cache.drop, &mut dy);
        let de = self
            .layer_norm
            .backward(cache.sum.view(), &cache.stats, dy.view());
        self.word.backward(&flat_ids(&input.input_ids), de.view());
        self.position.backward(&self.positions(input), de.view());
        if let Some(token_type) = &mut self.token_type {
            token_type.backward(&flat_ids(&input.token_type_ids), de.view());
        }
    }
}

impl<T: Scalar> Params<T> for BertEmbeddings<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.word.visit(&join(prefix, "word_embeddings"), f);
        self.position.visit(&join(prefix, "position_embeddings"), f);
        if let Some(t) = &self.token_type {
            t.visit(&join(prefix, "token_type_embeddings"), f);
        }
        self.layer_norm.visit(&join(prefix, "LayerNorm"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.word.visit_mut(&join(prefix, "word_embeddings"), f);
        self.position.visit_mut(&join(prefix, "position_embeddings"), f);
        if let Some(t) = &mut self.token_type {
            t.visit_mut(&join(prefix, "token_type_embeddings"), f);
        }
        self.layer_norm.visit_mut(&join(prefix, "LayerNorm"), f);
    }
}
