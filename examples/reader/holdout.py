#!/usr/bin/env python3
"""Split SQuAD-format files by article into training and held-out files (issue 23: the
expected-F1 reader's lambda is chosen on held-out training questions, never on dev).

Every `--held-every`-th article of each input (counting from the first) goes to held.json, the
rest to train.json; whole articles, so that no context is in both. `--train-every K` keeps only
every K-th of the remaining articles in train.json (a smaller training set for a search).
Deterministic: no randomness, the same files give the same split.

    python3 examples/reader/holdout.py --out DIR --held-every 10 \
        ../shared/data/mrc/drcd_dev.json ../shared/data/mrc/cmrc2018_trial.json
"""
import argparse
import json
import os


def questions(articles):
    return sum(len(p["qas"]) for a in articles for p in a["paragraphs"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--held-every", type=int, default=10)
    ap.add_argument("--train-every", type=int, default=1)
    args = ap.parse_args()
    train, held = [], []
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)["data"]
        rest = []
        for i, article in enumerate(data):
            (held if i % args.held_every == 0 else rest).append(article)
        train.extend(a for i, a in enumerate(rest) if i % args.train_every == 0)
    os.makedirs(args.out, exist_ok=True)
    for name, articles in [("train.json", train), ("held.json", held)]:
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            json.dump({"version": "holdout", "data": articles}, f, ensure_ascii=False)
        print(f"{name}: {len(articles)} articles, {questions(articles)} questions")


if __name__ == "__main__":
    main()
