"""``sedlib``: the project's command, installed with the package (``pip install .`` or ``make setup``).

::

    sedlib run params/smoke.yaml [--set KEY=VALUE ...]   # = python -m sedlib.run
    sedlib report runs/smoke                              # = python -m sedlib.report
    sedlib check params/*.yaml                            # = python -m sedlib.config --check
    sedlib cache params/smoke.yaml                        # = python -m sedlib.cache (also under torchrun)

Each subcommand takes the options of the module it stands for (``sedlib run --help``). Paths typed here
are taken from the working directory; run it inside a project checkout (or below one), which holds the
notebooks and params files that an installed package does not.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module with ``main(argv)``, arguments put before the user's, what it does)
COMMANDS = {
    "run": ("sedlib.run", [], "run a study: the five notebooks, then the report"),
    "report": ("sedlib.report.render", [], "render a run directory's report"),
    "check": ("sedlib.config.schema", ["--check"], "check params files without running anything"),
    "cache": ("sedlib.study.extract", [], "stage 01 without its notebook (the entry point under torchrun)"),
}


def usage() -> str:
    lines = ["usage: sedlib {" + ",".join(COMMANDS) + "} ...", ""]
    lines += [f"  {name:<8}{what}" for name, (_, _, what) in COMMANDS.items()]
    return "\n".join([*lines, "", "sedlib <command> --help shows a command's options."])


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``sedlib <command> ...`` to the command's module; 2 (and the usage) for an unknown one."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        print(usage(), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    module, prefix, _ = COMMANDS[argv[0]]
    rest = argv[1:]
    if {"-h", "--help"} & set(rest):
        prefix = []  # the module's own help
    return importlib.import_module(module).main([*prefix, *rest]) or 0
