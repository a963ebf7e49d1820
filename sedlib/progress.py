"""Progress bars: widgets in JupyterLab, plain text under papermill and in the terminal.

`tqdm.auto` draws ipywidgets bars whenever it runs in a Jupyter kernel. A notebook that papermill
executes has no front end to draw them, so its stored outputs (and ``python -m sedlib.run --verbose``)
would show no progress. The runner therefore sets ``SED_PROGRESS=text`` for its kernels (and
streams their text to the terminal), and every bar of `sedlib` comes from here.

A widget bar stores its text form only as it was when first shown (0 %), which is all that a notebook
run outside Lab (``papermill`` directly, ``jupyter nbconvert --execute``) keeps, and what GitHub and Quarto
show; `sedlib`'s widget bars therefore update that text when they close (`_widget_bar`).

A worker process (stage 02 trains one model per CPU core) cannot draw into the notebook: after
`forward_to`, its bars send their state to the parent process instead, which draws one bar for all.

A cell that raises leaves its text bars open, without their closing newline, and the runner's error
line would then start on a bar's line; so in a kernel the text bars still open are closed after every
cell (`close_text_bars`).
"""

import functools
import io
import os
import sys

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

ENVIRONMENT_VARIABLE = "SED_PROGRESS"

#: Seconds between redraws of a text bar: each redraw is stored in the executed notebook and sent to the terminal.
TEXT_REDRAW_SECONDS = 1.0

_queue = None
_closing_after_cells = False


def forward_to(queue) -> None:
    """Make every later bar of this process put ``(desc, n, total, postfix)`` on ``queue`` when it redraws."""
    global _queue
    _queue = queue


class _ForwardedBar(text_tqdm):
    """A bar that draws nothing and sends its state to `forward_to`'s queue instead."""

    def __init__(self, *args, **kwargs):
        kwargs["file"] = io.StringIO()  # what tqdm itself still writes (a closing newline) goes nowhere
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        _queue.put((self.desc, self.n, self.total, self.postfix))
        return True


@functools.cache
def _widget_bar() -> type | None:
    """`tqdm.auto`'s widget bar, whose stored text form ends as the bar ends; None where bars are text."""
    from tqdm.notebook import tqdm_notebook

    if not issubclass(auto_tqdm, tqdm_notebook):
        return None
    from IPython.display import display

    class WidgetBar(auto_tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "display": False})
            self.handle = None
            if not self.disable and self.delay <= 0:
                self.handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self):
            super().close()
            if self.handle is not None:  # the widget stays; its text form becomes the final line
                self.handle.update(self.container)
                self.handle = None

    return WidgetBar


def tqdm(*args, **kwargs):
    """A tqdm bar: forwarded in a worker (`forward_to`), plain text when ``SED_PROGRESS=text``, else `tqdm.auto`'s."""
    if _queue is not None:
        kwargs.setdefault("mininterval", TEXT_REDRAW_SECONDS)
        return _ForwardedBar(*args, **kwargs)
    if os.environ.get(ENVIRONMENT_VARIABLE) == "text":
        _close_after_cells()
        kwargs.setdefault("mininterval", TEXT_REDRAW_SECONDS)
        kwargs.setdefault("file", sys.stdout)  # the stream of `tqdm.write`'s messages, so the two keep their order
        return text_tqdm(*args, **kwargs)
    return (_widget_bar() or auto_tqdm)(*args, **kwargs)


tqdm.write = text_tqdm.write


def close_text_bars(*_) -> None:
    """Close every text bar still open, innermost first, so that what is printed next starts on its own line."""
    for bar in sorted(list(text_tqdm._instances), key=lambda bar: -abs(getattr(bar, "pos", 0))):
        bar.close()


def _close_after_cells() -> None:
    """In an IPython kernel, run `close_text_bars` after every cell (once registered, it stays)."""
    global _closing_after_cells
    if _closing_after_cells or "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None:
        shell.events.register("post_run_cell", close_text_bars)
        _closing_after_cells = True
