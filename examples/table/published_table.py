#!/usr/bin/env python3
"""Reruns the method's published comparison (../shared/docs/method.md section 8) with gp-lite.

Cells (one recipe per dataset, seed 42, best dev epoch kept):
  cluener  (dev)          e5-small-zh, one token per character: gp, gp-norope, egp, crf, and gp-subwords;
                          for issue 23 also egp-norope, additive, additive-norope
  peoples  (test)         e5-small-zh, one token per character: gp, gp-norope, egp, crf
  cmeee    (dev, nested)  e5-small-zh, one token per character: gp, gp-norope, egp, crf (flattened)
  genia    (test, nested) minilm-l6: gp, egp; for issue 23 also gp-norope, egp-norope, additive,
                          additive-norope

Usage:
  examples/table/published_table.py train [--datasets cluener genia] [--cells gp crf] [--rounds 1]
                                         [--upto N] [--threads 2]
      Runs `--rounds` more epochs of every cell, round robin (one epoch of each cell, then the
      next epoch of each), so that all cells of a dataset always have the same number of epochs
      done; a cell with `--upto` epochs done (default: the recipe's 3) is skipped; each epoch is an invocation of `gp-lite train --stop-after 1 --checkpoint-every 100
      [--resume]`, so the runs can be stopped at any time, mid-epoch too, and continued in a
      later session.
  examples/table/published_table.py table [--datasets ...]
      Evaluates every cell's best model on the dataset's evaluation split, times `gp-lite
      predict` on its texts, and prints a Markdown table (F1, epochs done, best epoch, training
      time, speeds relative to the dataset's CRF cell).

  examples/table/published_table.py speed [--datasets ...] [--texts 400] [--rounds 2]
      Training speed of every cell relative to the dataset's CRF cell, measured side by side:
      each round trains every cell for one epoch on the first `--texts` training texts (the
      dataset's recipe, no dev set), one after the other, and each cell keeps its best round's
      tokens/s, so that a neighbour loading the machine for a while does not decide a ratio.
      The long runs' own tokens/s (in `table`) mix epochs run at different times. Also prints
      each cell's peak resident memory (the training process's maximum RSS, best round).

Environment: SHARED (default ../shared), GP_LITE (default target/release/gp-lite),
RUNS (default runs/table).
"""
import argparse
import json
import os
import subprocess
import sys
import time

SHARED = os.environ.get("SHARED", "../shared")
GP_LITE = os.environ.get("GP_LITE", "target/release/gp-lite")
RUNS = os.environ.get("RUNS", "runs/table")

# One recipe per dataset: 3 epochs, batch 16, encoder lr 1e-4 and head lr 1e-3 (10% warmup, then
# linear decay), max length 256 (longer texts are windowed), seed 42.
RECIPE = ["--epochs", "3", "--batch-size", "16", "--lr", "1e-4", "--head-lr", "1e-3",
          "--warmup", "0.1", "--max-len", "256", "--seed", "42"]

