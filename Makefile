# The README's two commands: `make demo` (set-up + main job) and `make test` (set-up + tests).
# STACK=oldest sets up .venv-oldest (requirements/oldest.txt) instead; `make test-oldest` runs the tests that the
# oldest supported stack must pass (CI runs both).
STACK ?= current
VENV_current := .venv
VENV_oldest := .venv-oldest
PY := $(VENV_$(STACK))/bin/python

.PHONY: setup demo test test-fast test-oldest
setup:
	@STACK=$(STACK) bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# What the oldest stack must pass: the models, hooks, checkpoints, re-parameterization and export (skipped there
# with its reason), and a tiny RetinaNet trained, tested and re-parameterized through tools/.
OLDEST_TESTS := tests/models tests/engine tests/test_checkpoint.py tests/test_deploy.py tests/test_export.py \
	tests/test_tools.py

test-oldest:
	@$(MAKE) --no-print-directory setup STACK=oldest
	$(VENV_oldest)/bin/python -m pytest -q $(OLDEST_TESTS)
