//! Inference on raw text: tokenize, window texts longer than the model's maximum, score, decode,
//! and map token spans back to character offsets.

use crate::batch::{make_batch, Boundaries};
use crate::bert::EncoderError;
use crate::decode::{flatten, DecodeMode, DEFAULT_THRESHOLD};
use crate::infer::{decode_batch, Workspace};
use crate::model::encode_for;
use crate::model::NerModel;
use crate::precision::Precision;
use crate::scalar::Scalar;
use crate::span::SpanPred;
use crate::tokenize::{token_span_to_chars, window, window_ranges, Encoding, TokenizeError, Tokenizer};
use serde::Serialize;
use std::borrow::Cow;
use std::ops::Range;

/// An entity found in a text: characters `[start, end)` (Unicode code points), its type and score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PredEntity {
    /// First character (inclusive), in code points.
    pub start: usize,
    /// One past the last character (exclusive), in code points.
    pub end: usize,
    /// The entity type (serialized as `type`).
    #[serde(rename = "type")]
    pub label: String,
    /// Index of `label` in the model's labels.
    #[serde(skip)]
    pub ty: usize,
    /// The head's score of the span: a logit for the pointer heads, the smallest marginal
    /// probability of its tags for the CRF.
    pub score: f64,
}

/// Why prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// A text could not be tokenized or windowed.
    #[error("text {index}: {source}")]
    Tokenize {
        /// Position of the text in the caller's list.
        index: usize,
        /// The tokenizer's error.
        source: TokenizeError,
    },
    /// The encoder refused a batch (e.g. a token id outside its vocabulary).
    #[error(transparent)]
    Encoder(#[from] EncoderError),
}

/// How texts are decoded.
#[derive(Clone, Copy, Debug)]
pub struct PredictOptions {
    /// Nested or flat output; `None`: the model's default (config.json `decode`).
    pub mode: Option<DecodeMode>,
    /// Spans scoring above this are entities (default [`DEFAULT_THRESHOLD`] = 0); the CRF head,
    /// which decodes one tag path, ignores it.
    pub threshold: f64,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Tokens per window, specials included, for texts longer than the model's `max_len` (those
    /// are scored in windows); `None`: [`DEFAULT_WINDOW`] or `max_len` if smaller.
    pub window: Option<usize>,
    /// Content tokens shared by consecutive windows: an entity of up to this many tokens always
    /// lies whole in one window, and every token of it has some context on both sides.
    pub overlap: usize,
}

/// Window length (tokens, specials included) for texts longer than the model's `max_len`.
pub const DEFAULT_WINDOW: usize = 128;
/// Content tokens two consecutive windows share.
pub const DEFAULT_OVERLAP: usize = 32;

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            mode: None,
            threshold: DEFAULT_THRESHOLD,
            batch_size: 32,
            window: None,
            overlap: DEFAULT_OVERLAP,
        }
    }
}

/// A trained model with its tokenizer. Immutable: share it between threads, one [`Workspace`]
/// per thread.
pub struct Predictor<T> {
    /// The model, its weights packed for inference when loaded from a directory.
    pub model: NerModel<T>,
    /// The tokenizer it was trained with.
    pub tokenizer: Tokenizer,
}

/// One window of one text, ready to batch: its encoding is built only when its batch is scored,
/// so that a long text's windows do not all sit in memory at once.
struct Unit {
    text: usize,
    /// Content tokens of the text's encoding in this window; `None`: the whole encoding.
    tokens: Option<Range<usize>>,
    /// Tokens, specials included.
    len: usize,
}

impl Unit {
    /// Full-encoding index of window token 0 minus 1 (window token i is full token offset + i).
    fn offset(&self) -> usize {
        self.tokens.as_ref().map_or(0, |r| r.start - 1)
    }

    fn encoding<'a>(&self, encs: &'a [Encoding]) -> Cow<'a, Encoding> {
        match &self.tokens {
            None => Cow::Borrowed(&encs[self.text]),
            Some(r) => Cow::Owned(window(&encs[self.text], r.clone()).encoding),
        }
    }
}