E5 = f"{SHARED}/models/e5-small-zh"
MINILM = f"{SHARED}/models/minilm-l6"
DATASETS = {
    "cluener": dict(encoder=E5, train="data/cluener/train.json", dev="data/cluener/dev.json",
                    eval="data/cluener/dev.json", eval_name="dev"),
    "peoples": dict(encoder=E5, train="data/peoples-daily/example.train",
                    dev="data/peoples-daily/example.dev", eval="data/peoples-daily/example.test",
                    eval_name="test"),
    "cmeee": dict(encoder=E5, train="data/cmeee/CMeEE_train.json", dev="data/cmeee/CMeEE_dev.json",
                  eval="data/cmeee/CMeEE_dev.json", eval_name="dev"),
    "genia": dict(encoder=MINILM, train="data/genia/train.jsonl", dev="data/genia/dev.jsonl",
                  eval="data/genia/test.jsonl", eval_name="test"),
}
CHARS = ["--tokenization", "chars"]
CELLS = {
    "cluener": {"gp": CHARS, "gp-norope": CHARS + ["--no-rope"], "egp": CHARS + ["--head", "egp"],
                "crf": CHARS + ["--head", "crf"], "gp-subwords": ["--tokenization", "subwords"],
                "egp-norope": CHARS + ["--head", "egp", "--no-rope"],
                "additive": CHARS + ["--head", "additive"],
                "additive-norope": CHARS + ["--head", "additive", "--no-rope"]},
    "peoples": {"gp": CHARS, "gp-norope": CHARS + ["--no-rope"], "egp": CHARS + ["--head", "egp"],
                "crf": CHARS + ["--head", "crf"]},
    "cmeee": {"gp": CHARS, "gp-norope": CHARS + ["--no-rope"], "egp": CHARS + ["--head", "egp"],
              "crf": CHARS + ["--head", "crf"]},
    "genia": {"gp": [], "egp": ["--head", "egp"], "gp-norope": ["--no-rope"],
              "egp-norope": ["--head", "egp", "--no-rope"], "additive": ["--head", "additive"],
              "additive-norope": ["--head", "additive", "--no-rope"]},
}


def cell_dir(ds, cell):
    return os.path.join(RUNS, ds, cell)


def resume_state(ds, cell):
    """The cell's checkpoint record, written after each epoch and mid-epoch."""
    return os.path.join(cell_dir(ds, cell), "resume", "state.json")


def epochs_done(ds, cell):
    try:
        with open(resume_state(ds, cell)) as f:
            return json.load(f)["epochs_done"]
    except FileNotFoundError:
        return 0


def train_one_epoch(ds, cell, threads):
    d = DATASETS[ds]
    out = cell_dir(ds, cell)
    args = [GP_LITE, "train", "--init", d["encoder"], "--train", f"{SHARED}/{d['train']}",
            "--dev", f"{SHARED}/{d['dev']}", "--out", out, "--threads", str(threads),
            "--stop-after", "1", "--checkpoint-every", "100"] + RECIPE + CELLS[ds][cell]
    if os.path.exists(resume_state(ds, cell)):
        args.append("--resume")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    print("+", " ".join(args), flush=True)
    with open(os.path.join(os.path.dirname(out), f"{cell}.log"), "a") as log:
        subprocess.run(args, check=True, stderr=log)


def cmd_train(a):
    total = min(a.upto, int(RECIPE[RECIPE.index("--epochs") + 1]))
    for _ in range(a.rounds):
        for ds in a.datasets:
            for cell in CELLS[ds]:
                if a.cells and cell not in a.cells:
                    continue
                if epochs_done(ds, cell) < total:
                    train_one_epoch(ds, cell, a.threads)


def first_texts(src, dst, n):
    """Writes the first `n` texts of a training file in its own format (JSON array, JSON lines,
    or a column file with blank lines between sentences)."""
    with open(src, encoding="utf-8") as f:
        data = f.read()
    if data.lstrip().startswith("["):
        out = json.dumps(json.loads(data)[:n], ensure_ascii=False)
    elif data.lstrip().startswith("{"):
        out = "".join(line + "\n" for line in data.splitlines()[:n])
    else:
        out, k = [], 0
        for line in data.splitlines():
            out.append(line + "\n")
            if not line.strip():
                k += 1
                if k == n:
                    break
        out = "".join(out)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(out)


