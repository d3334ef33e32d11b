#!/usr/bin/env bash
# Longer fuzzing of the parsers of untrusted input (.npy, .npz, NIfTI-1, job files) than CI's
# 256 cases each: `scripts/fuzz.sh [CASES]` (default 100000 per parser). Prints the cases run
# and exits non-zero on the first crash, with proptest's minimal failing input.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
start=$(date +%s)
PROPTEST_CASES="$cases" cargo test --release --test fuzz -- --test-threads 2
echo "fuzz: $cases cases for each of 4 parsers, no crash, $(( $(date +%s) - start )) s"
