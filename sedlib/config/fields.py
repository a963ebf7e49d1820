"""How a setting is declared: strict field types with bounds, and the `settings` decorator.

A group of settings (`sedlib.config.TrainConfig`, the sections ``data``, ``cache``, ``head``, ``eval``) is one
frozen pydantic dataclass made with `settings`: each field declares its type, range and default, and the
docstring under it describes it (pydantic's ``use_attribute_docstrings``). The same class checks a params file,
is what the code receives, and gives the JSON Schema, so the docs, the checks and the schema have one source.
Built directly by code (``TrainConfig(lam=2.0)``), it raises `sedlib.errors.SettingError` naming the setting.

Types are strict, the same way everywhere: a bool is not a number, a number is not a string, and a
quoted number (``"12"``) is a string. An integer setting takes a float with an integral value (``1e6``
is 1000000; ``2.5`` is refused), a float setting takes an integer and never NaN or infinity.

Example:
    >>> @settings
    ... class Demo:
    ...     '''A demonstration.'''
    ...
    ...     rate: number(float, ge=0, le=1) = 0.5
    ...     '''a fraction.'''
    >>> Demo(rate=2)
    Traceback (most recent call last):
    ...
    sedlib.errors.SettingError: Demo.rate must lie in [0, 1], got 2.0
"""

from __future__ import annotations

import functools
import inspect
import operator
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, ValidationError, WithJsonSchema
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import PydanticCustomError

from sedlib.config.messages import problem
from sedlib.errors import SettingError

_BOUND_TESTS = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}


def range_violation(value, bounds: Mapping) -> str | None:
    """What is wrong with a number outside ``bounds``; None when it lies inside.

    Args:
        value: a number.
        bounds: a mapping with any of ``ge``, ``gt``, ``le``, ``lt``.

    Returns:
        ``must be >= 1, got 0``, ``must lie in [0, 1), got 1.0``, or None. NaN lies outside every bound.
    """
    limits = {name: bounds[name] for name in _BOUND_TESTS if name in bounds}
    if all(_BOUND_TESTS[name](value, limit) for name, limit in limits.items()):
        return None
    low = next((f"{'[' if name == 'ge' else '('}{limits[name]:g}" for name in ("ge", "gt") if name in limits), None)
    high = next((f"{limits[name]:g}{']' if name == 'le' else ')'}" for name in ("le", "lt") if name in limits), None)
    if low and high:
        return f"must lie in {low}, {high}, got {value!r}"
    (name, limit), symbols = next(iter(limits.items())), {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return f"must be {symbols[name]} {limit:g}, got {value!r}"


def _integral(value):
    """A float with an integral value as an int (``1e6`` for an integer setting); anything else unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def number(kind: type, **bounds: float) -> object:
    """The annotation of an int or float setting, with bounds ``ge``, ``gt``, ``le``, ``lt``.

    Strict (a bool or a string is refused); an int setting takes an integral float, a float setting an int
    and never NaN or infinity. Out-of-range values get `range_violation`'s message, and the bounds show in
    the JSON Schema.
    """

    def check(value):
        violation = range_violation(value, bounds)
        if violation:
            raise PydanticCustomError("out_of_range", "{problem}", {"problem": violation})
        return value

    keywords = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}
    schema = {"type": "integer" if kind is int else "number"}
    schema |= {keywords[name]: limit for name, limit in bounds.items()}
    metadata = [Strict(), AfterValidator(check), WithJsonSchema(schema)]
    if kind is int:
        metadata.append(BeforeValidator(_integral))
    else:
        metadata.insert(1, Field(allow_inf_nan=False))
    return Annotated[(kind, *metadata)]


Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Float = number(float)
#: A size or a number of things: rows, batch sizes, widths, members.
Count = number(int, ge=1)
#: An integer that may be 0: a seed, a number of worker processes, validation rows.
Natural = number(int, ge=0)


def tidy(text: str) -> str:
    """A docstring as the JSON Schema shows it: one line per paragraph, ````code```` as ```code```."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n".join(" ".join(paragraph.split()) for paragraph in paragraphs).replace("``", "`")


def described(schema: dict, cls: type) -> None:
    """Describe a JSON Schema by the docstrings of ``cls`` and of its fields, inherited ones included.

    The properties follow the order of the fields (pydantic puts keyword-only fields last).
    """
    if "properties" in schema:
        schema["properties"] = {name: schema["properties"][name] for name in cls.__pydantic_fields__}
    for name, prop in schema.get("properties", {}).items():
        for base in cls.__mro__:
            field = getattr(base, "__pydantic_fields__", {}).get(name)
            if field is not None and field.description:
                prop["description"] = tidy(field.description)
                break
    schema["description"] = tidy(cls.__doc__ or "")


CHECKED = ConfigDict(extra="forbid", use_attribute_docstrings=True, json_schema_extra=described)
"""The pydantic configuration of every group of settings: unknown keys are errors, the docstrings describe."""


def settings(cls: type | None = None, /, *, config: ConfigDict = CHECKED, kw_only: bool = False):
    """Make ``cls`` a frozen pydantic dataclass of settings (`CHECKED`) that code can build directly.

    Built directly (``TrainConfig(lam=2.0)``, ``dataclasses.replace``), it raises `sedlib.errors.SettingError`
    naming the class and its first invalid setting; validated inside a params file (a field of another
    class), pydantic reports every problem by its key path instead (`sedlib.config.messages`).
    """
    if cls is None:
        return functools.partial(settings, config=config, kw_only=kw_only)
    checked = pydantic_dataclass(cls, frozen=True, config=config, kw_only=kw_only)
    validate = checked.__init__

    @functools.wraps(validate)
    def __init__(self, *args, **kwargs) -> None:
        try:
            validate(self, *args, **kwargs)
        except ValidationError as error:
            raise setting_error(checked.__name__, error) from None

    checked.__init__ = __init__
    return checked


def setting_error(owner: str, error: ValidationError) -> SettingError:
    """The first problem of a failed validation of ``owner``'s settings, as a `SettingError`."""
    item = error.errors(include_url=False)[0]
    cause = item.get("ctx", {}).get("error")
    if isinstance(cause, SettingError):
        return cause
    key, reason = problem(item)
    return SettingError(owner, key or "__init__", reason)
