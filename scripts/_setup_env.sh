# Sourced by demo.sh and test.sh: use the active virtual environment, else create and
# activate .venv in the repository, then install mmfuse (editable) with the given extras.
# Usage: source scripts/_setup_env.sh [extras]
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x "$repo_root/.venv/bin/python" ]; then
    echo "[mmfuse] creating $repo_root/.venv"
    python3 -m venv "$repo_root/.venv"
  fi
  # shellcheck disable=SC1091
  source "$repo_root/.venv/bin/activate"
fi
extras="${1:-}"
echo "[mmfuse] installing mmfuse${extras:+[$extras]} into $(python -c 'import sys; print(sys.prefix)')"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e "$repo_root${extras:+[$extras]}"
