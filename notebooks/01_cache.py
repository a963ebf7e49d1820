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
# # 01 · Caching the features of a frozen backbone
#
# SED never fine-tunes its backbone. The paper freezes a DeiT-3-B pretrained on ImageNet-21k, caches
# the 768-d feature that enters its last MLP block once for every image (four augmented passes over
# ImageNet-1k train, the validation set, ImageNet-C and the OOD sets), and trains every ensemble
# member as a small head on that cache. Training and evaluation then cost seconds per epoch instead
# of hours, which is what makes ensembles of 50 heads affordable.
#
# This notebook builds the same cache for the study in the params file. In the embedded default study
# the backbone is EfficientNet-Lite0 with its ImageNet-1k weights, and the data are Fashion-MNIST
# (in-distribution), fifteen ImageNet-C corruptions of its test images at severities 1 and 5
# (covariate shift), and two semantic-OOD sets: Animal-MNIST silhouettes and scikit-learn's
# handwritten digits. Each grey image is resized to the backbone's input resolution as RGB, then
# augmented (train passes) or corrupted, and stored as one row of an HDF5 file per split, with a
# manifest of how it was made. An interrupted run resumes where it stopped; a file made with other
# settings is refused rather than silently reused.
#
# The paper's study (`params/imagenet_deit3b.yaml`) runs this same notebook on ImageNet with DeiT-3-B,
# cut inside its last block, and also saves that block's own head, which the later notebooks evaluate
# as "row zero". Splits found among the authors' released feature files (`cache.import_dir`) are
# imported rather than computed; the table below says which.
#
# A study on your own data (`docs/own-data.md`) runs this same notebook on your image folders
# (`data.dataset: folder`) with any timm model (`cache.backbone: timm:<model name>`, its pre-logits
# feature), or copies the rows of feature files you already have (`data.dataset: features`, no backbone).

# %% tags=["parameters"]
params_file: str = "params/default.yaml"  # the study's params file, relative to the project root (or absolute)
run_dir: str = ""  # where it writes; empty: runs/<run_name>, or with overrides runs/<run_name>+<overrides>
overrides: dict = {}  # values merged over the params file, e.g. {"train": {"epochs": 1}}; or that as YAML/JSON text

# %%
from IPython.display import Markdown, display

from sedlib.data.splits import plan_splits
from sedlib.rundir.notebook import open_stage
from sedlib.study.extract import cache_features, example_inputs
from sedlib.study.input_plots import image_rows

config, run = open_stage(params_file, run_dir, overrides, globals())
print(f"splits to cache: {len(plan_splits(config))}")

# %% [markdown]
# ## The inputs
#
# A few images of every kind, at the resolution the backbone sees: clean training images with their
# augmentation, the clean test images, two corruptions at the highest severity, and the OOD sets.

# %%
#| label: fig-examples
#| fig-cap: "Inputs of the backbone: train images (clean and augmented), test images, corrupted test images, and the semantic-OOD sets."
figure = image_rows(example_inputs(config))
saved = run.save_figure("examples", figure)

# %% [markdown]
# ## Caching
#
# One progress bar per split. Re-running this notebook reuses every complete file whose manifest
# matches the params, and continues a partial one. The table of what was cached is saved with the
# features (`results/splits.csv`).
#
# At paper scale this is the long stage, and it can be shared out over several GPUs or nodes with
# PyTorch's launcher, `torchrun --nproc-per-node N -m sedlib.cache params/<run>.yaml`: each process
# caches its own chunks of every split and rank 0 joins them into the same files, row for row, as
# this notebook writes. A notebook cannot be run once per process, so the launcher runs the same code
# without it; this notebook then finds every split complete and reuses it (after checking its
# checksums), and its table below says so.

# %%
splits = cache_features(config, run)

# %%
#| label: tbl-splits
#| tbl-cap: "Cached splits: rows, augmentation passes, what was found before this run, the time spent now and, for image folders, how the images that are not augmented were resized and cropped (a timm model's own eval transform, or the project's)."
display(Markdown(splits.drop(columns=["file"]).to_markdown(index=False)))
