"""Exact accuracy of the base model and each run of this experiment: the train split at
four eval seeds (1234 from the experiment's own evaluation, copied to evals/; 1, 2, 3
from extra_seeds.sh; 515 images each, 2,060 in all) and the held-out split at eval seed
1234 (2,060 images).

    python docs/experiments/2026-12-03-adopted/tabulate.py [--json OUT]
"""

import argparse
import json
import math
from pathlib import Path

D = Path(__file__).parent
SEEDS = (1234, 1, 2, 3)


def load(name: str) -> dict:
    if name == "base":
        main = D / "base" / "base_all.json"
    else:
        main = next((D / "evals").glob(f"{name}_stage_*_all.json"))
    full = json.loads(main.read_text())
    train = {1234: full["splits"]["train"]}
    for s in SEEDS[1:]:
        path = D / "extra" / f"{name}_train_seed{s}.json"
        if path.is_file():
            train[s] = json.loads(path.read_text())["splits"]["train"]
    return {"train": train, "test": full["splits"]["test"]}


def acc(split: dict) -> float:
    return split["oracle_accuracy"]


def se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    names = ["base"] + sorted(p.name.split("_stage_")[0] for p in (D / "evals").glob("*_all.json"))
    rows = {}
    for name in names:
        r = load(name)
        seeds = sorted(r["train"], key=SEEDS.index)
        per_seed = {s: acc(r["train"][s]) for s in seeds}
        n = sum(r["train"][s]["images"] for s in seeds)
        train = sum(per_seed[s] * r["train"][s]["images"] for s in seeds) / n
        prompts = r["train"][1234]["per_prompt"]
        per_prompt = {
            p: sum(r["train"][s]["per_prompt"][p]["oracle_accuracy"] for s in seeds) / len(seeds)
            for p in prompts
        }
        rows[name] = {
            "train_seeds": per_seed,
            "train": train,
            "train_images": n,
            "train_per_prompt": per_prompt,
            "test": acc(r["test"]),
            "test_images": r["test"]["images"],
        }
    base = rows["base"]
    head = "train (seeds " + ", ".join(map(str, SEEDS)) + ")"
    print(f"{'model':12} {head:38} {'train':>16} {'held-out':>16}")
    for name, row in rows.items():
        seeds = ", ".join(f"{100 * v:.1f}" for v in row["train_seeds"].values())
        d_tr = "" if name == "base" else f" ({100 * (row['train'] - base['train']):+.1f})"
        d_te = "" if name == "base" else f" ({100 * (row['test'] - base['test']):+.1f})"
        tr = f"{100 * row['train']:.1f}{d_tr}"
        te = f"{100 * row['test']:.1f}{d_te}"
        print(f"{name:12} {seeds:38} {tr:>16} {te:>16}")
    print(
        "\none accuracy's standard error: train"
        f" {100 * se(base['train'], base['train_images']):.1f}"
        f" points ({base['train_images']} images), held-out"
        f" {100 * se(base['test'], base['test_images']):.1f} ({base['test_images']} images)"
    )
    print("\ntrain per prompt (mean over the eval seeds), %:")
    for name, row in rows.items():
        cells = "  ".join(f"{100 * v:5.1f}" for v in row["train_per_prompt"].values())
        print(f"{name:12} {cells}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), "utf-8")


if __name__ == "__main__":
    main()
