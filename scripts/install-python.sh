#!/usr/bin/env bash
# Creates .venv from uv.lock (exact pins). Idempotent.
#
# uv itself is installed into a private virtual environment (.tools/uv), never into the system
# Python: stock Debian 12 refuses `python3 -m pip install` (PEP 668, "externally-managed-environment").
# Where the venv module is missing (Debian without python3-venv) it is installed with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/apt.sh
UV_VERSION=0.13.8
TOOLS=.tools/uv
UV="$TOOLS/bin/uv"

have_uv() { [ -x "$UV" ] && [ "$("$UV" --version | awk '{print $2}')" = "$UV_VERSION" ]; }

if ! have_uv; then
  rm -rf "$TOOLS"
  if ! python3 -m venv "$TOOLS" >/dev/null 2>&1; then
    rm -rf "$TOOLS"
    apt_install install-python python3-venv
    python3 -m venv "$TOOLS"
  fi
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  have_uv || { echo "install-python: uv $UV_VERSION did not install into $TOOLS" >&2; exit 1; }
fi
# Python from the machine (uv never downloads an interpreter here): 3.11 unless SFA_OPS_PYTHON names
# another supported one (python3.12, python3.13). SFA_OPS_NO_DEV=1 (cluster nodes, production)
# leaves out the dev group: test, lint and benchmark tools. The project itself is installed
# editable, with its console script .venv/bin/sfa-ops.
extra=()
[ "${SFA_OPS_NO_DEV:-0}" = 1 ] && extra+=(--no-dev)
"$UV" sync --frozen --python "${SFA_OPS_PYTHON:-python3.11}" --no-python-downloads --quiet "${extra[@]}"
