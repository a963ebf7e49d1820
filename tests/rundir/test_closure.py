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


#: Imported once before the forks of `loaded_modules` (most of a stage's import time); none of them imports the
#: package a test follows, so which of its modules a stage loads does not change (torchvision and timm import
#: through `sedlib._compat`, which the stages load).
THIRD_PARTY = ("numpy", "pandas", "torch", "matplotlib.pyplot", "h5py", "scipy", "sklearn", "IPython")

LOADED = """
import importlib, json, os, sys
sys.path.insert(0, {parent!r})
for name in {third_party!r}:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
found = {{}}
for key, imports in {imports!r}.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a process as fresh as the parent, as far as the package goes
        os.close(read)
        exec(imports)
        files = [m.__file__ for n, m in list(sys.modules.items()) if n.split(".")[0] == {package!r}
                 and getattr(m, "__file__", None)]
        os.write(write, json.dumps(files).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as handle:
        found[key] = json.loads(handle.read())
    assert os.waitpid(pid, 0)[1] == 0, key
print(json.dumps(found))
"""


def loaded_modules(notebooks: dict, package_dir, third_party=THIRD_PARTY) -> dict:
    """``{key: the package's module files that executing the notebook's import statements loads}``, each in a
    process of its own (forked from one that imported the heavy third-party libraries once)."""
    imports = {}
    for key, notebook in notebooks.items():
        tree = ast.parse(notebook.read_text())
        nodes = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
        imports[key] = "\n".join(ast.unparse(node) for node in nodes)
    script = LOADED.format(
        parent=str(package_dir.parent), third_party=third_party, imports=imports, package=package_dir.name
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=package_dir.parent)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    return {key: {closure.Path(path).resolve() for path in files} for key, files in found.items()}


def outside_closure(loaded, notebook, package_dir) -> list[str]:
    """The package's modules that ``notebook`` loads but its closure lacks."""
    return sorted(str(path) for path in loaded - set(closure.import_closure(notebook, package_dir=package_dir)))


def test_the_check_catches_a_module_missing_from_a_closure(package):
    (package / "notebook.py").write_text("import pkg.dynamic\n")
    loaded = loaded_modules({"notebook": package / "notebook.py"}, package / "pkg", ())["notebook"]
    assert outside_closure(loaded, package / "notebook.py", package / "pkg") == [str(package / "pkg" / "d.py")]


def test_every_sedlib_module_a_stage_loads_is_in_its_closure():
    notebooks = {stage: runner.notebook_source(stage) for stage in STAGE_NAMES}
    loaded = loaded_modules(notebooks, closure.PACKAGE_DIR)
    for stage, notebook in notebooks.items():
        assert outside_closure(loaded[stage], notebook, closure.PACKAGE_DIR) == [], stage
        assert len(loaded[stage]) > 10, stage  # the stage's imports ran


def test_the_former_hand_lists_of_training_and_evaluation_code_are_within_the_closures():
    package = closure.PACKAGE_DIR
    trained_by = {path.name for path in closure.import_closure(package / "study" / "models.py")}
    assert {"ensemble.py", "losses.py", "optim.py", "schedules.py", "train.py"} <= trained_by
    evaluated_by = {path.name for path in closure.import_closure(package / "study" / "predictions.py")}
    assert {"ensemble.py", "evaluate.py", "metrics.py", "protocols.py", "scores.py"} <= evaluated_by
    assert training.training_code_hash() == closure.module_code_hash(package / "study" / "models.py")
