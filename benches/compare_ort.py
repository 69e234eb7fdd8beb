#!/usr/bin/env python3
"""gp-lite against ONNX Runtime on the inference side of bench_torch.py's workload (issue 22).

    compare_ort.py [--gp-lite target/release/gp-lite] [--bench-dir ../shared/bench]
                   [--configs tiny minilm] [--threads 1 2] [--rounds 2] [--steps 10]
                   [--cache /tmp/gp-lite-ort] [--json OUT]

Run it with a Python that has torch, transformers, onnx, onnxscript and onnxruntime:
    python3 -m venv v && v/bin/pip install torch transformers onnx onnxscript onnxruntime
    v/bin/python benches/compare_ort.py --gp-lite target/release/gp-lite

What it measures: batch-1 latency (ms, batch 1 x 50 tokens) and batch-32 throughput (tokens/s,
32 x 64) of the span scores (encoder + GlobalPointer head, no decoding), as bench_torch.py and
`gp-lite bench` measure them, for four engines: ONNX Runtime f32, ONNX Runtime int8, gp-lite f32
and gp-lite int8; per config and thread count, best of --rounds rounds. Round r runs every engine
once (ORT f32, ORT int8, then `gp-lite bench --precision f32 int8`, which times both of its
precisions after the same training steps) for every config and thread count before round r+1
starts, so that all four see the same machine.

The ONNX model is bench_torch.py's `Model` (imported from --bench-dir) with its initialisation
(torch.manual_seed(0)), exported once per config with torch.onnx.export(..., dynamo=True) and
dynamic batch and sequence axes (the legacy TorchScript tracer froze the head count in a reshape,
and the graph failed at any other shape), then:
  f32:  onnxruntime.transformers' BERT optimizer (optimize_model, model_type "bert", opt_level 1:
        EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu), run with
        ORT_ENABLE_ALL graph optimisations;
  int8: onnxruntime.quantization.quantize_dynamic(weight_type=QInt8) of that optimized model
        (int8 weights, activations quantised at run time), run the same way.
Sessions: CPUExecutionProvider, intra_op_num_threads = threads, inter_op_num_threads = 1,
sequential execution. The three .onnx files of each config are kept in --cache (a directory per
config and key: bench_torch.py's content, the torch / transformers / onnxruntime versions and
this script's export recipe), so reruns skip the export.

Two things make the exported graph one the BERT optimizer recognises (it matches the TorchScript
exporter's node patterns), without changing what it computes:
  - the export runs BertModel as embeddings + encoder with the classic additive mask
    (1 - mask[:, None, None, :]) * finfo.min, in place of transformers 5's mask functions,
    and attention as softmax(q k^T / sqrt(d) + mask) v (a division, as in the older BERT code:
    with a multiplication by the scale the optimizer takes that Mul for the mask's and fails);
  - two node forms the dynamo exporter writes differently from the TorchScript exporter are
    rewritten after export (legacy_forms): an Unsqueeze of a graph input over two axes becomes
    two Unsqueezes (the mask pattern), Shape(x, start=k, end=k+1) of a graph input becomes
    Unsqueeze(Gather(Shape(x), k)) (the position-embedding pattern of EmbedLayerNormalization).
Without them the optimizer fuses SkipLayerNormalization and BiasGelu only.

Checks, every run: ORT f32's scores against PyTorch's (bench_torch.py's Model as it is, eager
PyTorch) on one random input of batch 2 x 50 whose second text is padded after 37 tokens: the
largest difference over the spans the head keeps must be below 1e-3 of the largest score, and
every masked span must stay masked, or the run stops. ORT int8 against PyTorch: the largest
difference and the correlation are reported, not enforced. The fused operators of the optimized
and quantized models are printed (a warning if Attention did not fuse on every layer).

Output: a line per config with the fused operator counts and the parity figures, then one JSON
line per (config, threads, engine, precision) with the best round's infer_b1_n50_ms and
infer_b32_n64_tokens_per_s and every round's figures (--json FILE writes these lines), then a
markdown table with the ratios gp-lite / ORT at each precision (> 1: gp-lite faster; for latency
ORT ms / gp-lite ms): the ratio of the best rounds and the median of the per-round ratios.
"""
import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Bump when the export, optimisation or quantisation recipe changes: it is part of the cache key.
RECIPE = 1
ENGINES = [("onnxruntime", "f32"), ("onnxruntime", "int8"), ("gp-lite", "f32"), ("gp-lite", "int8")]
FUSED_OPS = ["EmbedLayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization",
             "LayerNormalization", "BiasGelu", "FastGelu", "Gelu"]
