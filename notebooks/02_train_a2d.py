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
# # 02 · Training diverse ensembles of heads with SED-A2D
#
# Every member is a head on the cached feature $h$: the MLP half of a transformer block followed by a
# LayerNorm and a linear classifier,
# $u = h + \gamma \cdot \mathrm{fc}_2(\mathrm{GELU}(\mathrm{fc}_1(\mathrm{LN}(h))))$, then
# $W\,\mathrm{LN}(u) + b$. Members start from independent random initialisations.
#
# **Objective.** For a pair of members $(a, b)$ and a mini-batch of $B$ samples, SED minimises
# $$
# (1 - \lambda)\,T + \kappa\lambda\,\frac{1}{B}\sum_{n=1}^{B} \alpha_n\,\mathrm{A2D}_n .
# $$
# Here $T$ is the members' cross-entropy. $\mathrm{A2D}_n$ is the agree-to-disagree loss,
# $$
# \mathrm{A2D}_n = -\log\left(p_a[c]\,(1 - p_b[c]) + p_b[c]\,(1 - p_a[c])\right),
# $$
# with $c$ member $a$'s predicted class: it is small when one of the two members gives the other's
# prediction a low probability. The hardness weights $\alpha_n = e_n / \bar e^{2}$ come from the
# cross-entropy $e_n$ of the pair's mean logits, with $\bar e = \frac{1}{B}\sum_{k=1}^{B} e_k$ its
# batch mean. They move the repulsion onto the samples the ensemble finds hard: SED's way of
# finding "OOD-like" samples inside the training set, without an extra OOD dataset.
#
# **Stochastic pairs.** The all-pairs objective of A2D/DivDis costs $O(M^2)$ member evaluations per
# step. SED instead draws one pair per step (`iid`, as published) and updates only those two members,
# at $O(1)$ cost per step whatever the ensemble size. `sedlib` also offers `matching` (a random
# perfect matching per round, all pairs in one batched step) and `all` (every pair).
#
# This notebook trains each model of the params file. The default study compares a **deep
# ensemble** ($\lambda = 0$: no diversity term) with **SED-A2D** ($\lambda = 0.5$, $\kappa = 0.5$,
# the published semantic-OOD detection setting), five members each. Both use the same stochastic
# pairs, so they differ only in the diversity term. The first epoch is frozen (losses measured, no
# update), and the learning rate follows the published cosine schedule.

# %% tags=["parameters"]
params_file: str = "params/default.yaml"  # the study's params file, relative to the project root (or absolute)
run_dir: str = ""  # where it writes; empty: runs/<run_name>, or with overrides runs/<run_name>+<overrides>
overrides: dict = {}  # values merged over the params file, e.g. {"train": {"epochs": 1}}; or that as YAML/JSON text

# %%
from IPython.display import Markdown, display

from sedlib.method.step_cost import step_cost_markdown, step_cost_ratios
from sedlib.rundir.notebook import open_stage
from sedlib.study.hardness import alpha_classes, alpha_gallery, alpha_overview
from sedlib.study.models import (
    STEP_COST_MEMBERS,
    main_logs,
    measure_study_step_cost,
    train_models,
    training_overview,
)
from sedlib.study.plots import alpha_distribution, image_grid, training_curves
from sedlib.study.tables import markdown_table

config, run = open_stage(params_file, run_dir, overrides, globals())

# %%
models = train_models(config, run)

# %%
#| label: tbl-models
#| tbl-cap: "Trained ensembles: size, pair schedule, diversity weights, and validation accuracy after the last epoch (ensemble and mean member, %)."
overview = training_overview(config, models)
run.save_csv("models_overview", overview)
display(Markdown(markdown_table(overview)))

# %% [markdown]
# ## Training curves
#
# With $\lambda = 0$ the members converge to nearly the same function. With SED the repulsion term
# pulls the members apart: the mean member's validation accuracy falls below the ensemble's, and the
# committee holds.

# %%
#| label: fig-training-curves
#| fig-cap: "Validation accuracy of the ensemble (solid) and of the mean member (dashed), task loss and weighted A2D repulsion, per epoch (epoch 0 is frozen)."
figure = training_curves(main_logs(config, models))
saved = run.save_figure("training_curves", figure)

# %% [markdown]
# ## What SED treats as "OOD-like"
#
# SED has no OOD data: its repulsion falls on the training samples the ensemble finds hard, each
# weighted by $\alpha_n = e_n / \bar e^{2}$, the ensemble's loss on it over the squared batch mean. A
# sample with $\alpha$ far above 1 is one the members are pushed hardest to disagree on. The figure
# shows how $\alpha$ is spread over the training rows and how its tail moves during training; the
# gallery shows the rows with the largest $\alpha$ in the last epoch, as the backbone saw them (with
# that epoch's augmentation), and the table how the classes are represented in the top 1 % of
# $\alpha$.

# %%
#| label: fig-alpha
#| fig-cap: "Hardness weights α of the models trained with them: median, 90th and 99th percentile and maximum per epoch (left), and their distribution over the training rows in the last epoch (right; α = 1 marked)."
figure = alpha_distribution(alpha_overview(config, run, models))
saved = run.save_figure("alpha_distribution", figure)

# %%
#| label: fig-alpha-gallery
#| fig-cap: "The training rows with the largest hardness weight α in the last epoch, with their class and α, as the backbone saw them."
gallery_model, gallery, images = alpha_gallery(config, run, count=24)
figure = image_grid(images, list(gallery.get("caption", [])), title=f"{gallery_model}: largest α, last epoch")
saved = run.save_figure("alpha_gallery", figure)

# %%
#| label: tbl-alpha-classes
#| tbl-cap: "Share of each class among all training rows and among the 1 % with the largest α (last epoch); ratio > 1: over-represented among the hardest rows."
shares_model, shares = alpha_classes(config, run, top_fraction=0.01)
run.save_csv("alpha_class_shares", shares)
shown = f"{shares_model}:\n\n{shares.to_markdown(index=False, floatfmt='.3f')}" if shares_model else "*No model has α.*"
display(Markdown(shown))

# %% [markdown]
# ## The cost of a step against M (a measurement)
#
# SED's stochastic pairs run and update two members per step, so a step should cost about the same
# at any ensemble size; the all-pairs objective runs every member and all $M(M-1)/2$ pairs, so its
# step must grow with $M$ (the positive control: it shows that the measurement can see a growing
# cost). Both are timed here after training, on the heads and settings of one model of the study,
# in interleaved rounds (`sedlib.method.step_cost`). This is a measurement of the machine the run used, not
# one of the reproducible results: it varies between runs, and nothing else in the report reads it.

# %%
#| label: tbl-step-cost
#| tbl-cap: "Milliseconds per training step at two ensemble sizes, and their ratio with its 95 % interval over the rounds: stochastic pairs (iid) and every pair (all, the positive control)."
step_times, step_model, where = measure_study_step_cost(config, models)
run.save_csv("step_cost", step_times)
low, high = STEP_COST_MEMBERS
display(
    Markdown(
        f"{step_model}'s heads and settings:\n\n"
        + step_cost_markdown(step_cost_ratios(step_times, low, high), low, high, where)
    )
)
