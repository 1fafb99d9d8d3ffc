#!/bin/sh
# Installs a cells-updater build into a root: the one install path that tests, the demo and
# the packages share.
#
#   dist/install.sh [--destdir DIR] [--prefix /usr] [--binary PATH] [--sysconfdir /etc]
#
# --destdir   stage into DIR instead of / (packaging)
# --prefix    where the binary and data files go (default /usr)
# --binary    the built binary (default target/release/cells-updater, else target/debug/…)
# An existing /etc/cells-updater/config.toml is never overwritten.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
destdir=""
prefix=/usr
sysconfdir=/etc
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --destdir) destdir=$2; shift 2;;
    --prefix) prefix=$2; shift 2;;
    --sysconfdir) sysconfdir=$2; shift 2;;
    --binary) binary=$2; shift 2;;
    -h|--help) sed -n '2,11p' "$0"; exit 0;;
    *) echo "install.sh: unknown option $1" >&2; exit 2;;
  esac
done
if [ -z "$binary" ]; then
  for b in "$here/../target/release/cells-updater" "$here/../target/debug/cells-updater"; do
    [ -x "$b" ] && { binary=$b; break; }
  done
fi
[ -n "$binary" ] && [ -x "$binary" ] || { echo "install.sh: no built binary; run cargo build --release or pass --binary" >&2; exit 1; }

bindir=$prefix/bin
unitdir=$prefix/lib/systemd/system
d() { printf '%s%s' "$destdir" "$1"; }

install -d -m 0755 "$(d "$bindir")" "$(d "$unitdir")" \
  "$(d "$prefix/share/dbus-1/system.d")" "$(d "$prefix/share/dbus-1/system-services")" \
  "$(d "$prefix/share/polkit-1/actions")" "$(d "$prefix/share/doc/cells-updater")"
install -d -m 0755 "$(d "$sysconfdir/cells-updater")" "$(d "$sysconfdir/cells-updater/keys.d")" \
  "$(d "$sysconfdir/cells-updater/config.d")"

install -m 0755 "$binary" "$(d "$bindir/cells-updater")"
for u in cells-updater.service cells-updater-check.service cells-updater-check.timer; do
  sed "s|@BINDIR@|$bindir|g" "$here/$u" > "$(d "$unitdir/$u")"
  chmod 0644 "$(d "$unitdir/$u")"
done
install -m 0644 "$here/com.pydio.CellsUpdater1.conf" "$(d "$prefix/share/dbus-1/system.d/com.pydio.CellsUpdater1.conf")"
install -m 0644 "$here/com.pydio.CellsUpdater1.service" "$(d "$prefix/share/dbus-1/system-services/com.pydio.CellsUpdater1.service")"
install -m 0644 "$here/com.pydio.cellsupdater.policy" "$(d "$prefix/share/polkit-1/actions/com.pydio.cellsupdater.policy")"
install -m 0644 "$here/50-cells-updater.rules.example" "$(d "$prefix/share/doc/cells-updater/50-cells-updater.rules.example")"
install -m 0644 "$here/config.toml" "$(d "$prefix/share/doc/cells-updater/config.toml")"
if [ ! -e "$(d "$sysconfdir/cells-updater/config.toml")" ]; then
  install -m 0644 "$here/config.toml" "$(d "$sysconfdir/cells-updater/config.toml")"
fi
echo "installed cells-updater into ${destdir:-/} (prefix $prefix)"
