"""No unpickling of files a user can hand in."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["actors", "bench", "cluster", "configs", "diffusion", "learner", "rewards", "toyworld"]


def test_no_pickle_or_unsafe_torch_load_in_the_code():
    bad = []
    pattern = re.compile(r"pickle\.loads?\(|torch\.load\(|cloudpickle\.loads?\(")
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and "weights_only=True" not in line:
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)
