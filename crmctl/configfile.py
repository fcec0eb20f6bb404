"""Configuration files in TOML or YAML (chosen by suffix), and the line each key is written on.

Both parsers return plain dicts and lists, so validators do not care which syntax a file used;
:func:`key_lines` lets them name the line of a bad value in their error.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from crmctl.errors import ConfigError, InputError

YAML_SUFFIXES = {".yaml", ".yml"}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (TOML refuses it too; PyYAML
    would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key '{key}' is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


KeyLines = dict[tuple[str, ...], int]


def is_yaml(path: Path) -> bool:
    return path.suffix.lower() in YAML_SUFFIXES


def read(path: Path, what: str) -> str:
    """The file's text; a missing, unreadable or non-UTF-8 file is one sentence naming ``what``."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"The {what} {path} does not exist.") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"The {what} {path} is not UTF-8 text.") from exc
    except OSError as exc:
        raise InputError(f"Cannot read the {what} {path}: {exc.strerror}.") from exc


def looks_like_yaml(body: str) -> bool:
    """For text stored without its file name: YAML when it is not TOML but is a YAML mapping."""
    try:
        tomllib.loads(body)
        return False
    except tomllib.TOMLDecodeError:
        try:
            return isinstance(yaml.load(body, Loader=_StrictLoader), dict)
        except yaml.YAMLError:
            return False


def parse(body: str, *, yaml_syntax: bool, what: str, source: str, hint: str | None = None) -> dict[str, Any]:
    """TOML or YAML text -> a dict; a syntax error is one sentence with its line."""
    if yaml_syntax:
        try:
            data = yaml.load(body, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" on line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(
                f"The {what} {source} is not valid YAML{where}: {exc.problem}.", hint=hint
            ) from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"The {what} {source} is not valid YAML.", hint=hint) from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"The {what} {source} must hold a mapping of keys at its top level.", hint=hint)
        return data
    try:
        return tomllib.loads(body)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The {what} {source} is not valid TOML: {exc}.", hint=hint) from exc


def key_lines(body: str, *, yaml_syntax: bool) -> KeyLines:
    """Where each table and key is written: key path -> 1-based line (the first time it occurs;
    items of arrays share their array's path)."""
    return _yaml_key_lines(body) if yaml_syntax else _toml_key_lines(body)


def _yaml_key_lines(body: str) -> KeyLines:
    lines: KeyLines = {}
    try:
        root = yaml.compose(body)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                lines.setdefault(child, key.start_mark.line + 1)
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, path)

    if root is not None:
        walk(root, ())
    return lines


_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=""")
_INLINE_KEY = re.compile(r"""[{,]\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(r"""("[^"]*"|'[^']*'|[^.\s]+)""", dotted)
    return tuple(p.strip("\"'") for p in parts)


def _toml_key_lines(body: str) -> KeyLines:
    lines: KeyLines = {}
    table: tuple[str, ...] = ()
    for number, text in enumerate(body.splitlines(), start=1):
        header = _HEADER.match(text)
        if header:
            table = _split_key(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(text)
        if key:
            path = table + _split_key(key.group(1))
            lines.setdefault(path, number)
            brace = text.find("{", key.end())
            if brace >= 0:
                for inner in _INLINE_KEY.finditer(text, brace):
                    lines.setdefault(path + (inner.group(1).strip("\"'"),), number)
    return lines
