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

# The suite runs on every core (pytest-xdist), each test file whole in one worker process, so that a module's
# fixtures are built once; each worker builds the session fixtures of its files. WORKERS=0: all in one process.
WORKERS ?= auto
PYTEST = $(PY) -m pytest -q -n $(WORKERS) --dist loadfile

test: setup
	$(PYTEST) --durations=15

test-fast: setup
	$(PYTEST) -m "not slow"

# What the oldest stack must pass: the models, hooks, checkpoints (and their reading without torch's allowlist),
# re-parameterization, export (refused there in one line), a tiny RetinaNet trained, tested and re-parameterized
# through tools/, mmdet's own detectors with a VanillaNet, and the wheel installed into that environment.
OLDEST_TESTS := tests/models tests/engine tests/test_checkpoint.py tests/test_weights_only.py tests/test_deploy.py \
	tests/test_export.py tests/test_extras.py tests/test_mmdet_detectors.py tests/test_packaging.py \
	tests/test_tools.py::test_train_logs_progress_with_eta_and_the_annealed_lambda \
	tests/test_tools.py::test_test_tool_reports_coco_box_map_and_speed \
	tests/test_tools.py::test_reparameterized_checkpoint_loads_strictly_and_evaluates_the_same

test-oldest:
	@$(MAKE) --no-print-directory setup STACK=oldest
	$(VENV_oldest)/bin/python -m pytest -q -n $(WORKERS) --dist loadfile $(OLDEST_TESTS)
