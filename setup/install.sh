#!/usr/bin/env bash
# Creates .venv and installs the project with its test extras. Idempotent: when
# pyproject.toml has not changed since the last install it returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.speechbed-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && .venv/bin/python -c 'import speechbed' 2>/dev/null; then
    exit 0
fi
[ -x .venv/bin/python ] || python3.11 -m venv .venv || python3 -m venv .venv
# torch first, pinned, so nothing pulls the multi-GB CUDA build from the registry.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
touch "$stamp"
echo "speechbed installed in .venv"