/// Most token pairs (`B·n²`, the size of one type's score matrices) one batch may hold: 32 texts
/// of 128 tokens. A batch's scores are `[B, C, n, n]`, so this bounds its memory whatever the
/// length of the texts: windows of 256 tokens go 8 at a time (32 at a time, one 1 MB line
/// peaked at 410 MB against 41 MB for a 1 KB line).
const MAX_BATCH_PAIRS: usize = 32 * 128 * 128;

/// Batches of at most `batch_size` units and [`MAX_BATCH_PAIRS`] token pairs (at least one unit),
/// units sorted by length for the least padding.
fn batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // sorted: the unit joining is the longest, so it sets the padded width
        let n = lengths[i];
        let full = current.len() >= batch_size.max(1) || (current.len() + 1) * n * n > MAX_BATCH_PAIRS;
        if full && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl<T: Scalar> Predictor<T> {
    /// Longest token sequence the model runs on, specials included.
    pub fn max_len(&self) -> usize {
        self.model.config.max_len
    }

    /// Runs the encoder's products in `precision` from now on (int8, bf16: rounded from the f32
    /// weights, which are kept; see `matmul::int8`, `matmul::bf16`). An f64 model stays f64 whatever it is asked.
    pub fn set_precision(&mut self, precision: Precision) {
        self.model.prepack_as(precision);
    }

    /// Entities of each text; see [`predict_texts`].
    pub fn predict(
        &self,
        texts: &[&str],
        opts: &PredictOptions,
        ws: &mut Workspace,
    ) -> Result<Vec<Vec<PredEntity>>, PredictError> {
        predict_texts(&self.model, &self.tokenizer, texts, opts, ws)
    }
}

/// Token windows: texts longer than `max_len` are split into windows of `window` tokens
/// (specials included, at most `max_len`) sharing `overlap` content tokens.
fn units(
    encs: &[Encoding],
    max_len: usize,
    window: usize,
    overlap: usize,
) -> Result<Vec<Unit>, PredictError> {
    let window = window.clamp(3, max_len.max(3));
    let stride = (window - 2).saturating_sub(overlap).max(1);
    let mut units = Vec::new();
    for (text, enc) in encs.iter().enumerate() {
        if enc.len() <= max_len {
            units.push(Unit {
                text,
                tokens: None,
                len: enc.len(),
            });
            continue;
        }
        let ranges = window_ranges(enc, window, stride)
            .map_err(|source| PredictError::Tokenize { index: text, source })?;
        for r in ranges {
            units.push(Unit {
                text,
                len: r.len() + 2,
                tokens: Some(r),
            });
        }
    }
    Ok(units)
}

/// Texts longer than this (bytes) are tokenized and scored segment by segment
/// ([`predict_long`]), so that memory stays at a segment's and a batch's size whatever their length.
const LONG_TEXT_BYTES: usize = 32 * 1024;
/// Characters per segment of a long text.
const SEGMENT_CHARS: usize = 8 * 1024;
/// Most tokens in one batch of a long text's windows (4 windows of 128): on the sample model,
/// 4 windows a batch ran a 100,000-character text 12% faster than 32 and in a third of the memory.
const LONG_BATCH_TOKENS: usize = 512;

/// Entities of each text, in character offsets. Texts longer than the model's `max_len` are
/// scored in overlapping windows (`opts.window`, `opts.overlap`); the head merges what the
/// windows found. Texts over 32 KiB are read in segments of 8,192 characters cut after a
/// whitespace character where the segment's second half has one (a subword tokenizer may split
/// a word cut elsewhere differently); memory then does not grow with the text.
pub fn predict_texts<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    texts: &[&str],
    opts: &PredictOptions,
    ws: &mut Workspace,
) -> Result<Vec<Vec<PredEntity>>, PredictError> {
    predict_texts_with(model, tokenizer, texts, opts, ws, LONG_TEXT_BYTES, SEGMENT_CHARS)
}

