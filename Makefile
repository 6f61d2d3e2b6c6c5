# Two commands on a fresh machine: `make demo` (install + main job) and `make test` (install + tests).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.genrm-rl-installed
# gpu tests are deselected (not skipped) where there is no CUDA device.
PYTEST_MARK := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo "" || echo "not gpu")

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	@touch $(STAMP)

demo: install
	$(BIN)/genrm-rl reproduce --config configs/quickstart.yaml

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "$(PYTEST_MARK)" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/genrm-rl bench --config configs/bench.yaml

clean:
	rm -rf runs .pytest_cache
