# The small runner. Every target installs what it needs into .venv/ first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint clean bazel-test build-file

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on embedded defaults.
demo: $(STAMP)
	$(BIN)/python -m experiments.demo

## The whole suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -n 3 --maxschedchunk=1 --durations=30 $(PYTEST_ARGS)

## The edit loop: everything but tests marked slow.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache

## Bazel (Debian's bazel-bootstrap 4.2, offline): docs/build.md.
BAZEL_FLAGS = --incompatible_use_python_toolchains=false --python_path=$(CURDIR)/$(BIN)/bazel-python \
  --override_repository=rules_cc=$(CURDIR)/third_party/rules_cc_stub \
  --override_repository=rules_java=$(CURDIR)/third_party/rules_java_stub \
  --override_repository=remote_coverage_tools=$(CURDIR)/third_party/remote_coverage_tools_stub
BAZEL_TARGETS ?= //...

bazel-test: $(STAMP)
	printf '#!/bin/sh\nexec "$(CURDIR)/$(BIN)/python" "$$@"\n' > $(BIN)/bazel-python && chmod +x $(BIN)/bazel-python
	bazel test $(BAZEL_FLAGS) $(BAZEL_TARGETS)

build-file: $(STAMP)
	$(BIN)/python tools/gen_build.py