/// [`predict_texts`] with the long-text threshold and segment size as arguments (for tests).
fn predict_texts_with<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    texts: &[&str],
    opts: &PredictOptions,
    ws: &mut Workspace,
    long_bytes: usize,
    segment_chars: usize,
) -> Result<Vec<Vec<PredEntity>>, PredictError> {
    let is_long = |t: &str| t.len() > long_bytes;
    let short: Vec<usize> = (0..texts.len()).filter(|&i| !is_long(texts[i])).collect();
    let short_texts: Vec<&str> = short.iter().map(|&i| texts[i]).collect();
    let mut short_preds = predict_short(model, tokenizer, &short_texts, opts, ws)?.into_iter();
    texts
        .iter()
        .enumerate()
        .map(|(index, &text)| {
            if !is_long(text) {
                return Ok(short_preds.next().expect("one result per short text"));
            }
            let spans = predict_long(model, tokenizer, index, text, opts, ws, segment_chars)?;
            // spans are in characters, `end` inclusive
            Ok(entities(model, opts, spans, |p| (p.start, p.end + 1)))
        })
        .collect()
}

/// The entities of a text from the spans its windows found: merged by the head, flattened for
/// flat output, mapped to character offsets by `chars`.
fn entities<T: Scalar>(
    model: &NerModel<T>,
    opts: &PredictOptions,
    spans: Vec<SpanPred>,
    chars: impl Fn(&SpanPred) -> (usize, usize),
) -> Vec<PredEntity> {
    let mut preds = model.head.merge_windows(spans);
    if opts.mode.unwrap_or(model.config.decode) == DecodeMode::Flat {
        preds = flatten(preds);
    }
    preds
        .into_iter()
        .map(|p| {
            let (start, end) = chars(&p);
            PredEntity {
                start,
                end,
                label: model.config.labels[p.ty].clone(),
                ty: p.ty,
                score: p.score,
            }
        })
        .collect()
}

