import nbformat
import pytest

from sedlib import progress


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
