# The two set-up commands of the README: `make demo` (main job) and `make test` (what CI runs).
# torch==2.13.0 is installed first on purpose: it is a CPU build on local disk, while a plain `torch`
# requirement would pull gigabytes of CUDA packages.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test lint slow browser

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
	$(PYTHON) -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())" --no-cache
	$(PYTHON) -m mypy searchkit bench/benchtools.py bench/synthetic.py bench/loadgen.py

test: install browser lint
	$(PYTHON) -m pytest -q

slow: install
	$(PYTHON) -m pytest -q -m slow

# Debian's chromium + chromedriver for the search page's browser test (tests/test_serve_page.py): installed
# with apt-get (as root) only when missing, quietly. .ci/run runs it; without them the test skips, except in CI.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver missing and not root: the search page's browser test will skip (CI fails it)"; fi
