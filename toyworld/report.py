"""Print the toy world's recorded baselines (and the RL check, once run) as a table.

    python -m toyworld.report [--dir DIR] [--json OUT]

Reads DIR/baselines.json (written by `toyworld.build`) and, where present, DIR/rl_check.json
(written by `tools.rl_check`); `write_build_md` renders the same numbers into DIR/BUILD.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toyworld.clip import ASSETS_DIR


def load_records(directory: Path) -> tuple[dict, dict | None]:
    path = directory / "baselines.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `python -m toyworld.build` first")
    baselines = json.loads(path.read_text(encoding="utf-8"))
    rl_path = directory / "rl_check.json"
    rl = json.loads(rl_path.read_text(encoding="utf-8")) if rl_path.is_file() else None
    return baselines, rl


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def rows(b: dict, rl: dict | None) -> list[tuple[str, str]]:
    sp = b["sampler"]
    out = [
        ("sampler", f"DDIM {sp['num_steps']} steps, eta {sp['eta']}, CFG {sp['guidance_scale']}"),
    ]
    for split in ("train", "test"):
        a = b["pipeline"][split]
        out.append(
            (
                f"pipeline, {split} prompts ({a['images']} images)",
                f"exact {_pct(a['correct'])} (se {_pct(a['correct_se'])}), "
                f"partial {a['partial']:.3f}",
            )
        )
    for split, a in b.get("default_prompts", {}).items():
        out.append(
            (
                f"pipeline, default preset's {split} prompts ({Path(a['file']).name}, "
                f"{a['images']} images)",
                f"exact {_pct(a['correct'])} (se {_pct(a['correct_se'])}), "
                f"partial {a['partial']:.3f}",
            )
        )
    c = b["clip"]
    out.append((f"CLIP top-1 caption true, {c['renders']} renders", _pct(c["top1"])))
    out.append(
        (
            "CLIP own caption > near miss",
            ", ".join(f"{k} {_pct(v)}" for k, v in c["hard_negatives"].items()),
        )
    )
    for split in ("train", "test"):
        g = b["agreement"][split]
        out.append(
            (
                f"CLIP agrees with checker, {split}",
                f"{_pct(g['agreement'])} of {g['pairs']} (correct, wrong) pairs",
            )
        )
    if rl:
        for split in ("train", "test"):
            before, after = rl["before"][split], rl["after"][split]
            out.append(
                (
                    f"RL check ({rl['reward']}), {split}",
                    f"exact {_pct(before['correct'])} -> {_pct(after['correct'])}, "
                    f"partial {before['partial']:.3f} -> {after['partial']:.3f}",
                )
            )
        out.append(("RL check run", f"{rl['stages']} stages, {rl['seconds']['train']:.0f} s"))
    t = b["times_s"]
    out.append(("build time", ", ".join(f"{k} {v:.0f} s" for k, v in t.items())))
    out.append(("assets", f"{b['asset_bytes'] / 1e6:.1f} MB"))
    return out


def table(b: dict, rl: dict | None) -> str:
    items = rows(b, rl)
    width = max(len(k) for k, _ in items)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in items)


def write_build_md(directory: Path) -> Path:
    b, rl = load_records(directory)
    lines = [
        "# Toy world build record",
        "",
        "Written by `toyworld.build` (and `tools.rl_check`); the numbers are in",
        "`baselines.json` / `rl_check.json` beside this file. Print them with",
        "`python -m toyworld.report`.",
        "",
        f"- command: `{b['command']}` (seed {b['seed']}, {b['torch_threads']} torch threads)",
        f"- date: {b['date']}",
        *(
            [f"- baselines measured again: `{r['command']}`, {r['date']}, {r['seconds']:.0f} s"]
            if (r := b.get("remeasured"))
            else []
        ),
        "- samples: `python -m tools.world_samples` draws the images the baselines measure",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows(b, rl)),
    ]
    if rl:
        lines += ["", "## RL check", "", f"`{rl['command']}`", "", rl.get("note", "")]
    path = directory / "BUILD.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the toy world's recorded baselines.")
    parser.add_argument("--dir", type=Path, default=ASSETS_DIR)
    parser.add_argument("--json", type=Path, default=None, help="also write them as JSON here")
    args = parser.parse_args(argv)
    b, rl = load_records(args.dir)
    print(table(b, rl))
    if args.json:
        args.json.write_text(
            json.dumps({"baselines": b, "rl_check": rl}, indent=2) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()
