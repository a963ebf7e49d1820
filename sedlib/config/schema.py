"""The JSON Schema of a params file, and ``python -m sedlib.config``.

``python -m sedlib.config --schema`` prints the schema, made from the same classes that check a file and
described by the docstrings of their fields (one source for both). It is committed as
``params/params.schema.json`` (a test keeps it current), and the first line of each params file points
editors at it (``# yaml-language-server: $schema=params.schema.json``). ``python -m sedlib.config
--check FILE...`` checks params files and prints their problems.
"""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import TypeAdapter

from sedlib.config.entries import SWEEP_ENTRIES
from sedlib.config.reading import ConfigError, from_working_directory
from sedlib.config.study import ParamsFile, load_config

SCHEMA_FILE = "params/params.schema.json"
"""Where the JSON Schema of a params file is committed (relative to the project root)."""


def _untitled(node):
    """A JSON Schema without pydantic's ``title`` keywords (the descriptions say more)."""
    if isinstance(node, list):
        return [_untitled(item) for item in node]
    if not isinstance(node, dict):
        return node
    named = ("properties", "$defs")  # mappings of names to schemas: a key there is a name, not a keyword
    return {
        key: {name: _untitled(value) for name, value in child.items()} if key in named else _untitled(child)
        for key, child in node.items()
        if key != "title"
    }


def params_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a params file, as committed in ``params/params.schema.json``.

    The keys a complete study needs (``run_name``, ``models``, each model's ``num_members``, each sweep's
    ``model`` and ``values``) are required only of a file that does not ``extends`` another.
    """
    schema = _untitled(TypeAdapter(ParamsFile).json_schema())
    definitions = schema["$defs"]
    sweeps = {name: {"required": definitions[entry.__name__].pop("required")} for name, entry in SWEEP_ENTRIES.items()}
    standalone = {
        "required": [*schema.pop("required"), "models"],
        "properties": {
            "models": {"additionalProperties": {"required": definitions["ModelEntry"].pop("required")}},
            "sweeps": {"properties": sweeps},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "SED params file",
        **schema,
        "if": {"required": ["extends"]},
        "else": standalone,
    }


def schema_text() -> str:
    """`params_schema` as the text of ``params/params.schema.json``."""
    return json.dumps(params_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m sedlib.config --schema`` prints the JSON Schema; ``--check FILE...`` checks params files."""
    parser = argparse.ArgumentParser(prog="python -m sedlib.config", description=main.__doc__)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--schema", action="store_true", help=f"print the JSON Schema of a params file ({SCHEMA_FILE})")
    action.add_argument(
        "--check", nargs="+", metavar="FILE", help="check params files (from the working directory); 1 on problems"
    )
    args = parser.parse_args(argv)
    if args.schema:
        sys.stdout.write(schema_text())
        return 0
    failed = False
    for name in args.check:
        try:
            load_config(from_working_directory(name))
        except (ConfigError, FileNotFoundError) as error:
            print(error, file=sys.stderr)
            failed = True
        else:
            print(f"{name}: ok")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
