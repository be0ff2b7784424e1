#!/bin/bash
# One device call (ninth session): base rates of the 36 unseen pairs and the "wide" splits
# (base_pairs.py), then B² / DDPO rl_check arms side by side (sweep.py). Issues 3 and 5.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
D=docs/gpu/2026-11-27-sweep
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; \
  python3 -c "import sys,torch,transformers,diffusers,peft,open_clip;print(sys.version);print(torch.__version__,torch.version.cuda,transformers.__version__,diffusers.__version__,peft.__version__,open_clip.__version__)"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
python3 -c "import toyworld.rl_check" || exit 4
timeout 150 python3 $D/base_pairs.py --out /tmp/res/splits 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|it\]$" | tee $OUT/base_pairs.log
[ -f /tmp/res/splits/wide_train.txt ] || exit 5
timeout 480 python3 $D/sweep.py --splits /tmp/res/splits --res /tmp/res --archive $OUT/results.tgz --parallel 10 --deadline-s ${DEADLINE:-440} 2>&1 | tee $OUT/sweep.log
echo done
