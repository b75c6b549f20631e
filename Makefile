# Two entry points for people: `make demo` and `make test`. Each one creates or
# updates the virtual environment in .venv first, so a fresh machine needs only
# Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-quick clean

# Installing compiles the codec's hot modules (setup.py, messages/compiled.py), so
# any change to the messages package installs again (about 25 s).
$(STAMP): pyproject.toml setup.py $(wildcard messages/*.py)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "atm-switch needs Python 3.11+"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/atm-switch demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no test: for us that is a failure, never a pass.
unit: $(STAMP)
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/atm-switch bench

bench-quick: $(STAMP)
	$(BIN)/atm-switch bench --quick

clean:
	rm -rf $(VENV) .state build *.egg-info
