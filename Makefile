# nanovla_ros on a pip-only host. Both targets set everything up first (idempotent: seconds when done).
#   make demo   - the main job: the node suite on the simulated arm, one instruction, a report
#   make test   - the linter (ruff) and the test suite (what .ci/run calls)
#   make setup  - only the set-up (venv, ROS 2 wheels, torch, interfaces, model caches)
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test bench colcon-check clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m nanovla_ros.cli demo

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q test

bench: setup
	$(PY) scripts/bench/bench_instruction_encoder.py

clean:
	rm -rf build install log
