#!/bin/bash
# Second device call: is the toy CLIP reward's policy gradient visible at 1024 trunks, and
# does the preset's lr (1e-4) climb with 16x the images per stage? (issue 3)
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site
G="--set model.device=cuda --set sampling.micro_batch=1024"
timeout 90 python3 -m toyworld.grad_signal --reward clip --trunks 1024 --batches 4 --threads 8 $G --json $OUT/grad_clip.json 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|it\]$" | tee $OUT/grad_clip.log
R="--threads 8 $G --set sampling.trunks_per_stage=512 --set train.batch_size=256"
timeout 165 python3 -m toyworld.rl_check --reward clip --stages 24 $R --set train.lr=1e-4 --out $OUT/rl_clip_lr1e-4.json 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|it\]$" | tee $OUT/rl_clip_lr1e-4.log
timeout 120 python3 -m toyworld.rl_check --reward partial --stages 16 $R --set train.lr=1e-4 --out $OUT/rl_partial_lr1e-4.json 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|it\]$" | tee $OUT/rl_partial_lr1e-4.log
echo done
