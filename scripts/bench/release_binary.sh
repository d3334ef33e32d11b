#!/usr/bin/env bash
# Builds target/release/brainfit (`cargo build --release --bin brainfit`) when it is missing or
# older than any source (src/ crates/ proto/ build.rs Cargo.toml Cargo.lock): the benchmarks'
# shared first step.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
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
  echo "release_binary.sh: $BIN $stale; cargo build --release --bin brainfit (the first build takes ~10 minutes on 2 cores)"
  cargo build --release --bin brainfit
  touch "$BIN"  # cargo leaves an up-to-date binary's mtime alone
fi

