# make setup   create .venv and install the pinned environment (Python 3.11)
# make test    run the test suite (sets up .venv first when missing)
# make bench   print the training-speed benchmark
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test bench lab

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if v == (3, 11) else "Python 3.11 is needed (the pins are tested with it); found %d.%d. Run: make PYTHON=python3.11 setup" % v)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m sedlib.bench

lab: setup
	$(BIN)/jupyter lab
