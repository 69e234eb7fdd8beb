//! The BERT encoder exactly as HF's `BertModel` computes `last_hidden_state` (post-LN, no pooler):
//! embeddings (word + position + token type, LayerNorm, dropout) and N layers of
//! `LN(x + dropout(dense(attention(x))))` then `LN(h + dropout(FFN(h)))`. The same computation
//! serves the other families (`crate::family`): RoBERTa's offset positions, ELECTRA's narrower
//! embeddings with `embeddings_project` (`E -> H`) after them, DistilBERT's missing token types.
//!
//! Activations are `[B*n, H]`: text b's token i in row b*n+i, texts right-padded to n tokens.

use crate::bert::config::BertConfig;
use crate::bert::embeddings::{BertEmbeddings, EmbeddingsCache};
use crate::bert::input::EncoderInput;
use crate::bert::layer::{BertLayer, InferenceScratch, LayerCache};
use crate::nn::dropout::Dropout;
use crate::nn::{Embedding, Gelu, LayerNorm, Linear};
use crate::param::{join, ParamMut, Params};
use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{s, Array2, ArrayView2, ArrayViewD};
use rand::Rng;

/// Why an encoder cannot be built or run.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// `hidden_act` is not a GELU the encoder implements; holds the name.
    #[error("hidden_act `{0}` is not supported (gelu, gelu_new, gelu_pytorch_tanh)")]
    Activation(String),
    /// `position_embedding_type` is not `absolute`; holds the name.
    #[error("position_embedding_type `{0}` is not supported (absolute)")]
    PositionEmbedding(String),
    /// The heads do not split the hidden size evenly.
    #[error("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")]
    Heads {
        /// `hidden_size`.
        hidden: usize,
        /// `num_attention_heads`.
        heads: usize,
    },
    /// A dropout probability outside `[0, 1)`; holds it.
    #[error("dropout probability {0} outside [0, 1)")]
    Dropout(f64),
    /// A text has more tokens than there are positions.
    #[error("text {text} has {len} tokens, more than max_position_embeddings = {max}")]
    TooLong {
        /// The text's index in the batch.
        text: usize,
        /// Its length in tokens.
        len: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// The batch's arrays disagree in shape, or it is empty; holds what is wrong.
    #[error("bad encoder input: {0}")]
    Input(String),
    /// A token or token-type id is outside its embedding table.
    #[error("text {text}, position {pos}: {what} id {id} is outside the table of {size}")]
    Id {
        /// The text's index in the batch.
        text: usize,
        /// The token's position in the text.
        pos: usize,
        /// Which id (`token` or `token type`).
        what: &'static str,
        /// The id.
        id: u32,
        /// The table's number of rows.
        size: usize,
    },
}

/// The encoder: embeddings and `num_hidden_layers` layers.
#[derive(Clone, Debug)]
pub struct BertEncoder<T> {
    cfg: BertConfig,
    /// Word, position and token-type embeddings, summed and layer-normed.
    pub embeddings: BertEmbeddings<T>,
    /// ELECTRA's `embeddings_project` (`E -> H`), where the tables are narrower than the layers
    pub project: Option<Linear<T>>,
    /// The transformer layers, in order.
    pub layers: Vec<BertLayer<T>>,
}

/// What the encoder's backward needs.
#[derive(Clone, Debug)]
pub struct EncoderCache<T> {
    /// What the embeddings' backward needs.
    pub embeddings: EmbeddingsCache<T>,
    /// the embeddings' output `[B*n, E]`, the projection's input (ELECTRA only)
    pub projected_from: Option<Array2<T>>,
    /// the input `[B*n, H]` of each layer
    pub layer_inputs: Vec<Array2<T>>,
    /// What each layer's backward needs.
    pub layers: Vec<LayerCache<T>>,
}

/// Checks the configuration gp-lite can run; returns the activation.
fn check_config(cfg: &BertConfig) -> Result<Gelu, EncoderError> {
    let act = Gelu::from_hidden_act(&cfg.hidden_act)
        .ok_or_else(|| EncoderError::Activation(cfg.hidden_act.clone()))?;
    if cfg.position_embedding_type != "absolute" {
        return Err(EncoderError::PositionEmbedding(
            cfg.position_embedding_type.clone(),
        ));
    }
    if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(EncoderError::Heads {
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
        });
    }
    for p in [cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob] {
        if !(0.0..1.0).contains(&p) {
            return Err(EncoderError::Dropout(p));
        }
    }
    Ok(act)
}

