"""The package's layers: each module imports only from its own layer and the layers below it.

base (``sedlib``, errors, progress, device, _compat) < settings (``sedlib.config``) < the method core
(heads, losses, optimisers, schedules, training loop, scores, metrics, protocols, evaluation, bootstrap, detectors,
published runs, benchmark) and, beside it, the inputs (backbones, feature store, data) < the pipeline
(``sedlib.pipeline``) < the command-line entry points (``python -m sedlib.run | cache | report``). The
core and the inputs do not import each other. Imports inside functions count too.
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
    "core": tuple(
        f"sedlib.{name}"
        for name in (
            "ensemble",
            "losses",
            "optim",
            "schedules",
            "train",
            "scores",
            "metrics",
            "protocols",
            "evaluate",
            "bootstrap",
            "detectors",
            "published",
            "bench",
            "step_cost",
        )
    ),  # fmt: skip
    "inputs": ("sedlib.backbones", "sedlib.features", "sedlib.data"),
    "pipeline": ("sedlib.pipeline",),
    "entry": ("sedlib.run", "sedlib.cache", "sedlib.report"),
}
ALLOWED = {
    "base": {"base"},
    "settings": {"base", "settings"},
    "core": {"base", "settings", "core"},
    "inputs": {"base", "settings", "inputs"},
    "pipeline": {"base", "settings", "core", "inputs", "pipeline"},
    "entry": {"base", "pipeline"},
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

    ``from sedlib.pipeline import training`` imports the module ``sedlib.pipeline.training``;
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
