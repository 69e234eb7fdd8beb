#!/usr/bin/env python3
"""torch.matmul GFLOP/s on the shapes of benches/matmul.rs, interleaved with gp-lite's kernel.

    benches/torch_matmul.py [--gp-lite-bench target/release/deps/matmul-HASH] [--rounds 3]
                            [--threads 1 2] [--h 384 768] [--t 1024 2048]

Prints one table: per shape and thread count, the best GFLOP/s of each side over the rounds and
their ratio; the row "1 (CPU time)" divides by the calling thread's CPU time instead of the wall
clock, which a busy machine disturbs much less. With --gp-lite-bench, each round runs the gp-lite bench binary (the one that
`cargo bench --bench matmul --no-run` builds) right after the torch measurement, so both see the
same machine. Needs PyTorch (python3 -m venv v && v/bin/pip install torch).
"""
import argparse
import os
import statistics
import subprocess
import time

import torch

CASES = [  # (name, m, k, n, transpose a, transpose b), as in benches/matmul.rs
    ("fwd [TxH]·[HxH]", "t", "h", "h", False, False),
    ("fwd [TxH]·[Hx4H]", "t", "h", "4h", False, False),
    ("fwd [Tx4H]·[4HxH]", "t", "4h", "h", False, False),
    ("bwd dx [Tx4H]·[4HxH]", "t", "4h", "h", False, True),
    ("bwd dW [4HxT]·[TxH]", "4h", "t", "h", True, False),
    ("bwd dW [HxT]·[TxH]", "h", "t", "h", True, False),
    ("attn S [nxd]·[dxn]", "64", "64", "64", False, True),
    ("attn C [nxn]·[nxd]", "64", "64", "64", False, False),
]


def dims(t, h):
    env = {"t": t, "h": h, "4h": 4 * h, "64": 64}
    for name, m, k, n, ta, tb in CASES:
        yield name, env[m], env[k], env[n], ta, tb


def torch_gflops(m, k, n, ta, tb, threads, clock=time.perf_counter):
    torch.set_num_threads(threads)
    a = torch.randn(k, m).t() if ta else torch.randn(m, k)
    b = torch.randn(n, k).t() if tb else torch.randn(k, n)
    c = torch.empty(m, n)
    flops = 2.0 * m * k * n
    reps = max(3, min(50, int(2e10 / flops)))
    times = []
    for i in range(reps + 1):
        s = clock()
        torch.matmul(a, b, out=c)
        if i:
            times.append(clock() - s)
    return flops / statistics.median(times) / 1e9


def gp_lite_gflops(binary, t, h, threads):
    env = dict(os.environ, GP_LITE_BENCH_H=str(h), GP_LITE_BENCH_T=str(t),
               GP_LITE_BENCH_THREADS=",".join(map(str, threads)))
    out = subprocess.run([binary], capture_output=True, text=True, env=env, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.endswith("GFLOP/s")]
    # One row per case, in the order of CASES: the wall-clock columns, then "1 thr cpu" (key 0).
    return [dict(zip(threads + [0], (float(x) for x in parts[-2 - len(threads):-1]))) for parts in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gp-lite-bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--h", nargs="+", type=int, default=[384])
    ap.add_argument("--t", nargs="+", type=int, default=[1024, 2048])
    a = ap.parse_args()
    best_t, best_g = {}, {}
    for r in range(a.rounds):
        for t in a.t:
            for h in a.h:
                for i, (name, m, k, n, ta, tb) in enumerate(dims(t, h)):
                    for th in a.threads + [0]:
                        key = (t, h, i, th)
                        # th = 0: one thread, per CPU-second of the calling thread.
                        g = torch_gflops(m, k, n, ta, tb, th or 1, time.thread_time if th == 0 else time.perf_counter)
                        best_t[key] = max(best_t.get(key, 0), g)
                if a.gp_lite_bench:
                    for i, v in enumerate(gp_lite_gflops(a.gp_lite_bench, t, h, a.threads)):
                        for th, g in v.items():
                            key = (t, h, i, th)
                            best_g[key] = max(best_g.get(key, 0), g)
    print(f"torch {torch.__version__}, best of {a.rounds} rounds, GFLOP/s")
    print("| T | H | product | shape | threads | gp-lite | torch.matmul | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for t in a.t:
        for h in a.h:
            for i, (name, m, k, n, ta, tb) in enumerate(dims(t, h)):
                for th in a.threads + [0]:
                    key = (t, h, i, th)
                    g = best_g.get(key)
                    gs = f"{g:.1f}" if g else "-"
                    rs = f"{g / best_t[key]:.2f}" if g else "-"
                    ths = th or "1 (CPU time)"
                    print(f"| {t} | {h} | {name} | {m}x{k}x{n} | {ths} | {gs} | {best_t[key]:.1f} | {rs} |")


if __name__ == "__main__":
    main()
