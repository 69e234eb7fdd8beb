//! `encoder.layer.N` (HF's `BertLayer`): `LN(x + dropout(dense(attention(x))))` then
//! `LN(h + dropout(FFN(h)))`, with the training forward and backward and the lean inference
//! forward on reused scratch buffers.

use crate::bert::config::BertConfig;
use crate::lockstep::{lockstep, Part, Shared};
use crate::nn::attention::{AttentionCache, SelfAttention};
use crate::nn::dropout::{Dropout, DropoutMask};
use crate::nn::feed_forward::{FeedForward, FeedForwardCache};
use crate::nn::layer_norm::ResidualNormCache;
use crate::nn::{Gelu, LayerNorm, Linear};
use crate::param::{join, ParamMut, Params};
use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{s, Array2, ArrayView2, ArrayViewD, Ix2};
use rand::Rng;

/// Batches of at most this many rows (texts x padded length) run the layers' inference as one
/// lockstep team; larger ones split each step over rayon. Measured on minilm, int8, 2 threads
/// (docs/speed.md): the team is 1.35x faster at 200 rows and 8-15% slower at 512 (each thread
/// quantises all of A's rows; a split by rows does not).
const LOCKSTEP_MAX_ROWS: usize = 256;

/// The buffers of a layer's inference, shared by a lockstep team.
struct Team<'a, T> {
    x: Shared<'a, T>,
    qkv: Shared<'a, T>,
    ctx: Shared<'a, T>,
    a: Shared<'a, T>,
    inter: Shared<'a, T>,
}

/// `encoder.layer.N`: attention and feed-forward sublayers, each followed by residual + LN.
#[derive(Clone, Debug)]
pub struct BertLayer<T> {
    /// `attention.self`
    pub attention: SelfAttention<T>,
    /// `attention.output.dense`
    pub attention_output: Linear<T>,
    /// `attention.output.LayerNorm`
    pub attention_norm: LayerNorm<T>,
    /// `intermediate.dense`, `output.dense`
    pub ffn: FeedForward<T>,
    /// `output.LayerNorm`
    pub output_norm: LayerNorm<T>,
    /// Dropout on both sublayers' outputs before their residual (`hidden_dropout_prob`).
    pub dropout: Dropout,
    /// dropout after the attention output projection (DistilBERT: none)
    pub attention_dropout: Dropout,
}

/// Buffers the inference forward reuses from layer to layer (grown to the largest batch seen).
#[derive(Clone, Debug, Default)]
pub struct InferenceScratch<T> {
    /// `[B*n, H]`: attention context
    ctx: Array2<T>,
    /// `[B*n, H]`: a sublayer's output before residual + LayerNorm
    a: Array2<T>,
    /// `[B*n, F]`: FFN inner activation
    inter: Array2<T>,
    /// `[B*n, 3H]`: attention's Q | K | V
    qkv: Array2<T>,
}

impl<T: Scalar> InferenceScratch<T> {
    fn ensure(&mut self, rows: usize, h: usize, f: usize) {
        if self.ctx.dim() != (rows, h) {
            self.ctx = crate::parallel::zeros(Ix2(rows, h));
            self.a = crate::parallel::zeros(Ix2(rows, h));
            self.qkv = crate::parallel::zeros(Ix2(rows, 3 * h));
        }
        if self.inter.dim() != (rows, f) {
            self.inter = crate::parallel::zeros(Ix2(rows, f));
        }
    }
}

/// Everything one layer's backward needs besides its input.
#[derive(Clone, Debug)]
pub struct LayerCache<T> {
    /// What self-attention's backward needs.
    pub attention: AttentionCache<T>,
    /// `[B*n, H]`: attention context (input of `attention.output.dense`)
    pub context: Array2<T>,
    /// The dropout mask on `attention.output.dense`'s output.
    pub attention_drop: DropoutMask<T, Ix2>,
    /// The first residual + LayerNorm's statistics.
    pub attention_norm: ResidualNormCache<T>,
    /// `[B*n, H]`: LN(x + attention), the FFN input
    pub hidden: Array2<T>,
    /// What the feed-forward block's backward needs.
    pub ffn: FeedForwardCache<T>,
    /// The dropout mask on the feed-forward output.
    pub ffn_drop: DropoutMask<T, Ix2>,
    /// The second residual + LayerNorm's statistics.
    pub output_norm: ResidualNormCache<T>,
}

impl<T: Scalar> BertLayer<T> {
    /// Packs every weight of the layer for inference (`Linear::prepack`).
    pub fn prepack(&mut self, precision: Precision) {
        self.attention.prepack(precision);
        self.attention_output.prepack_as(precision);
        self.ffn.prepack(precision);
    }

    /// Packs every dense weight in `precision` as the load reads it, dropping the f32 copies
    /// (`Linear::pack_on_load`).
    pub fn pack_on_load(&mut self, precision: Precision) {
        self.attention.pack_on_load(precision);
        self.attention_output.pack_on_load(precision);
        self.ffn.intermediate.pack_on_load(precision);
        self.ffn.output.pack_on_load(precision);
    }

