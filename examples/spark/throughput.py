#!/usr/bin/env python3
"""Lines/s and tokens/s of `gp-lite predict` alone and under Spark local[2], same corpus and model.

    python throughput.py --binary target/release/gp-lite --model MODEL --corpus corpus.jsonl

Tokens are counted as a character vocabulary sees them: the characters of each text plus
[CLS] and [SEP]. Spark figures include the job's start (JVM, Python workers); the start alone is
measured on a two-line input and printed too. CPU seconds (user + system) are printed for gp-lite
alone: on a shared machine they vary less than wall time.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def count(corpus):
    lines = tokens = 0
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            try:
                text = json.loads(line)["text"] if line.lstrip().startswith("{") else line
            except (ValueError, KeyError, TypeError):
                text = ""
            lines += 1
            tokens += len(text) + 2
    return lines, tokens


def cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, **kw):
    """Wall seconds and CPU seconds (all processes the command waited for) of `cmd`."""
    c0, t0 = cpu_children(), time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t0, cpu_children() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    lines, tokens = count(a.corpus)
    work = tempfile.mkdtemp(prefix="gp-lite-throughput-")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    job = [sys.executable, os.path.join(HERE, "gp_lite_spark.py"), "--master", "local[2]",
           "--binary", a.binary, "--model", a.model, "--ship"]
    two = os.path.join(work, "two.jsonl")  # a job of two lines: Spark's fixed cost
    with open(a.corpus, encoding="utf-8") as f, open(two, "w", encoding="utf-8") as g:
        g.write(f.readline() + f.readline())
    def direct(threads):
        return timed([a.binary, "predict", "--model", a.model, "--input", a.corpus, "--threads", threads],
                     stdout=subprocess.DEVNULL)

    def spark(corpus, extra):
        out = os.path.join(work, "out")
        shutil.rmtree(out, ignore_errors=True)
        return timed(job + ["--input", corpus, "--output", out] + extra, env=env,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    runs = [
        ("predict --threads 1", lambda: direct("1")),
        ("predict --threads 2", lambda: direct("2")),
        ("Spark local[2], 2 tasks x --threads 1",
         lambda: spark(a.corpus, ["--threads", "1", "--partitions", "2"])),
        ("Spark local[2], spark.task.cpus=2, 1 task x --threads 2",
         lambda: spark(a.corpus, ["--threads", "2", "--partitions", "2", "--conf", "spark.task.cpus=2"])),
        ("Spark local[2], 2 tasks x --threads 2 (oversubscribed)",
         lambda: spark(a.corpus, ["--threads", "2", "--partitions", "2"])),
    ]
    print(f"corpus: {lines} lines, {tokens} tokens")
    for _ in range(a.repeat):
        start, _ = spark(two, ["--threads", "1"])
        print(f"{'Spark local[2] job on 2 lines (start-up)':58s} {start:7.2f} s", flush=True)
        for name, run in runs:
            s, cpu = run()
            # CPU seconds count only for gp-lite alone: Spark's JVM is not waited for.
            cpu = f" | {cpu:6.2f} CPU s {tokens / cpu:7.0f} tokens/CPU s" if "Spark" not in name else ""
            print(f"{name:58s} {s:7.2f} s {lines / s:7.0f} lines/s {tokens / s:7.0f} tokens/s{cpu}",
                  flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
