"""Table of the B² / DDPO comparison on the U prompts from rl_check JSONs.

python docs/experiments/2026-11-26-compare/summarise.py results/*.json
"""

import json
import statistics
import sys
from pathlib import Path

rows: dict[str, list[dict]] = {}
for name in sys.argv[1:]:
    data = json.loads(Path(name).read_text())
    rows.setdefault(Path(name).stem.split("_s")[0], []).append(data)


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


base = next(iter(rows.values()))[0]["before"]
train, test = base["train"]["correct"], base["test"]["correct"]
print(f"base: exact train {100 * train:.1f} %, test {100 * test:.1f} %")
for arm, runs in rows.items():
    cells = []
    for split in ("train", "test"):
        for key in ("correct", "partial"):
            cells.append(spread([r["after"][split][key] for r in runs]))
    per_seed = ", ".join(f"{100 * r['after']['train']['correct']:.1f}" for r in runs)
    seconds = statistics.mean(r["seconds"]["train"] for r in runs)
    print(
        f"{arm}: n={len(runs)} train exact/partial, test exact/partial (x100): {cells}; "
        f"train exact per seed {per_seed}; {seconds:.0f} s of training per run"
    )
