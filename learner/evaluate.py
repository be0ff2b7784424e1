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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from configs.load import ConfigError, load_config
from configs.schema import Config, RewardTerm
from diffusion.lora import attach_lora, load_lora_state
from diffusion.pipeline import load_model
from diffusion.sampler import SamplerSettings, sample_images
from learner import checkpoint, eval_stats
from learner.prompts import load_prompts
from toyworld.grammar import in_grammar

EVAL_STAGE = 1_000_000  # a noise stream no training stage uses
# a split's images are held in memory together (uint8; 0.8 MB each at 512 x 512)
MAX_IMAGES_PER_SPLIT = 20_000
TOO_MANY = f"at most {MAX_IMAGES_PER_SPLIT} images per split (held in memory together)"
METRICS = ("clip_score", "bert_score", "diversity", "oracle_accuracy")
REWARD_PREFIX = "reward_"


def metric_names(split_results: list[dict]) -> list[str]:
    """METRICS, then the reward_<key> metrics the results hold, in their order."""
    extra = [k for r in split_results for k in r if k.startswith(REWARD_PREFIX)]
    return [*METRICS, *dict.fromkeys(extra)]


@dataclass
class Target:
    """What is evaluated: the config, the LoRA (None: base model), where to report."""

    cfg: Config
    lora: dict[str, torch.Tensor] | None
    label: str
    run_dir: Path | None
    stage: int | None


def resolve(checkpoint_arg: str, config: Path | None, overrides: list[str]) -> Target:
    if checkpoint_arg == "base":
        return Target(load_config(config, overrides), None, "base", None, None)
    path = Path(checkpoint_arg)
    if (path / "state.json").is_file():  # a stage directory
        run_dir, stage_path = path.parent.parent, path
    elif (path / "config.yaml").is_file():  # a run directory
        run_dir, stage_path = path, checkpoint.latest(path)
        if stage_path is None:
            raise checkpoint.CheckpointError(f"{path}: run has no complete stage checkpoint")
    else:
        raise checkpoint.CheckpointError(
            f"--checkpoint {checkpoint_arg}: neither 'base', a run directory nor a stage directory"
        )
    cfg = load_config(config or run_dir / "config.yaml", overrides)
    state = checkpoint.load(stage_path)
    return Target(cfg, state.evaluated, f"{run_dir.name}@{stage_path.name}", run_dir, state.stage)


def _first(cfg: Config, name: str) -> int | None:
    return next((i for i, t in enumerate(cfg.rewards) if t.name == name), None)


def _clip_term(cfg: Config) -> RewardTerm:
    index = _first(cfg, "clip_score")
    if index is None:
        raise ValueError("evaluation needs a clip_score term in the config's rewards")
    return cfg.rewards[index]


def other_terms(cfg: Config) -> list[tuple[str, int]]:
    """(metric, index) of the config's terms that are not already a metric: all but the
    first clip_score and bert_score terms and the oracle (= oracle_accuracy)."""
    from rewards.composite import term_keys

    taken = {_first(cfg, "clip_score"), _first(cfg, "bert_score")}
    return [
        (REWARD_PREFIX + key, i)
        for i, (key, term) in enumerate(zip(term_keys(cfg.rewards), cfg.rewards, strict=True))
        if i not in taken and term.name != "oracle"
    ]


class Evaluator:
    def __init__(self, target: Target, device: torch.device | None = None):
        from rewards.scorers import ClipScore

        self.target = target
        cfg = target.cfg
        self.model = load_model(cfg.model, device)
        if target.lora is not None:
            attach_lora(self.model.unet, cfg.train.lora, seed=cfg.seed)
            load_lora_state(self.model.unet, target.lora, target.label)
        self.clip = ClipScore(_clip_term(cfg), self.model.device)
        bert = _first(cfg, "bert_score")
        self.bert_term = RewardTerm(name="bert_score") if bert is None else cfg.rewards[bert]
        self.bert_index = bert or 0
        self._bert = None
        self._others: list | None = None  # built at the first score: sampling needs none

    def others(self) -> list:
        """(metric, reward) of `other_terms`, built once on the model's device."""
        from rewards.registry import build

        if self._others is None:
            cfg, device = self.target.cfg, self.model.device
            self._others = [(m, build(cfg.rewards[i], device, i)) for m, i in other_terms(cfg)]
        return self._others

    def sample(self, prompts: list[str], per_prompt: int, seed: int) -> tuple[torch.Tensor, list]:
        s = self.target.cfg.sampling
        settings = SamplerSettings(
            s.num_steps, s.num_steps, 1, s.guidance_scale, s.eta, s.micro_batch
        )
        rows = [p for p in prompts for _ in range(per_prompt)]
        return sample_images(self.model, rows, settings, seed, EVAL_STAGE), rows

    def score(self, images: torch.Tensor, rows: list[str], prompts: list[str]) -> dict:
        """A split's metrics, per prompt and overall, with the overall ones' standard
        errors (`stderr`: over images; diversity: jackknife within each prompt)."""
        clip = self.clip(images, rows)
        emb = torch.cat([self.clip.embed_images(c) for c in images.split(256)]).cpu()
        bert = oracle = None
        toy = in_grammar(prompts)
        if toy or (self.bert_term.captioner or "toy") != "toy":
            from rewards.scorers import BertScore

            if self._bert is None:
                self._bert = BertScore(self.bert_term, self.model.device, self.bert_index)
            bert = self._bert(images, rows)
        if toy:
            from toyworld.checker import check_batch

            oracle = check_batch(images.permute(0, 2, 3, 1).numpy(), rows)[0].astype(float)
        others = {}
        for metric, reward in self.others():
            values = reward(images, rows)
            if values.shape != (len(rows),):
                raise ValueError(
                    f"reward term '{metric}' returned {values.shape[0]} scores for "
                    f"{len(rows)} images"
                )
            others[metric] = values
        per_prompt, diversity_stderr = {}, []
        rows_arr = np.asarray(rows, dtype=object)
        for p in prompts:
            m = rows_arr == p
            div, div_se = eval_stats.diversity(emb[torch.as_tensor(m)])
            diversity_stderr.append(div_se)
            per_prompt[p] = {
                "clip_score": float(clip[m].mean()),
                "bert_score": None if bert is None else float(bert[m].mean()),
                "diversity": div,
                "oracle_accuracy": None if oracle is None else float(oracle[m].mean()),
                **{k: float(v[m].mean()) for k, v in others.items()},
            }
        se = eval_stats.mean_stderr
        return {
            "images": len(rows),
            "clip_score": float(clip.mean()),
            "bert_score": None if bert is None else float(bert.mean()),
            "diversity": float(np.mean([v["diversity"] for v in per_prompt.values()])),
            "oracle_accuracy": None if oracle is None else float(oracle.mean()),
            **{k: float(v.mean()) for k, v in others.items()},
            "stderr": {
                "clip_score": se(clip),
                "bert_score": None if bert is None else se(bert),
                "diversity": eval_stats.mean_of_prompts_stderr(diversity_stderr),
                "oracle_accuracy": None if oracle is None else se(oracle),
                **{k: se(v) for k, v in others.items()},
            },
            "per_prompt": per_prompt,
        }


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


