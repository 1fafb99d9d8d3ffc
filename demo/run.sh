#!/usr/bin/env bash
# cells-updater, end to end on a real systemd. Does all its own setup on a fresh Debian 12
# machine (as root): packages, a cached Debian rootfs, the build. Then, step by step:
# a systemd container boots; a fake Cells 4.4.2 serves on :443 as user pydio; a local update
# server offers releases signed with openssl; cells-updater, installed with dist/install.sh
# and activated over D-Bus, updates Cells to 4.4.5 keeping cap_net_bind_service, refuses a
# tampered binary, and rolls back a broken 4.4.6 by itself. Setup output goes to
# target/demo/setup.log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/demo
sbxdir=$work/sandbox
bold() { if [ -t 1 ]; then printf '\n\033[1m==> %s\033[0m\n' "$*"; else printf '\n==> %s\n' "$*"; fi; }
sbx() { tests/sandbox/systemd-sandbox.sh exec "$sbxdir" -- "$@"; }
show() { printf '$ %s\n' "$*"; sbx bash -c "$*"; }
# The demo checks what it shows: a wrong outcome stops it with a non-zero status.
expect() { # expect WHAT WANTED ACTUAL
  if [ "$2" = "$3" ]; then printf '  [ok] %s: %s\n' "$1" "$3"; else printf '  [FAILED] %s: wanted %s, got %s\n' "$1" "$2" "$3"; exit 1; fi
}
served() { sbx curl -s http://127.0.0.1:443/ || true; }
caps() { sbx getcap /opt/pydio/bin/cells | awk '{print $2}'; }
[ "$(id -u)" = 0 ] || { echo "run the demo as root (it boots systemd-nspawn)" >&2; exit 1; }

bold "Setup: packages, a cached Debian rootfs, the build (output in target/demo/setup.log)"
mkdir -p "$work"
t0=$(date +%s)
if ! { tests/deps.sh && cargo build --locked --bin cells-updater --example update_server; } \
     >"$work/setup.log" 2>&1; then
  tail -n 30 "$work/setup.log" >&2
  echo "setup failed; the whole log is $work/setup.log" >&2
  exit 1
fi
echo "ready in $(( $(date +%s) - t0 )) s"

bold "Making Cells releases (fake binaries) and signing them with openssl (RSA-2048, PKCS#1 v1.5)"
cc -O1 -DFAKE_VERSION='"4.4.2"' -o "$work/cells-4.4.2" tests/support/fake-cells.c
cc -O1 -DFAKE_VERSION='"4.4.5"' -o "$work/cells-4.4.5" tests/support/fake-cells.c
# 4.4.6 answers `version` but exits at `start`: a release that does not come up.
cc -O1 -DFAKE_VERSION='"4.4.6"' -DFAKE_MODE='"exit"' -o "$work/cells-4.4.6" tests/support/fake-cells.c
[ -f "$work/pydio.key" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/pydio.key" 2>/dev/null
# Pydio ships its key as a PKCS#1 body under the label "PUBLIC KEY"; do the same.
openssl rsa -in "$work/pydio.key" -RSAPublicKey_out 2>/dev/null | sed 's/RSA PUBLIC KEY/PUBLIC KEY/' > "$work/pydio.pub.pem"
sum() { openssl dgst -sha256 -binary "$1" | base64 -w0; }
sig() { openssl dgst -sha256 -sign "$work/pydio.key" "$1" | base64 -w0; }
echo "cells-4.4.5: sha256 $(sum "$work/cells-4.4.5")"

bold "Booting a real systemd in a container (systemd-nspawn -b)"
tests/sandbox/systemd-sandbox.sh down "$sbxdir" >/dev/null 2>&1 || true
trap 'tests/sandbox/systemd-sandbox.sh down "$sbxdir" >/dev/null 2>&1 || true' EXIT
SANDBOX_ROOTFS=$root/target/sandbox/rootfs tests/sandbox/systemd-sandbox.sh up "$sbxdir" -- --bind-ro="$root:/src"
show "systemctl is-system-running; systemd --version | head -1"

bold "Installing cells-updater with dist/install.sh (unit, timer, D-Bus policy and activation, polkit)"
show "/src/dist/install.sh --binary /src/target/debug/cells-updater --prefix /usr && systemctl daemon-reload && systemctl reload dbus && systemctl enable --now cells-updater-check.timer 2>/dev/null"
# The demo's releases are signed by a local key, as a mirror's would be: trust it beside
# Pydio's own key (shipped as a vendor key). node_exporter's textfile directory, for metrics.
sbx bash -c "install -m 0644 /src/target/demo/pydio.pub.pem /etc/cells-updater/keys.d/demo-mirror.pem
  mkdir -p /var/lib/prometheus/node-exporter"

bold "A Cells 4.4.2 server as Pydio's guide sets it up: user pydio owns /opt/pydio, cells.service without AmbientCapabilities, port 443 through setcap"
sbx bash -c "useradd --system --home-dir /var/cells --create-home pydio; mkdir -p /opt/pydio/bin
  install -m 0755 /src/target/demo/cells-4.4.2 /opt/pydio/bin/cells
  chown -R pydio:pydio /opt/pydio
  setcap cap_net_bind_service=+ep /opt/pydio/bin/cells
  cat > /etc/systemd/system/cells.service <<'UNIT'
[Unit]
Description=Pydio Cells
AssertFileIsExecutable=/opt/pydio/bin/cells
[Service]
User=pydio
Group=pydio
ExecStart=/opt/pydio/bin/cells start
Restart=on-failure
Environment=CELLS_WORKING_DIR=/var/cells
LimitNOFILE=65536
KillSignal=INT
TimeoutStopSec=5
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload && systemctl enable --now cells.service"
show "getcap /opt/pydio/bin/cells; stat -c '%U:%G %a %n' /opt/pydio /opt/pydio/bin; sleep 0.3; echo \"cells answers on :443 -> \$(curl -s http://127.0.0.1:443/)\""

bold "A local update server offering 4.4.5 (signed above)"
sbx systemd-run --quiet --unit=demo-update-server /src/target/debug/examples/update_server \
  --listen 127.0.0.1:8080 \
  --release 4.4.5 /src/target/demo/cells-4.4.5 "$(sum "$work/cells-4.4.5")" "$(sig "$work/cells-4.4.5")"
# Short health settle for the demo (default 10s).
sbx bash -c 'printf "[server]\nurl = \"http://127.0.0.1:8080/\"\n[policy]\nhealth_settle = \"3s\"\nhealth_timeout = \"30s\"\n" > /etc/cells-updater/config.d/50-demo.toml'
sleep 0.5

bold "cells-updater status (the first call activates the daemon over D-Bus)"
show "systemctl is-active cells-updater.service || true; cells-updater status; systemctl show -p StatusText --value cells-updater.service"

bold "cells-updater doctor: is this host ready? (one line per check, with the fix)"
show "cells-updater doctor"

bold "cells-updater check, as the Cells user pydio (allowed: it is cells.service's User=)"
show "runuser -u pydio -- cells-updater check"

bold "A tampered binary offered by file descriptor is refused"
sbx bash -c "cp /src/target/demo/cells-4.4.5 /tmp/tampered && printf X | dd of=/tmp/tampered bs=1 seek=4000 conv=notrunc 2>/dev/null"
show "cells-updater stage --file /tmp/tampered --version 4.4.5 --checksum $(sum "$work/cells-4.4.5") --signature $(sig "$work/cells-4.4.5") || echo \"(exit status \$?)\""

bold "An admin holds updates (a change freeze): an explicit update needs --force"
show "cells-updater hold --reason 'change freeze until Monday'; runuser -u pydio -- cells-updater update 4.4.5 || echo \"(exit status \$?)\""
show "cells-updater unhold"

bold "cells-updater update, as pydio: download, verify, probe, swap, setcap, restart, health-check"
show "runuser -u pydio -- cells-updater update 4.4.5"
show "echo \"cells answers on :443 -> \$(curl -s http://127.0.0.1:443/)\"; getcap /opt/pydio/bin/cells; stat -c '%U:%G %a %n' /opt/pydio/bin/cells"
expect "version served on :443" 4.4.5 "$(served)"
expect "file capability" cap_net_bind_service=ep "$(caps)"
expect "owner and mode" "root:root 755" "$(sbx stat -c '%U:%G %a' /opt/pydio/bin/cells)"
expect "binary directory adopted: pydio can no longer replace its binary" "root:root 755" "$(sbx stat -c '%U:%G %a' /opt/pydio/bin)"
show "cells-updater status"

bold "A broken 4.4.6 (exits at start) is published; the update rolls itself back"
sbx systemctl stop demo-update-server
sbx systemd-run --quiet --unit=demo-update-server2 /src/target/debug/examples/update_server \
  --listen 127.0.0.1:8080 \
  --release 4.4.6 /src/target/demo/cells-4.4.6 "$(sum "$work/cells-4.4.6")" "$(sig "$work/cells-4.4.6")"
sleep 0.5
show "cells-updater update 4.4.6 || echo \"(exit status \$?)\""
show "echo \"cells answers on :443 -> \$(curl -s http://127.0.0.1:443/)\"; getcap /opt/pydio/bin/cells"
expect "version served after the rollback" 4.4.5 "$(served)"
expect "file capability after the rollback" cap_net_bind_service=ep "$(caps)"
show "cells-updater check"
show "cells-updater status"

bold "Metrics for node_exporter's textfile collector (checked with promtool)"
show "cat /var/lib/prometheus/node-exporter/cells-updater.prom"
sbx cat /var/lib/prometheus/node-exporter/cells-updater.prom | promtool check metrics \
  && echo "  [ok] promtool check metrics: no problem found"

bold "The journal (structured fields: JOB_ID, VERSION)"
show "journalctl -u cells-updater.service --no-pager -o cat | tail -n 14"

bold "Done: 4.4.2 -> 4.4.5 with its capability kept, a tampered binary refused, a hold honoured, a broken 4.4.6 rolled back."
