"""Per train pair: exact accuracy on its train prompt and the mean over its four relation
sentences (held out), base and every run, from the experiment's evaluation JSONs.

    python docs/experiments/2026-11-27-relations/per_pair.py
"""

import json
from pathlib import Path

HERE = Path(__file__).parent


def accuracy(result: dict, split: str, prompt: str) -> float:
    return result["splits"][split]["per_prompt"][prompt]["oracle_accuracy"]


def main() -> None:
    base = json.loads((HERE / "base" / "base_all.json").read_text())
    runs = {
        path.name.split("_stage")[0]: json.loads(path.read_text())
        for path in sorted(HERE.glob("evals/*_all.json"))
    }
    print("pair | train: base -> " + ", ".join(runs) + " | relations: the same")
    for pair in base["splits"]["train"]["per_prompt"]:
        first, second = pair.split(" and ")
        relations = [
            p
            for p in base["splits"]["test"]["per_prompt"]
            if p.startswith(first + " ") and p.endswith(" " + second)
        ]
        row = [pair]
        for split, prompts in (("train", [pair]), ("test", relations)):
            values = [
                sum(accuracy(r, split, p) for p in prompts) / len(prompts)
                for r in (base, *runs.values())
            ]
            row.append(
                f"{100 * values[0]:.1f} -> " + ", ".join(f"{100 * v:.1f}" for v in values[1:])
            )
        print(" | ".join(row))


if __name__ == "__main__":
    main()
