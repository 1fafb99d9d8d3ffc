#!/usr/bin/env bash
# systemd-sandbox.sh (adapted from the project reference notes) - boot a real systemd (PID 1) + real D-Bus system bus inside a
# systemd-nspawn container on a host whose PID 1 is NOT systemd (no machined, no host bus).
# The default package set includes polkitd, so a daemon's polkit path can be tested for real.
#
#   systemd-sandbox.sh up   DIR [-- EXTRA_NSPAWN_ARGS...]   build rootfs (cached in DIR/rootfs) + boot
#   systemd-sandbox.sh exec DIR -- CMD [ARGS...]             run CMD as root inside (exit code propagated)
#   systemd-sandbox.sh env  DIR                              print shell exports for host-side access
#   systemd-sandbox.sh status DIR                            exit 0 if up
#   systemd-sandbox.sh down DIR                              stop; no leftover processes/mounts/cgroups
#
# Environment knobs (all optional):
#   SANDBOX_SUITE=bookworm          Debian suite for debootstrap
#   SANDBOX_PACKAGES=...            --include list (default: PKGS below; rpm is there to install our rpm for real)
#   SANDBOX_MIRROR=URL              default: first URI for SUITE found in /etc/apt/sources.list{,.d/*}
#   SANDBOX_ROOTFS=PATH             share one cached rootfs between several DIRs (default DIR/rootfs)
#   SANDBOX_PERSIST=1               boot the rootfs read-write (default: --volatile=overlay, i.e.
#                                   the cached rootfs stays pristine, all changes vanish on `down`)
#   SANDBOX_CGROUP=unified|hybrid|legacy   cgroup layout shown to the container (default unified)
#   SANDBOX_NET=private|host        default private (container only has lo)
#   SANDBOX_BOOT_TIMEOUT=60  SANDBOX_STOP_TIMEOUT=20   seconds
#   SANDBOX_PASSENV="RUST_LOG FOO"  host env vars forwarded by `exec` (env is otherwise clean)
set -euo pipefail

SUITE=${SANDBOX_SUITE:-bookworm}
PKGS=${SANDBOX_PACKAGES:-systemd,systemd-sysv,dbus,libcap2-bin,libpam-systemd,polkitd,curl,ca-certificates,man-db,rpm,iproute2}
BOOT_TIMEOUT=${SANDBOX_BOOT_TIMEOUT:-60}
STOP_TIMEOUT=${SANDBOX_STOP_TIMEOUT:-20}
INNER_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '[sandbox %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

