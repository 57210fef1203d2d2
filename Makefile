# nanovla_ros on a pip-only host. Both targets set everything up first (idempotent: seconds when done).
#   make demo   - the main job: the node suite on the simulated arm, one instruction, a report
#   make test   - the linter (ruff) and the test suite (what .ci/run calls)
#   make setup  - only the set-up (venv, ROS 2 wheels, torch, interfaces, model caches)
#   make lerobot-venv - the real lerobot package in .venv-lerobot (Python 3.12), for the LeRobot format tests
#   make browser      - Debian's Chromium, for the viewer's headless-browser test
VENV ?= .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup lerobot-venv browser demo test bench colcon-check clean

setup:
	@bash scripts/setup_env.sh

lerobot-venv:
	@bash scripts/lerobot/setup_venv.sh

browser:
	@bash scripts/setup_browser.sh

demo: setup
	$(PY) -m nanovla_ros.cli demo

test: setup lerobot-venv browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q test

bench: setup
	$(PY) scripts/bench/bench_instruction_encoder.py

clean:
	rm -rf build install log
