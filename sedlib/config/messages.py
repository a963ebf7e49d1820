"""Pydantic's validation errors in the project's words: one line per problem, by the key as written.

``("models", "de", "member_lr", 1)`` becomes ``models.de.member_lr[1]``, pydantic's ``int_type`` becomes
``expected an integer, got True``, unknown keys of one mapping are listed together with the known ones.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated

from pydantic import ValidationError

from sedlib.errors import SettingError

_MAPPING = "expected a mapping of keys to values, got {input}"
_REASONS = {
    "int_type": "expected an integer, got {input}",
    "int_from_float": "expected an integer, got {input}",
    "float_type": "expected a number, got {input}",
    "finite_number": "must be a finite number, got {input}",
    "string_type": "expected a string, got {input}",
    "bool_type": "expected true or false, got {input}",
    "tuple_type": "expected a list, got {input}",
    "list_type": "expected a list, got {input}",
    "dict_type": _MAPPING,
    "model_type": _MAPPING,
    "model_attributes_type": _MAPPING,
    "dataclass_type": _MAPPING,
    "literal_error": "must be {expected}, got {input}",
    "too_long": "must hold at most {max_length} values, got {input}",
}


def shown_value(value) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _path(loc: tuple) -> str:
    """``("models", "de", "member_lr", 1)`` -> ``models.de.member_lr[1]``: the key as written in the file."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def bare(kind):
    """An annotation without ``Annotated`` metadata and ``| None``."""
    while True:
        if typing.get_origin(kind) is Annotated:
            kind = typing.get_args(kind)[0]
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        else:
            return kind


def _annotation_at(root: type, loc: tuple):
    """The (bare) annotation of the value at ``loc`` of a mapping validated by the pydantic model ``root``."""
    kind = root
    for part in loc:
        fields = getattr(kind, "__pydantic_fields__", None)
        if fields is not None:
            kind = fields[part].annotation
        elif typing.get_origin(kind) is dict:
            kind = typing.get_args(kind)[1]
        else:
            args = typing.get_args(kind)
            kind = args[0] if args[-1] is Ellipsis else args[part]
        kind = bare(kind)
    return kind


def problem(item: Mapping) -> tuple[str, str]:
    """The key path and what is wrong there, for one error of pydantic's ``ValidationError.errors()``.

    Example:
        >>> problem({"loc": ("train", "lr"), "type": "float_type", "input": "fast", "msg": "..."})
        ('train.lr', "expected a number, got 'fast'")
    """
    loc, kind, context = item["loc"], item["type"], item.get("ctx", {})
    shown = {**context, "input": shown_value(item["input"])}
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return _path(loc), "is not a setting here"
    if kind == "value_error" and isinstance(context.get("error"), SettingError):
        return _path((*loc, context["error"].key)), context["error"].reason
    if kind == "value_error":
        return _path(loc), str(context.get("error"))
    if kind == "out_of_range":
        return _path(loc), item["msg"]
    return _path(loc), _REASONS[kind].format(**shown) if kind in _REASONS else f"{item['msg']}, got {shown['input']}"


def validation_problems(error: ValidationError, root: type, keys: list | None = None) -> list[str]:
    """One line per problem of a failed validation by the pydantic model ``root``, unknown keys grouped.

    With ``keys``, the top-level keys in the order the file gives them, the problems follow that order.
    """
    lines: list[str | tuple] = []
    unknown: dict[tuple, list] = {}
    items = error.errors(include_url=False)
    if keys is not None:
        items.sort(key=lambda item: keys.index(item["loc"][0]) if item["loc"] and item["loc"][0] in keys else len(keys))
    for item in items:
        loc, kind = item["loc"], item["type"]
        if kind in ("extra_forbidden", "unexpected_keyword_argument"):
            if loc[:-1] not in unknown:
                lines.append(loc[:-1])
            unknown.setdefault(loc[:-1], []).append(loc[-1])
        elif loc and loc[-1] == "[key]":
            lines.append(f"{_path(loc[:-2])}: the name {loc[-2]!r} must be a string")
        elif kind == "invalid_key":
            lines.append(f"{_path(loc[:-1]) + ': ' if loc[:-1] else ''}the key {loc[-1]!r} must be a string")
        elif kind == "missing" and isinstance(loc[-1], int):
            length = len(typing.get_args(_annotation_at(root, loc[:-1])))
            lines.append(f"{_path(loc[:-1])}: must hold {length} values, got {shown_value(item['input'])}")
        elif kind == "missing":
            lines.append(f"{_path(loc[:-1]) + ': ' if loc[:-1] else ''}missing key {loc[-1]!r}")
        else:
            lines.append(": ".join(problem(item)))
    return [line if isinstance(line, str) else _unknown_keys(root, line, unknown[line]) for line in lines]


def _unknown_keys(root: type, loc: tuple, names: list) -> str:
    known = list(_annotation_at(root, loc).__pydantic_fields__)
    if loc == ("sweeps",):
        return f"sweeps: cannot sweep {sorted(names)}; a sweep varies one of {known}"
    where = f"{_path(loc)}: unknown key(s)" if loc else "unknown top-level key(s)"
    return f"{where} {sorted(names)}; known keys are {known}"
