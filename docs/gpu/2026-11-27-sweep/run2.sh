#!/bin/bash
# Second device call (ninth session): do the GPU's TF32 convolutions break the ratio-1
# check, and do the three DDPO arms that collapsed in run.sh's call collapse with TF32 off?
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
D=docs/gpu/2026-11-27-sweep
timeout 60 python3 $D/ratio.py 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|it\]$" | tee $OUT/ratio.log
export NVIDIA_TF32_OVERRIDE=0
timeout 215 python3 $D/sweep.py --splits $D/splits --res /tmp/res2 --archive $OUT/results2.tgz --parallel 3 --deadline-s 200 \
  --only default_ddpo_s3,wide_ddpo_s1,wideall_ddpo_s0 2>&1 | tee $OUT/sweep2.log
for f in /tmp/res2/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep "^stage" | awk "{print \$2, \$5, \$9, \$16}" | tr '\n' ';'; echo; done
