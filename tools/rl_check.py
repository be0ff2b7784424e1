"""Can RL move the toy world? Train in one process with the project's own stage, then
measure the checker's accuracy on the train and held-out prompts before and after.

    python -m tools.rl_check [--config FILE] [--stages N]
                             [--reward clip|partial|exact|shuffled|brightness|darkness|random]
                             [--images N] [--set dotted.key=value ...] [--lora-out FILE]

Each stage is `learner.stage.run_in_process`: the stage function the Ray driver runs (branch
sampling, reward, per-prompt advantages, selection, PPO-clip on the LoRA), on in-process
groups. The reward is
the toy CLIP's cosine score (`clip`, the preset's reward) or the checker's dense partial
credit (`partial`) or its exact 0/1 verdict (`exact`: the only one that sees relations);
`shuffled` is the exact verdict permuted at random among each trunk's branches: the same
number of selected pairs as `exact`, with no signal in which branch is paid (the verdict's
matched no-signal control); `brightness` (mean intensity) is the mechanics' own check and
`darkness` (its negative) the control: a model that merely degrades towards blank images
gains brightness too, but must lose darkness; `random` (uniform noise, independent of the
image) shows what the updates do to the model with no signal to follow. Accuracy before and
after uses the same noise seeds (paired); "before" reuses baselines.json when it measured
the same thing. Results: DIR/rl_check.json (+ BUILD.md) for the default preset's assets.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from configs.load import DEFAULT_PRESET, load_config, resolve_path
from configs.schema import Config
from diffusion.pipeline import load_model
from learner.advantages import Advantages
from learner.prompts import load_prompts
from learner.stage import run_in_process
from learner.update import PolicyTrainer
from toyworld.checker import check_batch
from toyworld.clip import ASSETS_DIR, CLIP_DIR, ToyClipScorer
from toyworld.evaluate import sample_with
from toyworld.prompts import prompt_file
from toyworld.report import write_build_md

# reward_function's names
REWARDS = ("clip", "partial", "exact", "shuffled", "brightness", "darkness", "random")


def reward_function(name: str, cfg: Config):
    if name in ("partial", "exact"):
        column = 1 if name == "partial" else 0  # dense credit, or the sparse 0/1 verdict

        def checker(images: torch.Tensor, prompts: list[str]) -> np.ndarray:
            verdict = check_batch(images.permute(0, 2, 3, 1).numpy(), prompts)
            return verdict[column].astype(float)

        return checker
    if name == "shuffled":  # the verdict's matched control: same pairs, no signal
        rng = np.random.default_rng(cfg.seed)
        k = cfg.sampling.branches  # a stage's images come trunk by trunk, k branches each

        def shuffled(images: torch.Tensor, prompts: list[str]) -> np.ndarray:
            verdict = check_batch(images.permute(0, 2, 3, 1).numpy(), prompts)[0]
            groups = verdict.astype(float).reshape(-1, k)
            return rng.permuted(groups, axis=1).reshape(-1)

        return shuffled
    if name in ("brightness", "darkness"):  # trivially controllable: the mechanics' check
        # darkness is the control: a model that merely degrades towards blank (white)
        # images gains brightness too, but must lose darkness
        sign = 1.0 if name == "brightness" else -1.0

        def brightness(images: torch.Tensor, prompts: list[str]) -> np.ndarray:
            return sign * images.float().mean(dim=(1, 2, 3)).numpy() / 255.0

        return brightness
    if name == "random":  # no signal at all: what the updates do to the model on their own
        rng = np.random.default_rng(cfg.seed)

        def random_reward(images: torch.Tensor, prompts: list[str]) -> np.ndarray:
            return rng.random(len(images))

        return random_reward
    term = next((r for r in cfg.rewards if r.name == "clip_score"), None)
    clip_dir = resolve_path(term.checkpoint).parent if term and term.checkpoint else CLIP_DIR
    return ToyClipScorer(clip_dir)


def accuracy(model, cfg: Config, prompts: list[str], images: int, seed: int, desc: str) -> dict:
    if images == 0:  # --images 0: watch the per-stage numbers only
        nan = float("nan")
        return {"images": 0, "correct": nan, "partial": nan, "correct_se": 0.0, "per_prompt": {}}
    samples = sample_with(model, cfg.sampling, prompts, images, seed, desc=desc)
    return {**samples.accuracy().as_dict(), "per_prompt": samples.per_prompt()}


def _default_assets(cfg: Config) -> bool:
    return resolve_path(cfg.model.pretrained).resolve() == (ASSETS_DIR / "pipeline").resolve()


def reusable_before(cfg: Config, images: int, seed: int) -> dict | None:
    """The baseline's numbers when it sampled exactly as this check would."""
    path = ASSETS_DIR / "baselines.json"
    if not _default_assets(cfg) or not path.is_file():
        return None
    b = json.loads(path.read_text(encoding="utf-8"))
    sp, s = b["sampler"], cfg.sampling
    same_sampler = (
        sp["num_steps"] == s.num_steps
        and sp["guidance_scale"] == s.guidance_scale
        and sp["eta"] == s.eta
        and sp["images_per_split"] == images
        and sp["seed"] == seed
    )
    if not same_sampler:
        return None
    wanted = {split: load_prompts(getattr(cfg.prompts, split)) for split in ("train", "test")}
    # the baseline sampled the packaged "all" prompt sets and the default preset's own
    recorded = [({x: prompt_file("all", x) for x in wanted}, b["pipeline"])]
    if "default_prompts" in b:
        d = b["default_prompts"]
        recorded.append(({x: resolve_path(d[x]["file"]) for x in wanted}, d))
    for files, numbers in recorded:
        if all(load_prompts(files[x]) == wanted[x] for x in wanted):
            return {x: {k: v for k, v in numbers[x].items() if k != "file"} for x in wanted}
    return None


