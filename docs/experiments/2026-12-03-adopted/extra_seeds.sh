#!/usr/bin/env bash
# The train split again at eval seeds 1, 2 and 3 (515 images each), for the base model
# and each run: with seed 1234's 515 this gives 2,060 train images per model, as many as
# the held-out split has. Usage: extra_seeds.sh NAME ... (NAME = base or a run under runs/)
set -eu
D=$(dirname "$0")
for name in "$@"; do
  if [ "$name" = base ]; then ref=(--checkpoint base --config configs/toy_b2.yaml); else ref=(--checkpoint "$D/runs/$name"); fi
  for s in 1 2 3; do
    out="$D/extra/${name}_train_seed$s.json"
    [ -f "$out" ] && continue
    python -m learner.evaluate "${ref[@]}" --split train --images-per-prompt 103 --seed $s --json "$out" --no-mlflow | grep "^train"
  done
done
