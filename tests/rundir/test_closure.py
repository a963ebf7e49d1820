import ast
import json
import subprocess
import sys
import textwrap

import pytest

from sedlib import run as runner
from sedlib.rundir import closure
from sedlib.rundir.declaration import STAGE_NAMES
from sedlib.study import models as training


def write(root, files):
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def package(tmp_path):
    """A package ``pkg``: ``a`` imports ``b`` inside a function, ``b`` imports ``c`` relatively, ``d`` is unused."""
    write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "import json\n",
            "pkg/a.py": "def f():\n    from pkg import b\n    return b\n",
            "pkg/b.py": "from .sub import c\n",
            "pkg/sub/c.py": "import numpy\n",
            "pkg/d.py": "",
            "pkg/dynamic.py": "import importlib\nimportlib.import_module('pkg.d')\n",
            "notebook.py": "import os\nfrom pkg.a import f\n",
        },
    )
    return tmp_path


def names(paths, root):
    return [path.relative_to(root).as_posix() for path in paths]


def test_the_closure_follows_imports_inside_functions_relative_imports_and_parent_packages(package):
    found = closure.import_closure(package / "notebook.py", package_dir=package / "pkg")
    assert names(found, package) == [
        "notebook.py", "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/sub/__init__.py", "pkg/sub/c.py"
    ]  # fmt: skip


def loaded_outside_closure(notebook, package_dir) -> list[str]:
    """The package's modules that executing the notebook's import statements loads, but its closure lacks."""
    tree = ast.parse(notebook.read_text())
    imports = "\n".join(ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom))
    script = (
        f"import sys\nsys.path.insert(0, {str(package_dir.parent)!r})\n{imports}\nimport json\n"
        f"print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
        f"if n.split('.')[0] == {package_dir.name!r} and getattr(m, '__file__', None))))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=notebook.parent)
    assert done.returncode == 0, done.stderr
    loaded = {closure.Path(path).resolve() for path in json.loads(done.stdout.splitlines()[-1])}
    return sorted(str(path) for path in loaded - set(closure.import_closure(notebook, package_dir=package_dir)))


def test_the_check_catches_a_module_missing_from_a_closure(package):
    (package / "notebook.py").write_text("import pkg.dynamic\n")
    assert loaded_outside_closure(package / "notebook.py", package / "pkg") == [str(package / "pkg" / "d.py")]


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_every_sedlib_module_a_stage_loads_is_in_its_closure(stage):
    assert loaded_outside_closure(runner.notebook_source(stage), closure.PACKAGE_DIR) == []


def test_the_former_hand_lists_of_training_and_evaluation_code_are_within_the_closures():
    package = closure.PACKAGE_DIR
    trained_by = {path.name for path in closure.import_closure(package / "study" / "models.py")}
    assert {"ensemble.py", "losses.py", "optim.py", "schedules.py", "train.py"} <= trained_by
    evaluated_by = {path.name for path in closure.import_closure(package / "study" / "predictions.py")}
    assert {"ensemble.py", "evaluate.py", "metrics.py", "protocols.py", "scores.py"} <= evaluated_by
    assert training.training_code_hash() == closure.module_code_hash(package / "study" / "models.py")
