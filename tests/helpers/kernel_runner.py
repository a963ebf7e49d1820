"""The runner's command line (``python -m sedlib.run``) with a minimal notebook for every stage.

    python -m tests.helpers.kernel_runner [--worker] [--notebook NAME] params/smoke.yaml --run-dir DIR --force ...

Each stage starts a real notebook kernel through papermill, as the runner always does, but its notebook is
``tests/helpers/<NAME>_notebook.py``: ``waiting`` (the default) only waits; with ``--worker`` the kernel first
starts a process of its own that would outlive it (as a data-loader worker can): for the tests of what a
killed, terminated or interrupted runner leaves behind, in a few seconds instead of a stage's real work.
``which_sedlib`` prints the file of the `sedlib` the kernel imports.
"""

import os
import sys
from pathlib import Path

from sedlib import run as runner

if __name__ == "__main__":
    arguments, notebook = sys.argv[1:], "waiting"
    while arguments[0] in ("--worker", "--notebook"):
        if arguments.pop(0) == "--worker":
            os.environ["SED_TEST_WORKER"] = "1"
        else:
            notebook = arguments.pop(0)
    source = Path(__file__).with_name(f"{notebook}_notebook.py")
    runner.notebook_source = lambda stage_name: source
    sys.exit(runner.main(arguments))
