# The README's two commands: `make demo` (set-up + main job) and `make test` (set-up + tests).
PY := .venv/bin/python

.PHONY: setup demo test
setup:
	@bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo.py

test: setup
	$(PY) -m pytest -q