usage() { sed -n '2,11p' "$0" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- helpers
need_tools() {
  local missing=()
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v debootstrap   >/dev/null || missing+=(debootstrap)
  command -v nsenter       >/dev/null || missing+=(util-linux)
  command -v unshare       >/dev/null || missing+=(util-linux)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # no recommends: avoids libnss-mymachines (edits host nsswitch.conf) and arch-test
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Mirror comes from the host apt config, never hard-coded.
find_mirror() {
  [ -n "${SANDBOX_MIRROR:-}" ] && { echo "$SANDBOX_MIRROR"; return; }
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v s="$SUITE" '
      /^[[:space:]]*$/ { if (deb && suite && u) { print u; exit } deb=0; suite=0; u=""; next }
      /^Types:/  { for (i=2;i<=NF;i++) if ($i=="deb") deb=1 }
      /^URIs:/   { u=$2 }
      /^Suites:/ { for (i=2;i<=NF;i++) if ($i==s) suite=1 }
      END { if (deb && suite && u) print u }' "$f" | head -n1)
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v s="$SUITE" '$1=="deb" { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1)==s) { print $i; exit } break } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  die "no apt source for suite $SUITE found; set SANDBOX_MIRROR"
}

build_rootfs() {
  local root=$1 tmp="$1.tmp.$$" t0 mirror
  t0=$(now); mirror=$(find_mirror)
  log "building rootfs $root (debootstrap $SUITE, include=$PKGS)"
  rm -rf "$tmp"
  local had_run_mount=0; [ -e /run/mount ] && had_run_mount=1
  if ! debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$tmp" "$mirror" >"$tmp.log" 2>&1; then
    { tail -n 30 "$tmp.log"
      grep -h -A4 'dpkg: dependency problems\|dpkg: error' "$tmp/debootstrap/debootstrap.log" 2>/dev/null | head -n 20
    } | sed -E 's#[a-z]+://[^ ]+#<mirror-url>#g' >&2
    rm -rf "$tmp"; [ $had_run_mount = 0 ] && rmdir /run/mount 2>/dev/null
    die "debootstrap failed (log: $tmp.log)"
  fi
  [ $had_run_mount = 0 ] && rmdir /run/mount 2>/dev/null   # debootstrap's chroot mounts leave it on the host
  rm -f "$tmp.log"
  # scrub anything that names the mirror, and make the image boot-clean
  : > "$tmp/etc/apt/sources.list"
  find "$tmp/var/lib/apt/lists" -maxdepth 1 -type f -delete
  rm -f "$tmp"/var/cache/apt/*.bin "$tmp/var/log/bootstrap.log"
  rm -rf "$tmp/var/cache/apt/archives/"*.deb
  echo sandbox > "$tmp/etc/hostname"
  : > "$tmp/etc/machine-id"                      # empty => fresh machine-id per boot (from --uuid)
  ln -sf /etc/machine-id "$tmp/var/lib/dbus/machine-id"   # else systemd would copy this stale one
  ln -sf /lib/systemd/system/multi-user.target "$tmp/etc/systemd/system/default.target"
  local u
  for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
           e2scrub_reap.service fstrim.timer console-getty.service getty@.service; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$u"
  done
  printf 'suite=%s\npackages=%s\nbuilt=%s\n' "$SUITE" "$PKGS" "$(date -u +%FT%TZ)" > "$tmp/.sandbox-rootfs"
  rm -rf "$root"; mv "$tmp" "$root"
  log "rootfs built in $(elapsed "$t0")s, size $(du -sh "$root" | cut -f1)"
}

# process identity = pid + kernel start time, so we never signal a recycled PID
# (zombies count as dead: an orphaned nspawn may sit unreaped under a non-systemd PID 1)
pstat()  { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null || true; }   # fields after "pid (comm) "
pstart() { pstat "$1" | awk '{print $20}'; }
alive()  { [ -n "${1:-}" ] && [ -n "${2:-}" ] && pstat "$1" | awk -v s="$2" '$1 != "Z" && $1 != "X" && $20 == s {f=1} END {exit !f}'; }

load_state() {
  STATE="$DIR/.sandbox"
  NPID=; NSTART=; LEADER=; LSTART=; NAME=; CGROUPS=
  [ -f "$STATE/state" ] && . "$STATE/state"
  return 0
}

cgroup_roots() {  # host hierarchies nspawn cares about
  if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then echo /sys/fs/cgroup; return; fi
  [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ] && echo /sys/fs/cgroup/unified
  [ -d /sys/fs/cgroup/systemd ] && echo /sys/fs/cgroup/systemd
  return 0
}

is_up() { load_state; alive "$NPID" "$NSTART" && alive "$LEADER" "$LSTART"; }

inner() {  # run a command inside without the clean-env wrapper (internal use)
  nsenter -t "$LEADER" -a -- env -i PATH=$INNER_PATH HOME=/root LANG=C.UTF-8 "$@"
}

# ---------------------------------------------------------------- subcommands
cmd_up() {
  local t0; t0=$(now)
  need_tools
  mkdir -p "$DIR"; DIR=$(realpath "$DIR")
  load_state
  if is_up; then log "already up (leader $LEADER)"; return 0; fi
  [ -n "$NPID$LEADER" ] && { log "stale state, cleaning"; cmd_down; load_state; }
  local ROOT=${SANDBOX_ROOTFS:-$DIR/rootfs}
  # A cached rootfs is reused while its package list is the one asked for.
  fresh() { grep -qxF "packages=$PKGS" "$ROOT/.sandbox-rootfs" 2>/dev/null; }
  if ! fresh; then                                  # serialize builds of a shared cache
    exec 8>"$ROOT.lock"; flock 8
    fresh || build_rootfs "$ROOT"
    exec 8>&-
  fi
  mkdir -p "$STATE"
  trap 'log "up failed, cleaning up"; cmd_down' EXIT   # never leave a half-started container
  NAME="sbx-$(printf '%s' "$DIR" | sha256sum | cut -c1-10)"

  # Own cgroup subtree: nspawn --keep-unit creates payload/ + supervisor/ below it,
  # so nothing lands in the host root cgroup and `down` can rmdir it all.
  CGROUPS=$(cgroup_roots | sed "s|\$|/$NAME|" | tr '\n' ' ')
  local cg; for cg in $CGROUPS; do mkdir -p "$cg"; done

  local args=(-D "$ROOT" -b --register=no --keep-unit --console=read-only
              --machine="$NAME" --hostname=sandbox --link-journal=no
              --uuid="$(cat /proc/sys/kernel/random/uuid)")
  [ "${SANDBOX_PERSIST:-0}" = 1 ] || args+=(--volatile=overlay)
  [ "${SANDBOX_NET:-private}" = host ] || args+=(--private-network)
  args+=("$@")
  local uh
  case "${SANDBOX_CGROUP:-unified}" in unified) uh=1;; legacy) uh=0;; hybrid) uh=;; *) die "bad SANDBOX_CGROUP";; esac

  : > "$STATE/console.log"; rm -f "$STATE/npid"
  # New session + private mount namespace (all nspawn mounts die with it; a tmpfs on
  # /run/systemd keeps nspawn's runtime dirs off the host), then exec nspawn. The PID
  # written to npid stays nspawn's PID across both execs.
  CGROUPS="$CGROUPS" UH="$uh" NPIDFILE="$STATE/npid" setsid bash -c '
      for cg in $CGROUPS; do echo $$ > "$cg/cgroup.procs"; done
      [ -n "$UH" ] && export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=$UH
      echo $$ > "$NPIDFILE.tmp" && mv "$NPIDFILE.tmp" "$NPIDFILE"
      exec unshare --mount --propagation private -- bash -c "
        mkdir -p /run/systemd && mount -n -t tmpfs -o mode=0755 sandbox-run /run/systemd
        exec systemd-nspawn \"\$@\"" nspawn "$@"' launcher "${args[@]}" \
      </dev/null >"$STATE/console.log" 2>&1 &
  local i
  for ((i = 0; i < 100; i++)); do [ -s "$STATE/npid" ] && break; sleep 0.05; done
  NPID=$(cat "$STATE/npid" 2>/dev/null) || die "launcher did not start"
  NSTART=$(pstart "$NPID")
  printf 'NPID=%s\nNSTART=%s\nNAME=%s\nCGROUPS="%s"\n' "$NPID" "$NSTART" "$NAME" "$CGROUPS" > "$STATE/state"

  # leader = child of nspawn living in another PID namespace, after it exec'd systemd
  local mypidns c deadline st=""
  mypidns=$(readlink /proc/self/ns/pid); deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
  LEADER=
  while [ -z "$LEADER" ]; do
    alive "$NPID" "$NSTART" || { tail -n 30 "$STATE/console.log" >&2; die "nspawn exited during startup"; }
    for c in $(ps -o pid= --ppid "$NPID" 2>/dev/null); do
      if [ "$(readlink /proc/$c/ns/pid 2>/dev/null)" != "$mypidns" ] &&
         [[ "$(readlink /proc/$c/exe 2>/dev/null)" == */systemd ]]; then LEADER=$c; fi
    done
    [ "$(date +%s)" -lt "$deadline" ] || die "timeout waiting for container init"
    [ -n "$LEADER" ] || sleep 0.05
  done
  LSTART=$(pstart "$LEADER")
  printf 'LEADER=%s\nLSTART=%s\n' "$LEADER" "$LSTART" >> "$STATE/state"

  while :; do
    alive "$LEADER" "$LSTART" || { tail -n 30 "$STATE/console.log" >&2; die "container init died"; }
    st=$(inner systemctl is-system-running 2>/dev/null || true)
    case "$st" in running|degraded) break;; esac
    [ "$(date +%s)" -lt "$deadline" ] || { log "state=$st"; die "timeout waiting for boot"; }
    sleep 0.1
  done
  [ "$st" = degraded ] && { log "WARNING: degraded; failed units:"; inner systemctl --failed --no-legend >&2 || true; }
  trap - EXIT
  log "up: $NAME state=$st leader=$LEADER in $(elapsed "$t0")s"
}

