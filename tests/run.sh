#!/usr/bin/env bash
# The test command: installs what the tests need, builds the packages, then runs every test
# (unit, private-bus, real-systemd, packages). Run as root on Debian 12.
#
#   tests/run.sh            everything (what .ci/run runs, about 25 minutes here)
#   tests/run.sh --fast     the unit tests and every test file that boots no container
#                           (private buses, loopback HTTP, etcd, openssl): a few minutes,
#                           for the edit-test loop; the full run stays the one that counts
#
# A test file belongs to the fast tier when it never names the container harness
# (`Sandbox`, `support::cluster`); under --fast a container boot fails loudly, so a
# container test added to such a file is caught at once.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
if [ "${1:-}" = --fast ]; then
  shift
  fast=()
  for f in tests/*.rs; do
    grep -qE 'Sandbox|support::cluster' "$f" || fast+=(--test "$(basename "$f" .rs)")
  done
  # Several fast tests run the example servers and clients.
  cargo build --locked --all-features --examples
  export CELLS_UPDATER_TEST_TIER=fast
  exec cargo test --locked --all-features --lib --bins "${fast[@]}" "$@"
fi
# The package tests install what this builds (cargo-deb, cargo-generate-rpm).
packaging/build.sh
exec cargo test --locked --all-features "$@"
