#!/usr/bin/env bash
# Rerun the train-stage tuning comparisons of results/train_tuning.md, judged on valid_id (test_id only reported).
# Each run: the default experiment with the named overrides, at most 6,000 steps, early stop on valid_id as configured.
# Usage: bash scripts/tune_train_valid.sh OUTDIR   (two runs at a time, one torch thread each)
set -u
out=${1:-/tmp/tune}
mkdir -p "$out"
run() {  # name, overrides...
  local name=$1; shift
  local args=()
  for o in "$@"; do args+=(--set "$o"); done
  sae-ooc pipeline --config configs/default.yaml --run "$out/$name" --stages data,train --set train.steps=6000 "${args[@]}" \
    > "$out/$name.log" 2>&1
}
# (2 layers, batch 1024 is left out: ~114 ms/step on one thread, too slow for a 6,000-step cap here)
run L2_b128_lr1e-3 model.n_layers=2 train.batch_size=128 &
run L2_b512_lr3e-3 model.n_layers=2 train.lr=3e-3 &
wait
run L3_b512_lr3e-3 model.n_layers=3 train.lr=3e-3 &
run L4_b512_lr3e-3 train.lr=3e-3 &
wait
run L4_lr1e-3_wd2 train.weight_decay=2.0 &
run L3_lr1e-3_wd2 model.n_layers=3 train.weight_decay=2.0 &
wait