INT8_OPS = ["QAttention", "QEmbedLayerNormalization", "DynamicQuantizeMatMul", "MatMulInteger",
            "DynamicQuantizeLinear", "QGemm"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
    """The exporter's and optimizer's chatter goes to stderr, their warnings nowhere: stdout
    carries the result lines only."""
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load_bench_torch(bench_dir):
    path = os.path.join(bench_dir, "bench_torch.py")
    if not os.path.isfile(path):
        sys.exit(f"no bench_torch.py in {bench_dir} (--bench-dir)")
    sys.path.insert(0, bench_dir)
    import bench_torch  # noqa: E402
    return bench_torch, path


# ---------------------------------------------------------------------------------------------
# Export


def div_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention with the scale written as a division by sqrt(head size)."""
    import torch
    scores = torch.matmul(query, key.transpose(2, 3)) / math.sqrt(query.shape[-1])
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def export_wrapper(torch):
    class ExportBert(torch.nn.Module):
        """BertModel's forward as embeddings + encoder with the classic extended attention mask
        (what BertModel computed before transformers' mask functions)."""

        def __init__(self, bert):
            super().__init__()
            self.inner = bert

        def forward(self, input_ids, attention_mask):
            h = self.inner.embeddings(input_ids=input_ids)
            ext = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
            return self.inner.encoder(h, attention_mask=ext)

    return ExportBert


def legacy_forms(model):
    """Rewrites, on graph inputs, two node forms of the dynamo exporter into the TorchScript
    exporter's, which the BERT optimizer's patterns expect. Returns how many of each."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    inputs = {i.name for i in g.input}
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes, n_unsqueeze, n_shape = [], 0, 0

    def const(name, value):
        g.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
        return name

    for node in g.node:
        out = node.output[0]
        if (node.op_type == "Unsqueeze" and node.input[0] in inputs and len(node.input) == 2
                and node.input[1] in consts):
            axes = consts[node.input[1]].ravel().tolist()
            if len(axes) > 1 and all(a >= 0 for a in axes) and axes == sorted(axes):
                x = node.input[0]
                for i, a in enumerate(axes):  # ascending non-negative axes: one at a time, same result
                    y = out if i == len(axes) - 1 else f"{out}__unsqueeze{i}"
                    nodes.append(helper.make_node("Unsqueeze", [x, const(f"{out}__axis{i}", [a])], [y],
                                                  name=f"{out}__unsqueeze{i}"))
                    x = y
                n_unsqueeze += 1
                continue
        if node.op_type == "Shape" and node.input[0] in inputs:
            at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            start, end = at.get("start"), at.get("end")
            if start is not None and end is not None and start >= 0 and end == start + 1:
                shape, dim = f"{out}__shape", f"{out}__dim"
                nodes.append(helper.make_node("Shape", [node.input[0]], [shape], name=shape))
                nodes.append(helper.make_node("Gather", [shape, const(f"{out}__index", start)], [dim],
                                              name=dim, axis=0))
                nodes.append(helper.make_node("Unsqueeze", [dim, const(f"{out}__axis", [0])], [out],
                                              name=f"{out}__unsqueeze"))
                n_shape += 1
                continue
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    return n_unsqueeze, n_shape


def export(bt, name, path):
    import onnx
    import torch
    from transformers import AttentionInterface

    cfg = bt.CONFIGS[name]
    torch.manual_seed(0)
    model = bt.Model(cfg).eval()  # bench_torch.py's initialisation
    AttentionInterface.register("gp_lite_div", div_attention)
    model.bert.set_attn_implementation("gp_lite_div")
    model.bert = export_wrapper(torch)(model.bert)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, bt.VOCAB, (2, 16), generator=gen)  # sizes > 1: no 0/1 specialisation
    mask = torch.ones_like(ids)
    batch = torch.export.Dim("batch", min=1)
    seq = torch.export.Dim("seq", min=2, max=512)  # max_position_embeddings
    t = time.perf_counter()
    with quiet(), torch.no_grad():
        program = torch.onnx.export(
            model, (ids, mask), dynamo=True, input_names=["input_ids", "attention_mask"],
            output_names=["scores"], dynamic_shapes={"ids": {0: batch, 1: seq}, "mask": {0: batch, 1: seq}})
    proto = program.model_proto
    n_unsqueeze, n_shape = legacy_forms(proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, path + ".tmp")
    os.replace(path + ".tmp", path)
    log(f"{name}: exported in {time.perf_counter() - t:.1f} s (rewrote {n_unsqueeze} Unsqueeze, {n_shape} Shape)")


def optimize(bt, name, raw, path):
    from onnxruntime.transformers import optimizer

    cfg = bt.CONFIGS[name]
    with quiet():
        opt = optimizer.optimize_model(raw, model_type="bert", num_heads=cfg["num_attention_heads"],
                                       hidden_size=cfg["hidden_size"], opt_level=1)
        opt.save_model_to_file(path + ".tmp")
    os.replace(path + ".tmp", path)


def quantize(opt_path, path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(opt_path, path + ".tmp", weight_type=QuantType.QInt8)
    os.replace(path + ".tmp", path)


def cache_key(bench_torch_path):
    import onnxruntime
    import torch
    import transformers

    h = hashlib.sha256(open(bench_torch_path, "rb").read())
    h.update(f"{RECIPE} {torch.__version__} {transformers.__version__} {onnxruntime.__version__}".encode())
    return h.hexdigest()[:12]


def prepare(bt, name, cache, key):
    d = os.path.join(cache, f"{name}-{key}")
    os.makedirs(d, exist_ok=True)
    paths = {"raw": os.path.join(d, "model.onnx"), "f32": os.path.join(d, "optimized.onnx"),
             "int8": os.path.join(d, "optimized-int8.onnx")}
    if not os.path.exists(paths["raw"]):
        export(bt, name, paths["raw"])
    if not os.path.exists(paths["f32"]):
        t = time.perf_counter()
        optimize(bt, name, paths["raw"], paths["f32"])
        log(f"{name}: BERT optimizer in {time.perf_counter() - t:.1f} s")
    if not os.path.exists(paths["int8"]):
        t = time.perf_counter()
        quantize(paths["f32"], paths["int8"])
        log(f"{name}: quantize_dynamic QInt8 in {time.perf_counter() - t:.1f} s")
    return paths


def op_counts(path, ops):
    import onnx

    g = onnx.load(path, load_external_data=False).graph
    found = [n.op_type for n in g.node]
    return {op: found.count(op) for op in ops if op in found}


# ---------------------------------------------------------------------------------------------
# Running


def session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def parity(bt, name, paths):
    """ORT's scores against PyTorch's (bench_torch.py's Model, eager) on a batch of 2 x 50 random
    tokens, the second text padded after 37."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = bt.Model(bt.CONFIGS[name]).eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1, bt.VOCAB, (2, 50), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 37:] = 0
    with torch.no_grad():
        ref = model(ids, mask).numpy()
    del model
    m = mask.numpy().astype(bool)
    keep = m[:, :, None] & m[:, None, :] & np.triu(np.ones((50, 50), dtype=bool))[None]
    keep = np.broadcast_to(keep[:, None], ref.shape)
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    out = {}
    for prec in ("f32", "int8"):
        s = session(paths[prec], 1).run(None, feeds)[0]
        if s.shape != ref.shape:
            sys.exit(f"{name}: ORT {prec} scores have shape {s.shape}, PyTorch's {ref.shape}")
        diff = float(np.abs(s - ref)[keep].max())
        scale = float(np.abs(ref[keep]).max())
        corr = float(np.corrcoef(s[keep].astype(np.float64), ref[keep].astype(np.float64))[0, 1])
        masked_ok = bool((s[~keep] < -1e11).all())
        out[prec] = {"max_abs_diff": diff, "rel": diff / scale, "corr": corr, "masked_ok": masked_ok}
    f = out["f32"]
    if not (f["rel"] < 1e-3 and f["masked_ok"]):
        sys.exit(f"{name}: ONNX Runtime f32 scores differ from PyTorch's: max abs diff {f['max_abs_diff']:.3g} "
                 f"({f['rel']:.3g} of the largest score; the bound is 1e-3), masked spans kept masked: "
                 f"{f['masked_ok']}. Delete the cache ({os.path.dirname(paths['f32'])}) and rerun; if it "
                 "persists the export or the optimizer changed the model.")
    return out


def timed(fn, steps, warmup):  # as bench_torch.py's
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def bench_inputs(bt):
    """bench_torch.py's inference batches: the same generator, drawn in the same order."""
    import torch

    gen = torch.Generator().manual_seed(0)
    bt.batch(16, 64, gen)  # the training batch, drawn first there
    ids1, mask1, _ = bt.batch(1, 50, gen)
    ids32, mask32, _ = bt.batch(32, 64, gen)
    return ({"input_ids": ids1.numpy(), "attention_mask": mask1.numpy()},
            {"input_ids": ids32.numpy(), "attention_mask": mask32.numpy()})


def run_ort(path, threads, steps, b1, b32):
    sess = session(path, threads)
    for feeds in (b1, b32):  # the same model at both shapes
        b, n = feeds["input_ids"].shape
        shape = sess.run(None, feeds)[0].shape
        if shape != (b, 10, n, n):
            sys.exit(f"{path}: scores of shape {shape} for a {b} x {n} batch")
    lat = timed(lambda: sess.run(None, b1), steps * 3, 3)
    thr = timed(lambda: sess.run(None, b32), steps, 2)
    return {"infer_b1_n50_ms": round(lat, 3), "infer_b32_n64_tokens_per_s": round(32 * 64 / thr * 1000, 1)}


def run_gp_lite(exe, config, threads, steps):
    cmd = [exe, "bench", "--config", config, "--threads", str(threads), "--steps", str(steps),
           "--precision", "f32", "int8"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    rows = {r["precision"]: r for r in (json.loads(x) for x in out.stdout.splitlines() if x.startswith("{"))}
    if set(rows) != {"f32", "int8"}:
        sys.exit(f"{' '.join(cmd)}: expected f32 and int8 lines, got {sorted(rows)} "
                 "(this gp-lite's bench has no --precision int8?)")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gp-lite", default=os.path.join(REPO, "target/release/gp-lite"))
    ap.add_argument("--bench-dir", default=os.path.join(REPO, "..", "shared", "bench"),
                    help="where bench_torch.py is (default ../shared/bench beside the checkout)")
    ap.add_argument("--configs", nargs="+", default=["tiny", "minilm"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="as bench_torch.py: 3x as many batch-1 calls (base: half)")
    ap.add_argument("--cache", default="/tmp/gp-lite-ort", help="exported and optimized .onnx files")
    ap.add_argument("--json", help="write the result lines here")
    a = ap.parse_args()

    if a.rounds < 1:
        sys.exit("--rounds must be at least 1")
    logging.disable(logging.WARNING)  # the optimizer's and quantizer's logging
    import onnxruntime
    import torch

    onnxruntime.set_default_logger_severity(3)  # errors only (unused initializers are warned about)

    torch.set_num_threads(1)  # export and the parity check only: no idle OpenMP pool beside ORT
    bt, bt_path = load_bench_torch(os.path.abspath(a.bench_dir))
    if not os.access(a.gp_lite, os.X_OK):
        sys.exit(f"no gp-lite binary at {a.gp_lite} (--gp-lite)")
    unknown = [c for c in a.configs if c not in bt.CONFIGS]
    if unknown:
        sys.exit(f"unknown config {unknown} ({', '.join(bt.CONFIGS)})")
    key = cache_key(bt_path)
    b1, b32 = bench_inputs(bt)

    paths, checks = {}, {}
    for c in a.configs:
        paths[c] = prepare(bt, c, a.cache, key)
        fused = op_counts(paths[c]["f32"], FUSED_OPS)
        q = op_counts(paths[c]["int8"], INT8_OPS)
        layers = bt.CONFIGS[c]["num_hidden_layers"]
        print(f"{c}: fused ops in the optimized f32 model: "
              + ", ".join(f"{k} {v}" for k, v in fused.items())
              + "; int8 model: " + ", ".join(f"{k} {v}" for k, v in q.items()), flush=True)
        if fused.get("Attention", 0) != layers:
            log(f"WARNING: {c}: Attention fused on {fused.get('Attention', 0)} of {layers} layers: ORT runs "
                "the unfused attention there, which understates it")
        checks[c] = parity(bt, c, paths[c])
        f, i = checks[c]["f32"], checks[c]["int8"]
        print(f"{c}: parity with PyTorch (2 x 50, one text padded): ORT f32 max abs diff {f['max_abs_diff']:.3g} "
              f"({f['rel']:.2g} of the largest score), ORT int8 max abs diff {i['max_abs_diff']:.3g} "
              f"({i['rel']:.2g}), correlation {i['corr']:.5f}", flush=True)

    rows = []  # (round, config, threads, engine, precision, figures)
    for r in range(a.rounds):
        for c in a.configs:
            steps = max(3, a.steps // 2) if c == "base" else a.steps
            for t in a.threads:
                for prec in ("f32", "int8"):
                    rows.append((r, c, t, "onnxruntime", prec, run_ort(paths[c][prec], t, steps, b1, b32)))
                for prec, row in run_gp_lite(a.gp_lite, c, t, steps).items():
                    rows.append((r, c, t, "gp-lite", prec, row))
                    gp_version = row.get("version", "")
            log(f"round {r + 1}/{a.rounds} {c} done")

    versions = {"onnxruntime": onnxruntime.__version__, "gp-lite": gp_version}
    lines, best = [], {}
    for c in a.configs:
        for t in a.threads:
            for eng, prec in ENGINES:
                got = [x[5] for x in rows if x[1:5] == (c, t, eng, prec)]
                b1s = [g["infer_b1_n50_ms"] for g in got]
                b32s = [g["infer_b32_n64_tokens_per_s"] for g in got]
                best[c, t, eng, prec] = (b1s, b32s)
                line = {"impl": eng, "version": versions[eng], "config": c, "threads": t, "precision": prec,
                        "infer_b1_n50_ms": min(b1s), "infer_b32_n64_tokens_per_s": max(b32s),
                        "rounds": len(got), "b1_ms_per_round": b1s, "b32_tokens_per_s_per_round": b32s}
                if eng == "onnxruntime":
                    ck = checks[c][prec]
                    line.update(vs_pytorch_max_abs_diff=float(f"{ck['max_abs_diff']:.4g}"),
                                vs_pytorch_corr=float(f"{ck['corr']:.6f}"))
                lines.append(json.dumps(line))
                print(lines[-1], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            f.write("".join(x + "\n" for x in lines))

    def cell(c, t, prec, field):
        (g1, g32), (o1, o32) = best[c, t, "gp-lite", prec], best[c, t, "onnxruntime", prec]
        if field == 0:  # latency: lower is better, ratio ORT / gp-lite
            gb, ob, per = min(g1), min(o1), [o / g for g, o in zip(g1, o1)]
            ratio = ob / gb
        else:
            gb, ob, per = max(g32), max(o32), [g / o for g, o in zip(g32, o32)]
            ratio = gb / ob
        return f"{gb:.4g} / {ob:.4g} | **{ratio:.2f}x**, {statistics.median(per):.2f}x"

    heads = [f"{what} {prec}: gp-lite / ORT (best) | ratio best, median"
             for what in ("batch-1 ms", "batch-32 tok/s") for prec in ("f32", "int8")]
    print()
    print("| config | threads | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|---|" * len(heads))
    for c in a.configs:
        for t in a.threads:
            cells = [cell(c, t, p, f) for f in (0, 1) for p in ("f32", "int8")]
            print(f"| {c} | {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
