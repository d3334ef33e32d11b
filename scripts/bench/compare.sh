#!/usr/bin/env bash
# brainfit side by side with the Python anchors (himalaya, scikit-learn, numpy, rsatoolbox), on
# the same data, in one command (issue 12):
#
#   scripts/bench/compare.sh [--quick] [--threads N] [--only ridge searchlight permutation] [--json FILE]
#
# 1. creates or updates .venv-bench/ from scripts/bench/requirements.txt with
#    `scripts/python/setup_venv.sh bench` (exact pins; python3 or $PYTHON);
# 2. builds target/release/brainfit (`cargo build --release --bin brainfit`) when it is missing
#    or older than any source (src/ crates/ proto/ Cargo.toml Cargo.lock);
# 3. runs scripts/bench/side_by_side.py, which prints the BLAS and GEMM rates, one markdown table
#    and the JSON, and exits non-zero when brainfit and an anchor disagree.
# --quick divides the sizes by 10: about 20 s on 2 cores, the full sizes about 65 s (plus the
# venv and the release build the first time).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"

# the venv, like the project's others (a venv that already satisfies every pin is left alone)
BENCH_VENV="$VENV" bash "$ROOT/scripts/python/setup_venv.sh" bench

BIN="$ROOT/target/release/brainfit"
cd "$ROOT"
stale=""
if [ ! -x "$BIN" ]; then
  stale="missing"
else
  newer="$(find src crates proto build.rs Cargo.toml Cargo.lock -type f -newer "$BIN" -print -quit 2>/dev/null || true)"
  [ -z "$newer" ] || stale="older than $newer"
fi
if [ -n "$stale" ]; then
  echo "compare.sh: $BIN $stale; cargo build --release --bin brainfit (the first build takes ~10 minutes on 2 cores)"
  cargo build --release --bin brainfit
  touch "$BIN"  # cargo leaves an up-to-date binary's mtime alone
fi

exec "$VENV/bin/python" "$HERE/side_by_side.py" "$@"
