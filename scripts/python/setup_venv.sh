#!/usr/bin/env bash
# Create /work/main/.venv (repo-root/.venv) with the pinned Python packages used to
# generate reference fixtures. Idempotent: does nothing if the venv already
# satisfies every pin in requirements.txt.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
REQ="$HERE/requirements.txt"
PY="${PYTHON:-python3}"

satisfied() {
  [ -x "$VENV/bin/python" ] || return 1
  "$VENV/bin/python" - "$REQ" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
ok = True
for line in open(sys.argv[1]):
    line = line.split('#', 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition('==')
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        print(f"setup_venv: {name}: have {have}, want {want}", file=sys.stderr)
        ok = False
sys.exit(0 if ok else 1)
PYEOF
}

if satisfied; then
  echo "setup_venv: $VENV already satisfies $REQ"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r "$REQ"
satisfied
echo "setup_venv: installed $REQ into $VENV"
