#!/usr/bin/env python3
"""PyTorch reference for the CLUENER cells of the published table (issue 25): gp-lite's own
recipe, reimplemented with PyTorch + HF transformers, so that each gp-lite cell has a
same-recipe anchor.

Cells: `gp` (GlobalPointer with RoPE, head size 64) and `crf` (BIO tagger with a linear-chain
CRF) on e5-small-zh, one token per character, CLUENER train -> dev. Recipe
(examples/table/published_table.py): 3 epochs, batch 16, encoder lr 1e-4, head lr 1e-3, 10%
linear warmup then linear decay to 0, max length 256, seed 42, best dev epoch kept.

What it mirrors (read from the Rust source, file by file):
  tokenization  src/tokenize/per_char.rs: per character, the tokenizer.json normalizer, trimmed of
                whitespace, looked up as `norm`, then `\u2581norm`, else `<unk>` (also when the
                normalizer leaves nothing); whitespace characters (Rust's char::is_whitespace)
                get no token; `<s>`/`</s>` are the specials tokenizer.json puts around "".
                Entities -> tokens as src/tokenize/align.rs (a span starting or ending on
                whitespace does not align and is left out of training; it stays in dev gold).
                Texts over max_len tokens are windowed for training as src/sample.rs (CLUENER has
                none: at most 50 characters).
  gp head       src/head/global_pointer.rs, rope.rs, score_head.rs: one Linear H -> C*2d (per type
                [q | k], weights N(0, initializer_range^2), bias 0); RoPE on interleaved pairs
                (2m, 2m+1) with theta_m = 10000^(-2m/d) at the token's position in the sequence
                ([CLS] = 0), cos/sin computed in f64; s = q.k / sqrt(d); a span is valid when
                i <= j and both tokens are real, non-special ones.
  gp loss       src/loss.rs: per (text, type) log(1 + sum_P e^-s) + log(1 + sum_Q e^s) over valid
                spans only (P the gold spans, deduplicated, Q the other valid spans), mean over
                (text, type) of the batch.
  decoding      src/decode.rs, src/predict.rs: every valid span with score > 0 (nested); CLUENER's
                default output is flat (src/train/choices.rs: fewer than 1% of training texts
                overlap): spans by descending score (ties: earlier start, shorter, lower type),
                dropping any that shares a token with one kept. Both are reported, with the best
                epoch by each: by flat F1 as gp-lite at this commit does, and by nested F1 as
                gp-lite before src/train/choices.rs's NESTED_SHARE did (any text with overlapping
                gold -> nested default; CLUENER train has one), as the table's runs made with an
                older binary (716fede) do.
  crf head      src/head/crf.rs, bio_tags.rs, crf_chain.rs: tags O = 0, B-a = 1 + 2a, I-a = 2 + 2a;
                emissions Linear H -> T (N(0, std^2), bias 0), transitions [T, T] (prev, cur)
                initialised to 0, no start/end transitions; the chain runs over the real,
                non-special tokens (gp-lite masks B- emissions where a span may not start: never
                with one token per character, so not done here); loss = mean over texts of
                log Z - score(gold);
                training keeps, of overlapping gold spans, the outermost (by start, longest first)
                and reports the rest as left out; Viterbi (ties: lowest tag) then BIO -> spans
                with a stray I-a opening an entity of type a, B- or a different type closing it.
  optimizer     src/optim/adamw.rs, clip.rs, schedule.rs, src/model.rs, src/trainer.rs,
                src/train/run.rs: AdamW (0.9, 0.999, eps 1e-8), decoupled weight decay 0.01 on
                every parameter except names ending in "bias" or containing "LayerNorm" /
                "layer_norm" (embeddings and the CRF transitions are decayed); head parameters at
                head_lr (the scaled rate also scales their decay, as torch parameter groups do),
                CRF transitions at head_lr x 100; global grad-norm clip 1.0 (coef max/(norm+1e-6));
                lr of update k (k = updates already made, so the first update has lr 0) =
                base * (k / warmup if k < warmup else (total - k) / (total - warmup)), warmup =
                round(0.1 * total), total = ceil(samples / batch) * epochs.
  dropout       TrainOptions.dropout is None for the table, so the encoder config's
                hidden_dropout_prob / attention_probs_dropout_prob (0.1 / 0.1) apply, at the same
                places as HF BertModel (embeddings, attention probabilities, attention output,
                FFN output); no dropout in the heads; dev evaluation without dropout.
  batching      src/batch.rs: each epoch, the samples shuffled, sorted by length (specials
                included) within pools of 50 batches, cut into batches, the batch order shuffled.
  metric        src/metrics.rs, src/evaluate.rs: micro P/R/F1 over distinct (text, type, start,
                end) in characters, against every dev entity.

What it cannot mirror: the random streams. gp-lite draws the head's initial weights, the batch
order and the dropout masks from ChaCha8 streams; this script uses torch.manual_seed(42) for the
head and dropout and numpy's PCG64 (seeded like gp-lite's per-epoch order stream) for the batch
order, so the runs agree in distribution, not bit for bit. Also different: the attention kernel
(HF's SDPA) and the f32 summation orders; padding (gp-lite pads with id 0, here too, but both mask
it out). The pruned word-embedding table of the bundle changes nothing: rows of ids that never
occur get zero gradients (AdamW only decays them, which never reaches an output) and add nothing
to the gradient norm. Windowed prediction (dev texts over max_len tokens) is not mirrored: `train`
refuses such dev data (CLUENER has none).

Usage (run from the repository root):
  torch_reference.py prepare --shared ../shared --out .devbundle/cluener
      Tokenizes CLUENER train and dev one token per character, writes data.json, and a copy of
      e5-small-zh whose word-embedding table keeps only the ids that occur (plus the specials),
      ids remapped (f16, as stored); then runs `check`.
  torch_reference.py check --shared ../shared --bundle .devbundle/cluener [--texts 16]
      Last hidden states of the pruned and the full model on the first dev texts (max abs diff).
  torch_reference.py train --bundle .devbundle/cluener --head gp|crf --device cuda|cpu
                           --out FILE.json [--limit-train N] [--limit-dev N] [--epochs E]
                           [--eval-train] [--threads N] [--lr X --head-lr Y]
      Trains in f32 (no autocast), evaluates on dev after every epoch, prints one line per
      epoch and rewrites FILE.json (per-epoch records and the best epoch) after each.
"""
import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

