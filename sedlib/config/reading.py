"""Reading params files and ``--set`` overrides: YAML with YAML 1.2 numbers, merging, paths.

PyYAML reads YAML 1.1, where ``1e-3`` (no dot in the mantissa) is a string. Params files and ``--set``
values are read with `ParamsLoader`, whose floats follow YAML 1.2: ``1e-3``, ``5e-4``, ``1e6`` and
``-2.5E+3`` are numbers, as people write them (``1_000`` is the integer 1000).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from sedlib import PROJECT_ROOT
from sedlib.errors import ConfigError

_FLOAT_TAG = "tag:yaml.org,2002:float"
#: Floats of the YAML 1.2 core schema; YAML 1.1 needs a dot in the mantissa, so ``1e-3`` would be a string.
_YAML12_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class ParamsLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` whose floats follow YAML 1.2: ``1e-3``, ``5e-4``, ``1e6``, ``-2.5E+3`` are numbers.

    Everything else reads as with `yaml.safe_load` (integers before floats, so ``12`` stays an int).
    """


ParamsLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ParamsLoader.add_implicit_resolver(_FLOAT_TAG, _YAML12_FLOAT, list("-+0123456789."))


class ParamsDumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that quotes the strings `ParamsLoader` would read as numbers (``"1e-3"``).

    Values written with it (``yaml.dump(values, Dumper=ParamsDumper)``) read back the same with `read_yaml`;
    `yaml.safe_dump` writes ``"1e-3"`` unquoted, a string in YAML 1.1 but a number in YAML 1.2.
    """


ParamsDumper.yaml_implicit_resolvers = ParamsLoader.yaml_implicit_resolvers


def read_yaml(path: str | Path) -> object:
    """The value of a YAML file read with `ParamsLoader` (raises `yaml.YAMLError` on invalid YAML)."""
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=ParamsLoader)


def parse_overrides(assignments: list[str]) -> dict:
    """``["train.epochs=3", "models.sed_a2d.kappa=2"]`` -> a nested mapping to merge over a params file.

    Values are read with `ParamsLoader`, as in a params file (``train.lr=1e-3`` is a float). When two
    assignments set the same key, or one sets a key inside another's value, the later one wins.

    Raises:
        ConfigError: an assignment is not ``KEY=VALUE`` with a dotted key of non-empty parts, or its value
            is not valid YAML.
    """
    overrides: dict = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        parts = key.split(".")
        if not separator or not all(part.strip() for part in parts):
            raise ConfigError(f"--set expects KEY=VALUE (e.g. --set train.epochs=3), got {assignment!r}")
        try:
            parsed = yaml.load(value, Loader=ParamsLoader)
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or error
            raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({problem})") from None
        node = overrides
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = parsed
    return overrides


def merge(base: Mapping, overrides: Mapping) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base`` (nested mappings merge, other values replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one relative to the project root (notebooks run from anywhere)."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path
