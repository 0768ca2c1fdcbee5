"""Settings from config dataclasses: every field is reachable by its dotted path, documented once.

Each config in the project is a frozen dataclass whose fields carry a docstring saying where the default
comes from. This module reads those docstrings from the source (Python drops attribute docstrings at run
time) and applies `KEY=VALUE` overrides by dotted path through nested configs with `dataclasses.replace`,
converting each value to the field's annotated type. The CLI's `--set answer.top_k_per_speaker=10` and
`memory-r1 config` are built on it, so a new field reaches the command line with the help text it was
written with, and no option is declared twice.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


class SettingError(ValueError):
    """An override names no field, or its value does not fit the field's type."""


@dataclass(frozen=True)
class Setting:
    """One leaf field of a (nested) config."""

    path: str  # dotted, e.g. "answer.top_k_per_speaker"
    type_name: str
    default: Any
    doc: str


_DOCS: dict[type, dict[str, str]] = {}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and its bases), from its source; {} if unavailable."""
    if cls in _DOCS:
        return _DOCS[cls]
    docs: dict[str, str] = _DOCS.setdefault(cls, {})
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    module = inspect.getmodule(cls)
    return get_type_hints(cls, vars(module) if module else None)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def describe(config: DataclassInstance, prefix: str = "") -> Iterator[Setting]:
    """Every leaf setting of a config instance, nested configs flattened by dotted path."""
    cls = type(config)
    docs, hints = field_docs(cls), _hints(cls)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from describe(value, f"{path}.")
        else:
            yield Setting(path, _type_name(hints.get(f.name, Any)), value, docs.get(f.name, ""))


def _convert(raw: str, tp: Any, path: str) -> Any:
    """`raw` as a value of type `tp`: bool, int, float, str, Path, Literal, Optional and tuples of these."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        problems = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(raw, arg, path)
            except SettingError as error:
                problems.append(str(error))
        raise SettingError(problems[0] if problems else f"{path}: cannot read {raw!r}")
    if origin is typing.Literal:
        if raw in args:
            return raw
        raise SettingError(f"{path}: {raw!r} is not one of {', '.join(map(repr, args))}")
    if origin is tuple:
        item = args[0] if args else str
        return tuple(_convert(part.strip(), item, path) for part in raw.split(",") if part.strip())
    if tp is bool:
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingError(f"{path}: expected true or false, got {raw!r}")
    if tp in (int, float):
        try:
            return tp(raw)
        except ValueError:
            raise SettingError(
                f"{path}: expected {'an integer' if tp is int else 'a number'}, got {raw!r}"
            ) from None
    if tp is str:
        return raw
    if tp is Path:
        return Path(raw)
    raise SettingError(f"{path}: a {_type_name(tp)} cannot be set from the command line")


def _set(config: C, path: Sequence[str], raw: str, full: str) -> C:
    name, rest = path[0], path[1:]
    names = [f.name for f in dataclasses.fields(config)]
    if name not in names:
        raise SettingError(f"unknown setting {full!r}: {type(config).__name__} has {', '.join(names)}")
    current = getattr(config, name)
    if rest:
        if not dataclasses.is_dataclass(current) or isinstance(current, type):
            raise SettingError(f"unknown setting {full!r}: {name} has no sub-settings")
        return dataclasses.replace(config, **{name: _set(current, rest, raw, full)})
    if dataclasses.is_dataclass(current) and not isinstance(current, type):
        raise SettingError(f"{full!r} is a group of settings; set one of its fields, e.g. {full}.<field>")
    value = _convert(raw, _hints(type(config)).get(name, str), full)
    return dataclasses.replace(config, **{name: value})


def apply_overrides(config: C, overrides: Sequence[str]) -> C:
    """A copy of `config` with each "dotted.path=value" applied in order; `SettingError` if one is wrong."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"--set expects KEY=VALUE, got {item!r}")
        config = _set(config, key.strip().split("."), raw.strip(), key.strip())
    return config
