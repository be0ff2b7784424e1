"""B²'s per-prompt normalisation (advantage.mode: prompt_history) against a computation
written apart from the code under test: the reference rule as ALGORITHM.md states it (this
stage's scores of a prompt pooled with its scores in the last H stages of the run, a stage
without the prompt still one of the H; torch's unbiased std), in torch, over a run whose
stages hold fewer trunks than there are prompts."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from configs.schema import AdvantageConfig, Config, SelectionConfig
from learner.advantages import AdvantageMemoryError, Advantages, convert_prompt_memory
from learner.selection import select
from learner.stage import stage_rows

PROMPTS = ["a cat", "a dog", "a fox", "a bee", "an owl"]
K = 5  # branches: five scores of a prompt per trunk, as in the reference


def reference_advantages(stages: list[tuple[list[str], np.ndarray]], history: int) -> list:
    """Every stage's advantages by the rule alone: a list of the last `history` stages'
    {prompt: scores} dicts, one appended per stage whatever prompts it held."""
    window: list[dict[str, torch.Tensor]] = []
    out = []
    for prompts, rewards in stages:
        r = torch.as_tensor(rewards, dtype=torch.float64)
        now = {p: r[[i for i, q in enumerate(prompts) if q == p]] for p in set(prompts)}
        stats = {}
        for p, scores in now.items():
            pooled = torch.cat([d[p] for d in window if p in d] + [scores])
            std = pooled.std() if len(pooled) > 1 else torch.tensor(0.0, dtype=torch.float64)
            stats[p] = (pooled.mean(), std)
        out.append(
            np.array(
                [
                    float((x - stats[p][0]) / (stats[p][1] + 1e-8))
                    for p, x in zip(prompts, r, strict=True)
                ]
            )
        )
        window = (window + [now])[-history:] if history else []
    return out


def _run(seed: int, n_stages: int, trunks: int) -> list[tuple[list[str], np.ndarray]]:
    """Stages of `trunks` trunks x K branches over PROMPTS (fewer trunks than prompts: some
    prompts sit stages out), rewards drawn per prompt around its own level."""
    rng = np.random.default_rng(seed)
    level = {p: rng.uniform(0.2, 0.4) for p in PROMPTS}
    stages = []
    for _ in range(n_stages):
        trunk_prompts = rng.choice(PROMPTS, size=trunks).tolist()
        prompts = [p for p in trunk_prompts for _ in range(K)]
        stages.append((prompts, np.array([level[p] + rng.normal(0, 0.03) for p in prompts])))
    return stages


def _trunk_ids(prompts: list[str]) -> np.ndarray:
    return np.repeat(np.arange(len(prompts) // K), K)


@pytest.mark.parametrize(("history", "trunks"), [(3, 2), (8, 3), (1, 1), (0, 2), (4, 7)])
def test_matches_the_reference_rule_over_a_run(history, trunks):
    stages = _run(seed=history * 10 + trunks, n_stages=14, trunks=trunks)
    expected = reference_advantages(stages, history)
    adv = Advantages(AdvantageConfig(mode="prompt_history", history=history))
    sel_cfg = SelectionConfig(tau_pos=0.5, tau_neg=-0.5)
    for (prompts, rewards), want in zip(stages, expected, strict=True):
        got = adv(prompts, _trunk_ids(prompts), rewards)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        a, b = select(sel_cfg, _trunk_ids(prompts), got), select(sel_cfg, _trunk_ids(prompts), want)
        assert a.index.tolist() == b.index.tolist()


def test_unbiased_std_is_sqrt_n_over_n_minus_1_below_the_population_one():
    rewards = np.array([0.1, 0.3, 0.2, 0.6, 0.4])
    got = Advantages(AdvantageConfig(mode="prompt_history"))(["p"] * 5, np.zeros(5), rewards)
    population = (rewards - rewards.mean()) / rewards.std()
    np.testing.assert_allclose(got * np.sqrt(5 / 4), population, rtol=1e-6)
    assert np.isclose(rewards.std(ddof=1) / rewards.std(), 1.118, atol=1e-3)  # the 12 %


def test_a_stage_without_the_prompt_still_ages_its_history():
    adv = Advantages(AdvantageConfig(mode="prompt_history", history=1))
    adv(["p", "p"], np.array([0, 0]), np.array([0.0, 2.0]))  # stage 0: p
    adv(["q", "q"], np.array([0, 0]), np.array([5.0, 6.0]))  # stage 1: q only
    # stage 2: the window is stage 1, which has no p, so p pools its own scores alone
    got = adv(["p", "p"], np.array([0, 0]), np.array([1.0, 3.0]))
    np.testing.assert_allclose(got, np.array([-1.0, 1.0]) / np.sqrt(2), rtol=1e-7)


def test_explicit_stage_indices_age_skipped_stages_and_replace_a_stage_seen_again():
    adv = Advantages(AdvantageConfig(mode="prompt_history", history=2))
    adv(["p", "p"], np.zeros(2), np.array([0.0, 10.0]), stage=0)
    # stage 0 seen again (e.g. re-run): its new scores replace the old ones
    adv(["p", "p"], np.zeros(2), np.array([4.0, 4.0]), stage=0)
    got = adv(["p", "p"], np.zeros(2), np.array([2.0, 6.0]), stage=1)
    pool = np.array([4.0, 4.0, 2.0, 6.0])
    np.testing.assert_allclose(got, (np.array([2.0, 6.0]) - 4.0) / pool.std(ddof=1))
    # stages 2 and 3 held no trunks: at stage 4 both earlier stages have left the window
    got = adv(["p", "p"], np.zeros(2), np.array([1.0, 3.0]), stage=4)
    np.testing.assert_allclose(got, np.array([-1.0, 1.0]) / np.sqrt(2), rtol=1e-7)
    assert adv.next_stage == 5


def test_state_round_trips_through_json_mid_run():
    stages = _run(seed=5, n_stages=10, trunks=2)
    whole = Advantages(AdvantageConfig(mode="prompt_history", history=3))
    first = Advantages(AdvantageConfig(mode="prompt_history", history=3))
    for prompts, rewards in stages[:6]:
        whole(prompts, _trunk_ids(prompts), rewards)
        first(prompts, _trunk_ids(prompts), rewards)
    resumed = Advantages(AdvantageConfig(mode="prompt_history", history=3))
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    for prompts, rewards in stages[6:]:
        a = whole(prompts, _trunk_ids(prompts), rewards)
        b = resumed(prompts, _trunk_ids(prompts), rewards)
        assert np.array_equal(a, b)


def _per_prompt_memory(stages: list[tuple[list[str], np.ndarray]], history: int) -> dict:
    """The memory as checkpoints stored it before per-stage history: for each prompt, its
    scores in each of the last `history` stages in which it appeared."""
    memory: dict[str, list] = {}
    for prompts, rewards in stages:
        for p in dict.fromkeys(prompts):
            kept = memory.setdefault(p, [])
            kept.append([float(r) for q, r in zip(prompts, rewards, strict=True) if q == p])
            del kept[:-history]
    return {"mode": "prompt_history", "memory": memory}


def _cfg(trunks: int, history: int) -> Config:
    return Config.model_validate(
        {
            "seed": 11,
            "sampling": {"num_steps": 6, "branches": K, "trunks_per_stage": trunks},
            "schedule": {"start": 2, "end": 4},
            "advantage": {"history": history},
        }
    )


def test_an_older_per_prompt_memory_converts_exactly_with_the_runs_sampling():
    cfg, history = _cfg(trunks=3, history=4), 4
    rng = np.random.default_rng(0)
    stages = []
    for i in range(12):
        rows = stage_rows(cfg, PROMPTS, i)
        stages.append((rows, rng.uniform(0, 1, len(rows))))
    whole = Advantages(cfg.advantage)
    for prompts, rewards in stages:
        expected = whole(prompts, _trunk_ids(prompts), rewards)
    old = json.loads(json.dumps(_per_prompt_memory(stages[:8], history)))
    converted = convert_prompt_memory(old, 7, history, lambda i: stage_rows(cfg, PROMPTS, i))
    resumed = Advantages(cfg.advantage)
    resumed.load_state_dict(converted)
    check = Advantages(cfg.advantage)
    for prompts, rewards in stages[:8]:
        check(prompts, _trunk_ids(prompts), rewards)
    assert resumed.state_dict() == check.state_dict()
    for prompts, rewards in stages[8:]:
        got = resumed(prompts, _trunk_ids(prompts), rewards)
        check(prompts, _trunk_ids(prompts), rewards)
    assert np.array_equal(got, expected)


def test_an_older_memory_that_does_not_fit_the_sampling_is_refused_in_one_line():
    cfg = _cfg(trunks=3, history=4)
    stages = [(stage_rows(cfg, PROMPTS, i), np.arange(15.0)) for i in range(6)]
    old = _per_prompt_memory(stages, 4)
    other = _cfg(trunks=2, history=4)  # another sampling: other prompts in other stages
    with pytest.raises(AdvantageMemoryError) as err:
        convert_prompt_memory(old, 5, 4, lambda i: stage_rows(other, PROMPTS, i), "run/stage_5")
    assert "\n" not in str(err.value) and str(err.value).startswith("run/stage_5: ")
    # loaded without its stages: refused, unless empty (then nothing is lost)
    with pytest.raises(AdvantageMemoryError, match="per-prompt form"):
        Advantages(cfg.advantage).load_state_dict(old)
    empty = Advantages(cfg.advantage)
    empty.load_state_dict({"mode": "prompt_history", "memory": {}})
    assert empty.stages == []
    # other modes' memory is not touched
    assert convert_prompt_memory({"mode": "group", "memory": {}}, 5, 4, None) == {
        "mode": "group",
        "memory": {},
    }


def test_resume_with_an_unconvertible_memory_is_one_line(tmp_path, capsys):
    """`python -m learner.main --resume` refuses it before Ray starts: one line, exit 2."""
    from configs.load import dump_config
    from learner import checkpoint
    from learner.checkpoint import LearnerState
    from learner.main import main

    cfg = Config.model_validate(
        {
            "output_dir": str(tmp_path),
            "run_name": "r",
            "model": {"device": "cpu"},
            "sampling": {"num_steps": 6, "branches": K, "trunks_per_stage": 3},
            "schedule": {"start": 2, "end": 4},
            "rewards": [{"name": "oracle"}],
            "logging": {"mlflow": False},
        }
    )
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    old = {"mode": "prompt_history", "memory": {"a red circle": [[0.5]]}}  # 1 score, not K
    p = torch.nn.Parameter(torch.zeros(1))
    state = LearnerState(
        0,
        4,
        1,
        {"w": torch.zeros(1)},
        torch.optim.AdamW([p]).state_dict(),
        old,
        torch.get_rng_state(),
    )
    checkpoint.save(run_dir, state)
    assert main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be converted" in err and "stage_0000" in err
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()
