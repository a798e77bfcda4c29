# The README's commands. `make lab` opens the course, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with assets/nbval_sanitize.cfg
JOBS   ?= 2

.PHONY: setup lab test test-fast test-other-cpu bench pretrained clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# A learner's install: the package (editable) and what the notebooks need, nothing more.
$(VENV)/.installed-lab: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# The tests and benchmarks add their extras (pytest, nbval, transformers, playwright, ...).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@ $(VENV)/.installed-lab

setup: $(VENV)/.installed

# JupyterLab refuses to start as root unless told; containers and cloud notebooks run as root.
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

lab: $(VENV)/.installed-lab  ## open the course in JupyterLab (repository root, first notebook open)
	@[ -z "$(ALLOW_ROOT)" ] || echo "make lab: running as root, so JupyterLab gets --allow-root"
	$(BIN)/jupyter lab $(ALLOW_ROOT) --ServerApp.root_dir="$(CURDIR)" notebooks/00_setup.ipynb

test: setup  ## unit, property and equivalence tests + strict nbval over every notebook
	$(BIN)/python -m pytest tests notebooks $(NBVAL) -n $(JOBS) --dist loadscope

# The notebooks again on the kernels of another CPU: PyTorch's plain C++ kernels and oneDNN's SSE4.1
# code instead of the AVX2 code that setup_notebook() pins. Stored outputs must reproduce here too,
# so one machine stands in for CPUs with other instruction sets (see README, Tests).
test-other-cpu: setup  ## strict nbval over every notebook under a forced lower CPU capability
	ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 $(BIN)/python -m pytest notebooks $(NBVAL) -n $(JOBS) --dist loadscope

test-fast: setup  ## the package tests only
	$(BIN)/python -m pytest tests -n $(JOBS)

bench: setup  ## the benchmarks (minutes): print tables, write benchmarks/results/
	$(BIN)/python benchmarks/pretrain_cpu.py
	$(BIN)/python benchmarks/generate.py

pretrained: setup  ## re-train the reference model in assets/ (38 min on the 2-core CPU)
	$(BIN)/python -m minigpt train --config assets/pretrained/shakespeare-bpe.json --out assets/pretrained/shakespeare-bpe --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
