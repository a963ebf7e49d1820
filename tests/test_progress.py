"""Text bars left open by an error are closed, so that the next line starts on its own line."""

import io

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
