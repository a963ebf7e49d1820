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
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · OOD generalisation: accuracy under covariate shift
#
# The paper's Table 1 asks whether diversification keeps, or improves, accuracy when the input
# distribution shifts. Each trained ensemble can be used in three ways. The **prediction ensemble**
# averages the members' logits. The **soup** averages their weights into one head: the members share
# a frozen backbone, so their heads live in one weight space. The **best single member** is the
# third. The published code picks the best member on each test set separately, an oracle; a
# standard protocol picks it on validation data and keeps it. Both are reported here, and named.
#
# Covariate shift is measured as in ImageNet-C: fifteen corruptions (noise, blur, weather and
# digital) applied to the test images. C-1 and C-5 are the unweighted means of the accuracy over the
# corruptions at severity 1 and 5. The ImageNet study adds ImageNet-A and ImageNet-R, 200-class test
# sets; how their 200 classes are read off a 1000-way head is where the two protocols differ most
# (`protocol` in the params file; the line above the table names it).
#
# Every split, the OOD sets included, is streamed through every model once here, and the
# per-sample results are kept in `results/evaluations.h5` for notebook 04.

# %% tags=["parameters"]
params_file: str = "params/default.yaml"  # the study's params file, relative to the project root (or absolute)
run_dir: str = ""  # where it writes; empty: runs/<run_name>, or with overrides runs/<run_name>+<overrides>
overrides: dict = {}  # values merged over the params file, e.g. {"train": {"epochs": 1}}; or that as YAML/JSON text

# %%
from IPython.display import Markdown, display

from sedlib.rundir.notebook import open_stage
from sedlib.study.models import load_models
from sedlib.study.plots import corruption_breakdown
from sedlib.study.predictions import calibration_table, evaluations_of, generalisation_tables
from sedlib.study.tables import calibration_wide, main_rows, markdown_table, protocol_note, table1

config, run = open_stage(params_file, run_dir, overrides, globals())
models = load_models(config, run)

# %%
evaluations = evaluations_of(config, run, models)  # every split once, kept; stage 04 reads the OOD sets' results
summary, per_corruption = generalisation_tables(evaluations, config)
run.save_csv("ood_gen", summary)
run.save_csv("ood_gen_per_corruption", per_corruption)
calibration = calibration_table(evaluations, config)
run.save_csv("calibration", calibration)

# %%
#| label: tbl-ood-gen
#| tbl-cap: "Accuracy (%) on the clean test split and under corruption (C-1, C-5: means over the corruptions at severity 1 and 5), and on ImageNet-A/R in the ImageNet study. The oracle picks the best member on each split separately, as the published code does; the val-selected member is chosen once, on validation data."
display(Markdown(protocol_note(config)))
display(Markdown(markdown_table(table1(main_rows(summary, config)))))

# %% [markdown]
# ## Per corruption
#
# The means hide which shifts hurt. The breakdown below gives the prediction ensemble's accuracy per
# corruption.

# %%
#| label: fig-corruptions
#| fig-cap: "Accuracy (%) of each prediction ensemble per corruption, at each severity."
figure = corruption_breakdown(main_rows(per_corruption, config), "ensemble")
saved = run.save_figure("corruptions", figure)

# %% [markdown]
# ## Calibration
#
# Accuracy is not the whole story under shift: a model should also know when it is likely wrong.
# Expected calibration error (ECE, 15 equal-width bins), negative log-likelihood (NLL) and Brier
# score of the prediction ensemble, the uniform soup and the mean member, on the clean test split and
# averaged over the corruptions of each severity (lower is better for all three).

# %%
#| label: tbl-calibration
#| tbl-cap: "ECE (%) / NLL / Brier score of the ensemble, the uniform soup and the mean member; C-1 and C-5 average the corruptions."
display(Markdown(protocol_note(config, short=True)))
display(Markdown(markdown_table(calibration_wide(main_rows(calibration, config)))))
