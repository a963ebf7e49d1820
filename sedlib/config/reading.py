"""Reading params files and ``--set`` overrides: YAML with YAML 1.2 numbers, merging, paths.

PyYAML reads YAML 1.1, where ``1e-3`` (no dot in the mantissa) is a string. Params files and ``--set``
values are read with `ParamsLoader`, whose floats follow YAML 1.2: ``1e-3``, ``5e-4``, ``1e6`` and
``-2.5E+3`` are numbers, as people write them (``1_000`` is the integer 1000).
"""

from __future__ import annotations

import copy
import json
import os
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


def format_overrides(overrides: Mapping, prefix: str = "") -> list[str]:
    """The ``KEY=VALUE`` assignments of a nested mapping of overrides: the inverse of `parse_overrides`.

    Example:
        >>> format_overrides({"train": {"lr": 0.001}, "models": {"sed_a2d": {"lam": 0.7, "name": "x"}}})
        ['train.lr=0.001', 'models.sed_a2d.lam=0.7', 'models.sed_a2d.name=x']
    """
    flat = []
    for key, value in overrides.items():
        if isinstance(value, Mapping) and value:
            flat += format_overrides(value, f"{prefix}{key}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            flat.append(f"{prefix}{key}={text}")
    return flat


def read_overrides(overrides: Mapping | str | None) -> dict:
    """Overrides as a notebook's ``overrides`` parameter may hold them: a mapping, or its YAML/JSON text.

    ``papermill -p overrides '{"train": {"epochs": 1}}'`` passes a string; Lab and the runner pass a mapping.

    Example:
        >>> read_overrides('{"train": {"epochs": 1}}'), read_overrides("train: {lr: 1e-3}"), read_overrides("")
        ({'train': {'epochs': 1}}, {'train': {'lr': 0.001}}, {})

    Raises:
        ConfigError: the text is not YAML, or not a mapping.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, str):
        try:
            overrides = yaml.load(overrides, Loader=ParamsLoader) or {}
        except yaml.YAMLError as error:
            problem = getattr(error, "problem", None) or error
            raise ConfigError(f"overrides: not valid YAML or JSON ({problem})") from None
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"overrides: expected a mapping such as {{train: {{epochs: 1}}}}, got {type(overrides).__name__} "
            f"{overrides!r}"
        )
    return dict(overrides)


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
    """An absolute path as is; a relative one relative to the project root (notebooks run from anywhere).

    This is the rule for paths inside params files and notebook parameters. Paths typed on a command line
    are taken from the working directory instead (`from_working_directory`). Either way ``..`` is taken out,
    so that one file has one name (the one a run directory records).
    """
    return Path(os.path.normpath(PROJECT_ROOT / path))


def project_relative(path: str | Path) -> str:
    """A file's one name, as a run directory records it and a notebook parameter takes it.

    Relative to the project root when it lies under it (`resolve_path`'s rule for a relative ``path``), else
    absolute; ``..`` taken out.

    Example:
        >>> project_relative(PROJECT_ROOT / "notebooks" / ".." / "params" / "smoke.yaml")
        'params/smoke.yaml'
        >>> project_relative("/elsewhere/study.yaml")
        '/elsewhere/study.yaml'
    """
    path = resolve_path(path)
    return path.relative_to(PROJECT_ROOT).as_posix() if path.is_relative_to(PROJECT_ROOT) else str(path)


def from_working_directory(path: str | Path) -> str:
    """A path typed on a command line, made absolute from the working directory (where the user stands).

    Example:
        >>> import os
        >>> from_working_directory("params/smoke.yaml") == os.path.join(os.getcwd(), "params/smoke.yaml")
        True
        >>> from_working_directory("notebooks/../params/smoke.yaml") == from_working_directory("params/smoke.yaml")
        True
    """
    return os.path.normpath(Path.cwd() / path)
