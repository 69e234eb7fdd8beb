#!/usr/bin/env python3
"""PyTorch reference for gp-lite's reader (`--head reader --loss ce`, issue 23): the same data,
encoder and recipe with PyTorch + HF transformers, so that the reader's CMRC 2018 F1 is anchored.

What it mirrors (read from the Rust source):
  data          src/data/squad.rs: one example a question; each answer located at the occurrence
                of its text nearest to answer_start (repaired / skipped counted); the first
                located answer is the training gold; every published answer text is a reference.
  tokenization  one token per character over the encoder's vocabulary, as
                examples/table/torch_reference.py's PerChar (src/tokenize/per_char.rs).
  input         src/tokenize/pair.rs: [CLS] question (first 64 tokens) [SEP] context [SEP],
                token types 0 then 1 (the last [SEP] 1); a context longer than the room left
                (max_len - 3 - question) split into windows starting room // 2 apart.
  training      src/head/reader.rs, src/span_softmax.rs: windows holding the whole answer only;
                one-type GlobalPointer (RoPE, head size 64) scores; softmax over the window's
                allowed spans (context tokens, at most max_answer_len tokens, the gold always
                in) and the gold span's cross-entropy, mean over windows.
  recipe        gp-lite train's fine-tuning defaults unless given: epochs 3, batch 16, lr 5e-5
                (head at the same rate), 10% linear warmup then linear decay, AdamW (0.9, 0.999,
                1e-8) with decay 0.01 except biases and LayerNorm, grad-norm clip 1.0, max_len
                256, dropout from the encoder config; batches as src/batch.rs (numpy's stream).
  prediction    src/answer.rs: per window the allowed spans, the best-scoring span over all of
                a question's windows whose characters number at most max_answer_len.
  metric        src/cmrc.rs (CMRC 2018 EM/F1, the README's definition).

What it cannot mirror: the random streams (head initialisation, batch order, dropout masks).

Usage (from the repository root):
  torch_reference.py --model ../shared/models/e5-small-zh \\
      --train ../shared/data/mrc/drcd_dev.json --train ../shared/data/mrc/cmrc2018_trial.json \\
      --dev ../shared/data/mrc/cmrc2018_dev.json --out reader_torch.json \\
      [--limit-train N] [--limit-dev N] [--epochs E] [--lr LR] [--head-lr LR] [--warmup F]
      [--device cpu|cuda] [--threads N] [--checkpoint DIR [--checkpoint-every STEPS]]

--checkpoint DIR saves the model, optimizer, schedule position, random state and record every
--checkpoint-every steps and at each epoch's end (DIR/state.pt, replaced atomically); the same
command run again resumes from it (the epoch's batch order is a function of the seed and the
epoch, so the batches already done are skipped). A run of hours on one core can so span sessions.
"""
import argparse
import importlib.util
import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("table_ref", os.path.join(HERE, "..", "table", "torch_reference.py"))
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)

RECIPE = dict(epochs=3, batch_size=16, lr=5e-5, warmup=0.1, max_len=256, seed=42, weight_decay=0.01,
              max_grad_norm=1.0, betas=(0.9, 0.999), eps=1e-8, head_size=64, max_answer_len=64,
              max_question_len=64)

# src/cmrc.rs
PUNCT = set("-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』")


def normalise(s):
    return "".join(c for c in s.lower().strip() if c not in PUNCT)


def words(run):
    out, word = [], ""
    for i, c in enumerate(run):
        in_number = c in ".," and 0 < i < len(run) - 1 and run[i - 1].isdigit() and run[i + 1].isdigit()
        if c.isalnum() or in_number:
            word += c
            continue
        if word:
            out.append(word)
            word = ""
        if not c.isspace():
            out.append(c)
    if word:
        out.append(word)
    return out


def segments(s):
    out, run = [], ""
    for c in normalise(s):
        if "\u4e00" <= c <= "\u9fa5":
            out.extend(words(run))
            run = ""
            out.append(c)
        else:
            run += c
    return out + words(run)