impl<T: Scalar> BertEncoder<T> {
    /// Packs every layer's weights for inference (`Linear::prepack`): for a model that is only
    /// run, not trained; any mutable walk of the parameters undoes it.
    pub fn prepack(&mut self, precision: Precision) {
        if let Some(p) = &mut self.project {
            p.prepack_as(precision);
        }
        for layer in &mut self.layers {
            layer.prepack(precision);
        }
    }

    /// For a model about to be filled from an int8 or bf16 directory: each dense layer packs its
    /// weight in `precision` as soon as the load has read it and drops the f32 copy, and the
    /// word embeddings are narrowed as soon as read: a load holds one layer at a time in f32.
    pub fn pack_on_load(&mut self, precision: Precision) {
        if precision.is_f32() {
            return;
        }
        if let Some(p) = &mut self.project {
            p.pack_on_load(precision);
        }
        for layer in &mut self.layers {
            layer.pack_on_load(precision);
        }
        self.embeddings.word.narrow_on_load(precision);
    }

    /// The precision of the dense layers' products ([`BertEncoder::prepack`]; f32 before).
    pub fn precision(&self) -> Precision {
        self.layers
            .first()
            .map_or(Precision::F32, |l| l.attention_output.precision())
    }

    /// BERT initialisation: weights and tables ~ N(0, initializer_range²), biases 0, LN weight 1.
    pub fn new(cfg: &BertConfig, rng: &mut impl Rng) -> Result<Self, EncoderError> {
        let act = check_config(cfg)?;
        let (h, e, std) = (cfg.hidden_size, cfg.embedding_width(), cfg.initializer_range);
        let embeddings = BertEmbeddings {
            word: Embedding::new(cfg.vocab_size, e, std, rng),
            position: Embedding::new(cfg.max_position_embeddings, e, std, rng),
            token_type: (cfg.type_vocab_size > 0).then(|| Embedding::new(cfg.type_vocab_size, e, std, rng)),
            layer_norm: LayerNorm::new(e, cfg.layer_norm_eps),
            dropout: Dropout::new(cfg.hidden_dropout_prob),
            position_offset: cfg.position_offset,
        };
        let project = (e != h).then(|| Linear::new(e, h, std, rng));
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| BertLayer::new(cfg, act, rng))
            .collect();
        Ok(BertEncoder {
            cfg: cfg.clone(),
            embeddings,
            project,
            layers,
        })
    }

    /// An encoder whose weights are all 0 (to be filled from a checkpoint), without sampling.
    pub fn zeroed(cfg: &BertConfig) -> Result<Self, EncoderError> {
        let mut zero = rand::rngs::mock::StepRng::new(0, 0);
        let mut cfg0 = cfg.clone();
        cfg0.initializer_range = 0.0;
        let mut enc = BertEncoder::new(&cfg0, &mut zero)?;
        enc.cfg = cfg.clone();
        Ok(enc)
    }

    /// The configuration the encoder was built from.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Checks shapes, lengths and ids against the configuration.
    pub fn check_input(&self, input: &EncoderInput) -> Result<(), EncoderError> {
        let (bsz, n) = input.input_ids.dim();
        if input.token_type_ids.dim() != (bsz, n) || input.lengths.len() != bsz || bsz == 0 {
            return Err(EncoderError::Input(format!(
                "input_ids {:?}, token_type_ids {:?}, {} lengths",
                input.input_ids.dim(),
                input.token_type_ids.dim(),
                input.lengths.len()
            )));
        }
        let max = self.cfg.max_tokens();
        for (text, &len) in input.lengths.iter().enumerate() {
            if len > max {
                return Err(EncoderError::TooLong { text, len, max });
            }
            if len > n {
                return Err(EncoderError::Input(format!(
                    "text {text}: length {len} > padded width {n}"
                )));
            }
        }
        if n > max {
            return Err(EncoderError::Input(format!(
                "padded width {n} > the {max} positions of the encoder"
            )));
        }
        let tables = [
            ("token", &input.input_ids, self.cfg.vocab_size),
            // no table (DistilBERT): only type 0, which adds nothing
            (
                "token type",
                &input.token_type_ids,
                self.cfg.type_vocab_size.max(1),
            ),
        ];
        for (what, ids, size) in tables {
            if let Some(((text, pos), &id)) = ids.indexed_iter().find(|(_, &id)| id as usize >= size) {
                return Err(EncoderError::Id {
                    text,
                    pos,
                    what,
                    id,
                    size,
                });
            }
        }
        Ok(())
    }

    /// last_hidden_state `[B*n, H]`; `train` = Some(rng) turns dropout on. Padded rows hold
    /// finite values that real rows do not depend on.
    pub fn forward<R: Rng>(
        &self,
        input: &EncoderInput,
        mut train: Option<&mut R>,
    ) -> Result<(Array2<T>, EncoderCache<T>), EncoderError> {
        self.check_input(input)?;
        let (mut x, embeddings) = self.embeddings.forward(input, train.as_deref_mut());
        let projected_from = self.project.as_ref().map(|p| {
            let y = p.forward(x.view());
            std::mem::replace(&mut x, y)
        });
        let mut layer_inputs = Vec::with_capacity(self.layers.len());
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (y, c) = layer.forward(x.view(), &input.lengths, train.as_deref_mut());
            layer_inputs.push(std::mem::replace(&mut x, y));
            layers.push(c);
        }
        let cache = EncoderCache {
            embeddings,
            projected_from,
            layer_inputs,
            layers,
        };
        Ok((x, cache))
    }

    /// Inference: what `forward` computes with dropout off, output only, by a lean path that
    /// keeps no backward state (every sublayer in place on one activation, three scratch
    /// buffers for the whole stack).
    pub fn encode(&self, input: &EncoderInput) -> Result<Array2<T>, EncoderError> {
        self.check_input(input)?;
        let mut x = self.embeddings.forward_inference(input);
        if let Some(p) = &self.project {
            x = p.forward(x.view());
        }
        let per_pass = if self.precision().is_f32() {
            usize::MAX // f32 weights: a second read of them costs what the cache gains
        } else {
            let widest = self
                .layers
                .first()
                .map_or(1, |l| l.ffn.intermediate.out_features());
            let rows = STACK_BYTES_PER_THREAD / (widest.max(1) * std::mem::size_of::<T>());
            rows * rayon::current_num_threads()
        };
        self.encode_layers(&mut x, &input.lengths, per_pass);
        Ok(x)
    }

    /// The layer stack over `x` in place, in passes over blocks of whole texts of at most
    /// `per_pass` rows (one text where a text is longer). Rows never meet across texts, so the
    /// blocks give the bits of one pass.
    fn encode_layers(&self, x: &mut Array2<T>, lengths: &[usize], per_pass: usize) {
        let mut scratch = InferenceScratch::default();
        let texts = lengths.len();
        let n = x.nrows() / texts.max(1);
        let per = (per_pass / n.max(1)).max(1);
        if per >= texts {
            BertLayer::forward_inference_stack(&self.layers, x, lengths, &mut scratch);
            return;
        }
        for t0 in (0..texts).step_by(per) {
            let t1 = (t0 + per).min(texts);
            let rows = s![t0 * n..t1 * n, ..];
            let mut block = crate::parallel::copy(x.slice(rows));
            BertLayer::forward_inference_stack(&self.layers, &mut block, &lengths[t0..t1], &mut scratch);
            x.slice_mut(rows).assign(&block);
        }
    }

    /// Accumulates every parameter gradient for output gradient dh `[B*n, H]`. Gradient given at
    /// padded rows is ignored.
    pub fn backward(&mut self, input: &EncoderInput, cache: &EncoderCache<T>, dh: ArrayView2<T>) {
        let n = input.width();
        let mut d = crate::parallel::copy(dh);
        for (b, &len) in input.lengths.iter().enumerate() {
            d.slice_mut(s![b * n + len..(b + 1) * n, ..]).fill(T::zero());
        }
        for (i, layer) in self.layers.iter_mut().enumerate().rev() {
            d = layer.backward(
                cache.layer_inputs[i].view(),
                &input.lengths,
                &cache.layers[i],
                d.view(),
            );
        }
        if let (Some(p), Some(e)) = (&mut self.project, &cache.projected_from) {
            d = p.backward(e.view(), d.view());
        }
        self.embeddings.backward(input, &cache.embeddings, d);
    }
}

