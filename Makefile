# make setup   find (as root: install) the Fashion-MNIST files, create .venv and install the pinned environment (Python 3.11),
#              and the git filter that strips outputs from committed notebooks (nbstripout, .gitattributes)
# make test    run the test suite, one pytest-xdist worker per core (sets up .venv first when missing)
# make test-fast  the unit tests only, without the papermill and torchrun runs (about a minute)
# make lint    ruff: lint and format check of the whole project (library, notebooks, tests, docs' code)
# make report  run the default study end to end (five notebooks) and render runs/default/report/
# make smoke   the same on params/smoke.yaml (about a minute)
# make results  rerun the default and full_cpu studies and copy their headline results into results/ (the README's)
# make smoke-imagenet  the paper-scale pipeline on fake ImageNet folders with random DeiT-3-B weights
# make own-data-example  a study on image folders with a timm checkpoint (docs/own-data.md, about a minute)
# make bench   print the training-speed benchmark
# make lab     open the notebooks in JupyterLab (a double-click opens a notebooks/*.py as a notebook)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JupyterLab reads this environment's overrides.json: .py files open with jupytext's notebook view
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json

.PHONY: setup data hooks test test-fast lint report results smoke smoke-imagenet own-data-example bench lab

setup: data $(STAMP) hooks

# A notebook saved in JupyterLab keeps its outputs on disk; the filter strips them from what git stores (outside a git
# checkout, as in an unpacked release, there is nothing to set up).
hooks: $(STAMP)
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then $(BIN)/nbstripout --install --attributes .gitattributes; fi

# Standard library only, so it runs (and stops, with the commands to run) before anything is installed.
data:
	@$(PYTHON) sedlib/data/get_fashion_mnist.py

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else "Python 3.11 is needed (the pins are tested with it); found %d.%d. Run: make PYTHON=python3.11 setup" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# One pytest-xdist worker per core; the tests that share a costly fixture (the smoke run) run on one of them.
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n auto --dist loadgroup

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not e2e and not torchrun"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

report: setup
	$(BIN)/python -m sedlib.run params/default.yaml

results: setup
	$(BIN)/python -m sedlib.run params/default.yaml --publish
	$(BIN)/python -m sedlib.run params/full_cpu.yaml --publish

smoke: setup
	$(BIN)/python -m sedlib.run params/smoke.yaml

smoke-imagenet: setup
	test -d runs/fake_imagenet || $(BIN)/python -m sedlib.data.fake_imagenet runs/fake_imagenet
	$(BIN)/python -m sedlib.run params/smoke_imagenet.yaml

own-data-example: setup
	test -d runs/own_data_example_images || $(BIN)/python -m sedlib.data.own_data_example runs/own_data_example_images
	$(BIN)/python -m sedlib.run params/own_data_example.yaml

bench: setup
	$(BIN)/python -m sedlib.bench

# JupyterLab refuses to start as root without --allow-root (containers, CI machines).
$(LAB_OVERRIDES): .jupyter/overrides.json $(STAMP)
	mkdir -p $(dir $@)
	cp $< $@

lab: setup $(LAB_OVERRIDES)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)