    /// A layer of `cfg`'s sizes, weights drawn from N(0, `initializer_range`²), biases 0,
    /// norms at weight 1 and bias 0.
    pub fn new(cfg: &BertConfig, act: Gelu, rng: &mut impl Rng) -> Self {
        let (h, std, eps) = (cfg.hidden_size, cfg.initializer_range, cfg.layer_norm_eps);
        BertLayer {
            attention: SelfAttention::new(
                h,
                cfg.num_attention_heads,
                cfg.attention_probs_dropout_prob,
                std,
                rng,
            ),
            attention_output: Linear::new(h, h, std, rng),
            attention_norm: LayerNorm::new(h, eps),
            ffn: FeedForward::new(h, cfg.intermediate_size, act, std, rng),
            output_norm: LayerNorm::new(h, eps),
            dropout: Dropout::new(cfg.hidden_dropout_prob),
            attention_dropout: Dropout::new(if cfg.attention_output_dropout {
                cfg.hidden_dropout_prob
            } else {
                0.0
            }),
        }
    }

    /// y `[B*n, H]` of x `[B*n, H]`.
    pub fn forward<R: Rng>(
        &self,
        x: ArrayView2<T>,
        lengths: &[usize],
        mut rng: Option<&mut R>,
    ) -> (Array2<T>, LayerCache<T>) {
        let (context, attention) = self.attention.forward(x, lengths, rng.as_deref_mut());
        let mut a = self.attention_output.forward(context.view());
        let attention_drop = self.attention_dropout.forward_inplace(&mut a, rng.as_deref_mut());
        let (hidden, attention_norm) = self.attention_norm.forward_residual(x, a.view());
        let (mut f, ffn) = self.ffn.forward(hidden.view());
        let ffn_drop = self.dropout.forward_inplace(&mut f, rng);
        let (y, output_norm) = self.output_norm.forward_residual(hidden.view(), f.view());
        let cache = LayerCache {
            attention,
            context,
            attention_drop,
            attention_norm,
            hidden,
            ffn,
            ffn_drop,
            output_norm,
        };
        (y, cache)
    }

    /// Inference: x ← layer(x) in place, dropout off, nothing kept for a backward. Bias + GELU
    /// and residual + LayerNorm are one pass each over their buffers; `ctx`, `a` `[B*n, H]`,
    /// `qkv` `[B*n, 3H]` and `inter` `[B*n, F]` are scratch the caller reuses across layers.
    pub fn forward_inference(&self, x: &mut Array2<T>, lengths: &[usize], scratch: &mut InferenceScratch<T>) {
        let (rows, h) = x.dim();
        let f = self.ffn.intermediate.out_features();
        scratch.ensure(rows, h, f);
        let InferenceScratch { ctx, a, inter, qkv } = scratch;
        self.attention
            .forward_inference(x.view(), lengths, qkv.view_mut(), ctx.view_mut());
        self.attention_output.forward_into(ctx.view(), a.view_mut());
        self.attention_norm
            .forward_residual_inplace(x.view_mut(), a.view());
        self.ffn.intermediate.forward_into(x.view(), inter.view_mut());
        self.ffn.act.forward_inplace(inter.view_mut());
        self.ffn.output.forward_into(inter.view(), a.view_mut());
        self.output_norm.forward_residual_inplace(x.view_mut(), a.view());
    }

    /// `layers` in turn over x (see [`forward_inference`](Self::forward_inference)), as one
    /// lockstep team of the pool's threads ([`crate::lockstep`]) where the batch is small
    /// enough and every product packed: each product split by columns, attention by (text,
    /// head), GELU on each thread's own columns, the LayerNorms by rows, a barrier between
    /// stages. The same values either way.
    /// True where the team ran.
    pub fn forward_inference_stack(
        layers: &[BertLayer<T>],
        x: &mut Array2<T>,
        lengths: &[usize],
        scratch: &mut InferenceScratch<T>,
    ) -> bool {
        let (rows, h) = x.dim();
        assert!(
            !lengths.is_empty() && rows.is_multiple_of(lengths.len()),
            "layers: rows not a multiple of the batch"
        );
        assert!(
            lengths.iter().all(|&l| l <= rows / lengths.len()),
            "layers: a length exceeds the padded length"
        );
        let team = (1..=LOCKSTEP_MAX_ROWS).contains(&rows)
            && x.is_standard_layout()
            && layers.iter().all(BertLayer::packed);
        if let (true, Some(first)) = (team, layers.first()) {
            scratch.ensure(rows, h, first.ffn.intermediate.out_features());
            let InferenceScratch { ctx, a, inter, qkv } = scratch;
            let m = Team {
                x: Shared::new(x.view_mut()),
                qkv: Shared::new(qkv.view_mut()),
                ctx: Shared::new(ctx.view_mut()),
                a: Shared::new(a.view_mut()),
                inter: Shared::new(inter.view_mut()),
            };
            let done = lockstep(|p| {
                for (i, layer) in layers.iter().enumerate() {
                    if i > 0 {
                        p.sync();
                    }
                    // SAFETY: the stages of one layer keep the rule (`stages`), and a barrier
                    // separates the last stage of a layer from the first of the next.
                    unsafe { layer.stages(p, &m, lengths) };
                }
            });
            if done {
                return true;
            }
        }
        for layer in layers {
            layer.forward_inference(x, lengths, scratch);
        }
        false
    }

