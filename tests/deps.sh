#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian 12 machine (as root), and builds the
# cached Debian rootfs that the real-systemd tests boot. Idempotent; quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "tests need root: they drop privileges, mount a tmpfs and boot systemd-nspawn" >&2; exit 1; }

# A C compiler for the fake Cells (and for ring), the openssl CLI that signs fixtures,
# mount/umount and setpriv (util-linux), a private dbus-daemon (dbus), the independent D-Bus
# clients busctl (systemd) and gdbus (libglib2.0-bin), getcap/setcap (libcap2-bin),
# systemd-nspawn (systemd-container) and debootstrap; for the packages: lintian, rpm (its
# query tool), binutils (strip), dpkg-dev (dpkg-shlibdeps for cargo-deb); the Go toolchain
# and godbus for the Go client's test; promtool (prometheus) to check the metrics file;
# hashicorp/go-version to check the version order; for the fleet (cargo feature `fleet`): a
# real etcd (etcd-server, etcdctl from etcd-client; their services are never started here:
# tests start members themselves) and protoc (etcd-client compiles etcd's protos). No recommends: with them,
# libnss-mymachines would rewrite nsswitch.conf.
pkgs=(gcc libc6-dev openssl util-linux ca-certificates dbus libglib2.0-bin systemd libcap2-bin
      systemd-container debootstrap lintian rpm binutils dpkg-dev golang-go golang-dbus-dev
      prometheus golang-github-hashicorp-go-version-dev
      etcd-server etcd-client protobuf-compiler)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  mkdir -p target
  apt-get update -qq
  # Packages whose services must not start here (prometheus: only its promtool is used).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >target/apt.log 2>&1 || { tail -n 20 target/apt.log >&2; exit 1; }
  echo "installed ${missing[*]} (log: target/apt.log)"
fi

# The rootfs (cached under target/sandbox; about a minute when cold), rebuilt when the package
# list in tests/sandbox/systemd-sandbox.sh changes.
want=$(sed -n 's/^PKGS=${SANDBOX_PACKAGES:-\(.*\)}$/\1/p' tests/sandbox/systemd-sandbox.sh)
have=$(sed -n 's/^packages=//p' target/sandbox/rootfs/.sandbox-rootfs 2>/dev/null || true)
if [ -n "$have" ] && [ "$have" != "$want" ]; then
  echo "sandbox rootfs packages changed; rebuilding it" >&2
  rm -rf target/sandbox/rootfs
fi
if [ ! -f target/sandbox/rootfs/.sandbox-rootfs ]; then
  mkdir -p target/sandbox
  SANDBOX_ROOTFS="$PWD/target/sandbox/rootfs" tests/sandbox/systemd-sandbox.sh up target/sandbox/warmup
  tests/sandbox/systemd-sandbox.sh down target/sandbox/warmup
fi