/// Bytes of the widest activation (the FFN's) that one pass of the layer stack holds per
/// thread of the pool, at most, where the products are int8 or bf16: a larger batch runs as
/// several passes over blocks of whole texts, so that each thread's share of the activations
/// stays near its caches instead of streaming through L3 at every pass over it (the output of
/// every product, GELU, quantising A). 512 rows of BERT-base (3,072 FFN columns), 1,024 of
/// minilm (1,536). Batch 32 x 64, int8 BERT-base: 1.73x on one thread, 1.33x on two; each pass
/// reads every weight again, which f32's four bytes a weight make cost as much as the passes
/// gain (0.95x), so f32 runs one pass (docs/speed.md, "Passes over blocks of texts").
const STACK_BYTES_PER_THREAD: usize = 6 << 20;

impl<T: Scalar> Params<T> for BertEncoder<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.embeddings.visit(&join(prefix, "embeddings"), f);
        if let Some(p) = &self.project {
            p.visit(&join(prefix, "embeddings_project"), f);
        }
        for (i, layer) in self.layers.iter().enumerate() {
            layer.visit(&join(prefix, &format!("encoder.layer.{i}")), f);
        }
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.embeddings.visit_mut(&join(prefix, "embeddings"), f);
        if let Some(p) = &mut self.project {
            p.visit_mut(&join(prefix, "embeddings_project"), f);
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.visit_mut(&join(prefix, &format!("encoder.layer.{i}")), f);
        }
    }
}

