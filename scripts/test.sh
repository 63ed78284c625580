#!/usr/bin/env bash
# Sets up an environment (the active one, else .venv), then runs lint and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tensor
set -euo pipefail
source "$(dirname "$0")/_setup_env.sh" test
cd "$repo_root"
echo "[mmfuse] ruff"
ruff format --check .
ruff check .
echo "[mmfuse] pytest"
python -m pytest -q "$@"
