# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Tables and summary
#
# This notebook only reads the results the earlier stages wrote (`results/ood_gen.csv`,
# `results/ood_det.csv`, `results/diversity.csv`). It lays them out as the paper's tables, saves them
# as Markdown under `results/tables/`, and writes a short summary. Every number in the summary is
# read from those files.

# %% tags=["parameters"]
params_file = "params/default.yaml"
run_dir = None
overrides = {}

# %%
import pandas as pd
from IPython.display import Markdown, display

from sedlib.config import load_config
from sedlib.plots import save_figure, summary_figure
from sedlib.rundir import RunDir
from sedlib.tables import (
    detection_wide,
    protocol_note,
    published_comparison,
    published_comparison_markdown,
    results_summary,
    table1,
    table3,
)

config = load_config(params_file, overrides)
run = RunDir.open(config, run_dir)
ood_gen = pd.read_csv(run.results / "ood_gen.csv")
ood_det = pd.read_csv(run.results / "ood_det.csv")
diversity = pd.read_csv(run.results / "diversity.csv")

# %%
tables = {
    "table1_ood_generalisation": table1(ood_gen),
    "table3_ood_detection": table3(ood_det),
    "ood_detection_auroc_all_scores": detection_wide(ood_det, ("auroc",)),
    "ood_detection_fpr95_all_scores": detection_wide(ood_det, ("fpr95",)),
    "ood_detection_aupr_out_all_scores": detection_wide(ood_det, ("aupr_out",)),
    "published_comparison": published_comparison(ood_gen, ood_det, diversity, config),
}
for name, table in tables.items():
    (run.tables / f"{name}.md").write_text(f"{protocol_note(config)}\n\n{table.to_markdown(index=False)}\n")
    table.to_csv(run.tables / f"{name}.csv", index=False)
print("\n".join(sorted(p.name for p in run.tables.iterdir())))

# %% [markdown]
# ## Against the published numbers
#
# Models named after one of the four published runs are set beside the numbers the authors released
# (`params/reference/sed_published.csv`, the only typed-in numbers of the project), with the
# difference. The published numbers come from the faithful protocol.

# %%
#| label: published
display(Markdown(published_comparison_markdown(tables["published_comparison"])))

# %%
#| label: fig-summary
#| fig-cap: "The study at a glance: ensemble accuracy on the clean and corrupted test splits, detection AUROC of BMA and PDS, and member disagreement (#unique) per split."
figure = summary_figure(ood_gen, ood_det, diversity)
saved = save_figure(figure, run.figures, "summary")

# %%
#| label: summary
summary = results_summary(ood_gen, ood_det, diversity, config)
(run.results / "summary.md").write_text(summary + "\n")
display(Markdown(summary))