cmd_exec() {
  load_state; is_up || die "not up: $DIR"
  local envs=(PATH=$INNER_PATH HOME=/root LANG=C.UTF-8 TERM=${TERM:-dumb}) v
  for v in ${SANDBOX_PASSENV:-}; do [ -n "${!v+x}" ] && envs+=("$v=${!v}"); done
  exec nsenter -t "$LEADER" -a -- env -i "${envs[@]}" "$@"
}

cmd_env() {
  load_state; is_up || die "not up: $DIR"
  echo "export SANDBOX_LEADER=$LEADER"
  echo "export SANDBOX_ROOT=/proc/$LEADER/root"
  echo "export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/proc/$LEADER/root/run/dbus/system_bus_socket"
}

cmd_down() {
  local t0 i cg p; t0=$(now)
  DIR=$(realpath -m "$DIR"); load_state
  local wait=$STOP_TIMEOUT; [ -n "$LEADER" ] || wait=3   # still in nspawn setup: don't linger
  if alive "$NPID" "$NSTART"; then
    kill -TERM "$NPID"                       # nspawn -> SIGRTMIN+3 to init = clean poweroff
    for ((i = 0; i < wait * 10; i++)); do alive "$NPID" "$NSTART" || break; sleep 0.1; done
  elif alive "$LEADER" "$LSTART"; then       # nspawn died (e.g. harness crash), init orphaned
    log "nspawn gone, halting orphaned container init $LEADER"
    kill -s RTMIN+3 "$LEADER"               # systemd: SIGRTMIN+3 = halt
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do alive "$LEADER" "$LSTART" || break; sleep 0.1; done
  fi
  if alive "$LEADER" "$LSTART"; then
    log "clean shutdown timed out, SIGKILL"
    kill -KILL "$LEADER"                     # PID-ns init: the kernel kills the whole namespace
  fi
  for ((i = 0; i < 50; i++)); do alive "$NPID" "$NSTART" || break; sleep 0.1; done
  alive "$NPID" "$NSTART" && kill -KILL "$NPID"
  # anything still in our cgroups is ours by construction
  for cg in ${CGROUPS:-}; do
    [ -d "$cg" ] || continue
    for p in $(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
      find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$cg" ] || break; sleep 0.1
    done
    [ -d "$cg" ] && log "WARNING: could not remove cgroup $cg"
  done
  # mounts live in nspawn's private namespace; this is only a safety net
  { findmnt -rn -o TARGET | grep -F "$DIR/" | sort -r | while read -r m; do umount -l "$m"; done; } || true
  rm -f "${STATE:-$DIR/.sandbox}/state"
  log "down in $(elapsed "$t0")s"
}

# ---------------------------------------------------------------- main
[ $# -ge 2 ] || usage
SUB=$1; DIR=$2; shift 2
case "$SUB" in
  up)     [ "${1:-}" = -- ] && shift; cmd_up "$@";;
  exec)   [ "${1:-}" = -- ] && shift; [ $# -ge 1 ] || usage; cmd_exec "$@";;
  env)    cmd_env;;
  status) if is_up; then echo "up leader=$LEADER"; else echo down; exit 1; fi;;
  down)   cmd_down;;
  *)      usage;;
esac
