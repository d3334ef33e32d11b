#!/usr/bin/env bash
# Create the project's Python environments, each from its pinned requirements file:
#   repo-root/.venv       requirements.txt       the fixture generators (make_fixtures.py)
#   repo-root/.venv-test  requirements-test.txt  servers and tools that `cargo test` runs
#   repo-root/.venv-bench scripts/bench/requirements.txt  the anchors of scripts/bench/compare.sh
# Separate venvs because their pins cannot share one (botocore needs python-dateutil<3, the
# fixture stack pins 4.0.0). Idempotent: a venv that already satisfies every pin of its file
# is left alone. `setup_venv.sh fixtures`, `test` or `bench` sets up only that one (`all`, the
# default, is fixtures and test).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"
WHICH="${1:-all}"

satisfied() {
  local venv="$1" req="$2"
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - "$req" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
ok = True
for line in open(sys.argv[1]):
    line = line.split('#', 1)[0].strip()
    if not line:
        continue
    name, _, want = line.partition('==')
    name = name.split('[', 1)[0]  # moto[server] -> moto
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

setup() {
  local venv="$1" req="$2"
  if satisfied "$venv" "$req"; then
    echo "setup_venv: $venv already satisfies $req"
    return 0
  fi
  if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$req"
  satisfied "$venv" "$req"
  echo "setup_venv: installed $req into $venv"
}

case "$WHICH" in
  all | fixtures) setup "${VENV:-$ROOT/.venv}" "$HERE/requirements.txt" ;;
esac
case "$WHICH" in
  all | test) setup "${TEST_VENV:-$ROOT/.venv-test}" "$HERE/requirements-test.txt" ;;
esac
case "$WHICH" in
  bench) setup "${BENCH_VENV:-$ROOT/.venv-bench}" "$ROOT/scripts/bench/requirements.txt" ;;
esac
