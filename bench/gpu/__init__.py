"""`python -m bench.gpu`: sampling and update throughput of SD-1.5, SD3.5-Medium or FLUX.1.

    python -m bench.gpu --out DIR [--arch sd15|sd35m|flux] [--tiny] [--device cuda|cpu]
                        [--budget-s S] [--dtypes float16 bfloat16] [--skip PART ...]
                        [--trunks B] [--branches K] [--micro-batch M]

Builds the architecture from its config values (`archs`, `networks`) with random weights,
so nothing is downloaded, as the project's `DiffusionModel` of its family (sd: UNet, CLIP
ViT-L/14, DDIM; sd3: SD3.5-Medium's MM-DiT, CLIP-L, CLIP-bigG, T5-XXL, flow matching;
flux: FLUX.1-dev's transformer, CLIP-L, T5-XXL, flow matching with the guidance
embedding), every text encoder at its real size (the T5 tokenizer is a small offline one;
prompts are padded to the family's T5 length, so T5's work is a real one). Then it runs
the project's own code on it, every denoiser call through the family interface:

  1. dense matmul peak: a large `torch.matmul` per dtype, TFLOP/s;
  2. per dtype: one guided denoiser evaluation at the sampling micro-batch, FLOPs counted
     with `FlopCounterMode`, timed -> TFLOP/s; then branch sampling with
     `diffusion.sampler.sample_branches` (B trunks x K branches) -> images per second, the
     effective TFLOP/s and peak memory; then the same work as a loop over branch indices
     (`bench.branching.per_branch_loop`) -> the branch-batching speedup (`--skip
     branch_loop`);
  3. one `learner.update.PolicyTrainer.update` (PPO-clip, LoRA on the family's attention
     projections, the preset's micro-batch and gradient checkpointing: on for sd35m and
     flux) on those trajectories -> trajectory-steps/s and TFLOP/s (useful FLOPs: a
     checkpointed recomputation is not counted);
  4. the largest micro-batch that fits: training forward + backward, and sampling (a
     guided denoiser step, the policy step and the VAE decode of that many latents; `--skip
     sampling_search`), by doubling then bisecting until `torch.cuda.OutOfMemoryError`;
  5. the update again from the sampling weights on the same trajectories (as many as the
     largest train micro-batch, one optimizer step) at the preset's micro-batch, at the
     largest, and at the largest with gradient checkpointing (`--skip variants`); then the
     largest train micro-batch with gradient checkpointing (`--skip checkpointing_search`).
TFLOP/s are also given as fractions of the measured matmul peak of the same dtype.

Each part checks the time left against the budget (counted after the imports) and is
skipped with a note when its estimate does not fit. The default budgets keep each arch's
run within 8 minutes on an H100 with the imports. Their estimates come from counted FLOPs
(`tests/bench/test_bench_gpu.py` counts them on the meta device; 1 PFLOP = 1e15) at an
assumed 300 TFLOP/s in sampling and 150 in the update (bf16; sd15 measured 210 and 125):
  sd15   420 s: recorded runs took 128 s before the update variants, which add ~80 s.
  sd35m  300 s: 2.44 TFLOP a transformer row, 2 rows a latent-step (CFG), 10.6 TFLOP a
         trajectory-step of the update. Sampling 8 x 5 images (10 steps, split 7): 608
         rows, 1.5 PFLOP, 5 s, the per-branch loop as much; the update, 16 x 7
         trajectory-steps: 1.2 PFLOP, 8 s; build ~20 s; the searches ~45 s; the variants
         (~24 trajectories each) ~40 s; the checkpointing search ~25 s: ~150 s.
  flux   300 s: 21.5 TFLOP a transformer row, 1 row a latent-step, 45.2 TFLOP a
         trajectory-step. Sampling 4 x 5 images (6 steps, split 4): 88 rows, 1.9 PFLOP,
         6 s, the per-branch loop as much; the update, 8 x 4 trajectory-steps: 1.4 PFLOP,
         10 s; build ~30 s; the forward timing ~7 s; the searches ~20 s; the variants ~10 s;
         the checkpointing search ~20 s: ~125 s.
`bench/gpu_check.sh` runs all three in one device call of about 8 minutes, with smaller
budgets and some parts skipped.
The JSON goes to DIR/bench_gpu.json (its meta records the arch and its config values),
rewritten after every part (`complete` stays false until the end); a short table is
printed last. Without a GPU (or with --device cpu) it runs the arch's tiny twin (same
classes and options, 32 px) in fp32 on one CPU thread with few steps; memory figures are
then null.
"""

from bench.gpu.budget import Budget
from bench.gpu.measure import count_flops, largest_fitting
from bench.gpu.report import table
from bench.gpu.run import RESULT_FILE, main, save

__all__ = ["RESULT_FILE", "Budget", "count_flops", "largest_fitting", "main", "save", "table"]
