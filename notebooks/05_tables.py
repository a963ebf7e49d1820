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
# # 05 · Tables and summary
#
# This notebook only reads the results the earlier stages wrote (`results/ood_gen.csv`,
# `results/ood_det.csv`, `results/diversity.csv`, the per-sample evaluations `results/evaluations.h5`
# and detector scores `results/detector_scores.npz`, the row positions in the cached feature files),
# each checked against the content hash recorded when it was written. It judges the paper's claims on
# them, with an interval over seeds and rows on every difference, lays the results out as the paper's
# tables, saves them as Markdown and CSV under `results/tables/`, and writes the abstract, the key
# findings and a short summary. Every number in these texts is read from those files.

# %% tags=["parameters"]
params_file: str = "params/default.yaml"  # the study's params file, relative to the project root (or absolute)
run_dir: str = ""  # where it writes; empty: runs/<run_name>, or with overrides runs/<run_name>+<overrides>
overrides: dict = {}  # values merged over the params file, e.g. {"train": {"epochs": 1}}; or that as YAML/JSON text

# %%
import time

from IPython.display import Markdown, display

from sedlib.data.splits import plan_splits
from sedlib.rundir.notebook import open_stage
from sedlib.study.detection import stored_detector_scores
from sedlib.study.findings import (
    abstract,
    claim_evidence,
    evidence_table,
    key_findings,
    split_clusters,
    value_intervals,
)
from sedlib.study.plots import summary_figure, sweep_figure
from sedlib.study.predictions import stored_evaluations
from sedlib.study.summary import method_comparison, results_summary
from sedlib.study.tables import (
    detection_wide,
    main_rows,
    markdown_table,
    protocol_note,
    published_comparison,
    published_comparison_markdown,
    sweep_markdown,
    sweep_references,
    sweep_table,
    table1,
    table3,
)

config, run = open_stage(params_file, run_dir, overrides, globals())
ood_gen, ood_det, diversity = run.read_csv("ood_gen"), run.read_csv("ood_det"), run.read_csv("diversity")

# %% [markdown]
# ## The paper's claims, judged
#
# Each claim rests on differences between SED and the deep ensemble (or between two scores of SED),
# measured per training seed on the evaluated samples and averaged over seeds. Every difference gets a
# 95 % interval over seeds (the training run is the unit of replication) and rows: the rows are
# resampled with replacement (`eval.bootstrap_resamples` times, seeded), a corrupted copy of a test
# image together with that image, and both sides of a difference are recomputed on the same
# resampled rows; beside it, the probability that SED is better over pairs of seeds. Each split reads
# better, worse, equivalent (inside ± `eval.margins`) or undetermined; a claim reads "holds on k of n
# splits, contradicted on m" (Holm's correction over its splits).

# %%
splits = [plan.name for plan in plan_splits(config) if plan.kind in ("test", "corruption", "ood", "subset")]
evaluations = stored_evaluations(config, run, splits)  # computed by 03, checked against the models and features
started = time.perf_counter()
clusters = split_clusters(config, run, splits)  # each row's test image, read from the verified feature files
evidence = claim_evidence(evaluations, stored_detector_scores(run), clusters, ood_det, config)
print(
    f"{config.eval.bootstrap_resamples} bootstrap resamples of every difference in {time.perf_counter() - started:.1f} s"
)
run.save_csv("evidence", evidence)
run.save_text("abstract", abstract(evidence, config))
run.save_text("key_findings", key_findings(evidence, config))

# %%
#| label: abstract
display(Markdown(abstract(evidence, config)))

# %%
#| label: key-findings
display(Markdown(key_findings(evidence, config)))

# %%
#| label: tbl-evidence
#| tbl-cap: "The evidence behind the key findings: each difference (SED minus the other; points for percentages) with its 95 % interval over seeds and rows, the probability that SED is better over pairs of seeds, and the verdict."
display(Markdown(markdown_table(evidence_table(evidence))))

# %%
main_gen, main_det = main_rows(ood_gen, config), main_rows(ood_det, config)
tables = {
    "table1_ood_generalisation": table1(main_gen),
    "table3_ood_detection": table3(main_det),
    "ood_detection_auroc_all_scores": detection_wide(main_det, ("auroc",)),
    "ood_detection_fpr95_all_scores": detection_wide(main_det, ("fpr95",)),
    "ood_detection_aupr_out_all_scores": detection_wide(main_det, ("aupr_out",)),
    "published_comparison": published_comparison(ood_gen, ood_det, diversity, config),
    "sweeps": sweep_table(ood_gen, ood_det, config),
}
for name, table in tables.items():
    run.save_text("table_markdown", f"{protocol_note(config)}\n\n{markdown_table(table)}", name)
    run.save_csv("table_csv", table, name)
print("\n".join(run.relative(run.path("table_csv", name)) for name in tables))

# %% [markdown]
# ## Against the published numbers
#
# Models named after one of the four published runs are set beside the numbers the authors released
# (`params/reference/sed_published.csv`, the only typed-in numbers of the project), with the
# difference. The published numbers come from the faithful protocol.

# %%
#| label: published
display(Markdown(published_comparison_markdown(tables["published_comparison"])))

# %% [markdown]
# ## Sweeps: the accuracy-detection trade-off
#
# The diversity weight $\lambda$ and the ensemble size $M$ are SED's two main knobs. Each sweep
# trains the swept model at every value with all other settings unchanged (a value that another
# model of the run already has reuses that model, e.g. the deep ensemble for $\lambda = 0$). For each
# point: the ensemble's accuracy on the clean test split and under corruption, the mean member's
# test accuracy, and the detection AUROC of PDS and of BMA averaged over the run's OOD sets. The
# Pareto column marks the points no other point beats on both test accuracy and PDS AUROC.

# %%
#| label: tbl-sweeps
#| tbl-cap: "Sweeps: ensemble accuracy (%) on the test split and under corruption, mean member test accuracy, and detection AUROC (%) of PDS and BMA averaged over the OOD sets."
display(Markdown(protocol_note(config, short=True)))
display(Markdown(sweep_markdown(tables["sweeps"])))

# %%
#| label: fig-sweeps
#| fig-cap: "Each sweep's accuracy (left axis) and mean detection AUROC (right axis) against the swept value, and test accuracy against PDS AUROC for every point (right; circled: the Pareto front; stars: the main models)."
figure = sweep_figure(tables["sweeps"], sweep_references(ood_gen, ood_det, config))
saved = run.save_figure("sweeps", figure)

# %% [markdown]
# ## Which method wins where
#
# Generated from the result files: for each split the best model and aggregation, and for each
# OOD set the best score, against the runner-up and the spread over seeds.

# %%
#| label: method-comparison
comparison = method_comparison(ood_gen, ood_det, evidence, config)
run.save_text("method_comparison", comparison)
display(Markdown(comparison))

# %%
#| label: fig-summary
#| fig-cap: "The study at a glance: ensemble accuracy on the clean and corrupted test splits, detection AUROC of BMA and PDS, and member disagreement (#unique) per split; error bars: 95 % intervals over seeds and the evaluated samples."
intervals = value_intervals(evaluations, clusters, config)  # 95 % intervals over seeds and rows, drawn as error bars
figure = summary_figure(main_gen, main_det, main_rows(diversity, config), intervals)
saved = run.save_figure("summary", figure)

# %%
#| label: summary
summary = results_summary(ood_gen, ood_det, diversity, evidence, config)
run.save_text("summary", summary)
display(Markdown(summary))
