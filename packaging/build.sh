#!/usr/bin/env bash
# Builds both packages from a clean checkout:
#   target/debian/cells-updater_<version>-1_<arch>.deb   (cargo-deb)
#   target/generate-rpm/cells-updater-<version>-1.<arch>.rpm   (cargo-generate-rpm)
# Both are made from what dist/install.sh installs into target/pkgroot, so packages, tests and
# the demo share one install path.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb@3.8.0
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm@0.21.1
# The packages carry the fleet agent (cargo feature fleet, docs/fleet.md).
cargo build --release --locked --features fleet --bin cells-updater
rm -rf target/pkgroot
dist/install.sh --destdir target/pkgroot --prefix /usr --binary target/release/cells-updater >/dev/null
strip --strip-unneeded target/pkgroot/usr/bin/cells-updater
cargo deb --no-build --locked --quiet
cargo generate-rpm
ls -1 target/debian/*.deb target/generate-rpm/*.rpm
