# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# A stage that only waits, for the tests that kill or interrupt a runner (`tests.helpers.kernel_runner`).
# With ``SED_TEST_WORKER=1`` the kernel first starts a process of its own, as a stage's data-loader workers are.

# %%
import os
import subprocess
import sys
import time

# %% tags=["parameters"]
params_file = ""
run_dir = ""
overrides = {}

# %%
if os.environ.get("SED_TEST_WORKER") == "1":
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
time.sleep(120)
