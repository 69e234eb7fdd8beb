#!/usr/bin/env bash
# Peak RSS and CPU time of `gp-lite predict` on each input file, with its character count and
# characters per CPU-second (the figures of the README's "Hostile inputs" section).
#
#   examples/predict_memory.sh MODEL_DIR THREADS FILE...
#
# GP_LITE: the binary (default target/release/gp-lite). Needs GNU time (/usr/bin/time).
set -euo pipefail
model=$1 threads=$2
shift 2
bin=${GP_LITE:-target/release/gp-lite}
for f in "$@"; do
  chars=$(python3 -c '
import json, sys
n = 0
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.rstrip("\n")
    n += len(json.loads(line)["text"]) if line.startswith("{") else len(line)
print(n)' "$f")
  stats=$( { /usr/bin/time -f "%M %U %e" "$bin" predict --model "$model" --input "$f" --threads "$threads" > /dev/null; } 2>&1 | tail -n 1)
  read -r kb user wall <<< "$stats"
  python3 -c "import sys; f,c,kb,u,w=sys.argv[1:]; c=int(c); u=float(u)
print(f'{f}: {c} characters, peak RSS {int(kb)/1024:.1f} MB, {u:.2f} s user, {w} s wall, {c/max(u,1e-9):,.0f} characters per CPU-second')" "$f" "$chars" "$kb" "$user" "$wall"
done