def run(
    cfg: Config,
    reward: str,
    images: int,
    eval_seed: int,
    log=print,
    lora_out: Path | None = None,
) -> dict:
    model = load_model(cfg.model)
    train_prompts = load_prompts(cfg.prompts.train)
    test_prompts = load_prompts(cfg.prompts.test)
    t0 = time.perf_counter()
    before = reusable_before(cfg, images, eval_seed)
    if before is None:
        before = {
            "train": accuracy(model, cfg, train_prompts, images, eval_seed, "before train"),
            "test": accuracy(model, cfg, test_prompts, images, eval_seed, "before test"),
        }
    t1 = time.perf_counter()
    trainer = PolicyTrainer(model, cfg)
    advantages = Advantages(cfg.advantage)
    reward_fn = reward_function(reward, cfg)
    stages = []
    for stage in range(cfg.stages):
        res = run_in_process(trainer, advantages, reward_fn, train_prompts, cfg, stage)
        stage_images = res.batch.images.permute(0, 2, 3, 1).numpy()
        correct, partial = check_batch(stage_images, res.batch.prompts)
        m = res.metrics()
        m.update(
            {
                "stage": stage,
                "checker_correct": float(correct.mean()),
                "checker_partial": float(partial.mean()),
            }
        )
        stages.append(m)
        log(
            f"stage {stage:3d} s={res.split_step:2d} reward {m['reward_mean']:.4f} "
            f"within {m['reward_within_trunk']:.2f} "
            f"correct {m['checker_correct']:.3f} partial {m['checker_partial']:.3f} "
            f"+{res.selection.positives}/-{res.selection.negatives} loss {m['loss']:+.4f} "
            f"kl {m['approx_kl']:.2e} clip {m['clip_fraction']:.2f} "
            + (f"kl_base {m['kl_base']:.2e} " if cfg.loss.kl_coef > 0 else "")
            + f"({sum(res.seconds.values()):.0f} s)"
        )
    t2 = time.perf_counter()
    if lora_out is not None:  # the trained LoRA, as the learner's checkpoints store it
        lora_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = lora_out.with_name(f".{lora_out.name}.tmp")
        save_file({k: v.contiguous() for k, v in trainer.weights().items()}, str(tmp))
        tmp.replace(lora_out)
    after = {
        "train": accuracy(trainer.model, cfg, train_prompts, images, eval_seed, "after train"),
        "test": accuracy(trainer.model, cfg, test_prompts, images, eval_seed, "after test"),
    }
    t3 = time.perf_counter()
    return {
        "reward": reward,
        "stages": cfg.stages,
        "images_per_split": images,
        "eval_seed": eval_seed,
        "before": before,
        "after": after,
        "seconds": {"before": t1 - t0, "train": t2 - t1, "after": t3 - t2},
        "per_stage": stages,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="In-process RL check on the toy world.")
    parser.add_argument("--config", type=Path, default=DEFAULT_PRESET)
    parser.add_argument("--stages", type=int, default=None)
    parser.add_argument("--reward", choices=REWARDS, default="clip")
    parser.add_argument("--images", type=int, default=520, help="per split (default 520)")
    parser.add_argument("--eval-seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    parser.add_argument(
        "--lora-out",
        type=Path,
        default=None,
        help="write the trained LoRA here (safetensors, the checkpoints' lora.safetensors format)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    if args.stages is not None:
        overrides.append(f"stages={args.stages}")
    cfg = load_config(args.config, overrides)
    result = run(cfg, args.reward, args.images, args.eval_seed, lora_out=args.lora_out)
    result["command"] = "python -m tools.rl_check " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    for split in ("train", "test"):
        b, a = result["before"][split], result["after"][split]
        print(
            f"{split}: exact {b['correct']:.3f} -> {a['correct']:.3f} "
            f"(se {a['correct_se']:.3f}), partial {b['partial']:.3f} -> {a['partial']:.3f}"
        )
    print(f"train time {result['seconds']['train']:.0f} s for {cfg.stages} stages")
    out = args.out
    if out is None and _default_assets(cfg) and args.reward == "clip":
        out = ASSETS_DIR / "rl_check.json"
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if out.parent == ASSETS_DIR and (ASSETS_DIR / "baselines.json").is_file():
            write_build_md(ASSETS_DIR)


if __name__ == "__main__":
    main()
