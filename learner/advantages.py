"""From rewards to advantages: per-prompt normalisation with memory.

B² pools this stage's scores of a prompt with that prompt's scores from the last H stages;
DDPO keeps a per-prompt ring buffer and falls back to batch statistics below a minimum
count; `group` centres within each trunk's branches (GRPO-style) and scales by the trunk's
std or the prompt's pooled one (`group_scale`). Each keeps its memory
as plain lists so checkpoints can store it as JSON.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from configs.schema import AdvantageConfig

EPS = 1e-8


class Advantages:
    """Stateful normaliser; call once per stage with that stage's rewards."""

    def __init__(self, cfg: AdvantageConfig):
        self.cfg = cfg
        # prompt -> list of earlier stages' score lists (prompt_history),
        # or prompt -> flat ring buffer of scores (stat_tracker)
        self.memory: dict[str, list] = defaultdict(list)

    def __call__(
        self, prompts: list[str], trunk_ids: np.ndarray, rewards: np.ndarray
    ) -> np.ndarray:
        rewards = np.asarray(rewards, dtype=np.float64)
        prompts_arr = np.asarray(prompts, dtype=object)
        adv = np.zeros_like(rewards)
        if self.cfg.mode == "group":
            trunk_ids = np.asarray(trunk_ids)
            pooled = (  # prompt: every trunk of a prompt shares the prompt's std
                {p: rewards[prompts_arr == p].std() for p in dict.fromkeys(prompts)}
                if self.cfg.group_scale == "prompt"
                else None
            )
            for tid in np.unique(trunk_ids):
                m = trunk_ids == tid
                scale = rewards[m].std() if pooled is None else pooled[prompts_arr[m][0]]
                adv[m] = (rewards[m] - rewards[m].mean()) / (scale + EPS)
            return adv
        for prompt in dict.fromkeys(prompts):
            m = prompts_arr == prompt
            current = rewards[m]
            if self.cfg.mode == "prompt_history":
                past = [r for stage in self.memory[prompt] for r in stage]
                pool = np.concatenate([current, np.asarray(past, dtype=np.float64)])
                adv[m] = (current - pool.mean()) / (pool.std() + EPS)
                if self.cfg.history > 0:
                    self.memory[prompt].append(current.tolist())
                    del self.memory[prompt][: -self.cfg.history]
            else:  # stat_tracker
                buf = self.memory[prompt]
                buf.extend(current.tolist())
                del buf[: -self.cfg.buffer_size]
                if len(buf) < self.cfg.min_count:
                    mean, std = rewards.mean(), rewards.std()
                else:
                    mean, std = np.mean(buf), np.std(buf)
                adv[m] = (current - mean) / (std + EPS)
        return adv

    def state_dict(self) -> dict:
        return {"mode": self.cfg.mode, "memory": dict(self.memory)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.cfg.mode:
            raise ValueError(
                f"advantage state is for mode {state.get('mode')!r}, not {self.cfg.mode!r}"
            )
        self.memory = defaultdict(list, {k: list(v) for k, v in state["memory"].items()})


def within_trunk_share(rewards: np.ndarray, trunk_ids: np.ndarray) -> float:
    """Share of this stage's reward variance that lies between branches of one trunk, in
    [0, 1]: the part the trained interval can have caused (B²'s premise). Near 0, the trunks
    (composition decided before the split) explain the rewards and a pooled per-prompt
    baseline mostly selects lucky trunks. 0 when every reward is equal."""
    rewards = np.asarray(rewards, dtype=np.float64)
    trunk_ids = np.asarray(trunk_ids)
    total = float(((rewards - rewards.mean()) ** 2).sum())
    if total <= 0.0:
        return 0.0
    within = sum(
        float(((rewards[m] - rewards[m].mean()) ** 2).sum())
        for m in (trunk_ids == t for t in np.unique(trunk_ids))
    )
    return within / total
