# The README's two commands: `make demo` (set-up + main job) and `make test` (set-up + tests).
PY := .venv/bin/python

.PHONY: setup demo test test-fast
setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"
