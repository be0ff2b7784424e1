"""`python -m learner.evaluate`: alignment and diversity of a checkpoint on a prompt split.

    python -m learner.evaluate --checkpoint (RUN_DIR | STAGE_DIR | base) [--config FILE]
        [--split train|test|all] [--images-per-prompt N | --images-per-split N] [--seed N]
        [--json OUT]

N images per prompt (or about N per split, spread evenly over its prompts) from fixed
noise (the same for every checkpoint), scored with
- clip_score: mean cosine of open_clip image/prompt embeddings (the config's clip reward),
- bert_score: mean BERTScore F1 of a caption of the image vs the prompt, through the
  config's bert_score term where it has one (its captioner: BLIP, LLaVA-style, any prompts)
  else the toy world's describer and the bundled MiniLM (toy prompts only),
- diversity: mean pairwise cosine distance (1 - cos) of the open_clip IMAGE embeddings
  among the images of one prompt, averaged over prompts,
- oracle_accuracy (toy prompts): share of images the exact checker judges correct,
- reward_<key>: every other reward term of the config (pickscore, aesthetic, remote, a
  plug-in; keyed as in training, `rewards.composite.term_keys`), unweighted mean;
each with its standard error (`learner.eval_stats`). The JSON goes to RUN/eval/ (`base`:
OUTPUT_DIR/eval/), named by checkpoint, size, seed and split (`result_name`).

This module is the command, its size flags and `evaluate`; what is evaluated and how it is
sampled and scored is `learner.evaluator`'s, where the result goes `learner.eval_report`'s.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from configs.load import ConfigError
from configs.schema import Config
from learner.eval_report import print_table, result_name, save_result, writable_error
from learner.evaluator import Evaluator, Target, clip_term, resolve
from learner.prompts import load_prompts

# a split's images are held in memory together (uint8; 0.8 MB each at 512 x 512)
MAX_IMAGES_PER_SPLIT = 20_000
TOO_MANY = f"at most {MAX_IMAGES_PER_SPLIT} images per split (held in memory together)"


def images_per_prompt(
    cfg: Config, splits: list[str], per_prompt: int | None = None, per_split: int | None = None
) -> dict[str, int]:
    """Images per prompt for each split: `per_prompt` in every split, or enough for
    `per_split` images in each (ceil(per_split / its prompts))."""
    if per_prompt is None and per_split is None:
        raise ValueError("images_per_prompt: give per_prompt or per_split")
    counts = {}
    for split in splits:
        prompts = len(load_prompts(getattr(cfg.prompts, split), f"prompts.{split}"))
        counts[split] = per_prompt if per_prompt is not None else math.ceil(per_split / prompts)
        if counts[split] * prompts > MAX_IMAGES_PER_SPLIT:
            raise ConfigError(
                f"--images-per-prompt {counts[split]}: {counts[split] * prompts} images for "
                f"the {prompts} prompts of split {split}; {TOO_MANY}"
            )
    return counts


def add_size_flags(p: argparse.ArgumentParser, per_split_default: int | None = None) -> None:
    """--images-per-prompt N | --images-per-split N (see `images_per_prompt`)."""
    size = p.add_mutually_exclusive_group()
    size.add_argument("--images-per-prompt", type=int, help="N images per prompt in every split")
    size.add_argument(
        "--images-per-split",
        type=int,
        default=per_split_default,
        help="about N images in each split, even over its prompts"
        + (f" (default {per_split_default})" if per_split_default else ""),
    )


def size_error(args: argparse.Namespace) -> str | None:
    """The one-line complaint about a size flag below 1 or above MAX_IMAGES_PER_SPLIT."""
    for flag, value in (
        ("--images-per-prompt", args.images_per_prompt),
        ("--images-per-split", args.images_per_split),
    ):
        if value is not None and value < 1:
            return f"{flag} {value}: must be >= 1"
        if value is not None and value > MAX_IMAGES_PER_SPLIT:
            return f"{flag} {value}: {TOO_MANY}"
    return None


def evaluate(target: Target, splits: list[str], per_prompt: dict[str, int], seed: int) -> dict:
    """Sample and score `splits`, `per_prompt[split]` images per prompt (`images_per_prompt`)."""
    ev = Evaluator(target)
    result = {
        "checkpoint": target.label,
        "stage": target.stage,
        "seed": seed,
        "images_per_prompt": {split: per_prompt[split] for split in splits},
        "diversity_embedding": f"open_clip {clip_term(target.cfg).model} image embedding, "
        "mean pairwise 1 - cosine within a prompt",
        "splits": {},
        "grids": {},
    }
    for split in splits:
        n = per_prompt[split]
        prompts = load_prompts(getattr(target.cfg.prompts, split), f"prompts.{split}")
        images, rows = ev.sample(prompts, n, seed)
        result["splits"][split] = ev.score(images, rows, prompts)
        pick = [i * n for i in range(min(len(prompts), 16))]
        result["grids"][split] = (images[pick], [rows[i] for i in pick])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m learner.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--checkpoint", required=True, help="RUN_DIR, STAGE_DIR or 'base'")
    p.add_argument("--config", type=Path)
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[])
    p.add_argument("--split", choices=["train", "test", "all"], default="all")
    add_size_flags(p)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json", type=Path, help="write the numbers here")
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)
    from learner.main import user_errors

    if err := size_error(args):
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.images_per_prompt is None and args.images_per_split is None:
        args.images_per_prompt = 16  # the default size
    try:
        target = resolve(args.checkpoint, args.config, args.overrides)
        splits = ["train", "test"] if args.split == "all" else [args.split]
        counts = images_per_prompt(
            target.cfg, splits, args.images_per_prompt, args.images_per_split
        )
        out_dir = (
            target.run_dir / "eval" if target.run_dir else Path(target.cfg.output_dir) / "eval"
        )
        json_path = args.json or out_dir / result_name(target.label, args)
        if err := writable_error(json_path):
            raise ConfigError(err)
        result = evaluate(target, splits, counts, args.seed)
    except (*user_errors(), ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(result)
    try:
        save_result(target, result, json_path, mlflow=not args.no_mlflow)
    except OSError as exc:  # the disk filled, or the folder went, while sampling
        print(f"error: {json_path}: cannot write the evaluation ({exc})", file=sys.stderr)
        return 2
    print(f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