/// The small encoder and batch the encoder's and the checkpoint's tests run.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::bert::config::BertConfig;
    use crate::bert::input::EncoderInput;
    use ndarray::array;

    /// 2 layers, hidden 8, 2 heads, FFN 16, vocabulary 20, 12 positions.
    pub(crate) fn tiny_config() -> BertConfig {
        let mut cfg = BertConfig::preset("tiny", 20).unwrap();
        cfg.hidden_size = 8;
        cfg.num_attention_heads = 2;
        cfg.intermediate_size = 16;
        cfg.max_position_embeddings = 12;
        cfg.initializer_range = 0.5;
        cfg
    }

    /// The other families' variations on [`tiny_config`] at once: ELECTRA's narrower embeddings
    /// (4, projected to 8), RoBERTa's positions from 2, DistilBERT's missing token types and
    /// attention-output dropout.
    pub(crate) fn family_config() -> BertConfig {
        let mut cfg = tiny_config();
        cfg.embedding_size = Some(4);
        cfg.position_offset = 2;
        cfg.max_position_embeddings = 14;
        cfg.type_vocab_size = 0;
        cfg.attention_output_dropout = false;
        cfg
    }

    /// [`tiny_input`] with every token type 0 (for [`family_config`]).
    pub(crate) fn family_input() -> EncoderInput {
        let mut input = tiny_input();
        input.token_type_ids.fill(0);
        input
    }

    /// Two texts of 5 and 3 tokens, padded to 5.
    pub(crate) fn tiny_input() -> EncoderInput {
        EncoderInput {
            input_ids: array![[2, 7, 19, 4, 3], [2, 11, 3, 0, 0]],
            token_type_ids: array![[0, 0, 0, 1, 1], [0, 1, 1, 0, 0]],
            lengths: vec![5, 3],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{family_config, family_input, tiny_config, tiny_input};
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use ndarray::{array, Array2};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn masked_loss(h: &Array2<f64>, proj: &Array2<f64>) -> f64 {
        (h * proj).sum()
    }

    /// A projection that is 0 on padded rows.
    fn projection(input: &EncoderInput, h: usize) -> Array2<f64> {
        let n = input.width();
        let mut p = fixed_random(ndarray::Ix2(input.batch() * n, h), 9);
        for (b, &l) in input.lengths.iter().enumerate() {
            p.slice_mut(s![b * n + l..(b + 1) * n, ..]).fill(0.0);
        }
        p
    }

    #[test]
    fn parameter_names_are_hf_names() {
        let enc = BertEncoder::<f32>::new(&tiny_config(), &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let names: Vec<String> = enc.param_shapes().into_iter().map(|(n, _)| n).collect();
        for want in [
            "embeddings.word_embeddings.weight",
            "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight",
            "embeddings.LayerNorm.weight",
            "embeddings.LayerNorm.bias",
            "encoder.layer.1.attention.self.query.weight",
            "encoder.layer.1.attention.self.key.bias",
            "encoder.layer.1.attention.self.value.weight",
            "encoder.layer.1.attention.output.dense.weight",
            "encoder.layer.1.attention.output.LayerNorm.bias",
            "encoder.layer.1.intermediate.dense.weight",
            "encoder.layer.1.output.dense.bias",
            "encoder.layer.1.output.LayerNorm.weight",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
        // 5 embedding tensors + 16 per layer.
        assert_eq!(names.len(), 5 + 2 * 16);
    }

    #[test]
    fn gradcheck_whole_encoder() {
        gradcheck_encoder(tiny_config(), tiny_input());
    }

    #[test]
    fn gradcheck_family_variations() {
        let cfg = family_config();
        let enc = BertEncoder::<f64>::new(&cfg, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let names: Vec<String> = enc.param_shapes().into_iter().map(|(n, _)| n).collect();
        assert!(names.iter().any(|n| n == "embeddings_project.weight"));
        assert!(!names.iter().any(|n| n.contains("token_type")));
        gradcheck_encoder(cfg, family_input());
    }

    fn gradcheck_encoder(cfg: BertConfig, input: EncoderInput) {
        let mut enc = BertEncoder::<f64>::new(&cfg, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let proj = projection(&input, cfg.hidden_size);
        for train in [false, true] {
            // Training reseeds every evaluation, so the dropout masks are the same each time.
            let run = |e: &BertEncoder<f64>| {
                let mut rng = ChaCha8Rng::seed_from_u64(5);
                e.forward(&input, if train { Some(&mut rng) } else { None })
                    .unwrap()
            };
            let (_, cache) = run(&enc);
            enc.zero_grad();
            enc.backward(&input, &cache, proj.view());
            // Some gradients are exactly 0 (key biases: softmax ignores a per-row shift); the
            // central difference's rounding noise (~1e-10 at this loss scale) needs a floor.
            let report = GradCheck {
                max_elems: 40,
                floor: 1e-3,
                ..GradCheck::default()
            }
            .params(&mut enc, |e| masked_loss(&run(e).0, &proj));
            report.assert_below(1e-6);
        }
    }

    #[test]
    fn lean_inference_matches_the_training_forward() {
        let cases = [
            (tiny_config(), "gelu", tiny_input()),
            (tiny_config(), "gelu_new", tiny_input()),
            (family_config(), "gelu", family_input()),
        ];
        for (cfg, act, input) in cases {
            let mut cfg = cfg.clone();
            cfg.hidden_act = act.into();
            let enc = BertEncoder::<f64>::new(&cfg, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
            let (want, _) = enc.forward(&input, None::<&mut ChaCha8Rng>).unwrap();
            let got = enc.encode(&input).unwrap();
            assert_eq!(got.dim(), want.dim());
            let worst = (&got - &want).iter().fold(0.0f64, |m, d| m.max(d.abs()));
            assert!(worst < 1e-12, "{act}: worst difference {worst}");
            // And in f32 on two threads (rayon splits rows and (text, head) tasks).
            let enc32 = BertEncoder::<f32>::new(&cfg, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
            let pool = crate::matmul::thread_pool(2).unwrap();
            let got = pool.install(|| enc32.encode(&input).unwrap());
            let (want, _) = enc32.forward(&input, None::<&mut ChaCha8Rng>).unwrap();
            let worst = (&got - &want).iter().fold(0.0f32, |m, d| m.max(d.abs()));
            assert!(worst < 1e-5, "{act} f32: worst difference {worst}");
        }
    }

    #[test]
    fn a_lockstep_team_gives_the_bits_of_the_layer_by_layer_path() {
        // wide enough that every product splits into several column blocks (f32 panels are 32
        // columns, int8 and bf16 blocks 64): 3H = 384, F = 256, H = 128
        let mut wide = tiny_config();
        (wide.hidden_size, wide.intermediate_size) = (128, 256);
        let cases = [
            (tiny_config(), tiny_input()),
            (family_config(), family_input()),
            (wide, tiny_input()),
        ];
        for (cfg, input) in cases {
            for precision in [Precision::F32, Precision::Int8, Precision::Bf16] {
                let mut enc = BertEncoder::<f32>::new(&cfg, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
                enc.prepack(precision);
                if precision.is_f32() && !crate::matmul::packed_kernel() {
                    continue; // no packed f32 weights on this CPU: no team to compare
                }
                assert!(enc.layers.iter().all(BertLayer::packed), "{precision}");
                let mut embedded = enc.embeddings.forward_inference(&input);
                if let Some(p) = &enc.project {
                    embedded = p.forward(embedded.view());
                }
                let mut want = embedded.clone();
                let mut scratch = InferenceScratch::default();
                for layer in &enc.layers {
                    layer.forward_inference(&mut want, &input.lengths, &mut scratch);
                }
                for threads in [2, 3] {
                    let pool = crate::matmul::thread_pool(threads).unwrap();
                    let mut got = embedded.clone();
                    let team = pool.install(|| {
                        BertLayer::forward_inference_stack(
                            &enc.layers,
                            &mut got,
                            &input.lengths,
                            &mut InferenceScratch::default(),
                        )
                    });
                    assert!(team, "{precision}, {threads} threads: no team formed");
                    assert_eq!(got, want, "{precision}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn passes_over_blocks_of_texts_give_the_bits_of_one_pass() {
        let cfg = tiny_config();
        let mut input = tiny_input();
        // five texts: blocks of 2, 2 and 1 at two texts a pass
        let n = input.width();
        input.input_ids = ndarray::concatenate![
            ndarray::Axis(0),
            input.input_ids,
            input.input_ids,
            input.input_ids.slice(s![..1, ..])
        ];
        input.token_type_ids = ndarray::concatenate![
            ndarray::Axis(0),
            input.token_type_ids,
            input.token_type_ids,
            input.token_type_ids.slice(s![..1, ..])
        ];
        input.lengths = [
            input.lengths.clone(),
            input.lengths.clone(),
            vec![input.lengths[0]],
        ]
        .concat();
        for precision in [Precision::F32, Precision::Int8] {
            let mut enc = BertEncoder::<f32>::new(&cfg, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
            enc.prepack(precision);
            let embedded = enc.embeddings.forward_inference(&input);
            let mut want = embedded.clone();
            enc.encode_layers(&mut want, &input.lengths, usize::MAX);
            for per_pass in [2 * n, 2 * n + 1, 1] {
                let mut got = embedded.clone();
                enc.encode_layers(&mut got, &input.lengths, per_pass);
                assert_eq!(got, want, "{precision}, {per_pass} rows a pass");
            }
            assert_ne!(want, embedded);
        }
    }

    #[test]
    fn padding_does_not_change_real_outputs() {
        let cfg = tiny_config();
        let enc = BertEncoder::<f64>::new(&cfg, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        let input = tiny_input();
        let h = enc.encode(&input).unwrap();
        assert!(h.iter().all(|v| v.is_finite()));
        // Other ids and types at the padded positions, and a wider padding.
        let other = EncoderInput {
            input_ids: array![[2, 7, 19, 4, 3, 0, 0], [2, 11, 3, 17, 5, 9, 1]],
            token_type_ids: array![[0, 0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0, 1]],
            lengths: vec![5, 3],
        };
        let h2 = enc.encode(&other).unwrap();
        for (b, &l) in input.lengths.iter().enumerate() {
            let a = h.slice(s![b * 5..b * 5 + l, ..]);
            let c = h2.slice(s![b * 7..b * 7 + l, ..]);
            assert!((&a - &c).iter().all(|d| d.abs() < 1e-12), "text {b}");
        }
        // Gradient given at padded rows changes nothing.
        let mut e1 = enc.clone();
        let mut e2 = enc.clone();
        let (_, cache) = enc.forward(&input, None::<&mut ChaCha8Rng>).unwrap();
        let proj = projection(&input, cfg.hidden_size);
        e1.zero_grad();
        e1.backward(&input, &cache, proj.view());
        let mut noisy = proj.clone();
        noisy.slice_mut(s![8..10, ..]).fill(3.0);
        e2.zero_grad();
        e2.backward(&input, &cache, noisy.view());
        let (mut g1, mut g2) = (Vec::new(), Vec::new());
        e1.visit_mut("", &mut |_, p| g1.extend(p.grad.iter().copied()));
        e2.visit_mut("", &mut |_, p| g2.extend(p.grad.iter().copied()));
        assert_eq!(g1, g2);
    }

    #[test]
    fn rejects_unsupported_config_and_long_input() {
        let mut cfg = tiny_config();
        cfg.hidden_act = "relu".into();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        assert!(
            matches!(BertEncoder::<f32>::new(&cfg, &mut rng), Err(EncoderError::Activation(a)) if a == "relu")
        );
        cfg.hidden_act = "gelu_new".into();
        cfg.max_position_embeddings = 4;
        let enc = BertEncoder::<f32>::new(&cfg, &mut rng).unwrap();
        assert!(matches!(
            enc.encode(&tiny_input()),
            Err(EncoderError::TooLong {
                text: 0,
                len: 5,
                max: 4
            })
        ));
        let mut bad = tiny_input();
        bad.input_ids[[1, 1]] = 20;
        let enc = BertEncoder::<f32>::new(&tiny_config(), &mut rng).unwrap();
        assert!(matches!(
            enc.encode(&bad),
            Err(EncoderError::Id {
                text: 1,
                pos: 1,
                id: 20,
                ..
            })
        ));
    }
}
