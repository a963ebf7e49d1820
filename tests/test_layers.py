"""The package's layers: each module imports only from its own layer and the layers below it.

base (``sedlib``, errors, progress, device, _compat) < settings (``sedlib.config``) < the method and its evaluation
(``sedlib.method``, ``sedlib.eval``) and, beside them, the inputs (``sedlib.backbones``, ``sedlib.features``,
``sedlib.data``) < the run directory (``sedlib.rundir``: it reads the split plan of ``sedlib.data``) < the stages
(``sedlib.study``) < the report (``sedlib.report``) < the commands (``python -m sedlib.run | cache | bench``, the
``sedlib`` command). The method and the inputs do not import each other; the report does not import the stages.
Imports inside functions count too.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sedlib"

LAYERS = {
    "base": ("sedlib", "sedlib.errors", "sedlib.progress", "sedlib.device", "sedlib._compat"),
    "settings": ("sedlib.config",),
    "core": ("sedlib.method", "sedlib.eval"),
    "inputs": ("sedlib.backbones", "sedlib.features", "sedlib.data"),
    "rundir": ("sedlib.rundir",),
    "study": ("sedlib.study",),
    "report": ("sedlib.report",),
    "entry": ("sedlib.run", "sedlib.cache", "sedlib.bench", "sedlib.cli"),
}
ALLOWED = {
    "base": {"base"},
    "settings": {"base", "settings"},
    "core": {"base", "settings", "core"},
    "inputs": {"base", "settings", "inputs"},
    "rundir": {"base", "settings", "inputs", "rundir"},
    "study": {"base", "settings", "core", "inputs", "rundir", "study"},
    "report": {"base", "settings", "rundir", "report"},
    "entry": {"base", "settings", "core", "inputs", "rundir", "study", "report"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a module: the longest prefix any layer declares."""
    best = max(
        ((prefix, layer) for layer, prefixes in LAYERS.items() for prefix in prefixes
         if module == prefix or module.startswith(prefix + ".")),
        key=lambda entry: len(entry[0]),
        default=None,
    )  # fmt: skip
    assert best is not None, f"{module} belongs to no layer; add it to LAYERS in tests/test_layers.py"
    return best[1]


def is_module(name: str) -> bool:
    path = PACKAGE.parent / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def sedlib_imports(path: Path) -> set[str]:
    """Every ``sedlib`` module a file imports, at the top or inside a function.

    ``from sedlib.study import models`` imports the module ``sedlib.study.models``;
    ``from sedlib import PROJECT_ROOT`` imports from ``sedlib``.
    """
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name.split(".")[0] == "sedlib"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sedlib":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                imported.add(submodule if is_module(submodule) else node.module)
    return imported


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_a_module_imports_only_its_own_layer_and_those_below(path):
    module = module_name(path)
    layer = layer_of(module)
    for imported in sorted(sedlib_imports(path)):
        assert layer_of(imported) in ALLOWED[layer], (
            f"{module} ({layer}) imports {imported} ({layer_of(imported)}); a {layer} module may import only "
            f"from {sorted(ALLOWED[layer])}"
        )


def test_every_module_has_a_layer():
    assert {layer_of(module_name(path)) for path in MODULES} == set(LAYERS)


def test_reading_a_params_file_loads_neither_torch_nor_anything_above_the_settings():
    code = (
        "import sys; from sedlib.config import load_config; load_config('params/full_cpu.yaml'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sedlib', 'torch') "
        "and not m.startswith('sedlib.config')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert loaded.stdout.strip() == "['sedlib', 'sedlib.errors']"


def imports_inside_functions(path: Path) -> list[str]:
    """The ``sedlib`` imports a file makes inside a function, as ``function: module``."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sedlib":
                    found.append(f"{function.name}: {node.module}")
                elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sedlib" for a in node.names):
                    found.append(f"{function.name}: {', '.join(a.name for a in node.names)}")
    return found


def test_no_module_imports_the_library_inside_a_function():
    """Every dependency shows at the top of its module; `sedlib.config` needs no exception (it imports no torch)."""
    inside = {module_name(path): imports_inside_functions(path) for path in MODULES}
    assert {module: found for module, found in inside.items() if found} == {}


def _check_no_circle(graph: dict[str, set[str]]) -> None:
    """Depth-first through ``module -> modules it imports``; an AssertionError names the first circle met."""
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import circle: " + " -> ".join([*trail[trail.index(module) :], module])
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_the_modules_import_each_other_without_a_circle():
    graph = {module_name(path): sedlib_imports(path) - {module_name(path)} for path in MODULES}
    # importing `sedlib.a.b` runs `sedlib/a/__init__.py` first: a module importing its own package is no circle
    _check_no_circle(
        {module: {i for i in imports if not module.startswith(i + ".")} for module, imports in graph.items()}
    )


def test_no_two_modules_share_a_name():
    """``sedlib.study.models`` and ``sedlib.method.train`` say which is which; two ``train`` modules would not."""
    names: dict[str, list[str]] = {}
    for path in MODULES:
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.stem, []).append(module_name(path))
    assert {name: modules for name, modules in names.items() if len(modules) > 1} == {}


def test_the_checks_can_fail(tmp_path):
    """A circle is reported with its modules, and an import inside a function is found."""
    with pytest.raises(AssertionError, match=r"import circle: sedlib\.a -> sedlib\.b -> sedlib\.a"):
        _check_no_circle({"sedlib.a": {"sedlib.b"}, "sedlib.b": {"sedlib.a"}, "sedlib.c": set()})
    (tmp_path / "lazy.py").write_text("def f():\n    from sedlib.eval import metrics\n    return metrics\n")
    assert imports_inside_functions(tmp_path / "lazy.py") == ["f: sedlib.eval"]