    /// Whether every product of the layer has a packed weight (a lockstep team needs them).
    pub(crate) fn packed(&self) -> bool {
        let linears = [&self.attention_output, &self.ffn.intermediate, &self.ffn.output];
        self.attention.is_fused() && linears.iter().all(|l| l.is_packed())
    }

    /// This thread's share of the layer over the team's buffers, stage by stage.
    ///
    /// # Safety
    /// Every thread of the team calls it with the same buffers, which no thread touches
    /// otherwise until it returns; the layer is [`packed`](Self::packed).
    unsafe fn stages(&self, p: &Part, m: &Team<T>, lengths: &[usize]) {
        let Team {
            x,
            qkv,
            ctx,
            a,
            inter,
        } = m;
        let (rows, nh, dh) = (x.dim().0, self.attention.num_heads, self.attention.head_dim());
        let n = rows / lengths.len();
        let (ffn1, ffn2) = (&self.ffn.intermediate, &self.ffn.output);
        let cols = |l: &Linear<T>| l.columns(p).expect("a packed layer");
        // SAFETY: (every access below) each thread writes only its own block (its columns of a
        // product, its (text, head) jobs' context columns, its rows of a LayerNorm), and a
        // matrix read whole was last written before a `sync` and is not written again until
        // the next one.
        unsafe {
            let c = self.attention.qkv_columns(p).expect("a packed layer");
            self.attention
                .qkv_columns_forward(x.view(), qkv.cols_mut(c.clone()), c.start);
            p.sync();
            for job in p.block(lengths.len() * nh, 1) {
                let (b, h) = (job / nh, job % nh);
                let block = ctx.block_mut(b * n..(b + 1) * n, h * dh..(h + 1) * dh);
                self.attention.head_context_of(qkv.view(), lengths, b, h, block);
            }
            p.sync();
            let c = cols(&self.attention_output);
            self.attention_output
                .forward_columns(ctx.view(), a.cols_mut(c.clone()), c.start);
            p.sync();
            let r = p.block(rows, 1);
            self.attention_norm
                .forward_residual_rows(x.rows_mut(r.clone()), a.view().slice_move(s![r, ..]));
            p.sync();
            let c = cols(ffn1);
            ffn1.forward_columns(x.view(), inter.cols_mut(c.clone()), c.start);
            self.ffn.act.forward_block(inter.cols_mut(c));
            p.sync();
            let c = cols(ffn2);
            ffn2.forward_columns(inter.view(), a.cols_mut(c.clone()), c.start);
            p.sync();
            let r = p.block(rows, 1);
            self.output_norm
                .forward_residual_rows(x.rows_mut(r.clone()), a.view().slice_move(s![r, ..]));
        }
    }

    /// Accumulates every parameter gradient of the layer and returns dx.
    pub fn backward(
        &mut self,
        x: ArrayView2<T>,
        lengths: &[usize],
        c: &LayerCache<T>,
        dy: ArrayView2<T>,
    ) -> Array2<T> {
        // y = LN2(h + drop(FFN(h))): d(sum) flows to h and to the FFN branch.
        let mut dh = self.output_norm.backward_residual(&c.output_norm, dy);
        let mut df = crate::parallel::copy(dh.view());
        Dropout::backward_inplace(&c.ffn_drop, &mut df);
        self.ffn
            .backward_acc(c.hidden.view(), &c.ffn, df.view(), dh.view_mut());
        // h = LN1(x + drop(dense(attn(x)))).
        let mut dx = self
            .attention_norm
            .backward_residual(&c.attention_norm, dh.view());
        let mut da = crate::parallel::copy(dx.view());
        Dropout::backward_inplace(&c.attention_drop, &mut da);
        let dctx = self.attention_output.backward(c.context.view(), da.view());
        self.attention
            .backward_acc(x, lengths, &c.attention, dctx.view(), dx.view_mut());
        dx
    }
}

impl<T: Scalar> Params<T> for BertLayer<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        self.attention.visit(&join(prefix, "attention.self"), f);
        self.attention_output
            .visit(&join(prefix, "attention.output.dense"), f);
        self.attention_norm
            .visit(&join(prefix, "attention.output.LayerNorm"), f);
        self.ffn.visit(prefix, f);
        self.output_norm.visit(&join(prefix, "output.LayerNorm"), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.attention.visit_mut(&join(prefix, "attention.self"), f);
        self.attention_output
            .visit_mut(&join(prefix, "attention.output.dense"), f);
        self.attention_norm
            .visit_mut(&join(prefix, "attention.output.LayerNorm"), f);
        self.ffn.visit_mut(prefix, f);
        self.output_norm.visit_mut(&join(prefix, "output.LayerNorm"), f);
    }
}
