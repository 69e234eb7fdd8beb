//! Encoded samples and padded batches: what the encoder, head and loss consume.

use crate::bert::EncoderInput;
use crate::span::{Bounds, GoldSpan};
use crate::tokenize::Encoding;
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Where entities may begin and end (recorded in a model's config.json).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Boundaries {
    /// At any real token.
    #[default]
    Tokens,
    /// At word starts and ends only (words are separated by whitespace in the text, as in
    /// column files and in whitespace-tokenized corpora): a span starting or ending inside a
    /// word is never scored, learned or decoded.
    Words,
}

/// A right-padded batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Token ids, token type ids `[B, n]` and each text's real length.
    pub input: EncoderInput,
    /// `[B, n]`: token may start / end an entity (real, not special, and where the model uses
    /// word boundaries, at a word start / end).
    pub starts: Array2<bool>,
    /// `[B, n]`: see `starts`.
    pub ends: Array2<bool>,
    /// Per text, its gold spans in token indices (empty when unlabeled).
    pub gold: Vec<Vec<GoldSpan>>,
}

impl Batch {
    /// The boundary flags as the heads take them.
    pub fn bounds(&self) -> Bounds<'_> {
        Bounds {
            starts: self.starts.view(),
            ends: self.ends.view(),
        }
    }

    /// Real (unpadded) tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.input.lengths.iter().sum()
    }
}

/// Pads `encs` to the longest into one batch (pad id 0, token type 0), each token's segment
/// from its encoding's `type_ids`.
pub fn make_batch<'a>(encs: impl IntoIterator<Item = (&'a Encoding, &'a [GoldSpan])>) -> Batch {
    let items: Vec<(&Encoding, &[GoldSpan])> = encs.into_iter().collect();
    let n = items.iter().map(|(e, _)| e.len()).max().unwrap_or(0).max(1);
    let b = items.len();
    let mut ids = Array2::<u32>::zeros((b, n));
    let mut type_ids = Array2::<u32>::zeros((b, n));
    let mut starts = Array2::from_elem((b, n), false);
    let mut ends = Array2::from_elem((b, n), false);
    let mut lengths = Vec::with_capacity(b);
    let mut gold = Vec::with_capacity(b);
    for (r, (enc, g)) in items.iter().enumerate() {
        for (i, &id) in enc.ids.iter().enumerate() {
            ids[[r, i]] = id;
            type_ids[[r, i]] = enc.type_ids[i];
            starts[[r, i]] = enc.may_start[i];
            ends[[r, i]] = enc.may_end[i];
        }
        lengths.push(enc.len());
        gold.push(g.to_vec());
    }
    let input = EncoderInput {
        input_ids: ids,
        token_type_ids: type_ids,
        lengths,
    };
    Batch {
        input,
        starts,
        ends,
        gold,
    }
}

/// Batches of `samples` (as index lists) for one epoch: shuffled, then grouped by length within
/// pools of 50 batches so that padding stays small, then the batch order shuffled.
pub fn bucketed_batches(lengths: &[usize], batch_size: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(rng);
    let pool = batch_size * 50;
    let mut batches = Vec::new();
    for chunk in order.chunks_mut(pool) {
        chunk.sort_by_key(|&i| lengths[i]);
        batches.extend(chunk.chunks(batch_size).map(|c| c.to_vec()));
    }
    batches.shuffle(rng);
    batches
}

/// Index lists of at most `batch_size` samples sorted by length (for inference: least padding).
pub fn sorted_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order.chunks(batch_size.max(1)).map(|c| c.to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn enc(n: usize) -> Encoding {
        let mut special = vec![false; n];
        special[0] = true;
        special[n - 1] = true;
        Encoding::new((0..n as u32).map(|i| i + 5).collect(), vec![(0, 0); n], special)
    }

    #[test]
    fn pads_and_marks_valid_boundaries() {
        let (a, b) = (enc(4), enc(6));
        let g: Vec<GoldSpan> = vec![(0, 1, 2)];
        let batch = make_batch([(&a, &g[..]), (&b, &[][..])]);
        assert_eq!(batch.input.input_ids.dim(), (2, 6));
        assert_eq!(batch.input.lengths, vec![4, 6]);
        assert_eq!(batch.input.input_ids.row(0).to_vec(), vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(
            batch.starts.row(0).to_vec(),
            vec![false, true, true, false, false, false]
        );
        assert_eq!(batch.starts, batch.ends);
        assert_eq!(
            batch.ends.row(1).to_vec(),
            vec![false, true, true, true, true, false]
        );
        assert_eq!(batch.gold, vec![vec![(0, 1, 2)], vec![]]);
        assert_eq!(batch.tokens(), 10);
    }

    #[test]
    fn bucketing_covers_every_sample_once_and_is_seeded() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 50 + 3).collect();
        let run = |seed| bucketed_batches(&lengths, 8, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        let batches = run(1);
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| b.len() <= 8));
        assert_eq!(batches, run(1));
        assert_ne!(batches, run(2));
    }
}
