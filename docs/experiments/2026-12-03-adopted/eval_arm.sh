#!/usr/bin/env bash
# A run trained into runs/NAME (learner.main --set ... output_dir=THIS_DIR/runs
# run_name=NAME), evaluated as the presets' runs were: both splits at eval seed 1234 (103
# images a prompt: 515 train, 2,060 held-out), its JSON and metrics.jsonl copied to evals/,
# then the train split at eval seeds 1, 2, 3 (extra_seeds.sh). Then tabulate.py shows it.
# Usage: eval_arm.sh NAME ...
set -eu
D=$(dirname "$0")
for name in "$@"; do
  run="$D/runs/$name"
  python -m learner.evaluate --checkpoint "$run" --split all --images-per-prompt 103 --seed 1234 --no-mlflow | grep -E "^(train|test) "
  cp "$run"/eval/*_all.json "$D/evals/"
  cp "$run/metrics.jsonl" "$D/evals/${name}_metrics.jsonl"
  "$D/extra_seeds.sh" "$name"
done
