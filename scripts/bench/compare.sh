#!/usr/bin/env bash
# brainfit side by side with the Python anchors (himalaya, scikit-learn, numpy, rsatoolbox), on
# the same data, in one command (issue 12):
#
#   scripts/bench/compare.sh [--quick] [--threads N] [--only ridge searchlight ... cross_temporal extract_pca group_tfce] [--json FILE]
#
# 1. creates or updates .venv-bench/ from scripts/bench/requirements.txt with
#    `scripts/python/setup_venv.sh bench` (exact pins; python3 or $PYTHON);
# 2. builds target/release/brainfit when it is missing or older than any source
#    (scripts/bench/release_binary.sh);
# 3. runs scripts/bench/side_by_side.py, which prints the BLAS and GEMM rates, one markdown table
#    and the JSON, and exits non-zero when brainfit and an anchor disagree.
# --quick divides the sizes by 10. The issue-12 and issue-13 cases (ridge ... banded_ridge) take
# about 65 s at full size on 2 cores; the issue-14 RSA cases (rsa_methods, reweight, remix,
# crossnobis_searchlight, cross_temporal) about 8 minutes, almost all of it scikit-learn's
# newton-cholesky anchor of the remix case (plus the venv and the release build the first time);
# the issue-15 case (extract_pca: images -> ONNX layer -> incremental PCA) about 2 minutes; the
# issue-18 case (group_tfce: 20 subjects' maps, TFCE over 1,000 sign flips) about 4 minutes, almost
# all of it nilearn's permuted_ols.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"

# the venv, like the project's others (a venv that already satisfies every pin is left alone)
BENCH_VENV="$VENV" bash "$ROOT/scripts/python/setup_venv.sh" bench

bash "$HERE/release_binary.sh"

exec "$VENV/bin/python" "$HERE/side_by_side.py" "$@"
