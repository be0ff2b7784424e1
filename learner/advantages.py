"""From rewards to advantages: per-prompt normalisation with memory.

B² pools this stage's scores of a prompt with that prompt's scores from the last H stages of
the run (a stage in which the prompt was not sampled still counts as one of the H) and
divides by the unbiased (n - 1) standard deviation, as the reference code's torch `std()`
does. DDPO keeps a per-prompt ring buffer and falls back to batch statistics below a minimum
count; `group` centres within each trunk's branches (GRPO-style) and scales by the trunk's
std or the prompt's pooled one (`group_scale`). Each keeps its memory as plain lists so
checkpoints can store it as JSON.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from configs.schema import AdvantageConfig
from learner.checkpoint import CheckpointError

EPS = 1e-8


class AdvantageMemoryError(CheckpointError):
    """A checkpoint's advantage memory that cannot be used; str() is one line."""


class Advantages:
    """Stateful normaliser; call once per stage with that stage's rewards."""

    def __init__(self, cfg: AdvantageConfig):
        self.cfg = cfg
        # stat_tracker: prompt -> ring buffer of its latest scores
        self.memory: dict[str, list[float]] = defaultdict(list)
        # prompt_history: the stages of the window, oldest first, each as
        # (stage index, prompt -> that stage's scores of it, in row order)
        self.stages: list[tuple[int, dict[str, list[float]]]] = []
        # the stage a call without a stage index normalises: one past the last one seen
        self.next_stage = 0

    def __call__(
        self,
        prompts: list[str],
        trunk_ids: np.ndarray,
        rewards: np.ndarray,
        stage: int | None = None,
    ) -> np.ndarray:
        """Advantages of one stage's rewards. `stage` (prompt_history only) is the stage's
        index; without it the call is taken to be the stage after the previous call's."""
        rewards = np.asarray(rewards, dtype=np.float64)
        prompts_arr = np.asarray(prompts, dtype=object)
        if self.cfg.mode == "prompt_history":
            return self._prompt_history(prompts_arr, rewards, stage)
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
        for prompt in dict.fromkeys(prompts):  # stat_tracker
            m = prompts_arr == prompt
            current = rewards[m]
            buf = self.memory[prompt]
            buf.extend(current.tolist())
            del buf[: -self.cfg.buffer_size]
            if len(buf) < self.cfg.min_count:
                mean, std = rewards.mean(), rewards.std()
            else:
                mean, std = np.mean(buf), np.std(buf)
            adv[m] = (current - mean) / (std + EPS)
        return adv

    def _prompt_history(
        self, prompts: np.ndarray, rewards: np.ndarray, stage: int | None
    ) -> np.ndarray:
        stage = self.next_stage if stage is None else stage
        h = self.cfg.history
        # the window is stages stage - H .. stage - 1; a stage seen again replaces its record
        past = [(i, scores) for i, scores in self.stages if stage - h <= i < stage]
        adv = np.zeros_like(rewards)
        now: dict[str, list[float]] = {}
        for prompt in dict.fromkeys(prompts.tolist()):
            m = prompts == prompt
            current = rewards[m]
            pool = np.asarray(
                [r for _, scores in past for r in scores.get(prompt, ())] + current.tolist()
            )
            # one score has no spread: its advantage is 0, not 0 / 0
            std = pool.std(ddof=1) if pool.size > 1 else 0.0
            adv[m] = (current - pool.mean()) / (std + EPS)
            now[prompt] = current.tolist()
        self.stages = [(i, s) for i, s in [*past, (stage, now)] if i > stage - h]
        self.next_stage = stage + 1
        return adv

    def state_dict(self) -> dict:
        if self.cfg.mode == "prompt_history":
            return {
                "mode": self.cfg.mode,
                "next_stage": self.next_stage,
                "stages": [{"stage": i, "scores": scores} for i, scores in self.stages],
            }
        return {"mode": self.cfg.mode, "memory": dict(self.memory)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode") != self.cfg.mode:
            raise ValueError(
                f"advantage state is for mode {state.get('mode')!r}, not {self.cfg.mode!r}"
            )
        if self.cfg.mode != "prompt_history":
            self.memory = defaultdict(list, {k: list(v) for k, v in state["memory"].items()})
            return
        if "stages" not in state:
            if any(state.get("memory", {}).values()):
                raise AdvantageMemoryError(
                    "the advantage memory (advantage.mode=prompt_history) is in the per-prompt "
                    "form, which does not say in which stages each prompt was scored; convert "
                    "it with learner.advantages.convert_prompt_memory"
                )
            state = {"next_stage": 0, "stages": []}  # an empty memory converts exactly
        self.stages = [(int(e["stage"]), dict(e["scores"])) for e in state["stages"]]
        self.next_stage = int(state["next_stage"])


def convert_prompt_memory(
    state: dict,
    last_stage: int,
    history: int,
    stage_rows: Callable[[int], list[str]],
    source: str = "checkpoint",
) -> dict:
    """A prompt_history memory in the per-prompt form (prompt -> its scores in each of the
    last H stages in which it was sampled, oldest first) as the per-stage form
    `Advantages.load_state_dict` reads, after stage `last_stage`; `stage_rows(i)` is the
    prompt of every row (trunk x branch) of stage i, in row order (the run's sampling,
    which says in which stages each prompt was scored). Exact for the run's own sampling;
    a memory whose lists do not match it (another config) raises AdvantageMemoryError."""
    if state.get("mode") != "prompt_history" or "stages" in state:
        return state
    memory = state.get("memory", {})
    # each prompt's last H appearances, newest first: (stage, its rows in that stage)
    seen: dict[str, list[tuple[int, int]]] = {}
    for i in range(last_stage, -1, -1):
        rows = stage_rows(i)
        for prompt in dict.fromkeys(rows):
            kept = seen.setdefault(prompt, [])
            if len(kept) < history:
                kept.append((i, rows.count(prompt)))
    window: dict[int, dict[str, list[float]]] = {}
    for prompt in sorted(set(memory) | set(seen)):
        expected = seen.get(prompt, [])[::-1]
        stored = memory.get(prompt, [])
        if [len(s) for s in stored] != [n for _, n in expected]:
            raise AdvantageMemoryError(
                f"{source}: the per-prompt advantage memory of {prompt!r} holds "
                f"{[len(s) for s in stored]} scores per stage where the run's sampling gives "
                f"{[n for _, n in expected]}, so it cannot be converted to per-stage history "
                "exactly; resume with the run's own config or start a new run"
            )
        for (i, _), scores in zip(expected, stored, strict=True):
            if i > last_stage - history:
                window.setdefault(i, {})[prompt] = [float(r) for r in scores]
    return {
        "mode": "prompt_history",
        "next_stage": last_stage + 1,
        "stages": [{"stage": i, "scores": window[i]} for i in sorted(window)],
    }


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
