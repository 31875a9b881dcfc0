# Two commands on a fresh machine:
#   make demo   # set up .venv if needed, then run the main job (accelerate launch recipes/train.py)
#   make test   # set up .venv if needed, then run the test suite
# Set-up runs once: it is redone only when pyproject.toml or constraints.txt changes (or after `make clean-venv`).
# Every install takes its versions from constraints.txt (the lock); `make lock` refreshes it.
# Overrides: PYTHON=python3.12, VENV=path, CPU_TORCH="torch==2.13.0", CUDA_TORCH="torch".

PYTHON ?= python3
VENV ?= .venv
CPU_TORCH ?= torch==2.13.0
CUDA_TORCH ?= torch
# Two pytest workers (pytest-xdist, in the test extra): the suite takes about half the time on 2 cores.
TEST_COMMAND = python -m pytest -q -n 2 tests

BIN := $(VENV)/bin
# What the main job needs (the train and video extras), then what the tests add (the test extra: pytest, and triton,
# 1 GB installed, for the GPU kernels' CPU interpreter): `make demo` on a fresh clone installs the first only.
STAMP := $(VENV)/.stretchysnake-installed
TEST_STAMP := $(VENV)/.stretchysnake-test-installed
LOCK := constraints.txt
PIP_LOCKED = -m pip install --quiet -c $(LOCK)

.PHONY: demo test venv clean-venv lock

# The launcher's values are given, so it has none to default (and warn about) on a one-process run.
demo: $(STAMP)
	$(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		recipes/train.py

test: $(TEST_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(TEST_COMMAND)

venv: $(TEST_STAMP)

# torch goes in first and on its own: a bare `torch` requirement from pip would pull the multi-GB CUDA build on
# a machine without a GPU. An existing torch is kept, so a second run installs nothing new.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || \
		if nvidia-smi >/dev/null 2>&1; then $(BIN)/python $(PIP_LOCKED) "$(CUDA_TORCH)"; \
		else $(BIN)/python $(PIP_LOCKED) "$(CPU_TORCH)"; fi
	$(BIN)/python $(PIP_LOCKED) -e ".[train,video]"
	$(BIN)/python -c "import torch, transformers, modeling_stretchysnake; \
		print('set up $(VENV): torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/python $(PIP_LOCKED) -e ".[train,test,video]"
	touch $@

clean-venv:
	rm -rf $(VENV)

# The lock: a fresh virtualenv with the newest releases pyproject.toml's ranges allow (CPU torch first), frozen.
# Run the tests and the main job on it before committing the new constraints.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet "$(CPU_TORCH)"
	.lock-venv/bin/python -m pip install --quiet -e ".[train,test,video]"
	{ grep '^#' $(LOCK); .lock-venv/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK) && rm -rf .lock-venv
	git diff --stat -- $(LOCK)