def writable_error(json_path: Path) -> str | None:
    """Why the result could not be written to `json_path` (None: it can), found before
    any image is sampled: its folder is made and a scratch file written and removed."""
    if json_path.is_dir():
        return f"{json_path}: is a directory; --json takes a file name"
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=json_path.parent, prefix=".probe-"):
            pass
    except OSError as exc:
        return f"{json_path.parent}: cannot write the evaluation there ({exc.strerror or exc})"
    return None


def evaluate(target: Target, splits: list[str], per_prompt: dict[str, int], seed: int) -> dict:
    """Sample and score `splits`, `per_prompt[split]` images per prompt (`images_per_prompt`)."""
    ev = Evaluator(target)
    result = {
        "checkpoint": target.label,
        "stage": target.stage,
        "seed": seed,
        "images_per_prompt": {split: per_prompt[split] for split in splits},
        "diversity_embedding": f"open_clip {_clip_term(target.cfg).model} image embedding, "
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


def print_table(result: dict) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in result["images_per_prompt"].items())
    print(f"\n{result['checkpoint']}  (images per prompt: {counts}; seed {result['seed']})")
    metrics = metric_names(list(result["splits"].values()))
    head = f"{'split':<6} {'images':>6} " + " ".join(f"{m:>15}" for m in metrics)
    print(head)
    print("-" * len(head))
    for split, r in result["splits"].items():
        cells = " ".join(f"{'-' if r.get(m) is None else format(r[m], '.4f'):>15}" for m in metrics)
        print(f"{split:<6} {r['images']:>6} {cells}")


def log_to_mlflow(target: Target, result: dict, out_dir: Path) -> str | None:
    """Into the run that made the checkpoint, else a new evaluation run."""
    from learner.grid import save_grid
    from learner.tracking import Tracker

    run_id, uri = None, None
    if target.run_dir is not None and (target.run_dir / "run.json").is_file():
        info = json.loads((target.run_dir / "run.json").read_text())
        run_id, uri = info.get("mlflow_run_id"), info.get("mlflow_tracking_uri")
    tracker = Tracker(
        target.cfg,
        out_dir,
        f"eval-{target.label}",
        run_id,
        os.environ.get("MLFLOW_TRACKING_URI") or uri,
    )
    metrics = {
        f"eval_{split}_{m}": r[m]
        for split, r in result["splits"].items()
        for m in metric_names([r])
        if r[m] is not None
    }
    tracker.metrics(target.stage if target.stage is not None else 0, metrics)
    for split, (images, captions) in result["grids"].items():
        path = save_grid(images, captions, out_dir / f"eval_grid_{target.label}_{split}.png")
        tracker.artifact(path, "eval")
    tracker.finish()
    return tracker.run_id


def save_result(target: Target, result: dict, json_path: Path, mlflow: bool = True) -> dict:
    """Log `result` to MLflow (metrics and image grids; where the config enables it and
    `mlflow`), then write it without its grids to `json_path` atomically (the grids go next
    to it as PNGs). Returns what was written, with `mlflow_run_id` where logged."""
    out_dir = json_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    if mlflow and target.cfg.logging.mlflow:
        result["mlflow_run_id"] = log_to_mlflow(target, result, out_dir)
    result.pop("grids", None)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, json_path)
    return result


def result_name(label: str, args: argparse.Namespace) -> str:
    """The default JSON name: checkpoint, size, noise seed and split, so an evaluation of
    another size or seed (of `base` above all, whose results share one folder) is written
    beside the earlier ones rather than over them."""
    size = (
        f"{args.images_per_prompt}-per-prompt"
        if args.images_per_prompt is not None
        else f"{args.images_per_split}-per-split"
    )
    return f"{label.replace('@', '_')}_{size}_seed{args.seed}_{args.split}.json"


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
