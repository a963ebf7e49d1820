"""The two Quarto projects checked against Quarto's published schema and render semantics (Quarto is not run here).

From quarto-cli (github.com/quarto-dev/quarto-cli, read at commit 5d1da592, July 2026):

- src/resources/schema/project.yml: the keys of ``project:`` (a closed object) and its types;
- src/resources/schema/definitions.yml, ``manuscript-schema``: the keys of ``manuscript:`` (closed);
- src/project/types/{book,website,manuscript}: ``cleanOutputDir: true``; src/command/render/project.ts,
  ``renderProject``: a render of the whole project of such a type first removes its ``output-dir``, then runs
  the ``pre-render`` scripts, with the project directory as working directory, and a script that exits
  non-zero stops the render (``runScripts`` throws); a project without ``output-dir`` has nothing removed.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sedlib import PROJECT_ROOT
from sedlib.report import quarto_root
from sedlib.report import render as report
from sedlib.rundir import closure

PROJECT_KEYS = {
    "title", "type", "render", "execute-dir", "output-dir", "lib-dir", "resources", "brand", "preview",
    "pre-render", "post-render", "detect",
}  # fmt: skip
PROJECT_TYPES = {"default", "website", "book", "manuscript"}
CLEANING_TYPES = {"website", "book", "manuscript"}
MANUSCRIPT_KEYS = {"article", "code-links", "manuscript-url", "meca-bundle", "notebooks", "resources", "environment"}

ROOT_CONFIG = PROJECT_ROOT / "_quarto.yml"
REPORT_CONFIG = PROJECT_ROOT / report.SOURCE_DIR / report.QUARTO_CONFIG


def read(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", [ROOT_CONFIG, REPORT_CONFIG], ids=["root", "report"])
def test_the_project_files_use_only_keys_of_quartos_schema(path):
    config = read(path)
    assert set(config["project"]) <= PROJECT_KEYS and config["project"]["type"] in PROJECT_TYPES
    assert set(config.get("manuscript", {})) <= MANUSCRIPT_KEYS
    assert all(set(entry) <= {"notebook", "title", "url", "download-url"} for entry in config.get("manuscript", {}).get("notebooks", []))  # fmt: skip  # noqa: E501


def emptied_folder(config: dict, where: Path) -> Path | None:
    """The folder a render of the whole project at ``where`` removes first, by Quarto's semantics, or None."""
    project = config["project"]
    if project["type"] not in CLEANING_TYPES or "output-dir" not in project:
        return None
    return where / project["output-dir"]


def test_quarto_render_at_the_root_can_delete_nothing_and_is_stopped_before_it_renders():
    config = read(ROOT_CONFIG)
    assert emptied_folder(config, PROJECT_ROOT) is None
    assert "output-dir" not in config["project"]  # a default project renders in place, next to its inputs
    assert all((PROJECT_ROOT / name).is_file() for name in config["project"]["render"])
    assert (PROJECT_ROOT / config["project"]["pre-render"]).resolve() == Path(quarto_root.__file__).resolve()


def test_the_manuscript_empties_only_folders_without_sources():
    config = read(REPORT_CONFIG)
    staged_into = PROJECT_ROOT / "runs" / "x"  # where `sedlib.report` renders it
    emptied = emptied_folder(config, staged_into).relative_to(staged_into).as_posix()
    assert emptied == report.OUTPUT_DIR and not any(name.startswith(f"{emptied}/") for name in report.staged_sources())
    emptied_here = emptied_folder(config, REPORT_CONFIG.parent)  # `quarto render report`: report/report/
    assert not emptied_here.exists() and emptied_here != REPORT_CONFIG.parent


def run_guard(project: Path) -> subprocess.CompletedProcess:
    """The pre-render script as Quarto runs it: its own Python, in the project directory, no sedlib installed."""
    script = PROJECT_ROOT / read(ROOT_CONFIG)["project"]["pre-render"]
    python = shutil.which("python3") or sys.executable
    return subprocess.run([python, "-I", str(script)], cwd=project, capture_output=True, text=True)


def test_the_pre_render_script_stops_the_render_and_says_what_to_run(tmp_path):
    done = run_guard(tmp_path)
    assert done.returncode != 0 and "python -m sedlib.run params/default.yaml" in done.stderr
    (tmp_path / "runs" / "default" / "notebooks").mkdir(parents=True)
    (tmp_path / "runs" / "default" / "notebooks" / "01_cache.ipynb").write_text("{}")
    done = run_guard(tmp_path)
    assert done.returncode != 0 and "python -m sedlib.report runs/default" in done.stderr


def test_the_pre_render_script_needs_only_the_standard_library():
    imported = {name.split(".")[0] for name in closure.imported_names(Path(quarto_root.__file__))}
    assert imported <= sys.stdlib_module_names | {"__future__"}
