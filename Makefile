# The two commands of the README. Each brings the environment up first (tools/setup_env.sh).
# STACK=upstream|onedl picks the tested stack (default: upstream on CPU, onedl with an NVIDIA GPU),
# VENV the environment (default .venv; one stack at a time, switched in place).
STACK ?= $(shell bash tools/setup_env.sh --resolve-stack)
VENV ?= .venv
PY := $(VENV)/bin/python
export STACK VENV

.PHONY: quickstart test env

env: $(VENV)/.ready-$(STACK)

# setup.py takes the stacks' extras from ravlt_dense/stack.py
$(VENV)/.ready-$(STACK): requirements/stack.txt requirements/stack-onedl.txt tools/setup_env.sh setup.py \
		ravlt_dense/stack.py
	bash tools/setup_env.sh

quickstart: env
	bash tools/quickstart.sh

test: env
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests
