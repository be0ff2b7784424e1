"""Read a YAML preset, apply `--set dotted.key=value` overrides, validate once.

Every failure becomes a `ConfigError` whose message is one line naming the file, the key
and the value, so the command line can print it and exit non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from configs.schema import Config

PRESET_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PRESET_DIR.parent
DEFAULT_PRESET = PRESET_DIR / "toy_b2.yaml"


class ConfigError(ValueError):
    """A config that cannot be used; str() is a one-line message for the user."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _apply_override(data: dict[str, Any], item: str, source: str) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source}: --set {item!r} must look like dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: --set {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _format_error(exc: ValidationError, data: dict[str, Any], source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    key = ".".join(str(p) for p in loc)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}' (value {err['input']!r})"
    if not key:  # a cross-field check: the message names its keys and values itself
        return f"{source}: {msg}"
    value = _lookup(data, loc) if loc else err.get("input")
    return f"{source}: {key} = {value!r}: {msg}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The validated config from a preset (default: the toy B² run) plus overrides."""
    path = Path(path) if path is not None else DEFAULT_PRESET
    data = _read_yaml(path)
    overrides = overrides or []
    for item in overrides:
        _apply_override(data, item, str(path))
    source = str(path) + (" (with --set overrides)" if overrides else "")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, data, source)) from None


def resolve_path(value: str) -> Path:
    """A path from the config: as given if it exists, else relative to the project root.

    Presets name bundled files relative to the project root, so they work from any
    working directory (and from `ray job submit --working-dir .`).
    """
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, saved beside every run."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flatten(cfg: Config) -> dict[str, str]:
    """Dotted keys -> values, for MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(node, list) and node and isinstance(node[0], dict):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        else:
            out[prefix] = str(node)

    walk("", cfg.model_dump(mode="json"))
    return out
