# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# A stage that prints which `sedlib` its kernel imports (`tests.helpers.kernel_runner --notebook which_sedlib`).

# %%
import sedlib

# %% tags=["parameters"]
params_file = ""
run_dir = ""
overrides = {}

# %%
print(sedlib.__file__)
