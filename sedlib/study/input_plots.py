"""Stage 01's figure: the images the backbone sees (and the note figure every figure module shares).

Apart from `sedlib.study.plots` so that stage 01's code (`sedlib.rundir.closure`) holds no figure of the later
stages: editing those reruns stages 02-05, not the caching.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def note_figure(text: str) -> Figure:
    """A small figure that only says ``text`` (a figure with nothing to draw)."""
    figure, axis = plt.subplots(figsize=(6, 0.8))
    axis.set_axis_off()
    axis.text(0.5, 0.5, text, ha="center", va="center")
    return figure


def image_rows(rows: Mapping[str, np.ndarray]) -> Figure:
    """One row of images per entry (title -> ``(K, H, W, 3)`` uint8), titles on the left.

    With no rows (features imported, images absent) the figure says so instead.
    """
    if not rows:
        return note_figure("no images available: the features were imported or given as files (data.dataset: features)")
    count = max(len(images) for images in rows.values())
    figure, axes = plt.subplots(len(rows), count, figsize=(1.1 * count + 1.2, 1.15 * len(rows)), squeeze=False)
    for axis_row, (title, images) in zip(axes, rows.items()):
        for k, axis in enumerate(axis_row):
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_frame_on(False)
            if k < len(images):
                axis.imshow(images[k])
        axis_row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    figure.subplots_adjust(wspace=0.05, hspace=0.08, left=0.16)
    return figure
