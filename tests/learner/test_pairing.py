"""Standard errors of evaluation metrics, and which evaluations compare ranks."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import torch
import torch.nn.functional as F

from configs.load import PROJECT_ROOT
from learner import eval_stats
from learner.pairing import choose, final_evals, ranking


def test_diversity_jackknife_matches_leaving_each_image_out():
    emb = F.normalize(torch.randn(9, 5, generator=torch.Generator().manual_seed(0)), dim=-1)

    def mean_distance(e: torch.Tensor) -> float:
        n = len(e)
        d = 1 - e @ e.T
        return float(d[~torch.eye(n, dtype=torch.bool)].mean())

    value, se = eval_stats.diversity(emb)
    assert math.isclose(value, mean_distance(emb), rel_tol=1e-6)
    loo = np.array([mean_distance(torch.cat([emb[:i], emb[i + 1 :]])) for i in range(9)])
    want = math.sqrt(8 / 9 * ((loo - loo.mean()) ** 2).sum())
    assert math.isclose(se, want, rel_tol=1e-5)
    assert eval_stats.diversity(emb[:1]) == (0.0, 0.0)


def test_stderr_stored_or_binomial_for_older_results():
    values = np.array([1.0, 0.0, 1.0, 1.0])
    assert math.isclose(eval_stats.mean_stderr(values), values.std(ddof=1) / 2)
    old = {"images": 400, "oracle_accuracy": 0.3, "clip_score": 0.2}
    assert math.isclose(eval_stats.stderr(old, "oracle_accuracy"), math.sqrt(0.3 * 0.7 / 400))
    assert eval_stats.stderr(old, "clip_score") is None
    assert eval_stats.stderr({**old, "stderr": {"clip_score": 0.01}}, "clip_score") == 0.01


def _eval(stage, per_prompt, seed, accuracy, prompts=("a", "b")):
    n = per_prompt * len(prompts)
    split = {
        "images": n,
        "oracle_accuracy": accuracy,
        "clip_score": 0.2,
        "per_prompt": {p: {} for p in prompts},
        "stderr": {"oracle_accuracy": math.sqrt(accuracy * (1 - accuracy) / n)},
    }
    return {
        "stage": stage,
        "seed": seed,
        "images_per_prompt": {"test": per_prompt},
        "splits": {"test": split},
    }


def test_only_paired_evaluations_are_ranked():
    labels = ["a", "b"]
    # run a evaluated at two sizes, run b at the smaller one only: the shared size is shown
    a = [_eval(3, 200, 1234, 0.40), _eval(3, 50, 1234, 0.38), _eval(1, 200, 1234, 0.1)]
    b = [_eval(3, 200, 1234, 0.30)]
    choice = choose(labels, [final_evals(a, "test"), final_evals(b, "test")], "test")
    assert choice.problem is None and [e["images_per_prompt"]["test"] for e in choice.evals] == [
        200,
        200,
    ]
    line = ranking(labels, "test", choice)
    assert line.startswith("Ranking on test by oracle_accuracy (± standard error; 400 images")
    assert "a 0.4000 ± 0.0245 > b 0.3000 ± 0.0229" in line  # 3 standard errors apart

    close = [_eval(3, 200, 1234, 0.32)]
    line = ranking(labels, "test", choose(labels, [final_evals(a, "test"), close], "test"))
    assert "a 0.4000 ± 0.0245 > b" in line
    near = [_eval(3, 200, 1234, 0.37)]
    line = ranking(labels, "test", choose(labels, [final_evals(a, "test"), near], "test"))
    assert "a 0.4000 ± 0.0245 ≈ b 0.3700" in line  # within the noise

    for other, what in (
        (_eval(3, 20, 1234, 0.5), "size"),
        (_eval(3, 200, 7, 0.5), "noise seed"),
        (_eval(3, 200, 1234, 0.5, prompts=("c", "d")), "prompts"),
    ):
        choice = choose(labels, [final_evals(a, "test"), [other]], "test")
        line = ranking(labels, "test", choice)
        assert line.startswith(f"Not ranked: the test evaluations differ in {what} ("), line
        assert "a: 400 images (200 a prompt), seed 1234" in line

    assert ranking(labels, "test", choose(labels, [final_evals(a, "test"), []], "test")) is None


def test_the_default_comparison_folders_are_ignored_by_git():
    for path in ("comparison/comparison.md", "experiment/summary.md"):
        out = subprocess.run(["git", "check-ignore", "-q", path], cwd=PROJECT_ROOT)
        assert out.returncode == 0, path
