#!/usr/bin/env bash
# Sets up an environment (the active one, else .venv), then trains every registered fusion
# operator on a task that needs a cross-modal interaction (XOR) and on one that does not,
# and prints the test accuracy of each. Extra arguments go to the demo (see --help).
set -euo pipefail
source "$(dirname "$0")/_setup_env.sh"
cd "$repo_root"
python -m experiments.fusion_demo "$@"
