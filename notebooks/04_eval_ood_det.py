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
# # 04 · OOD detection: does disagreement flag unfamiliar inputs?
#
# A diverse ensemble gives a detector for free: on familiar inputs its members agree, on unfamiliar
# ones they should not. SED proposes the **Predictive Diversity Score**,
# $$
# \mathrm{PDS} = \sum_{c} \max_{m} p_m[c].
# $$
# It ranges from 1 (all members put their mass on the same class) to $M$ (every member is confident
# in a different class). It is compared with the confidence of the averaged prediction (**BMA**, its
# maximum softmax probability; low = OOD) and with every other score of `sedlib.eval.scores`: #unique
# predictions, mutual information, predictive and expected entropy, energy, max logit and the A2D
# disagreement.
#
# The clean test split is in-distribution (negative); each OOD set is positive. C-1 and C-5 hold the
# corrupted test images of every corruption at one severity (covariate shift): the faithful protocol
# averages the fifteen per-corruption values, as the published tables do, the standard one pools the
# images into one detection problem. The semantic-OOD sets contain no in-distribution class
# (Animal-MNIST and digits for Fashion-MNIST; iNaturalist and OpenImage-O for ImageNet). The table
# reports AUROC, FPR at 95 % TPR and AUPR, as the paper's Table 3 does.

# %% tags=["parameters"]
params_file: str = "params/default.yaml"  # the study's params file, relative to the project root (or absolute)
run_dir: str = ""  # where it writes; empty: runs/<run_name>, or with overrides runs/<run_name>+<overrides>
overrides: dict = {}  # values merged over the params file, e.g. {"train": {"epochs": 1}}; or that as YAML/JSON text

# %%
import pandas as pd
from IPython.display import Markdown, display

from sedlib.data.splits import plan_splits
from sedlib.rundir.notebook import open_stage
from sedlib.study.detection import detection_table, detector_table, diversity_table, save_detector_scores
from sedlib.study.models import load_models
from sedlib.study.plots import roc_curves, score_histograms
from sedlib.study.predictions import stored_evaluations
from sedlib.study.tables import detection_wide, main_rows, markdown_table, protocol_note, table3

config, run = open_stage(params_file, run_dir, overrides, globals())
models = load_models(config, run)

# %%
splits = [plan.name for plan in plan_splits(config) if plan.kind in ("test", "corruption", "ood")]
evaluations = stored_evaluations(config, run, splits)  # computed by 03, checked against the models and features
detectors, detector_scores = detector_table(config, run, models)
save_detector_scores(run, detector_scores)  # per sample, for the paired bootstrap of stage 05
detection = pd.concat([detection_table(evaluations, config), detectors], ignore_index=True)
diversity = diversity_table(evaluations, config)
run.save_csv("ood_det", detection)
run.save_csv("diversity", diversity)

# %%
#| label: tbl-ood-det
#| tbl-cap: "AUROC (%) of the ensemble's confidence (BMA) and of its Predictive Diversity Score (PDS) for each OOD set (ID = clean test split)."
display(Markdown(protocol_note(config)))
display(Markdown(markdown_table(table3(main_rows(detection, config)))))

# %% [markdown]
# ## Every score, and post-hoc detectors beside them
#
# Every score of `sedlib.eval.scores` for every model, and the post-hoc detectors of `sedlib.eval.detectors`
# fitted on the first training pass: Mahalanobis, relative Mahalanobis and KNN on the backbone
# features (one row, shared by all models), ViM on the weight soup of every model but the sweep
# points. AUROC (higher is better), FPR at 95 % TPR (lower is better) and AUPR with OOD as the
# positive class (higher is better), as OpenOOD reports them.

# %%
#| label: tbl-ood-det-all
#| tbl-cap: "AUROC / FPR@95 / AUPR-out (%) of every ensemble score and post-hoc detector for each OOD set (ID = clean test split)."
display(Markdown(protocol_note(config, short=True)))
display(Markdown(markdown_table(detection_wide(main_rows(detection, config), ("auroc", "fpr95", "aupr_out")))))

# %% [markdown]
# ## Diversity
#
# Mean #unique member predictions and mean PDS per split. SED's signature is a larger gap between the
# in-distribution split and the OOD sets than the deep ensemble's.

# %%
#| label: tbl-diversity
#| tbl-cap: "Mean #unique member predictions and mean PDS per split."
columns = {"label": "Model", "split": "Split", "num_unique": "#unique", "pds": "PDS"}
display(Markdown(protocol_note(config, short=True)))
shown = main_rows(diversity, config).drop(columns=["model"]).rename(columns=columns)
display(Markdown(shown.to_markdown(index=False, floatfmt=".2f")))

# %%
#| label: fig-roc
#| fig-cap: "ROC curves of BMA (solid) and PDS (dashed) for each OOD set; OOD is the positive class."
figure = roc_curves(evaluations, config, ("bma", "pds"))
saved = run.save_figure("ood_det_roc", figure)

# %%
#| label: fig-score-histograms
#| fig-cap: "Distributions of the scores on the clean test split and on each OOD set."
figure = score_histograms(evaluations, config, tuple(config.eval.histogram_scores))
saved = run.save_figure("ood_det_histograms", figure)