/// Texts encoded whole, their windows batched together.
fn predict_short<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    texts: &[&str],
    opts: &PredictOptions,
    ws: &mut Workspace,
) -> Result<Vec<Vec<PredEntity>>, PredictError> {
    let encs = texts
        .iter()
        .enumerate()
        .map(|(index, t)| {
            encode_for(model, tokenizer, t).map_err(|source| PredictError::Tokenize { index, source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_len = model.config.max_len;
    let units = units(&encs, max_len, window_len(opts, max_len), opts.overlap)?;
    // Per text: the spans of all its windows, in full-encoding token indices.
    let mut found: Vec<Vec<SpanPred>> = vec![Vec::new(); texts.len()];
    let lengths: Vec<usize> = units.iter().map(|u| u.len).collect();
    for idx in batches(&lengths, opts.batch_size) {
        let window_encs: Vec<Cow<Encoding>> = idx.iter().map(|&i| units[i].encoding(&encs)).collect();
        let batch = make_batch(window_encs.iter().map(|e| (e.as_ref(), &[][..])));
        let spans = decode_batch(model, &batch, opts.threshold, ws)?;
        for (&i, preds) in idx.iter().zip(spans) {
            let (text, offset) = (units[i].text, units[i].offset());
            found[text].extend(preds.into_iter().map(|p| SpanPred {
                start: p.start + offset,
                end: p.end + offset,
                ..p
            }));
        }
    }
    Ok(found
        .into_iter()
        .zip(&encs)
        .map(|(spans, enc)| entities(model, opts, spans, |p| token_span_to_chars(enc, p.start, p.end)))
        .collect())
}

/// Window length for `opts` (specials included), at most `max_len`.
fn window_len(opts: &PredictOptions, max_len: usize) -> usize {
    opts.window.unwrap_or(DEFAULT_WINDOW).clamp(3, max_len.max(3))
}

/// A piece of a long text: its bytes, its first character's index, and whether it starts a
/// word (the text's start, or right after whitespace).
#[derive(Debug, PartialEq)]
struct Segment {
    bytes: Range<usize>,
    first_char: usize,
    starts_word: bool,
}

/// Pieces of `text` of about `target` characters. A piece ends right after the last whitespace
/// character of its second half, or at `target` characters when that half has none.
fn segments(text: &str, target: usize) -> Vec<Segment> {
    let target = target.max(2);
    let mut out = Vec::new();
    let mut piece = Segment {
        bytes: 0..0,
        first_char: 0,
        starts_word: true,
    };
    let mut count = 0;
    // (byte, character) right after the last whitespace character in the second half
    let mut cut: Option<(usize, usize)> = None;
    for (b, c) in text.char_indices() {
        if count == target {
            let starts_word = cut.is_some();
            let (cut_byte, cut_char) = cut.unwrap_or((b, piece.first_char + count));
            count -= cut_char - piece.first_char;
            piece.bytes.end = cut_byte;
            let next = Segment {
                bytes: cut_byte..cut_byte,
                first_char: cut_char,
                starts_word,
            };
            out.push(std::mem::replace(&mut piece, next));
            cut = None;
        }
        count += 1;
        if c.is_whitespace() && count > target / 2 {
            cut = Some((b + c.len_utf8(), piece.first_char + count));
        }
    }
    piece.bytes.end = text.len();
    out.push(piece);
    out
}

/// The spans of one long text (`index` in the caller's list), in characters with `end`
/// inclusive, read segment by segment: the content tokens not yet windowed are all it keeps,
/// and each batch of windows is scored as soon as it is full. The windows are those
/// [`predict_short`] would cut from the whole encoding.
fn predict_long<T: Scalar>(
    model: &NerModel<T>,
    tokenizer: &Tokenizer,
    index: usize,
    text: &str,
    opts: &PredictOptions,
    ws: &mut Workspace,
    segment_chars: usize,
) -> Result<Vec<SpanPred>, PredictError> {
    let err = |source| PredictError::Tokenize { index, source };
    let max_len = model.config.max_len;
    let win = window_len(opts, max_len);
    let cap = win - 2;
    let stride = cap.saturating_sub(opts.overlap).max(1);
    let per_batch = opts.batch_size.clamp(1, (LONG_BATCH_TOKENS / win).max(1));
    let mut found = Vec::new();
    let mut pending: Vec<Encoding> = Vec::new();
    let score = |pending: &mut Vec<Encoding>, found: &mut Vec<SpanPred>, ws: &mut Workspace| {
        let batch = make_batch(pending.iter().map(|e| (e, &[][..])));
        let spans = decode_batch(model, &batch, opts.threshold, ws)?;
        for (enc, preds) in pending.iter().zip(spans) {
            found.extend(preds.into_iter().map(|p| {
                let (start, end) = token_span_to_chars(enc, p.start, p.end);
                SpanPred {
                    start,
                    end: end - 1,
                    ..p
                }
            }));
        }
        pending.clear();
        Ok::<(), PredictError>(())
    };
    // Content tokens [base, base + buf.len()) of the whole text; `specials`: [CLS] and [SEP].
    let mut buf = Encoding::new(Vec::new(), Vec::new(), Vec::new());
    let mut specials: Option<Encoding> = None;
    let (mut base, mut next, mut last_end) = (0, 0, None::<usize>);
    let pieces = segments(text, segment_chars);
    let last_piece = pieces.len() - 1;
    for (k, piece) in pieces.into_iter().enumerate() {
        let first_char = piece.first_char;
        let mut enc = encode_for(model, tokenizer, &text[piece.bytes]).map_err(err)?;
        let n = enc.len();
        if n < 2 || !enc.special[0] || !enc.special[n - 1] {
            return Err(err(TokenizeError::NoSpecials));
        }
        if model.config.boundaries == Boundaries::Words && !piece.starts_word {
            // cut inside a word: no word boundary on either side of the cut
            if n > 2 && enc.offsets[1].0 == 0 {
                enc.may_start[1] = false;
            }
            if buf.offsets.last().is_some_and(|o| o.1 == first_char) {
                *buf.may_end.last_mut().expect("not empty") = false;
            }
        }
        let cls_sep = specials.get_or_insert_with(|| window(&enc, 1..1).encoding);
        for t in 1..n - 1 {
            buf.push_token_of(&enc, t, first_char);
        }
        let total = base + buf.len();
        let fits_whole = total + 2 <= max_len;
        let mut ranges = Vec::new();
        if k < last_piece {
            // full windows only, and only once the text is known to need windows
            while !fits_whole && next + cap <= total {
                ranges.push(next..next + cap);
                next += stride;
            }
        } else if fits_whole && last_end.is_none() {
            ranges.push(0..total);
        } else if last_end != Some(total) {
            loop {
                let end = (next + cap).min(total);
                ranges.push(next..end);
                if end == total {
                    break;
                }
                next += stride;
            }
        }
        for r in ranges {
            last_end = Some(r.end);
            pending.push(with_specials(cls_sep, &buf, r.start - base..r.end - base));
            if pending.len() == per_batch {
                score(&mut pending, &mut found, ws)?;
            }
        }
        // tokens before the next window's start are done with
        let done = next.min(total) - base;
        buf.drain_front(done);
        base += done;
    }
    if !pending.is_empty() {
        score(&mut pending, &mut found, ws)?;
    }
    Ok(found)
}

/// `[CLS]`, tokens `r` of `content`, `[SEP]` (`cls_sep`: an encoding of exactly those two).
fn with_specials(cls_sep: &Encoding, content: &Encoding, r: Range<usize>) -> Encoding {
    let mut e = Encoding::new(Vec::new(), Vec::new(), Vec::new());
    e.push(cls_sep.ids[0], cls_sep.offsets[0], true);
    for t in r {
        e.push_token_of(content, t, 0);
    }
    e.push(cls_sep.ids[1], cls_sep.offsets[1], true);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_bound_the_token_pairs_of_long_windows() {
        // 100 windows of 256 tokens and 50 texts of 30: windows 8 at a time, texts 32.
        let mut lengths = vec![256; 100];
        lengths.extend([30; 50]);
        let b = batches(&lengths, 32);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..150).collect::<Vec<_>>());
        for batch in &b {
            let n = batch.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(
                batch.len() <= 32 && batch.len() * n * n <= MAX_BATCH_PAIRS,
                "{batch:?}"
            );
        }
        assert_eq!(b.iter().filter(|x| lengths[x[0]] == 256).count(), 13);
        // a unit over the budget on its own still gets a batch
        assert_eq!(batches(&[4096, 4096], 32), vec![vec![0], vec![1]]);
    }
}

#[cfg(test)]
mod long_text_tests {
    use super::*;
    use crate::bert::BertConfig;
    use crate::head::{CrfConfig, GlobalPointerConfig, HeadConfig};
    use crate::model::ModelConfig;
    use crate::tokenize::CharVocab;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const ALPHABET: &str = "abcde北京上海市";

    fn micro(head: HeadConfig, boundaries: Boundaries) -> (NerModel<f64>, Tokenizer) {
        let vocab = CharVocab::build([ALPHABET], 1);
        let mut encoder = BertConfig::preset("tiny", vocab.len()).unwrap();
        encoder.hidden_size = 16;
        encoder.num_attention_heads = 2;
        encoder.num_hidden_layers = 1;
        encoder.intermediate_size = 32;
        encoder.max_position_embeddings = 64;
        let config = ModelConfig {
            encoder,
            head,
            labels: vec!["x".into(), "y".into()],
            max_len: 24,
            tokenization: None,
            boundaries,
            decode: Default::default(),
            precision: Default::default(),
        };
        let model = NerModel::new(config, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
        (model, Tokenizer::new(vocab))
    }

    /// Words of 1-8 characters between single spaces, with one 700-character stretch without
    /// whitespace (a segment must be cut inside it).
    fn text(rng: &mut ChaCha8Rng, words: usize) -> String {
        let chars: Vec<char> = ALPHABET.chars().collect();
        let mut s = String::new();
        for w in 0..words {
            let len = if w == words / 2 { 700 } else { rng.gen_range(1..9) };
            s.extend((0..len).map(|_| chars[rng.gen_range(0..chars.len())]));
            s.push(if rng.gen_bool(0.1) { '\u{3000}' } else { ' ' });
        }
        s
    }

    #[test]
    fn segments_cut_after_whitespace_in_their_second_half() {
        let t = "aaaa bbbbbbbbbbbbb c";
        let segs = segments(t, 8);
        let got: Vec<(Range<usize>, usize, bool)> = segs
            .iter()
            .map(|p| (p.bytes.clone(), p.first_char, p.starts_word))
            .collect();
        assert_eq!(got, vec![(0..5, 0, true), (5..13, 5, true), (13..20, 13, false)]);
        let rebuilt: String = segs.iter().map(|p| &t[p.bytes.clone()]).collect();
        assert_eq!(rebuilt, t);
        assert_eq!(segments("", 8).len(), 1);
        let cjk = "北京上海".repeat(10);
        let segs = segments(&cjk, 7);
        assert_eq!(segs.len(), 6);
        for p in &segs {
            assert_eq!(cjk[..p.bytes.start].chars().count(), p.first_char);
            assert_eq!(p.starts_word, p.first_char == 0);
        }
    }

    #[test]
    fn long_texts_read_in_segments_find_what_the_whole_encoding_finds() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let texts = [
            text(&mut rng, 500),
            text(&mut rng, 3),
            " \u{3000} ".into(),
            String::new(),
        ];
        let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
        let gp = HeadConfig::new(
            "gp",
            &GlobalPointerConfig {
                head_size: 4,
                rope: true,
            },
        );
        let crf = HeadConfig::new(
            "crf",
            &CrfConfig {
                transition_lr_multiplier: 1.0,
            },
        );
        let mut checked = 0;
        for (head, boundaries) in [
            (gp.clone(), Boundaries::Tokens),
            (gp, Boundaries::Words),
            (crf, Boundaries::Tokens),
        ] {
            let (model, tok) = micro(head, boundaries);
            for (window, overlap) in [
                (None, DEFAULT_OVERLAP),
                (Some(10), 3),
                (Some(10), 0),
                (Some(6), 9),
            ] {
                let opts = PredictOptions {
                    window,
                    overlap,
                    threshold: 0.0,
                    ..Default::default()
                };
                let mut ws = Workspace::new();
                let whole = predict_texts_with(&model, &tok, &refs, &opts, &mut ws, usize::MAX, 0).unwrap();
                for segment in [97, 1000] {
                    let parts = predict_texts_with(&model, &tok, &refs, &opts, &mut ws, 0, segment).unwrap();
                    assert_eq!(whole.len(), parts.len());
                    for (a, b) in whole.iter().zip(&parts) {
                        let key = |e: &PredEntity| (e.start, e.end, e.ty);
                        let (ka, kb): (Vec<_>, Vec<_>) =
                            (a.iter().map(key).collect(), b.iter().map(key).collect());
                        if let Some(i) = (0..ka.len().min(kb.len())).find(|&i| ka[i] != kb[i]) {
                            panic!("{boundaries:?} {window:?}/{overlap} segments of {segment}: entity {i}: {:?} vs {:?}", ka[i], kb[i]);
                        }
                        assert_eq!(
                            ka.len(),
                            kb.len(),
                            "{boundaries:?} {window:?}/{overlap} segments of {segment}"
                        );
                        for (x, y) in a.iter().zip(b) {
                            assert!((x.score - y.score).abs() < 1e-9, "{} vs {}", x.score, y.score);
                        }
                    }
                    checked += parts[0].len();
                }
            }
        }
        assert!(checked > 1000, "only {checked} entities compared");
    }
}
