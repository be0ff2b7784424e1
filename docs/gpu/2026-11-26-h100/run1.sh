#!/bin/bash
# One device call: bench.gpu (issue 6), then a large-batch toy-world RL check on the GPU (issue 3).
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; nproc; \
  python3 -c "import sys,torch,transformers,diffusers,peft,huggingface_hub as h;print(sys.version);print(torch.__version__,torch.version.cuda,transformers.__version__,diffusers.__version__,peft.__version__,h.__version__)"; } 2>&1 | tee $OUT/env.txt
python3 -c "import bench.gpu, toyworld.rl_check" || exit 4
mkdir -p $OUT/bench
timeout 440 python3 -m bench.gpu --out $OUT/bench --branches 4 --budget-s 380 2>&1 | grep -v "kept in float32" | tee $OUT/bench_gpu.log
cp $OUT/bench/bench_gpu.json $OUT/bench_gpu.json 2>/dev/null; rm -rf $OUT/bench
timeout 130 python3 -m toyworld.rl_check --reward clip --stages 16 --threads 8 \
  --set model.device=cuda --set sampling.trunks_per_stage=512 --set sampling.micro_batch=1024 \
  --set train.batch_size=256 --set train.lr=3e-4 --out $OUT/rl_check.json 2>&1 | tr '\r' '\n' | grep -v "it/s\]\|it\]$" | tee $OUT/rl_check.log
echo done
