#!/usr/bin/env bash
# Creates .venv from uv.lock (exact pins). Idempotent.
set -euo pipefail
UV_VERSION=0.13.8
if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
uv sync --frozen --python python3.11 --quiet
