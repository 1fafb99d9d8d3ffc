#!/usr/bin/env bash
# The test command: installs what the tests need, builds the packages, then runs every test
# (unit, private-bus, real-systemd, packages). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
# The package tests install what this builds (cargo-deb, cargo-generate-rpm).
packaging/build.sh
exec cargo test --locked --all-features "$@"
