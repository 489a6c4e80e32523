# The two commands of the README. Each brings the environment up first (tools/setup_env.sh).
PY := .venv/bin/python

.PHONY: quickstart test env

env: .venv/.ready

.venv/.ready: requirements/stack.txt tools/setup_env.sh setup.py
	bash tools/setup_env.sh

quickstart: env
	bash tools/quickstart.sh

test: env
	$(PY) -m pytest tests
