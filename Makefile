# sfa-ops — the two commands. Both install what they need (Debian packages, the locked Python env).
SHELL := /bin/bash
PY := .venv/bin/python
PACKAGES := protocol policies adapters sdk actors drivers benchmarks
# This checkout's code, also in subprocesses and Ray workers (whatever an editable install points at).
export PYTHONPATH := $(CURDIR)

.PHONY: run test setup lint typecheck unit bench sdk-wheel clean

setup: .venv/.installed

.venv/.installed: pyproject.toml uv.lock scripts/apt.sh scripts/install-system.sh scripts/install-python.sh
	bash scripts/install-system.sh
	bash scripts/install-python.sh
	touch $@

run: setup
	$(PY) -m drivers.run

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

typecheck: setup
	.venv/bin/mypy

# The pure tests alone (no broker, database or Ray needed), less the few slow property runs and
# subprocess tests (marked `slow`; `make test` runs them).
unit: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "unit and not slow" tests/unit

# pytest exits 5 when nothing was collected; that is a failure here, as any non-zero exit.
test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider

bench: setup
	for b in rpc breaker; do $(PY) -m benchmarks.$$b || exit 1; done

# The SDK alone, as the wheel platform services install (import name sfa_sdk; see sdk/README.md).
sdk-wheel: setup
	$(PY) -m drivers.sdk_wheel --out dist

clean:
	rm -rf var dist .venv .tools .mypy_cache .ruff_cache
