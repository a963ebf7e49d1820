"""Text bars: closed when an error leaves them open; readable text kept when a notebook runs outside Lab."""

import io

import nbformat
import pytest

from sedlib import progress


def test_open_text_bars_are_closed_innermost_first(monkeypatch):
    monkeypatch.setenv(progress.ENVIRONMENT_VARIABLE, "text")
    stream = io.StringIO()
    outer = progress.tqdm(total=3, desc="outer", file=stream, position=0)
    inner = progress.tqdm(total=5, desc="inner", file=stream, position=1, leave=False)
    outer.update(1)
    inner.update(2)
    assert not stream.getvalue().endswith("\n")  # an error raised now would print on the bar's line
    progress.close_text_bars()
    assert outer.disable and inner.disable  # closed
    assert stream.getvalue().endswith("\n") and "outer:  33%" in stream.getvalue().splitlines()[-1]


def test_in_a_kernel_bars_are_closed_after_every_cell(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setenv(progress.ENVIRONMENT_VARIABLE, "text")
    monkeypatch.setattr(progress, "_closing_after_cells", False)
    try:
        bar = progress.tqdm(total=2, file=io.StringIO())
        shell.run_cell("1 / 0")  # a cell that raises, as a diverged training run does
        assert bar.disable
    finally:
        shell.events.unregister("post_run_cell", progress.close_text_bars)
        InteractiveShell.clear_instance()


@pytest.mark.e2e
def test_a_notebook_run_outside_lab_keeps_the_final_state_of_its_bars(tmp_path, monkeypatch):
    import papermill

    monkeypatch.delenv(progress.ENVIRONMENT_VARIABLE, raising=False)  # as `papermill` is called directly
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("from sedlib.progress import tqdm\nfor _ in tqdm(range(7)):\n    pass")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    papermill.execute_notebook(notebook, str(tmp_path / "out.ipynb"), progress_bar=False, kernel_name="python3")
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs
    shown = [output.data for output in outputs if output.output_type == "display_data"]
    assert len(shown) == 1 and "application/vnd.jupyter.widget-view+json" in shown[0]  # a widget in Lab
    assert "100%" in shown[0]["text/plain"] and "7/7" in shown[0]["text/plain"]  # readable text elsewhere