MAX_LEN = 256
RECIPE = dict(epochs=3, batch_size=16, lr=1e-4, head_lr=1e-3, warmup=0.1, max_len=MAX_LEN, seed=42,
              weight_decay=0.01, max_grad_norm=1.0, betas=(0.9, 0.999), eps=1e-8, head_size=64,
              crf_transition_lr_multiplier=100.0, masked_score=-1e12)

# Rust's char::is_whitespace (Unicode White_Space), which gp-lite uses to drop characters and
# str::trim uses; Python's str.isspace differs (it includes U+001C..U+001F).
RUST_WS = frozenset(map(chr, [*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                               0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))


def rust_trim(s):
    a, b = 0, len(s)
    while a < b and s[a] in RUST_WS:
        a += 1
    while b > a and s[b - 1] in RUST_WS:
        b -= 1
    return s[a:b]


# ---------------------------------------------------------------------------------------------
# prepare: data and pruned encoder


class PerChar:
    """src/tokenize/per_char.rs over a tokenizer.json."""

    def __init__(self, path):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(path)
        tok.no_padding()
        tok.no_truncation()
        empty = tok.encode("", add_special_tokens=True)
        specials = [i for i, m in zip(empty.ids, empty.special_tokens_mask) if m == 1]
        if not specials:
            sys.exit("the tokenizer adds no special tokens around a text")
        self.cls, self.sep = specials[0], specials[-1]
        self.unk = next((tok.token_to_id(t) for t in ("[UNK]", "<unk>") if tok.token_to_id(t) is not None),
                        None)
        if self.unk is None:
            sys.exit("the vocabulary has no [UNK] or <unk> token")
        self.tok = tok
        self.seen = {}

    def lookup(self, c):
        if c in self.seen:
            return self.seen[c]
        norm = c
        if self.tok.normalizer is not None:
            try:
                norm = self.tok.normalizer.normalize_str(c)
            except Exception:  # gp-lite falls back to the character itself
                norm = c
        norm = rust_trim(norm)
        if not norm:
            i = self.unk
        else:
            i = self.tok.token_to_id(norm)
            if i is None:
                i = self.tok.token_to_id("\u2581" + norm)
            if i is None:
                i = self.unk
        self.seen[c] = i
        return i

    def encode(self, text):
        """(ids with [CLS]/[SEP], offs: the character of content token k, i.e. of ids[k + 1])."""
        ids, offs = [self.cls], []
        for i, c in enumerate(text):
            if c not in RUST_WS:
                ids.append(self.lookup(c))
                offs.append(i)
        ids.append(self.sep)
        return ids, offs


def read_cluener(path):
    """src/data/cluener.rs: [(text, [(label, start, end_exclusive)] sorted by (start, end, label))]."""
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            text = obj["text"]
            ents = []
            for ty, mentions in (obj.get("label") or {}).items():
                for mention, spans in mentions.items():
                    for s, e in spans:
                        assert text[s:e + 1] == mention, (text, mention, s, e)
                        ents.append((s, e + 1, ty))
            ents.sort()
            out.append((text, [(ty, s, e) for s, e, ty in ents]))
    return out


def char_span_to_tokens(offs, start, end):
    """src/tokenize/align.rs for one token per character: (first, last) token positions
    ([CLS] = 0) of characters [start, end), or None when the span does not align."""
    ks = [k for k, o in enumerate(offs) if start <= o < end]
    if not ks or offs[ks[0]] != start or offs[ks[-1]] != end - 1:
        return None
    return ks[0] + 1, ks[-1] + 1


def cmd_prepare(a):
    import torch
    from safetensors.torch import load_file, save_file
    model_dir = os.path.join(a.shared, "models/e5-small-zh")
    pc = PerChar(os.path.join(model_dir, "tokenizer.json"))
    train = read_cluener(os.path.join(a.shared, "data/cluener/train.json"))
    dev = read_cluener(os.path.join(a.shared, "data/cluener/dev.json"))
    labels = sorted({ty for _, ents in train for ty, _, _ in ents})
    index = {l: i for i, l in enumerate(labels)}
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    pad = config.get("pad_token_id", 0)
    used = {pc.cls, pc.sep, pc.unk, pad, 0}
    enc = {}
    for split, data in (("train", train), ("dev", dev)):
        enc[split] = [pc.encode(t) for t, _ in data]
        for ids, _ in enc[split]:
            used.update(ids)
    kept = sorted(used)
    remap = {old: new for new, old in enumerate(kept)}
    stats = {}
    out_data = {"labels": labels, "max_len": MAX_LEN, "cls": remap[pc.cls], "sep": remap[pc.sep],
                "pad": remap[pad], "vocab_kept": len(kept), "vocab_full": config["vocab_size"]}
    for split, data in (("train", train), ("dev", dev)):
        rows, unaligned, chars, unk, longest = [], 0, 0, 0, 0
        for (text, ents), (ids, offs) in zip(data, enc[split]):
            gold = []
            for ty, s, e in ents:
                t = char_span_to_tokens(offs, s, e)
                if t is None:
                    unaligned += 1
                else:
                    gold.append([index[ty], t[0], t[1]])
            chars += len(offs)
            unk += sum(1 for i in ids if i == pc.unk)
            longest = max(longest, len(ids))
            rows.append({"ids": [remap[i] for i in ids], "offs": offs, "gold": gold,
                         "ents": [[index[ty], s, e] for ty, s, e in ents]})
        out_data[split] = rows
        stats[split] = dict(texts=len(rows), entities=sum(len(r["ents"]) for r in rows),
                            unaligned=unaligned, tokens=chars, unk=unk, longest_with_specials=longest)
    out_data["stats"] = stats
    os.makedirs(os.path.join(a.out, "model"), exist_ok=True)
    with open(os.path.join(a.out, "data.json"), "w", encoding="utf-8") as f:
        json.dump(out_data, f, ensure_ascii=False, separators=(",", ":"))
    tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert tensors[key].shape[0] == config["vocab_size"], tensors[key].shape
    tensors[key] = tensors[key][torch.tensor(kept)].contiguous()
    save_file(tensors, os.path.join(a.out, "model", "model.safetensors"), metadata={"format": "pt"})
    config["vocab_size"] = len(kept)
    config["pad_token_id"] = remap[pad]
    with open(os.path.join(a.out, "model", "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"labels: {', '.join(labels)}")
    for split, s in stats.items():
        print(f"{split}: {s['texts']} texts, {s['entities']} entities ({s['unaligned']} not on token "
              f"boundaries), {s['tokens']} tokens, {s['unk']} <unk> ({100 * s['unk'] / s['tokens']:.3f}%), "
              f"longest {s['longest_with_specials']} tokens with specials")
    print(f"vocabulary kept: {len(kept)} of {out_data['vocab_full']} ids")
    if not a.no_check:
        cmd_check(argparse.Namespace(shared=a.shared, bundle=a.out, texts=a.check_texts))


def cmd_check(a):
    """Pruned vs full model: last hidden states on the first dev texts, f32, eval mode."""
    import torch
    torch.set_num_threads(1)
    with open(os.path.join(a.bundle, "data.json"), encoding="utf-8") as f:
        data = json.load(f)
    pc = PerChar(os.path.join(a.shared, "models/e5-small-zh/tokenizer.json"))
    dev = read_cluener(os.path.join(a.shared, "data/cluener/dev.json"))[:a.texts]
    full_ids = [pc.encode(t)[0] for t, _ in dev]
    pruned_ids = [r["ids"] for r in data["dev"][:a.texts]]
    results = []
    for ids, d in ((full_ids, os.path.join(a.shared, "models/e5-small-zh")),
                   (pruned_ids, os.path.join(a.bundle, "model"))):
        model = load_encoder(d)
        model.eval()
        x, mask = pad_batch(ids, 0)
        with torch.no_grad():
            h = model(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x)).last_hidden_state
        results.append((h, mask))
    (h1, m), (h2, _) = results
    diff = ((h1 - h2).abs() * m[..., None]).max().item()
    scale = (h1.abs() * m[..., None]).max().item()
    print(f"check: pruned vs full e5-small-zh, {len(dev)} dev texts, {int(m.sum())} tokens: "
          f"max abs diff of last hidden states {diff:.3g} (max |h| {scale:.3g})")
    with open(os.path.join(a.bundle, "check.json"), "w") as f:
        json.dump({"texts": len(dev), "tokens": int(m.sum()), "max_abs_diff": diff, "max_abs_h": scale}, f)
    if diff > 1e-5:
        sys.exit("check failed: the pruned model differs from the full one")


# ---------------------------------------------------------------------------------------------
# model


def load_encoder(path, device="cpu"):
    import torch
    from transformers import AutoModel
    model, info = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False,
                                            output_loading_info=True)
    if model.config.model_type != "bert":
        sys.exit(f"{path}: model_type {model.config.model_type}, expected bert")
    if info["missing_keys"] or info["unexpected_keys"] or info.get("mismatched_keys"):
        sys.exit(f"{path}: checkpoint does not fit BertModel: {info}")
    return model.to(device)


def pad_batch(seqs, pad_id, device="cpu"):
    import torch
    n = max(len(s) for s in seqs)
    x = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for r, s in enumerate(seqs):
        x[r, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, :len(s)] = 1
    return x.to(device), mask.to(device)


def make_heads():
    import torch
    import torch.nn as nn

    class GlobalPointer(nn.Module):
        """src/head/global_pointer.rs with RoPE (rope.rs) and the loss of src/loss.rs."""

        def __init__(self, hidden, types, d, std):
            super().__init__()
            self.types, self.d = types, d
            self.dense = nn.Linear(hidden, types * 2 * d)
            nn.init.normal_(self.dense.weight, std=std)
            nn.init.zeros_(self.dense.bias)
            self._rope = {}

        def rope(self, n, device, dtype):
            """cos/sin of positions 0..n-1, angles in f64 then rounded to the scores' dtype."""
            key = (n, str(device), dtype)
            if key not in self._rope:
                import numpy as np
                half = self.d // 2
                theta = np.array([10000.0 ** (-2.0 * m / self.d) for m in range(half)], dtype=np.float64)
                ang = np.arange(n, dtype=np.float64)[:, None] * theta[None, :]
                cos = torch.tensor(np.cos(ang), dtype=dtype, device=device)
                sin = torch.tensor(np.sin(ang), dtype=dtype, device=device)
                self._rope[key] = (cos, sin)
            return self._rope[key]

        def scores(self, h):
            """h [B, n, H] -> raw scores [B, C, n, n] (nothing masked)."""
            b, n, _ = h.shape
            c, d = self.types, self.d
            y = self.dense(h).view(b, n, c, 2, d // 2, 2)  # per type [q | k], pairs (2m, 2m+1)
            cos, sin = self.rope(n, h.device, h.dtype)
            cos = cos.view(1, n, 1, 1, d // 2)
            sin = sin.view(1, n, 1, 1, d // 2)
            x0, x1 = y[..., 0], y[..., 1]
            y = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1).view(b, n, c, 2, d)
            q, k = y[:, :, :, 0], y[:, :, :, 1]
            return torch.einsum("bicd,bjcd->bcij", q, k) * (1.0 / math.sqrt(d))

        @staticmethod
        def valid_spans(tok_valid):
            """tok_valid [B, n] -> [B, 1, n, n]: i <= j, both real non-special tokens."""
            n = tok_valid.shape[1]
            upper = torch.ones(n, n, dtype=torch.bool, device=tok_valid.device).triu()
            return (tok_valid[:, :, None] & tok_valid[:, None, :] & upper)[:, None]

        def loss(self, h, tok_valid, gold):
            s = self.scores(h)
            b, c, n, _ = s.shape
            valid = self.valid_spans(tok_valid)
            g = torch.zeros(b, c, n, n, dtype=torch.bool, device=s.device)
            idx = [(bi, a, i, j) for bi, spans in enumerate(gold) for a, i, j in spans]
            if idx:
                t = torch.tensor(idx, dtype=torch.long, device=s.device).T
                g[t[0], t[1], t[2], t[3]] = True
            g &= valid
            ninf = torch.tensor(float("-inf"), device=s.device)
            zero = s.new_zeros(b, c, 1)
            pos = torch.where(g, -s, ninf).flatten(2)
            neg = torch.where(valid & ~g, s, ninf).flatten(2)
            per = torch.logsumexp(torch.cat((zero, pos), -1), -1) + torch.logsumexp(torch.cat((zero, neg), -1), -1)
            return per.mean()

        def decode(self, h, tok_valid, lengths):
            """Per text, nested (every valid span scoring > 0) as [(score, start, end, type)]."""
            s = self.scores(h)
            keep = (s > 0) & self.valid_spans(tok_valid)
            nz = keep.nonzero().tolist()
            vals = s[keep].tolist()
            out = [[] for _ in range(h.shape[0])]
            for (bi, a, i, j), v in zip(nz, vals):
                out[bi].append((v, i, j, a))
            return out

    class Crf(nn.Module):
        """src/head/crf.rs, bio_tags.rs, crf_chain.rs."""

        def __init__(self, hidden, types, std):
            super().__init__()
            self.types = types
            self.tags = 1 + 2 * types
            self.dense = nn.Linear(hidden, self.tags)
            nn.init.normal_(self.dense.weight, std=std)
            nn.init.zeros_(self.dense.bias)
            self.transitions = nn.Parameter(torch.zeros(self.tags, self.tags))  # [prev, cur]

        def chain(self, h, tok_valid):
            """Emissions over each text's boundary tokens, left-aligned: e [B, L, T], mask [B, L].
            With one token per character the boundary tokens are the content tokens 1..len-2."""
            e = self.dense(h)
            lengths = tok_valid.sum(1)
            L = max(int(lengths.max()), 1)
            e = e[:, 1:1 + L]
            mask = torch.arange(L, device=h.device)[None, :] < lengths[:, None]
            return e, mask, lengths

        def loss(self, h, tok_valid, gold):
            e, mask, lengths = self.chain(h, tok_valid)
            b, L, T = e.shape
            tags = torch.zeros(b, L, dtype=torch.long)
            for bi, spans in enumerate(gold):
                for a, i, j in trainable_crf(spans)[0]:  # token positions -> chain positions
                    tags[bi, i - 1] = 1 + 2 * a
                    tags[bi, i:j] = 2 + 2 * a
            return self.nll(e, mask, lengths, tags.to(h.device)).mean()

        def nll(self, e, mask, lengths, tags):
            """crf_chain.rs nll: log Z - score(tags) per text (0 for an empty chain)."""
            trans = self.transitions
            alpha = e[:, 0]
            for t in range(1, e.shape[1]):
                nxt = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + e[:, t]
                alpha = torch.where(mask[:, t, None], nxt, alpha)
            log_z = torch.logsumexp(alpha, -1)
            fm = mask.to(e.dtype)
            emit = (e.gather(2, tags[..., None])[..., 0] * fm).sum(1)
            tr = (trans[tags[:, :-1], tags[:, 1:]] * fm[:, 1:]).sum(1)
            return torch.where(lengths > 0, log_z - emit - tr, torch.zeros_like(log_z))

        def viterbi(self, e, mask, lengths):
            """crf_chain.rs viterbi: the best path of each text (ties: the lowest tag)."""
            trans = self.transitions
            delta = e[:, 0]
            backs = []
            for t in range(1, e.shape[1]):
                best, arg = (delta[:, :, None] + trans[None]).max(dim=1)
                delta = torch.where(mask[:, t, None], best + e[:, t], delta)
                backs.append(arg)
            last = delta.argmax(-1).tolist()
            backs = torch.stack(backs, 1).tolist() if backs else []
            paths = []
            for bi, n in enumerate(lengths.tolist()):
                path = [0] * n
                if n:
                    path[n - 1] = last[bi]
                    for t in range(n - 1, 0, -1):
                        path[t - 1] = backs[bi][t - 1][path[t]]
                paths.append(path)
            return paths

        def decode(self, h, tok_valid, lengths_unused):
            e, mask, lengths = self.chain(h, tok_valid)
            # chain position k is token k + 1; the span score is not needed (flat, no windows)
            return [[(1.0, s + 1, t + 1, a) for a, s, t in tags_to_spans(path)]
                    for path in self.viterbi(e, mask, lengths)]

    return GlobalPointer, Crf


def trainable_crf(gold):
    """Crf::trainable_gold: of overlapping spans the outermost (by start, longest first)."""
    g = sorted({tuple(x) for x in gold}, key=lambda x: (x[1], -x[2], x[0]))
    kept = []
    for x in g:
        if not kept or kept[-1][2] < x[1]:
            kept.append(x)
    return kept, len(g) - len(kept)


def tags_to_spans(tags):
    """bio_tags.rs: (type, first, last) of a BIO path; a stray I-a opens an entity."""
    out, open_ = [], None
    for t, y in enumerate(tags):
        if y != 0 and y % 2 == 0 and open_ is not None and 1 + 2 * open_[0] + 1 == y:
            continue
        if open_ is not None:
            out.append((open_[0], open_[1], t - 1))
            open_ = None
        if y != 0:
            open_ = ((y - 1) // 2, t)
    if open_ is not None:
        out.append((open_[0], open_[1], len(tags) - 1))
    return out


def flatten(spans):
    """decode.rs flatten: by descending score (ties: start, end, type), drop any overlap."""
    kept = []
    for sc, i, j, a in sorted(spans, key=lambda x: (-x[0], x[1], x[2], x[3])):
        if all(j < ki or kj < i for _, ki, kj, _ in kept):
            kept.append((sc, i, j, a))
    return kept


def prf(gold, pred, num_types):
    """metrics.rs: micro and per-type P/R/F1 over distinct entities."""
    gold, pred = set(gold), set(pred)

    def figures(g, p, c):
        if g == 0 and p == 0:
            return dict(gold=0, predicted=0, correct=0, precision=1.0, recall=1.0, f1=1.0)
        if g == 0 or p == 0:
            return dict(gold=g, predicted=p, correct=c, precision=0.0, recall=0.0, f1=0.0)
        return dict(gold=g, predicted=p, correct=c, precision=c / p, recall=c / g, f1=2 * c / (g + p))

    correct = gold & pred
    per = []
    for a in range(num_types):
        per.append(figures(sum(1 for e in gold if e[1] == a), sum(1 for e in pred if e[1] == a),
                           sum(1 for e in correct if e[1] == a)))
    return dict(micro=figures(len(gold), len(pred), len(correct)), per_type=per)


# ---------------------------------------------------------------------------------------------
# train


def samples_of(rows, max_len):
    """sample.rs text_samples: a text over max_len tokens becomes windows (stride half)."""
    out, windowed = [], 0
    for r in rows:
        ids, gold = r["ids"], r["gold"]
        if len(ids) <= max_len:
            out.append((ids, gold))
            continue
        windowed += 1
        body, cap = len(ids) - 2, max_len - 2
        stride = max((max_len - 2) // 2, 1)
        start = 0
        while True:
            end = min(start + cap, body)
            lo, hi = 1 + start, 1 + end
            g = [[a, s - lo + 1, t - lo + 1] for a, s, t in gold if s >= lo and t < hi]
            out.append(([ids[0]] + ids[lo:hi] + [ids[-1]], g))
            if end == body:
                break
            start += stride
    return out, windowed


def bucketed_batches(lengths, batch_size, rng):
    """batch.rs bucketed_batches (numpy's stream instead of ChaCha8)."""
    order = rng.permutation(len(lengths)).tolist()
    pool = batch_size * 50
    batches = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p:p + pool], key=lambda i: lengths[i])  # stable, as sort_by_key
        batches.extend(chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


def lr_factor(step, warmup, total):
    """schedule.rs LinearSchedule::factor (step = updates already made)."""
    if step < warmup:
        return step / max(warmup, 1)
    return max(max(total - step, 0) / max(total - warmup, 1), 0.0)


def decays(name):
    """adamw.rs default_decay."""
    return not (name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name)


def evaluate(encoder, head, rows, kind, device, num_types, batch_size=32):
    """evaluate.rs / predict.rs: texts sorted by length in batches of 32, decoded, mapped to
    characters; flat (and, for gp, nested) micro P/R/F1 against every entity of `rows`."""
    import torch
    encoder.eval()
    head.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["ids"]))
    nested, flat = [], []
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            seqs = [rows[i]["ids"] for i in idx]
            x, mask = pad_batch(seqs, 0, device)
            h = encoder(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x)).last_hidden_state
            tok_valid = tok_valid_of(seqs, x.shape[1], device)
            for t, spans in zip(idx, head.decode(h, tok_valid, None)):
                offs = rows[t]["offs"]
                chars = lambda i, j: (offs[i - 1], offs[j - 1] + 1)
                nested.extend((t, a) + chars(i, j) for _, i, j, a in spans)
                flat.extend((t, a) + chars(i, j) for _, i, j, a in flatten(spans))
    gold = [(t, a, s, e) for t, r in enumerate(rows) for a, s, e in r["ents"]]
    out = {"flat": prf(gold, flat, num_types)}
    if kind == "gp":
        out["nested"] = prf(gold, nested, num_types)
    encoder.train()
    head.train()
    return out


def tok_valid_of(seqs, n, device):
    """Real, non-special tokens: may start and end an entity (Boundaries::Tokens)."""
    import torch
    v = torch.zeros(len(seqs), n, dtype=torch.bool)
    for r, s in enumerate(seqs):
        v[r, 1:len(s) - 1] = True
    return v.to(device)


def cmd_train(a):
    import numpy as np
    import torch
    import transformers
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(RECIPE["seed"])
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(a.device)
    with open(os.path.join(a.bundle, "data.json"), encoding="utf-8") as f:
        data = json.load(f)
    labels = data["labels"]
    train_rows = data["train"][:a.limit_train] if a.limit_train else data["train"]
    dev_rows = data["dev"][:a.limit_dev] if a.limit_dev else data["dev"]
    epochs = a.epochs or RECIPE["epochs"]
    lr, head_lr = a.lr or RECIPE["lr"], a.head_lr or RECIPE["head_lr"]
    bs, max_len, seed = RECIPE["batch_size"], RECIPE["max_len"], RECIPE["seed"]
    longest_dev = max(len(r["ids"]) for r in dev_rows)
    if longest_dev > max_len:
        sys.exit(f"a dev text has {longest_dev} tokens > {max_len}: windowed prediction is not mirrored")

    encoder = load_encoder(os.path.join(a.bundle, "model"), device)
    cfg = encoder.config
    GlobalPointer, Crf = make_heads()
    if a.head == "gp":
        head = GlobalPointer(cfg.hidden_size, len(labels), RECIPE["head_size"], cfg.initializer_range)
    else:
        head = Crf(cfg.hidden_size, len(labels), cfg.initializer_range)
    head.to(device)
    encoder.train()
    head.train()

    samples, windowed = samples_of(train_rows, max_len)
    left_out = sum(trainable_crf(g)[1] for _, g in samples) if a.head == "crf" else 0
    unaligned = sum(len(r["ents"]) for r in train_rows) - sum(len(r["gold"]) for r in train_rows)
    total = math.ceil(len(samples) / bs) * epochs
    warmup = math.floor(RECIPE["warmup"] * total + 0.5)  # Rust's round(): half away from zero

    head_scale = head_lr / lr
    groups = {}
    for prefix, module in (("", encoder), ("head.", head)):
        for name, p in module.named_parameters():
            full = prefix + name
            scale = 1.0
            if prefix:
                scale = head_scale * (RECIPE["crf_transition_lr_multiplier"] if name == "transitions" else 1.0)
            wd = RECIPE["weight_decay"] if decays(full) else 0.0
            groups.setdefault((scale, wd), []).append(p)
    opt = torch.optim.AdamW([dict(params=ps, scale=s, weight_decay=wd, lr=0.0) for (s, wd), ps in groups.items()],
                            lr=0.0, betas=RECIPE["betas"], eps=RECIPE["eps"])
    params = [p for g in opt.param_groups for p in g["params"]]

    record = dict(head=a.head, recipe={**RECIPE, "epochs": epochs, "lr": lr, "head_lr": head_lr},
                  bundle=a.bundle, device=str(device), torch=torch.__version__,
                  transformers=transformers.__version__, labels=labels,
                  train_texts=len(train_rows), train_samples=len(samples), windowed=windowed,
                  unaligned_spans=unaligned, head_left_out_spans=left_out, dev_texts=len(dev_rows),
                  total_steps=total, warmup_steps=warmup,
                  param_groups=[dict(lr_scale=g["scale"], weight_decay=g["weight_decay"],
                                     tensors=len(g["params"]), numel=sum(p.numel() for p in g["params"]))
                                for g in opt.param_groups],
                  epochs=[], best_epoch=None, best_dev_f1=None)
    print(f"{a.head}: {len(train_rows)} train texts ({len(samples)} samples, {unaligned} spans not on token "
          f"boundaries, {left_out} left out by the head), {len(dev_rows)} dev texts, {total} steps "
          f"({warmup} warmup), device {device}", flush=True)

    def write():
        if a.out:
            tmp = a.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1)
            os.replace(tmp, a.out)

    lengths = [len(ids) for ids, _ in samples]
    step = 0
    best = best_nested = None
    for epoch in range(epochs):
        started = time.time()
        rng = np.random.default_rng(seed ^ (0x5EED0000 + epoch))
        batches = bucketed_batches(lengths, bs, rng)
        loss_sum, tokens = 0.0, 0
        for bi, idx in enumerate(batches):
            seqs = [samples[k][0] for k in idx]
            gold = [samples[k][1] for k in idx]
            x, mask = pad_batch(seqs, 0, device)
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(step, warmup, total) * g["scale"]
            h = encoder(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x)).last_hidden_state
            loss = head.loss(h, tok_valid_of(seqs, x.shape[1], device), gold)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, RECIPE["max_grad_norm"])
            opt.step()
            step += 1
            loss_sum += loss.item()
            tokens += sum(lengths[k] for k in idx)
            if a.log_every and (bi + 1) % a.log_every == 0:
                print(f"  epoch {epoch + 1} step {bi + 1}/{len(batches)} loss {loss_sum / (bi + 1):.4f} "
                      f"{time.time() - started:.0f}s", flush=True)
        seconds = time.time() - started
        ev_started = time.time()
        dev = evaluate(encoder, head, dev_rows, a.head, device, len(labels))
        rec = dict(epoch=epoch + 1, train_loss=loss_sum / len(batches), train_tokens=tokens, seconds=seconds,
                   tokens_per_s=tokens / seconds, eval_seconds=time.time() - ev_started,
                   dev_precision=dev["flat"]["micro"]["precision"], dev_recall=dev["flat"]["micro"]["recall"],
                   dev_f1=dev["flat"]["micro"]["f1"], dev=dev)
        if a.eval_train:
            rec["train_eval"] = evaluate(encoder, head, train_rows, a.head, device, len(labels))
        if "nested" in dev:
            rec["dev_f1_nested"] = dev["nested"]["micro"]["f1"]
        record["epochs"].append(rec)
        if best is None or rec["dev_f1"] > best:
            best = rec["dev_f1"]
            record["best_epoch"], record["best_dev_f1"] = epoch + 1, best
        if "nested" in dev and (best_nested is None or rec["dev_f1_nested"] > best_nested):
            best_nested = rec["dev_f1_nested"]
            record["best_epoch_nested"], record["best_dev_f1_nested"] = epoch + 1, best_nested
        write()
        m = dev["flat"]["micro"]
        line = (f"{a.head} epoch {epoch + 1}/{epochs} loss {rec['train_loss']:.4f} dev flat "
                f"P {m['precision']:.4f} R {m['recall']:.4f} F1 {m['f1']:.4f}")
        if "nested" in dev:
            n = dev["nested"]["micro"]
            line += f" | nested P {n['precision']:.4f} R {n['recall']:.4f} F1 {n['f1']:.4f}"
        if a.eval_train:
            line += f" | train flat F1 {rec['train_eval']['flat']['micro']['f1']:.4f}"
        line += f" | {seconds:.1f}s train ({tokens / seconds:.0f} tok/s), {rec['eval_seconds']:.1f}s dev"
        print(line, flush=True)
    line = f"{a.head} best epoch {record['best_epoch']} dev flat F1 {record['best_dev_f1']:.4f}"
    if best_nested is not None:
        line += f"; by nested F1: epoch {record['best_epoch_nested']} F1 {record['best_dev_f1_nested']:.4f}"
    print(line, flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--shared", default="../shared")
    pp.add_argument("--out", default=".devbundle/cluener")
    pp.add_argument("--no-check", action="store_true")
    pp.add_argument("--check-texts", type=int, default=16)
    pc = sub.add_parser("check")
    pc.add_argument("--shared", default="../shared")
    pc.add_argument("--bundle", default=".devbundle/cluener")
    pc.add_argument("--texts", type=int, default=16)
    pt = sub.add_parser("train")
    pt.add_argument("--bundle", default=".devbundle/cluener")
    pt.add_argument("--head", choices=["gp", "crf"], required=True)
    pt.add_argument("--device", default="cuda")
    pt.add_argument("--out", help="JSON record, rewritten after every epoch")
    pt.add_argument("--limit-train", type=int, default=0, help="first N training texts (0: all)")
    pt.add_argument("--limit-dev", type=int, default=0, help="first N dev texts (0: all)")
    pt.add_argument("--epochs", type=int, default=0, help="0: the recipe's 3")
    pt.add_argument("--eval-train", action="store_true", help="also evaluate on the training texts")
    pt.add_argument("--log-every", type=int, default=0, help="print the running loss every N steps")
    pt.add_argument("--lr", type=float, default=0.0, help="override the recipe's encoder lr (overfit checks only)")
    pt.add_argument("--head-lr", type=float, default=0.0, help="override the recipe's head lr (overfit checks only)")
    pt.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = p.parse_args()
    {"prepare": cmd_prepare, "check": cmd_check, "train": cmd_train}[a.cmd](a)


if __name__ == "__main__":
    main()
