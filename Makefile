# The README's two commands. Each creates .venv on first use, installs torch first
# (pinned: a looser pin pulls GBs of CUDA packages), then the package; re-runs skip
# what is installed (stamp files) and start within seconds.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check
TORCH  := torch==2.13.0

.PHONY: demo test clean-venv

demo: $(VENV)/.stamp-demo
	$(BIN)/python -m pyg_qgnn demo $(ARGS)

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest $(ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-torch: | $(BIN)/python
	$(PIP) "setuptools>=64" wheel $(TORCH)
	touch $@

# --no-build-isolation: torch_scatter/torch_sparse import torch while building; an
# isolated build would download a different, multi-GB torch.
$(VENV)/.stamp-demo: setup.cfg pyproject.toml $(VENV)/.stamp-torch
	$(PIP) --no-build-isolation -e .
	touch $@

$(VENV)/.stamp-test: setup.cfg pyproject.toml $(VENV)/.stamp-torch
	$(PIP) --no-build-isolation -e ".[test,full,plot,chem]"
	touch $@ $(VENV)/.stamp-demo

clean-venv:
	rm -rf $(VENV)
