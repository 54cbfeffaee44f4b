# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
CONFIG ?= search_spaces/digits_quick.yaml
NAME   ?= digits_quick

.PHONY: demo test test-fast install clean bench gpu-check gpu-kit

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall when the project's metadata changes.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The embedded sweep (digits, no download): a second `make demo` resumes/reuses the finished sweep.
demo: $(STAMP)
	@if [ -f runs/ray_results/$(NAME)/pursuhint_sweep.json ]; then \
		$(VENV)/bin/pursuhint sweep $(CONFIG) --resume; \
	else \
		$(VENV)/bin/pursuhint sweep $(CONFIG); \
	fi
	$(VENV)/bin/pursuhint report $(NAME) --plot runs/$(NAME)_report.png
	@echo
	@echo "Browse the comparison in MLflow:"
	@echo "  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db"

# Both run pytest in $(TEST_WORKERS) pytest-xdist workers; the tests that share a costly fixture (the session's
# Ray and golden sweep, the trained teacher, a module's own fixtures) run in one worker (tests/conftest.py).
# TEST_WORKERS=0 runs pytest in one process; PYTEST_ARGS adds to its arguments (e.g. --durations=20).
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

# Lint first (seconds), then the whole suite.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

# The unit tests alone (no sweeps, no teacher training): lint, then pytest -m "not slow".
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow" $(XDIST) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/run.py --quick

# On a GPU machine, in at most 8 minutes (each step under a timeout, 480 s in all): every CUDA path and the
# GPU figures, check-sized (bench/gpu_check.py; written under $(GPU_CHECK_OUT), default runs/gpu-check/, and
# printed). Where torch is already installed system-wide, `make gpu-check GPU_PY=python3` skips the virtual
# environment; carry gpu-kit/ (make gpu-kit) so the offline install finds it.
GPU_PY ?= $(PY)
gpu-check: $(if $(filter $(PY),$(GPU_PY)),$(STAMP))
	$(GPU_PY) bench/gpu_check.py

# Here, with the registry: gpu-kit/, the wheels the lent GPU machine lacks (Ray without its Java jar, Optuna,
# mlflow-skinny, pydantic, SQLAlchemy, Alembic and their missing dependencies), for CPython 3.12. Carry it.
gpu-kit: $(STAMP)
	$(PY) bench/gpu_kit.py

clean:
	rm -rf runs mlruns mlflow.db .pytest_cache
