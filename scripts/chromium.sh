#!/usr/bin/env bash
# Prints the path of a usable Chromium binary, for the tests that open brainfit's HTML report
# in headless Chromium (tests/common/chromium.rs). If `chromium` is missing it installs
# Debian's `chromium` package first (needs root; without root it fails and says what to
# install). Idempotent, and safe when several tests call it at once: as root, the check and
# the installation run under an exclusive flock on /tmp/brainfit-chromium.lock.
set -euo pipefail

find_chromium() {
  command -v chromium || command -v chromium-browser || command -v google-chrome || true
}

if [ "$(id -u)" = 0 ]; then
  # one check-and-install at a time, so nobody finds a half-installed package; whoever
  # waited finds it done (non-root callers cannot install, and only look)
  exec 9>/tmp/brainfit-chromium.lock
  flock 9
fi
bin="$(find_chromium)"
if [ -z "$bin" ]; then
  [ "$(id -u)" = 0 ] || {
    echo "chromium.sh: Chromium is not installed and this is not root;" \
      "install Debian's chromium package (apt-get install chromium) as root" >&2
    exit 1
  }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  bin="$(find_chromium)"
  [ -n "$bin" ] || { echo "chromium.sh: installed chromium but found no binary" >&2; exit 1; }
fi
# a binary that cannot even report its version is no use to the tests
"$bin" --version >/dev/null 2>&1 || { echo "chromium.sh: $bin --version failed" >&2; exit 1; }
echo "$bin"
