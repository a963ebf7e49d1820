"""The runner's command line (``python -m sedlib.run``) with a minimal notebook for every stage.

    python -m tests.helpers.kernel_runner [--worker] params/smoke.yaml --run-dir DIR --force --stages 02_train_a2d

Each stage starts a real notebook kernel through papermill, as the runner always does, but its notebook
(``tests/helpers/waiting_notebook.py``) only waits; with ``--worker`` the kernel first starts a process of its
own that would outlive it (as a data-loader worker can). For the tests of what a killed, terminated or
interrupted runner leaves behind, in a few seconds instead of a stage's real work.
"""

import os
import sys
from pathlib import Path

from sedlib import run as runner

WAITING_NOTEBOOK = Path(__file__).with_name("waiting_notebook.py")

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if arguments[:1] == ["--worker"]:
        os.environ["SED_TEST_WORKER"] = "1"
        arguments = arguments[1:]
    runner.notebook_source = lambda stage_name: WAITING_NOTEBOOK
    sys.exit(runner.main(arguments))
