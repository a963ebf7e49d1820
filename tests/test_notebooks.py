"""The notebooks: paired sources in sync, a parameters cell, no logic, and every label the report embeds."""

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from papermill.translators import PythonTranslator

from sedlib.rundir.declaration import STAGES

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
    # outputs a JupyterLab save leaves on disk are allowed: git stores the notebook without them (nbstripout filter)
    staged = subprocess.run(["git", "show", f":notebooks/{name}.ipynb"], cwd=ROOT, capture_output=True, text=True)
    if staged.returncode == 0:  # a git checkout: what the index holds
        stored = nbformat.reads(staged.stdout, as_version=4)
        assert all(not cell.get("outputs") for cell in code_cells(stored)), f"git holds {name}.ipynb with outputs"


@pytest.mark.parametrize("name", NAMES)
def test_the_kernelspec_is_the_one_jupyterlab_saves(name):
    """Lab writes the running kernel's spec into both twins on save: the notebooks hold it already, so it stays."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    expected = {"name": "python3", "display_name": spec.display_name, "language": spec.language}
    assert jupytext.read(ROOT / "notebooks" / f"{name}.py").metadata["kernelspec"] == expected
    assert nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4).metadata["kernelspec"] == expected


def test_the_git_filter_of_make_setup_strips_outputs_and_keeps_the_kernelspec(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    command = re.search(r"\$\(BIN\)/(nbstripout --install[^;\n]*)", makefile).group(1)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    shutil.copy(ROOT / ".gitattributes", tmp_path / ".gitattributes")
    subprocess.run([str(Path(sys.prefix) / "bin" / "nbstripout"), *command.split()[1:]], cwd=tmp_path, check=True)
    notebook = nbformat.read(ROOT / "notebooks" / "01_cache.ipynb", as_version=4)
    code_cells(notebook)[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="saved in Lab\n")]
    code_cells(notebook)[0].execution_count = 3
    nbformat.write(notebook, tmp_path / "01_cache.ipynb")
    subprocess.run([*git, "add", "01_cache.ipynb"], cwd=tmp_path, check=True)
    stored = subprocess.run([*git, "show", ":01_cache.ipynb"], cwd=tmp_path, capture_output=True, text=True, check=True)
    stored = nbformat.reads(stored.stdout, as_version=4)
    assert all(not cell.outputs and cell.execution_count is None for cell in code_cells(stored))
    assert stored.metadata["kernelspec"] == notebook.metadata["kernelspec"]
    assert (tmp_path / ".gitattributes").read_text() == (ROOT / ".gitattributes").read_text()  # nothing to commit


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_and_no_definitions(name):
    notebook = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    parameters = [cell for cell in code_cells(notebook) if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1
    inferred = PythonTranslator.inspect(parameters[0])  # what `papermill --help-notebook` lists
    assert [parameter.name for parameter in inferred] == ["params_file", "run_dir", "overrides"]
    assert all(parameter.inferred_type_name != "None" and parameter.help for parameter in inferred)
    assigned = {node.target.id for node in ast.parse(parameters[0].source).body}
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
    """Output paths come from the run directory's declaration (`sedlib.rundir.declaration`), never from a literal."""
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
