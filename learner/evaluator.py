"""What `learner.evaluate` evaluates and how it scores: a checkpoint resolved to its config
and LoRA (`Target`, `resolve`), the metrics and which of the config's reward terms become
metrics, and the `Evaluator`, which samples a split's prompts from fixed noise (the same for
every checkpoint) and scores the images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from configs.load import load_config
from configs.schema import Config, RewardTerm
from diffusion.lora import attach_lora, load_lora_state
from diffusion.pipeline import load_model
from diffusion.sampler import SamplerSettings, sample_images
from learner import checkpoint, eval_stats
from toyworld.grammar import in_grammar

EVAL_STAGE = 1_000_000  # a noise stream no training stage uses
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


def clip_term(cfg: Config) -> RewardTerm:
    """The config's first clip_score term: the clip_score metric's and the diversity's."""
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
        self.clip = ClipScore(clip_term(cfg), self.model.device)
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
