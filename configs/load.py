"""Read a YAML preset, apply `--set dotted.key=value` overrides, validate once.

Every failure becomes a `ConfigError` whose message is one line naming the file, the key
and the value, so the command line can print it and exit non-zero.
"""

from __future__ import annotations

import reprlib
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


# A document whose aliases expand to more values than this is refused (an alias bomb:
# a few lines that expand to billions of values); the presets hold a few hundred.
MAX_VALUES = 100_000


def _short(value: Any) -> str:
    """repr() of a config value, bounded in depth and length, for one-line messages."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple = 2, 4, 4, 4
    r.maxstring, r.maxother = 80, 80
    return r.repr(value)


def _check_nodes(root: yaml.Node, source: str) -> None:
    """Refuse duplicate mapping keys (a repeated section or key: YAML keeps the last one
    silently), self-referring aliases, and documents that expand past MAX_VALUES.
    Sizes are memoised per node, so an alias costs its size once, not once per use."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def walk(node: yaml.Node, path: str) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise ConfigError(f"{source}: {path or 'top level'}: a YAML alias refers to itself")
        open_nodes.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                dotted = f"{path}.{name}" if path else str(name)
                line = key.start_mark.line + 1
                if name is not None and name in first_line:
                    raise ConfigError(
                        f"{source}: duplicate key {_short(dotted)} (line {line}; first at "
                        f"line {first_line[name]}): YAML would keep only the last one"
                    )
                if name is not None:
                    first_line[name] = line
                size += walk(key, path) + walk(value, dotted)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                size += walk(item, f"{path}.{i}" if path else str(i))
        if size > MAX_VALUES:
            raise ConfigError(
                f"{source}: {path or 'the document'} expands to more than {MAX_VALUES} values "
                "through YAML aliases; refused"
            )
        open_nodes.discard(id(node))
        sizes[id(node)] = size
        return size

    walk(root, "")


def _read_document(text: str, source: str) -> Any:
    """The Python value of one YAML document: PyYAML's safe loader, with the composed node
    graph checked by `_check_nodes` before any Python value is built from it."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{source}: YAML nested too deeply") from None
        if node is None:
            return None
        _check_nodes(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file as a mapping, by the checked safe loader; ConfigError (one line) if not."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; --config takes a YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = _read_document(text, str(path))
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
        value = _read_document(raw, f"{source}: --set {key}") if raw.strip() else raw
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
        return f"{source}: unknown key '{key}' (value {_short(err['input'])})"
    if len(msg) > 300:  # a check that printed a long value
        msg = msg[:300] + "..."
    if not key:  # a cross-field check: the message names its keys and values itself
        return f"{source}: {msg}"
    value = _lookup(data, loc) if loc else err.get("input")
    return f"{source}: {key} = {_short(value)}: {msg}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The validated config from a preset (default: the toy B² run) plus overrides."""
    path = Path(path) if path is not None else DEFAULT_PRESET
    data = read_yaml(path)
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
