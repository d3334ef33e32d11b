#!/usr/bin/env bash
# A whole-brain, many-subject run, distributed over worker processes on loopback with a moto S3
# server, in one command (issue 12, item 6; not run by CI):
#
#   scripts/bench/whole_brain.sh [--scale F] [--workers N] [--threads T] [--workdir DIR] [--json FILE]
#
# 1. sets up .venv-bench/ (numpy, nibabel: the data) and .venv-test/ (moto_server) with
#    scripts/python/setup_venv.sh;
# 2. builds target/release/brainfit when it is stale (scripts/bench/release_binary.sh);
# 3. runs scripts/bench/whole_brain.py: 4 subjects x 3 layers (p = 512, 4,096, 50,000), 1,000
#    samples, 60,000 x F voxels, encoding + radius-3 searchlight + 100 permutations; prints wall
#    time, per task kind compute/load seconds and bytes read, per process CPU time and peak RSS.
# At F = 1 (the default) this is hours on 2 cores; the README gives a scaled run's figures.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
BENCH_VENV="$VENV" bash "$ROOT/scripts/python/setup_venv.sh" bench
bash "$ROOT/scripts/python/setup_venv.sh" test
bash "$HERE/release_binary.sh"
exec "$VENV/bin/python" "$HERE/whole_brain.py" "$@"
