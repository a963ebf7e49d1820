"""``quarto render`` at the project root: stop, and say which command renders the report.

The project root's ``_quarto.yml`` names this file as its ``pre-render`` script. Quarto runs it (with its own
Python: standard library only) before it renders anything, and stops when it exits non-zero. The report is
rendered from a run directory (`sedlib.report.render`), never from the root.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: The run whose report the message offers (the default study's).
DEFAULT_RUN = Path("runs") / "default"


def message(project_root: Path) -> str:
    """What to run instead of ``quarto render`` at the root, for the run directory as it stands."""
    run = project_root / DEFAULT_RUN
    lines = ["The report is rendered from a run directory, where the executed notebooks are, not from the root."]
    if sorted((run / "notebooks").glob("0*.ipynb")):
        lines += [
            f"{DEFAULT_RUN} has executed notebooks; render its report with",
            f"    python -m sedlib.report {DEFAULT_RUN}       (Quarto when installed, else pandoc + Typst)",
            f"or, with Quarto, after that command staged the sources there: quarto render {DEFAULT_RUN}",
        ]
    else:
        lines += [
            "Run the default study; it renders runs/default/report/index.html and index.pdf at the end:",
            "    python -m sedlib.run params/default.yaml",
        ]
    return "\n".join(lines)


def main() -> int:
    print(message(Path.cwd()), file=sys.stderr)  # Quarto runs pre-render scripts in the project root
    return 1


if __name__ == "__main__":
    sys.exit(main())
