# The two commands of the README. Each one sets the machine up first (idempotent).
#   make demo   runs the demo end to end on generated data and the real fixture clips
#   make test   runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: demo test setup setup-test bench clean

setup:
	@bash launch/install.sh

setup-test:
	@bash launch/install.sh --test

demo: setup
	$(PY) -m avdetect.demo --out demo_out

test: setup-test
	$(PY) -m pytest -n 2 --dist loadfile -q --durations=15 tests

bench: setup
	$(PY) -m avdetect.bench

clean:
	rm -rf demo_out .pytest_cache
