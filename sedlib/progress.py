"""Progress bars: widgets in JupyterLab, plain text under papermill and in the terminal.

`tqdm.auto` draws ipywidgets bars whenever it runs in a Jupyter kernel. A notebook that papermill
executes has no front end to draw them, so its stored outputs (and ``python -m sedlib.run --verbose``)
would show no progress. The runner therefore sets ``SED_PROGRESS=text`` for its kernels, and every
bar of `sedlib` comes from here.
"""

import os

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

ENVIRONMENT_VARIABLE = "SED_PROGRESS"


def tqdm(*args, **kwargs):
    """A tqdm bar: plain text when ``SED_PROGRESS=text``, else `tqdm.auto`'s choice."""
    bar = text_tqdm if os.environ.get(ENVIRONMENT_VARIABLE) == "text" else auto_tqdm
    return bar(*args, **kwargs)


tqdm.write = text_tqdm.write
