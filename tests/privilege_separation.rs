//! Privilege separation through systemd: the root daemon runs no staged code and speaks to
//! no network. Downloads and version probes are transient units with a dynamic user; the
//! daemon's own unit has no network, no namespaces and two capabilities, and its exposure
//! as `systemd-analyze security` scores it is at most 1.0.

mod support;

use std::time::Duration;
use support::sandbox::Sandbox;
use support::*;

/// `systemd-analyze security`'s overall exposure of `unit`, and its ✗ lines.
fn exposure(sb: &Sandbox, unit: &str) -> (f64, Vec<String>) {
    let out = sb.sh(&format!("systemd-analyze security --no-pager {unit}"));
    let line = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .expect("exposure line");
    let score = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("exposure number");
    let open = out
        .lines()
        .filter(|l| l.starts_with('✗'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (score, open)
}

/// `cells-updater stage VERSION` in the background; `assert_staged` waits for it.
fn stage_in_background(sb: &Sandbox, version: &str) {
    sb.sh(&format!(
        "(cells-updater stage {version} > /run/stage.out 2>&1; echo $? > /run/stage.rc) \
         </dev/null >/dev/null 2>&1 &"
    ));
}

/// The background stage ended well.
fn assert_staged(sb: &Sandbox, version: &str) {
    sb.wait_for(
        Duration::from_secs(60),
        "the stage to end",
        "test -e /run/stage.rc",
    );
    let out = sb.sh("cat /run/stage.out");
    assert_eq!(sb.sh("cat /run/stage.rc").trim(), "0", "{out}");
    assert!(out.contains(&format!("staged {version}")), "{out}");
}

/// The name of a running fetch helper unit, once there is one (20 s at most).
fn running_fetch_helper(sb: &Sandbox) -> String {
    sb.wait_for(
        Duration::from_secs(20),
        "the fetch helper",
        "systemctl list-units --no-legend --plain --state=running | grep -q '^cells-updater-fetch-'",
    );
    sb.sh("systemctl list-units --no-legend --plain --state=running | awk '/^cells-updater-fetch-/ {print $1}' | head -n1")
        .trim()
        .to_string()
}

#[test]
fn the_daemons_unit_is_exposed_at_most_1_0() {
    let sb = Sandbox::cells_host("exposure", &[("4.4.5", "ok")]);
    let (score, open) = exposure(&sb, "cells-updater.service");
    eprintln!("systemd-analyze security cells-updater.service: {score}");
    for l in &open {
        eprintln!("  {l}");
    }
    assert!(score <= 1.0, "exposure {score} > 1.0:\n{}", open.join("\n"));
    // Hardened as it is, the whole update works: no network, no namespaces, two
    // capabilities.
    assert_eq!(
        sb.unit_prop("cells-updater.service", "PrivateNetwork"),
        "yes"
    );
    assert_eq!(
        sb.unit_prop("cells-updater.service", "CapabilityBoundingSet"),
        "cap_chown cap_setfcap"
    );
    let (ok, out, err) = sb.try_sh("runuser -u pydio -- cells-updater update 4.4.5");
    assert!(ok, "{out}{err}");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.5");
}

/// Socket inodes the process `pid` holds.
fn socket_inodes(sb: &Sandbox, pid: &str) -> Vec<String> {
    sb.sh(&format!(
        "ls -l /proc/{pid}/fd 2>/dev/null | sed -n 's/.*socket:\\[\\([0-9]*\\)\\]$/\\1/p'"
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn downloads_and_probes_run_in_transient_units_as_dynamic_users() {
    let sb = Sandbox::cells_host("separation", &[]);
    // No user namespaces for any service, transient helpers included (what Ubuntu's
    // AppArmor restriction or kernel.unprivileged_userns_clone=0 do to unprivileged code;
    // /proc/sys cannot be written here): staging must not need them.
    sb.write(
        "/etc/systemd/system/service.d/50-no-userns.conf",
        b"[Service]\nRestrictNamespaces=~user\n",
        0o644,
    );
    sb.sh("systemctl daemon-reload");
    let (userns, _, _) = sb.try_sh("systemd-run --quiet --wait -p DynamicUser=yes unshare -U true");
    assert!(
        !userns,
        "a transient unit can still create a user namespace"
    );
    // An 8 MiB release served slowly (about 8 s), and one whose probe hangs.
    let mut slow = fake_cells("4.4.5", "ok");
    slow.resize(8 << 20, 0x5a);
    sb.add_release("4.4.5", &slow);
    sb.add_release("4.4.6", &fake_cells("4.4.6", "hang"));
    sb.serve("--slow-ms 60");
    stage_in_background(&sb, "4.4.5");
    let unit = running_fetch_helper(&sb);
    assert_eq!(sb.unit_prop(&unit, "DynamicUser"), "yes");
    assert_eq!(sb.unit_prop(&unit, "CapabilityBoundingSet"), "");
    let helper = sb.unit_prop(&unit, "MainPID");
    let uid: u32 = sb
        .sh(&format!("stat -c %u /proc/{helper}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        (61184..=65519).contains(&uid),
        "the fetch runs as uid {uid}, not a dynamic user"
    );
    // The daemon itself holds no TCP socket: none of its socket inodes is a TCP socket of
    // its own network namespace or of the host's.
    let daemon = sb.unit_prop("cells-updater.service", "MainPID");
    let tcp = sb.sh(&format!(
        "cat /proc/{daemon}/net/tcp /proc/{daemon}/net/tcp6 /proc/1/net/tcp /proc/1/net/tcp6 | awk 'NR>1 {{print $10}}'"
    ));
    let held = socket_inodes(&sb, &daemon);
    assert!(
        !held.is_empty(),
        "the daemon holds its D-Bus socket at least"
    );
    for inode in &held {
        assert!(
            !tcp.lines().any(|t| t == inode),
            "the daemon holds TCP socket {inode}"
        );
    }
    let helper_held = socket_inodes(&sb, &helper);
    assert!(
        helper_held.iter().any(|i| tcp.lines().any(|t| t == i)),
        "the fetch helper, not the daemon, holds the TCP connection"
    );
    assert_staged(&sb, "4.4.5");
    // The daemon's unit forbids namespaces, and staging (which probed the binary) worked.
    assert_eq!(
        sb.unit_prop("cells-updater.service", "RestrictNamespaces"),
        "yes"
    );

    // The probe: a release whose `version` never answers keeps its probe unit up.
    sb.sh("(cells-updater stage 4.4.6 > /run/stage2.out 2>&1; echo $? > /run/stage2.rc) </dev/null >/dev/null 2>&1 &");
    // The hanging probe, not a quick one of the installed binary (the daemon probes it when
    // it starts again): a probe unit still running a second after it was seen.
    sb.wait_for(
        Duration::from_secs(20),
        "the probe helper",
        "for u in $(systemctl list-units --no-legend --plain --state=running | \
           awk '/^cells-updater-probe-/ {print $1}'); do \
           sleep 1; systemctl is-active -q $u && { echo $u > /run/probe.unit; exit 0; }; \
         done; exit 1",
    );
    let unit = sb.sh("cat /run/probe.unit").trim().to_string();
    assert_eq!(sb.unit_prop(&unit, "DynamicUser"), "yes");
    assert_eq!(sb.unit_prop(&unit, "PrivateNetwork"), "yes");
    assert_eq!(sb.unit_prop(&unit, "NoNewPrivileges"), "yes");
    let probe = sb.unit_prop(&unit, "MainPID");
    let uid: u32 = sb
        .sh(&format!("stat -c %u /proc/{probe}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        (61184..=65519).contains(&uid),
        "the probe runs as uid {uid}"
    );
    sb.wait_for(
        Duration::from_secs(40),
        "the probe to time out",
        "test -e /run/stage2.rc",
    );
    let out = sb.sh("cat /run/stage2.out");
    assert!(
        out.contains("Error.VersionMismatch") && out.contains("did not answer"),
        "{out}"
    );
    // Nothing is left running.
    sb.wait_for(
        Duration::from_secs(10),
        "helper units to go",
        "! systemctl list-units --no-legend --plain | grep -q '^cells-updater-[a-z-]*-[0-9]'",
    );
}

#[test]
fn a_network_helper_cannot_reach_this_hosts_services() {
    // The update server is remote (an address outside 127/8; the container has a network of
    // its own), so a network helper needs no loopback. The attack: code running as the fetch
    // helper (a process in its cgroup, where systemd's IP filter applies) tries Cells on
    // 127.0.0.1:443, as a helper exploited by a hostile server would.
    let sb = Sandbox::cells_host("netfilter", &[]);
    sb.sh("ip addr add 10.77.0.1/32 dev lo");
    let mut slow = fake_cells("4.4.5", "ok");
    slow.resize(8 << 20, 0x5a);
    sb.add_release("4.4.5", &slow);
    sb.serve_on("10.77.0.1:8080", "--slow-ms 60");
    sb.write(
        "/etc/cells-updater/config.d/60-remote.toml",
        b"[server]\nurl = \"http://10.77.0.1:8080/\"\n",
        0o644,
    );
    assert!(
        sb.try_sh("curl -sf --max-time 5 -o /dev/null http://127.0.0.1:443/")
            .0,
        "Cells answers on loopback outside the helper"
    );
    stage_in_background(&sb, "4.4.5");
    let unit = running_fetch_helper(&sb);
    let deny = sb.unit_prop(&unit, "IPAddressDeny");
    assert!(deny.contains("127.0.0.0/8"), "IPAddressDeny={deny}");
    assert_eq!(sb.unit_prop(&unit, "StandardError"), "journal");
    assert_eq!(sb.unit_prop(&unit, "RestrictNamespaces"), "yes");
    // The container resolves with `files dns`: Internet sockets only (no AF_UNIX, no
    // netlink), and the download still goes on.
    assert!(sb
        .sh("grep '^hosts:' /etc/nsswitch.conf")
        .contains("files dns"));
    assert_eq!(
        sb.unit_prop(&unit, "RestrictAddressFamilies"),
        "AF_INET AF_INET6"
    );
    assert_eq!(sb.unit_prop(&unit, "PrivateIPC"), "yes");
    assert_eq!(sb.unit_prop(&unit, "SystemCallArchitectures"), "native");
    let cgroup = sb.unit_prop(&unit, "ControlGroup");
    // curl's exit status from inside the helper's cgroup (joining it must work: the helper
    // is still downloading).
    let in_helper = |url: &str| -> i32 {
        let out = sb.sh(&format!(
            "sh -c 'echo $$ > /sys/fs/cgroup{cgroup}/cgroup.procs || exit 99; \
             curl -s --max-time 3 -o /dev/null {url}; echo curl=$?'"
        ));
        out.trim()
            .strip_prefix("curl=")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("could not run inside {unit}: {out}"))
    };
    // The same process reaches the update server: the filter, not a broken setup, is what
    // stops the next one.
    assert_eq!(in_helper("http://10.77.0.1:8080/"), 0);
    assert_ne!(
        in_helper("http://127.0.0.1:443/"),
        0,
        "a process in the fetch helper's cgroup reached Cells on loopback"
    );
    assert_staged(&sb, "4.4.5");
}
