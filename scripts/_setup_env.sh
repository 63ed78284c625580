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
# pip's output (and the build backend's banners) is shown only if the install fails
pip_log="$(mktemp)"
if ! { python -m pip install --quiet --upgrade pip &&
  python -m pip install --quiet -e "$repo_root${extras:+[$extras]}"; } >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  rm -f "$pip_log"
  echo "[mmfuse] installing mmfuse failed (pip's output above)" >&2
  return 1 2>/dev/null || exit 1
fi
rm -f "$pip_log"
