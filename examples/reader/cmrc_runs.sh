#!/bin/bash
# The CMRC 2018 reader runs of docs/results.md (issue 23), each resumable: rerun the same command.
#
#   examples/reader/cmrc_runs.sh ce                      # ce, 2 epochs from e5-small-zh
#   examples/reader/cmrc_runs.sh lambda L [L ...]        # lambda search on held-out training questions
#   examples/reader/cmrc_runs.sh finetune NAME ARGS...   # one epoch from the ce reader after epoch 1
#
# RUNS: output root (default /work/runs/reader); GP_LITE: the binary; SHARED: ../shared.
# `lambda` and `finetune` start from $RUNS/ce-epoch1, a copy of $RUNS/ce made after its epoch 1
# (before epoch 2 overwrites model.safetensors). `lambda` needs $RUNS/split3 from
# examples/reader/holdout.py --out $RUNS/split3 --held-every 10 --train-every 3 DRCD TRIAL.
set -eu
R=${RUNS:-/work/runs/reader}
B=${GP_LITE:-target/release/gp-lite}
S=${SHARED:-../shared}/data/mrc
COMMON=(--head reader --batch-size 16 --max-len 256 --seed 42 --threads 1 --checkpoint-every 40)
# the ce run's epoch-2 schedule: lr 5.57e-5 falling to 0, head 10x, no warmup
FINETUNE=(--init "$R/ce-epoch1" --epochs 1 --lr 5.57e-5 --head-lr 5.57e-4 --warmup 0)
resume() { [ -f "$1/resume/state.json" ] && echo --resume || true; }
cmd=$1; shift
case $cmd in
  ce)
    OUT=$R/ce
    nice -n 10 "$B" train "${COMMON[@]}" --init "${SHARED:-../shared}/models/e5-small-zh" \
      --train "$S/drcd_dev.json" --train "$S/cmrc2018_trial.json" --dev "$S/cmrc2018_dev.json" \
      --out "$OUT" --epochs 2 --lr 1e-4 --head-lr 1e-3 --warmup 0.1 --loss ce $(resume "$OUT") ;;
  lambda)
    for L in "$@"; do
      OUT=$R/lam-$L
      [ -f "$OUT/training.json" ] && [ ! -d "$OUT/resume" ] && continue
      nice -n 10 "$B" train "${COMMON[@]}" "${FINETUNE[@]}" \
        --train "$R/split3/train.json" --dev "$R/split3/held.json" \
        --out "$OUT" --loss expected-f1 --lambda "$L" $(resume "$OUT")
    done ;;
  finetune)
    NAME=$1; shift
    OUT=$R/$NAME
    nice -n 10 "$B" train "${COMMON[@]}" "${FINETUNE[@]}" \
      --train "$S/drcd_dev.json" --train "$S/cmrc2018_trial.json" --dev "$S/cmrc2018_dev.json" \
      --out "$OUT" $(resume "$OUT") "$@" ;;
  *) echo "usage: $0 ce | lambda L... | finetune NAME ARGS..." >&2; exit 2 ;;
esac
