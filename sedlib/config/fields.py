"""The strict field types of the params sections, with bounds, and their descriptions from docstrings.

Types are strict, the same way everywhere: a bool is not a number, a number is not a string, and a
quoted number (``"12"``) is a string. An integer setting takes a float with an integral value (``1e6``
is 1000000; ``2.5`` is refused), a float setting takes an integer and never NaN or infinity. A field's
description in the JSON Schema comes from the Attributes section of its class's docstring, so the
docs and the schema have one source.
"""

from __future__ import annotations

import inspect
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

from sedlib.config.training import range_violation


def _integral(value):
    """A float with an integral value as an int (``1e6`` for an integer setting); anything else unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def number(kind: type, **bounds: float) -> object:
    """The annotation of an int or float setting, with bounds ``ge``, ``gt``, ``le``, ``lt``.

    Strict (a bool or a string is refused); an int setting takes an integral float, a float setting an int
    and never NaN or infinity. Out-of-range values get `sedlib.config.training.range_violation`'s message, the one
    `TrainConfig` gives, and the bounds show in the JSON Schema.
    """

    def check(value):
        problem = range_violation(value, bounds)
        if problem:
            raise PydanticCustomError("out_of_range", "{problem}", {"problem": problem})
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


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> description, from the Attributes section of a class's Google-style docstring."""
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    docs, names = {}, []
    for line in lines[lines.index("Attributes:") + 1 :] if "Attributes:" in lines else []:
        entry = re.match(r"^    ([A-Za-z_][\w, ]*):\s*(.*)$", line)
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            docs |= dict.fromkeys(names, entry.group(2))
        elif line.startswith("        "):
            docs |= {name: f"{docs[name]} {line.strip()}" for name in names}
        elif line.strip():
            break
    return {name: text.replace("``", "`") for name, text in docs.items()}


def summary(cls: type) -> str:
    """A class's docstring up to its first section (Attributes:, Example:), as one paragraph per line."""
    text = re.split(r"\n\w+:\n", inspect.cleandoc(cls.__doc__ or ""))[0]
    return "\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n")).replace("``", "`")


def documented(*sources: type):
    """A ``json_schema_extra`` that describes a schema and its properties by the docstrings of ``sources``.

    The class the schema is made for comes last: its own docstring gives the schema's description.
    """

    def describe(schema: dict, cls: type) -> None:
        docs = {}
        for source in (*sources, cls):
            docs |= attribute_docs(source)
        for name, prop in schema.get("properties", {}).items():
            if name in docs:
                prop["description"] = docs[name]
        schema["description"] = summary(cls)

    return describe


CHECKED = ConfigDict(extra="forbid", json_schema_extra=documented())
