# The two set-up commands of the README: `make demo` (main job) and `make test` (what CI runs).
# torch==2.13.0 is installed first on purpose: it is a CPU build on local disk, while a plain `torch`
# requirement would pull gigabytes of CUDA packages.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test lint slow

install:
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test]'

demo: install
	$(PYTHON) -m searchkit index build indexes/medline.toml --overwrite
	$(PYTHON) -m searchkit search indexes/medline "cancer treatment in children" -k 5 --explain
	$(PYTHON) -m searchkit eval eval/medline.toml --check -o eval/results/tmp/medline-demo.json

lint:
	$(PYTHON) -m ruff check searchkit tests bench
	$(PYTHON) -m ruff format --check searchkit tests bench
	$(PYTHON) -m mypy searchkit

test: install lint
	$(PYTHON) -m pytest -q

slow: install
	$(PYTHON) -m pytest -q -m slow