def cmd_speed(a):
    import tempfile
    rows = []
    for ds in a.datasets:
        d = DATASETS[ds]
        cells = [c for c in CELLS[ds] if not a.cells or c in a.cells or c == "crf"]
        with tempfile.TemporaryDirectory() as tmp:
            ext = os.path.splitext(d["train"])[1] or ".txt"
            train = os.path.join(tmp, "train" + ext)
            first_texts(f"{SHARED}/{d['train']}", train, a.texts)
            best, rss = {}, {}
            for _ in range(a.rounds):
                for cell in cells:
                    out = os.path.join(tmp, cell)
                    args = [GP_LITE, "train", "--init", d["encoder"], "--train", train, "--out", out,
                            "--threads", str(a.threads), "--overwrite"] + RECIPE + CELLS[ds][cell]
                    args[args.index("--epochs") + 1] = "1"
                    peak = run_peak_rss(args)
                    with open(os.path.join(out, "training.json")) as f:
                        e = json.load(f)["epochs"][0]
                    best[cell] = max(best.get(cell, 0.0), e["train_tokens"] / e["seconds"])
                    rss[cell] = min(rss.get(cell, peak), peak)
        base = best.get("crf")
        for cell in cells:
            ratio = f"{best[cell] / base:.2f}x" if base else "n/a (no CRF cell)"
            rows.append(f"| {ds} | {cell} | {best[cell]:.0f} | {ratio} | {rss[cell] / 1e6:.0f} MB |")
    print(f"| dataset | cell | train tokens/s (best of {a.rounds}) | train speed vs CRF | peak RSS |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


def run_peak_rss(args):
    """Runs `args` to completion and returns its peak resident memory in bytes (Linux: ru_maxrss
    of this child alone, in KiB)."""
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, args, stderr=err)
    return usage.ru_maxrss * 1024


def run_json(args):
    r = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(r.stdout)


def cmd_table(a):
    rows = []
    for ds in a.datasets:
        d = DATASETS[ds]
        data = f"{SHARED}/{d['eval']}"
        results = {}
        for cell in CELLS[ds]:
            if a.cells and cell not in a.cells and cell != "crf":
                continue
            out = cell_dir(ds, cell)
            if not os.path.exists(os.path.join(out, "config.json")):
                continue
            with open(os.path.join(out, "training.json")) as f:
                rec = json.load(f)
            # Prediction speed: the wall time of `gp-lite eval` (predict plus scoring) on the
            # evaluation texts, best of two runs.
            best = None
            for _ in range(2):
                t0 = time.monotonic()
                ev = run_json([GP_LITE, "eval", "--model", out, "--data", data, "--json",
                               "--threads", str(a.threads)])
                dt = time.monotonic() - t0
                best = dt if best is None else min(best, dt)
            train_s = sum(e["seconds"] for e in rec["epochs"])
            tokens = sum(e["train_tokens"] for e in rec["epochs"])
            results[cell] = dict(f1=ev["f1"], p=ev["precision"], r=ev["recall"],
                                 epochs=len(rec["epochs"]), best=rec.get("best_epoch"),
                                 dev_f1=rec.get("best_dev_f1"), train_s=train_s,
                                 train_tps=tokens / train_s, predict_s=best)
        base = results.get("crf")
        for cell, r in results.items():
            tr = f"{r['train_tps'] / base['train_tps']:.2f}x" if base else "n/a"
            pr = f"{base['predict_s'] / r['predict_s']:.2f}x" if base else "n/a"
            rows.append(f"| {ds} ({d['eval_name']}) | {cell} | {100 * r['f1']:.2f} | "
                        f"{100 * (r['dev_f1'] or 0):.2f} | {r['epochs']} | {r['best']} | "
                        f"{r['train_s'] / 60:.1f} min | {tr} | {pr} |")
    print("| dataset | cell | F1 | best dev F1 | epochs done | best epoch | training time | train speed vs CRF | predict speed vs CRF |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ["train", "table", "speed"]:
        s = sub.add_parser(name)
        s.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--cells", nargs="+", help="only these cells (e.g. gp crf); default all")
        if name == "train":
            s.add_argument("--rounds", type=int, default=3)
            s.add_argument("--upto", type=int, default=3, help="stop each cell at this many epochs")
        if name == "speed":
            s.add_argument("--rounds", type=int, default=2)
            s.add_argument("--texts", type=int, default=400)
    a = p.parse_args()
    {"train": cmd_train, "table": cmd_table, "speed": cmd_speed}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
