#!/usr/bin/env python3
"""PyTorch training steps of a bench_torch.py config at a given batch shape, for peak memory:
`/usr/bin/time -v PY benches/train_peak_torch.py minilm 16 128 5` (config, texts, tokens, steps),
beside `examples/train_peak.rs`. Uses ../shared/bench/bench_torch.py's model and loss."""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("GP_LITE_BENCH_DIR", os.path.join(HERE, "..", "..", "shared", "bench")))
import torch  # noqa: E402
from bench_torch import CONFIGS, Model, batch, mlce  # noqa: E402

name, b, n, steps = (sys.argv[1:] + ["minilm", "16", "128", "5"][len(sys.argv) - 1:])[:4]
b, n, steps = int(b), int(n), int(steps)
torch.manual_seed(0)
model = Model(CONFIGS[name])
opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
ids, mask, y = batch(b, n, torch.Generator().manual_seed(0))
t = time.perf_counter()
for _ in range(steps):
    model.train()
    opt.zero_grad(set_to_none=True)
    loss = mlce(y, model(ids, mask))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
print(json.dumps({"impl": "pytorch", "config": name, "batch": [b, n], "steps": steps, "s": round(time.perf_counter() - t, 2)}))
