#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test (unit, private-bus,
# real-systemd). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/deps.sh
exec cargo test --locked --all-features "$@"