def lcs(a, b):
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        row = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                row[j + 1] = prev[j] + 1
                best = max(best, row[j + 1])
        prev = row
    return best


def f1(refs, pred):
    best = 0.0
    p = segments(pred)
    for r in refs:
        r = segments(r)
        o = lcs(r, p)
        if o:
            pr, rc = o / len(p), o / len(r)
            best = max(best, 2 * pr * rc / (pr + rc))
    return best


def em(refs, pred):
    return float(any(normalise(r) == normalise(pred) for r in refs))


def locate(context, answer, start):
    """src/data/squad.rs locate: the occurrence nearest to start (the earlier of two)."""
    if not answer:
        return None
    best = None
    i = context.find(answer)
    while i >= 0:
        if best is None or abs(i - start) < abs(best - start):
            best = i
        i = context.find(answer, i + 1)
    return best


def read_squad(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    rows, counts = [], dict(kept=0, repaired=0, skipped=0)
    for article in doc["data"]:
        for p in article["paragraphs"]:
            ctx = p["context"]
            for qa in p["qas"]:
                refs, located = [], []
                for a in qa.get("answers") or []:
                    refs.append(a["text"])
                    s = locate(ctx, a["text"], a["answer_start"])
                    if s is None:
                        counts["skipped"] += 1
                        continue
                    counts["kept" if s == a["answer_start"] else "repaired"] += 1
                    located.append((s, s + len(a["text"])))
                rows.append(dict(id=qa["id"], question=qa["question"], context=ctx, refs=refs,
                                 gold=sorted(set(located))[0] if located else None))
    return rows, counts


def pair_windows(tok, question, context, max_len, max_q):
    """src/tokenize/pair.rs: [(ids, types, first, ctx_token_range, offs)]."""
    qids, _ = tok.encode(question)
    cids, coffs = tok.encode(context)
    q = qids[1:-1][:max_q]
    room = max_len - len(q) - 3
    if room <= 0:
        sys.exit(f"max_len {max_len} leaves no room for the context")
    body = len(cids) - 2
    stride = max(room // 2, 1)
    head = [tok.cls] + q + [tok.sep]
    out, start = [], 0
    while True:
        end = min(start + room, body)
        ids = head + cids[1 + start:1 + end] + [tok.sep]
        types = [0] * len(head) + [1] * (end - start + 1)
        out.append((ids, types, len(head), (start, end)))
        if end == body:
            return out, coffs
        start += stride


def allowed_mask(torch, b_first, b_len, n, max_tokens, device):
    """[B, n, n]: i <= j < i + max_tokens, both context tokens of the window."""
    idx = torch.arange(n, device=device)
    first = torch.tensor(b_first, device=device)[:, None]
    last = first + torch.tensor(b_len, device=device)[:, None]  # exclusive
    ctx = (idx[None, :] >= first) & (idx[None, :] < last)
    i, j = idx[:, None], idx[None, :]
    band = (j >= i) & (j < i + max_tokens)
    return ctx[:, :, None] & ctx[:, None, :] & band[None]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", action="append", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--out")
    ap.add_argument("--limit-train", type=int)
    ap.add_argument("--limit-dev", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--head-lr", type=float, help="the head's learning rate (default: --lr)")
    ap.add_argument("--warmup", type=float, help="warmup fraction of the steps (default 0.1)")
    ap.add_argument("--checkpoint", help="directory to save to and resume from")
    ap.add_argument("--checkpoint-every", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args()

    import numpy as np
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(RECIPE["seed"])
    device = torch.device(a.device)
    epochs, lr = a.epochs or RECIPE["epochs"], a.lr or RECIPE["lr"]
    head_lr = a.head_lr or lr
    warmup_frac = RECIPE["warmup"] if a.warmup is None else a.warmup
    bs, max_len, max_ans, max_q = RECIPE["batch_size"], RECIPE["max_len"], RECIPE["max_answer_len"], RECIPE["max_question_len"]

    tok = table.PerChar(os.path.join(a.model, "tokenizer.json"))
    train_rows, counts = [], dict(kept=0, repaired=0, skipped=0)
    for p in a.train:
        rows, c = read_squad(p)
        train_rows += rows
        counts = {k: counts[k] + c[k] for k in counts}
    dev_rows, dev_counts = read_squad(a.dev)
    if a.limit_train:
        train_rows = train_rows[:a.limit_train]
    if a.limit_dev:
        dev_rows = dev_rows[:a.limit_dev]

    # Training windows holding the whole first answer (token indices via the character offsets).
    samples = []
    for r in train_rows:
        if r["gold"] is None:
            continue
        wins, coffs = pair_windows(tok, r["question"], r["context"], max_len, max_q)
        s_char, e_char = r["gold"]
        tok_of = {c: k for k, c in enumerate(coffs)}
        if s_char not in tok_of or (e_char - 1) not in tok_of:
            continue  # an answer boundary on whitespace: not aligned (src/tokenize/align.rs)
        s, t = tok_of[s_char], tok_of[e_char - 1]
        for ids, types, first, (lo, hi) in wins:
            if lo <= s and t < hi:
                samples.append((ids, types, first, hi - lo, (first + s - lo, first + t - lo)))

    encoder = table.load_encoder(a.model, device)
    cfg = encoder.config
    GlobalPointer, _ = table.make_heads()
    head = GlobalPointer(cfg.hidden_size, 1, RECIPE["head_size"], cfg.initializer_range).to(device)
    total = math.ceil(len(samples) / bs) * epochs
    warmup = math.floor(warmup_frac * total + 0.5)
    groups = {}
    for prefix, module in (("", encoder), ("head.", head)):
        for name, p in module.named_parameters():
            wd = RECIPE["weight_decay"] if table.decays(prefix + name) else 0.0
            groups.setdefault((wd, prefix == "head."), []).append(p)
    opt = torch.optim.AdamW([dict(params=ps, weight_decay=wd, base_lr=head_lr if is_head else lr)
                             for (wd, is_head), ps in groups.items()], lr=0.0,
                            betas=RECIPE["betas"], eps=RECIPE["eps"])
    params = [p for g in opt.param_groups for p in g["params"]]
    record = dict(recipe={**RECIPE, "epochs": epochs, "lr": lr, "head_lr": head_lr, "warmup": warmup_frac},
                  train=a.train, dev=a.dev,
                  train_questions=len(train_rows), train_windows=len(samples), answers=counts,
                  dev_questions=len(dev_rows), dev_answers=dev_counts, device=str(device),
                  torch=torch.__version__, epochs=[], best_epoch=None, best_dev_f1=None)
    print(f"{len(train_rows)} train questions ({len(samples)} windows; answers {counts}), "
          f"{len(dev_rows)} dev questions, {total} steps", flush=True)

    def forward(batch_ids, batch_types):
        x, mask = table.pad_batch(batch_ids, 0, device)
        t, _ = table.pad_batch(batch_types, 0, device)
        h = encoder(input_ids=x, attention_mask=mask, token_type_ids=t).last_hidden_state
        return head.scores(h)[:, 0]  # [B, n, n]

    def evaluate():
        encoder.eval()
        head.eval()
        ems, f1s = [], []
        with torch.no_grad():
            for r in dev_rows:
                wins, coffs = pair_windows(tok, r["question"], r["context"], max_len, max_q)
                best = None
                for k in range(0, len(wins), 8):
                    group = wins[k:k + 8]
                    s = forward([w[0] for w in group], [w[1] for w in group])
                    n = s.shape[1]
                    allowed = allowed_mask(torch, [w[2] for w in group], [w[3][1] - w[3][0] for w in group], n,
                                           max_ans, device)
                    s = s.masked_fill(~allowed, float("-inf"))
                    for g, w in enumerate(group):
                        flat = s[g].flatten()
                        top = torch.topk(flat, min(20, int(allowed[g].sum())))
                        for v, ij in zip(top.values.tolist(), top.indices.tolist()):
                            i, j = divmod(ij, n)
                            lo = w[3][0]
                            cs, ce = coffs[lo + i - w[2]], coffs[lo + j - w[2]] + 1
                            if ce - cs <= max_ans and (best is None or v > best[0]):
                                best = (v, cs, ce)
                pred = r["context"][best[1]:best[2]] if best else None
                ems.append(em(r["refs"], pred) if pred is not None else 0.0)
                f1s.append(f1(r["refs"], pred) if pred is not None else 0.0)
        encoder.train()
        head.train()
        return 100 * sum(ems) / len(ems), 100 * sum(f1s) / len(f1s)

    state_path = os.path.join(a.checkpoint, "state.pt") if a.checkpoint else None
    # Where the run stands: epochs finished, batches of the current epoch done, its loss so far.
    pos = dict(step=0, epoch=0, batch=0, loss_sum=0.0, seconds=0.0)

    def save():
        if not state_path:
            return
        os.makedirs(a.checkpoint, exist_ok=True)
        torch.save(dict(encoder=encoder.state_dict(), head=head.state_dict(), opt=opt.state_dict(),
                        pos=pos, record=record, rng=torch.get_rng_state(), recipe=record["recipe"],
                        samples=len(samples)), state_path + ".tmp")
        os.replace(state_path + ".tmp", state_path)

    if state_path and os.path.exists(state_path):
        saved = torch.load(state_path, weights_only=False)
        if saved["recipe"] != record["recipe"] or saved["samples"] != len(samples):
            sys.exit(f"{state_path}: saved by a run of another recipe or data ({saved['recipe']}, "
                     f"{saved['samples']} windows); give another --checkpoint directory")
        encoder.load_state_dict(saved["encoder"])
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["opt"])
        torch.set_rng_state(saved["rng"])
        pos, record = saved["pos"], saved["record"]
        print(f"resumed from {state_path}: epoch {pos['epoch'] + 1}, batch {pos['batch']}, step {pos['step']}",
              flush=True)

    lengths = [len(s[0]) for s in samples]
    encoder.train()
    head.train()
    for epoch in range(pos["epoch"], epochs):
        started = time.time() - pos["seconds"]
        rng = np.random.default_rng(RECIPE["seed"] ^ (0x5EED0000 + epoch))
        batches = table.bucketed_batches(lengths, bs, rng)
        for b_index, idx in enumerate(batches):
            if b_index < pos["batch"]:
                continue
            step = pos["step"]
            batch = [samples[k] for k in idx]
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * table.lr_factor(step, warmup, total)
            s = forward([b[0] for b in batch], [b[1] for b in batch])
            n = s.shape[1]
            allowed = allowed_mask(torch, [b[2] for b in batch], [b[3] for b in batch], n, max_ans, device)
            gi = torch.tensor([b[4][0] for b in batch], device=device)
            gj = torch.tensor([b[4][1] for b in batch], device=device)
            rows = torch.arange(len(batch), device=device)
            allowed[rows, gi, gj] = True
            logits = s.masked_fill(~allowed, float("-inf")).flatten(1)
            loss = torch.nn.functional.cross_entropy(logits, gi * n + gj)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, RECIPE["max_grad_norm"])
            opt.step()
            pos.update(step=step + 1, batch=b_index + 1, loss_sum=pos["loss_sum"] + loss.item(),
                       seconds=time.time() - started)
            if pos["step"] % 20 == 0:
                print(f"epoch {epoch + 1} step {pos['batch']}/{len(batches)} loss {loss.item():.4f}", flush=True)
            if pos["step"] % a.checkpoint_every == 0:
                save()
        seconds = time.time() - started
        save()  # the epoch's training is kept even if the evaluation is interrupted
        dev_em, dev_f1 = evaluate()
        rec = dict(epoch=epoch + 1, train_loss=pos["loss_sum"] / len(batches), seconds=seconds, dev_em=dev_em,
                   dev_f1=dev_f1)
        record["epochs"].append(rec)
        if record["best_dev_f1"] is None or dev_f1 > record["best_dev_f1"]:
            record["best_epoch"], record["best_dev_f1"] = epoch + 1, dev_f1
        print(json.dumps(rec), flush=True)
        pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, seconds=0.0)
        save()
        if a.out:
            with open(a.out, "w") as f:
                json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
