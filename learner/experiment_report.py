"""The summary of `learner.experiment`: statistics over seeds per preset, its markdown table,
and the generated block it keeps in a hand-written results page."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from learner.experiment_plan import SPLITS, Arm

BEGIN = "<!-- learner.experiment: begin (generated; edits inside are overwritten) -->"
END = "<!-- learner.experiment: end -->"
METRICS = ("oracle_accuracy", "clip_score", "bert_score", "diversity")


def _stats(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "values": values}


def summarise(arms: list[Arm], runs: dict[str, list[tuple[int, dict]]], base: dict) -> dict:
    """Per preset and split: mean, spread (sample std over seeds) and change from base."""
    out = {"base": {}, "presets": {}}
    for split in SPLITS:
        b = base["splits"][split]
        out["base"][split] = {m: b[m] for m in METRICS if b[m] is not None}
        out["base"][split]["images"] = b["images"]
    for arm in arms:
        entry = {"config": str(arm.path), "algorithm": arm.cfg.algorithm, "seeds": [], "splits": {}}
        entry["seeds"] = [seed for seed, _ in runs[arm.name]]
        for split in SPLITS:
            row = {}
            for m in METRICS:
                values = [r["splits"][split][m] for _, r in runs[arm.name]]
                if any(v is None for v in values):
                    continue
                row[m] = _stats(values)
                row[m]["change"] = row[m]["mean"] - out["base"][split][m]
            row["images"] = runs[arm.name][0][1]["splits"][split]["images"]
            entry["splits"][split] = row
        out["presets"][arm.name] = entry
    return out


def _pct(metric: str) -> bool:
    return metric == "oracle_accuracy"


def _cell(metric: str, stats: dict) -> str:
    scale, unit, digits = (100, " %", 1) if _pct(metric) else (1, "", 3)
    mean, std, change = stats["mean"] * scale, stats["std"] * scale, stats["change"] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit} ({change:+.{digits}f})"


def _plain(metric: str, value: float) -> str:
    return f"{value * 100:.1f} %" if _pct(metric) else f"{value:.3f}"


def _training_times(summary: dict) -> list[str]:
    parts = [
        f"{name} {', '.join(f'{t:.0f}' for t in entry['train_seconds'])} s"
        for name, entry in summary["presets"].items()
        if entry.get("train_seconds") and None not in entry["train_seconds"]
    ]
    if not parts:
        return []
    return ["Training time per run (each run's summary.json): " + "; ".join(parts) + ".", ""]


def run_seconds(run_dir: Path) -> float | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()).get("seconds") if path.is_file() else None


def summary_markdown(summary: dict, command: str, images_dir: str, seconds: float) -> str:
    from learner.budget import spend_lines

    metrics = [m for m in METRICS if m in summary["base"]["train"]]
    lines = [
        "### Presets compared over seeds (`learner.experiment`)",
        "",
        f"Command: `{command}` (this invocation: {seconds / 60:.1f} min; runs and evaluations"
        " kept from an earlier invocation are not counted in it).",
        "",
        *_training_times(summary),
        *spend_lines(summary),
        "| preset | seeds | split | " + " | ".join(metrics) + " |",
        "|" + "---|" * (3 + len(metrics)),
    ]
    base = summary["base"]
    for split in SPLITS:
        cells = " | ".join(_plain(m, base[split][m]) for m in metrics)
        lines.append(f"| base | - | {split} | {cells} |")
    for name, entry in summary["presets"].items():
        seeds = ", ".join(str(s) for s in entry["seeds"])
        for split in SPLITS:
            row = entry["splits"][split]
            cells = " | ".join(_cell(m, row[m]) if m in row else "-" for m in metrics)
            lines.append(f"| {name} ({entry['algorithm']}) | {seeds} | {split} | {cells} |")
    sizes = {split: base[split]["images"] for split in SPLITS}
    n = sizes["train"]
    per_split = (
        f"{n} images per split"
        if len(set(sizes.values())) == 1
        else ", ".join(f"{v} {k} images" for k, v in sizes.items())
    )
    acc = base["train"].get("oracle_accuracy")
    se = (
        f" (binomial standard error of one accuracy near {acc * 100:.0f} % on {n} images: "
        f"{100 * math.sqrt(acc * (1 - acc) / n):.1f} points)"
        if acc is not None
        else ""
    )
    lines += [
        "",
        f"Mean ± sample standard deviation over seeds (change from base in brackets); "
        f"{per_split}, the same noise for every checkpoint{se}. "
        f"diversity: {summary['diversity_embedding']}.",
        "",
        f"![reward per stage]({images_dir}/reward.png)",
        "",
        f"![held-out alignment and diversity]({images_dir}/eval.png)",
        "",
        f"![the same test prompts and noise, one column per run]({images_dir}/side_by_side.png)",
    ]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def replace_block(path: Path, block: str) -> None:
    """FILE with the generated block between BEGIN and END replaced (or appended)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    wrapped = f"{BEGIN}\n{block}{END}\n"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        text = before + wrapped + ("\n" + after if after else "")
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + wrapped
    write_atomic(path, text)
