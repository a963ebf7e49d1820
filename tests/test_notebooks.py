"""The notebooks: paired sources in sync, a parameters cell, no logic, and every label the report embeds."""

import ast
import json
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from sedlib.pipeline.stages import STAGES

ROOT = Path(__file__).resolve().parent.parent
NAMES = [stage.name for stage in STAGES]


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_pair_is_in_sync(name):
    source = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    paired = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source) for c in source.cells] == [(c.cell_type, c.source) for c in paired.cells], (
        f"notebooks/{name}.ipynb differs from notebooks/{name}.py; run: jupytext --sync notebooks/{name}.py"
    )
    assert all(not cell.get("outputs") for cell in code_cells(paired)), f"{name}.ipynb holds outputs; clear them"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_and_no_definitions(name):
    notebook = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    parameters = [cell for cell in code_cells(notebook) if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1
    assigned = {node.targets[0].id for node in ast.parse(parameters[0].source).body}
    assert assigned == {"params_file", "run_dir", "overrides"}
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith(f"# {name[:2]} ·")
    for cell in code_cells(notebook):
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda), (
                f"{name}: notebooks hold no definitions; move the logic into sedlib"
            )


def labels_of(name):
    notebook = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    return {
        match.group(1)
        for cell in code_cells(notebook)
        for match in [re.match(r"#\| label: (\S+)", cell.source)]
        if match
    }


def test_every_embedded_label_exists():
    article = (ROOT / "report" / "index.qmd").read_text()
    embeds = re.findall(r"\{\{< embed notebooks/(\w+)\.ipynb#([\w-]+) >\}\}", article)
    assert embeds, "report/index.qmd embeds nothing"
    for notebook, label in embeds:
        assert label in labels_of(notebook), f"report/index.qmd embeds {notebook}#{label}, which has no such cell"


@pytest.mark.parametrize("name", NAMES)
def test_no_file_name_is_typed_in_a_notebook(name):
    """Output paths come from the run directory's declaration (`sedlib.pipeline.stages`), never from a literal."""
    notebook = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    for cell in code_cells(notebook):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value != notebook_default():
                assert not re.search(r"\.(csv|md|png|h5|npz|json|safetensors|ipynb)\b|/", node.value), (
                    f"{name}: {node.value!r} looks like a path; take it from RunDir.path"
                )
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                raise AssertionError(f"{name}: a path built with '/' ({ast.unparse(node)}); use RunDir.path")


def notebook_default() -> str:
    """The parameters cell's default params file, the one path a notebook may name."""
    return "params/default.yaml"


def test_jupyterlab_opens_the_py_twins_as_notebooks():
    overrides = json.loads((ROOT / ".jupyter" / "overrides.json").read_text())
    viewer = overrides["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"]
    extension = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "jupyterlab-jupytext" / "static"
    registered = "".join(path.read_text(errors="ignore") for path in extension.glob("*.js"))
    assert f'"{viewer}"' in registered or f"'{viewer}'" in registered, "jupytext registers no such viewer"
    makefile = (ROOT / "Makefile").read_text()
    assert "share/jupyter/lab/settings/overrides.json" in makefile and ".jupyter/overrides.json" in makefile
