"""Prompt files: plain UTF-8 text, one prompt per line."""

from __future__ import annotations

import warnings
from pathlib import Path

from configs.load import resolve_path


class PromptFileError(ValueError):
    """A prompt file that cannot be used; str() is one line naming the file."""


def load_prompts(path: str | Path, key: str = "prompts") -> list[str]:
    """Non-empty, stripped lines in file order; duplicates are dropped with a warning."""
    p = resolve_path(str(path))
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PromptFileError(f"{key} = {str(path)!r}: prompt file not found") from None
    except IsADirectoryError:
        raise PromptFileError(f"{key} = {str(path)!r}: is a directory, not a prompt file") from None
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{key} = {str(path)!r}: not UTF-8 text (byte {exc.start})") from None
    prompts: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        prompt = line.strip()
        if not prompt:
            continue
        if prompt in seen:
            warnings.warn(f"{p}: duplicate prompt {prompt!r} dropped", stacklevel=2)
            continue
        seen.add(prompt)
        prompts.append(prompt)
    if not prompts:
        raise PromptFileError(f"{key} = {str(path)!r}: prompt file is empty")
    return prompts
