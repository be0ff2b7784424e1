#!/usr/bin/env bash
# What bench.gpu still has to measure on a GPU, as one device call of about 8 minutes on an
# H100 (each part has its own budget and a hard timeout; everything lands in $OUT):
#   1. sd15 in fp16: sampling, the update, the largest train micro-batch, the update again at
#      the preset's micro-batch, at the largest and at the largest with gradient
#      checkpointing, then the largest micro-batch with checkpointing (150 s budget);
#   2. sd35m, SD3.5-Medium at 512 px in bf16, every part that fits in 130 s;
#   3. flux, FLUX.1-dev at 512 px in bf16, every part but the per-branch loop, 140 s.
# $OUT gets env.txt and, per arch, NAME.json (bench_gpu.json) and NAME.log (what it printed).
#
# The device image has torch, transformers and peft but not diffusers, pydantic or
# open_clip. Once, on a machine with network, from the repository root:
#     bash bench/gpu_check.sh --prepare      # the missing wheels into .whl/ (git-ignored)
# then the device call: command `bash bench/gpu_check.sh`, carry [".whl"], timeout_s 600.
set -u
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux2014_x86_64 --implementation cp -d .whl \
        diffusers==0.42.1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
        typing-inspection==0.4.5 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5 || exit 2
    exclude=$(git rev-parse --git-path info/exclude)
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
    ls .whl
    exit 0
fi

: "${OUT:?set OUT to the folder that comes back}"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site
fi
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    nproc
    python3 -c "import sys, torch, transformers, diffusers, peft; print(sys.version); \
print(torch.__version__, torch.version.cuda, transformers.__version__, diffusers.__version__, \
peft.__version__)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
python3 -c "import bench.gpu.run" || exit 4

# NAME TIMEOUT ARGS...: one bench.gpu run, its JSON and log into $OUT, its table printed
bench() {
    local name=$1 limit=$2
    shift 2
    timeout "$limit" python3 -m bench.gpu --out "/tmp/bench/$name" "$@" 2>&1 |
        grep -v "kept in float32" >"$OUT/$name.log"
    cp "/tmp/bench/$name/bench_gpu.json" "$OUT/$name.json" 2>/dev/null
    if grep -q '^== bench.gpu results' "$OUT/$name.log"; then
        sed -n '/^== bench.gpu results/,$p' "$OUT/$name.log"
    else # cut short by its timeout: its JSON holds the parts it finished
        tail -n 15 "$OUT/$name.log"
    fi
}

bench sd15 190 --arch sd15 --dtypes float16 --skip branch_loop sampling_search --budget-s 150
bench sd35m 170 --arch sd35m --budget-s 130
bench flux 190 --arch flux --skip branch_loop --budget-s 140
echo "gpu_check done: $(ls "$OUT")"
