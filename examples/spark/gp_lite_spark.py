#!/usr/bin/env python3
"""Tag a corpus with gp-lite inside Apache Spark.

Each partition of the input (JSON lines {"text": ...} or plain text lines) is streamed through
one `gp-lite predict` process; the output is one JSON line per input line, in input order:
    {"line": N, "text": ..., "entities": [{"start", "end", "type", "text", "score"}]}
or, for a line gp-lite cannot read (malformed JSON, no string "text"),
    {"line": N, "error": "..."}
where N is the input line's number in the whole corpus (1-based). See README.md beside this file.

    python gp_lite_spark.py --master 'local[2]' --input corpus.jsonl --output tagged/ \
        --binary target/release/gp-lite --model my-model --ship
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from pyspark import SparkFiles
from pyspark.sql import SparkSession


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="JSON lines with a \"text\" field, or text lines")
    ap.add_argument("--output", required=True, help="output directory (part-NNNNN files, JSON lines)")
    ap.add_argument("--binary", required=True, help="the gp-lite binary (a path on every executor unless --ship)")
    ap.add_argument("--model", required=True, help="the model directory (a path on every executor unless --ship)")
    ap.add_argument("--ship", action="store_true",
                    help="send --binary and --model from the driver to the executors (SparkContext.addFile)")
    ap.add_argument("--threads", type=int, default=0,
                    help="gp-lite threads per task [default: spark.task.cpus]")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--flat", action="store_true", help="non-overlapping output")
    ap.add_argument("--nested", action="store_true", help="every span above the threshold")
    ap.add_argument("--partitions", type=int, default=None,
                    help="minimum number of input splits (order is kept) [default: Spark's]")
    ap.add_argument("--master", default=None, help="e.g. local[2] [default: spark-submit's]")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a Spark setting, e.g. spark.task.cpus=2 (repeatable)")
    return ap.parse_args(argv)


def model_copy_without_resume(model):
    """A copy of the model directory without resume/ (training state that predict never reads)."""
    dst = os.path.join(tempfile.mkdtemp(prefix="gp-lite-ship-"), os.path.basename(os.path.normpath(model)))
    shutil.copytree(model, dst, ignore=lambda d, names: ["resume"] if d == model else [])
    return dst


def predict_partition(binary, model, predict_args, lines):
    """Streams (line number, input line) pairs through one `gp-lite predict` process and yields
    one JSON line per input line, in order. Raises if gp-lite fails or answers a wrong number of
    lines, so that Spark retries the task instead of silently keeping a short partition."""
    proc = subprocess.Popen([binary, "predict", "--model", model] + predict_args,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pending = collections.deque()  # numbers of the lines written and not yet answered
    errors = []
    stderr_tail = collections.deque(maxlen=20)

    def feed():
        try:
            for number, line in lines:
                pending.append(number)
                proc.stdin.write(line.encode("utf-8") + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass  # gp-lite stopped early: its exit code and stderr say why
        except BaseException as e:  # the input iterator failed: report it from the task
            errors.append(e)
            proc.kill()

    def drain_stderr():
        # gp-lite's messages (FILE:LINE: what) go to the executor's log.
        for raw in proc.stderr:
            msg = raw.decode("utf-8", "replace").rstrip("\n")
            stderr_tail.append(msg)
            print(f"gp-lite: {msg}", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain_stderr, daemon=True)]
    for t in threads:
        t.start()
    for raw in proc.stdout:  # bytes, split on b"\n" only
        if not pending:
            proc.kill()
            raise RuntimeError("gp-lite predict wrote more lines than it was given")
        record = json.loads(raw)
        record.pop("line", None)  # an error record's line number within the partition
        yield json.dumps({"line": pending.popleft(), **record}, ensure_ascii=False)
    code = proc.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    if code != 0:
        raise RuntimeError(f"gp-lite predict exited with {code}:\n" + "\n".join(stderr_tail))
    if pending:
        raise RuntimeError(f"gp-lite predict answered none of the last {len(pending)} lines")


def main(argv=None):
    a = parse_args(argv)
    builder = SparkSession.builder.appName("gp-lite predict")
    if a.master:
        builder = builder.master(a.master)
    for kv in a.conf:
        key, _, value = kv.partition("=")
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("WARN")
    task_cpus = int(sc.getConf().get("spark.task.cpus", "1"))
    threads = a.threads or task_cpus
    predict_args = ["--threads", str(threads), "--batch-size", str(a.batch_size)]
    if a.threshold is not None:
        predict_args.append(f"--threshold={a.threshold!r}")
    if a.flat:
        predict_args.append("--flat")
    if a.nested:
        predict_args.append("--nested")

    if a.ship:
        # Files and directories added here are copied to every executor's working area; the
        # binary keeps its executable bit.
        sc.addFile(os.path.abspath(a.binary))
        sc.addFile(model_copy_without_resume(os.path.abspath(a.model)), recursive=True)
        binary_name = os.path.basename(a.binary)
        model_name = os.path.basename(os.path.normpath(a.model))

        def locate():
            return SparkFiles.get(binary_name), SparkFiles.get(model_name)
    else:
        binary, model = os.path.abspath(a.binary), os.path.abspath(a.model)

        def locate():
            return binary, model

    # Splits of the input in order (no shuffle), so the part files are in input order too.
    lines = sc.textFile(a.input, minPartitions=a.partitions)
    # (line number, line): zipWithIndex numbers lines in partition order, i.e. input order.
    numbered = lines.zipWithIndex().map(lambda li: (li[1] + 1, li[0]))

    def run(part):
        binary, model = locate()
        return predict_partition(binary, model, predict_args, part)

    numbered.mapPartitions(run).saveAsTextFile(a.output)
    spark.stop()


if __name__ == "__main__":
    main()
