//! A power cut at every apply step (I5): the daemon freezes at a failpoint (SIGSTOP), the
//! whole container is killed (SIGKILL to its PID 1: no clean shutdown), and boots again
//! from the same disk. Nobody calls the daemon: at boot cells-updater-recover.service sees the
//! apply journal and starts it, and within 30 s Cells runs a verified binary with its
//! capability, the daemon's state matches the disk and the journal is gone.
//!
//! The host's page cache survives the cut, so this proves recovery at boot, not fsync
//! durability (that rests on the fsync-then-rename discipline of `dirfd`).
#![cfg(feature = "failpoints")]

mod support;

use cells_updater::failpoint::APPLY_POINTS;
use std::time::{Duration, Instant};
use support::sandbox::Sandbox;

const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

fn sha(sb: &Sandbox, path: &str) -> String {
    sb.sh(&format!("sha256sum {path} | cut -d' ' -f1"))
        .trim()
        .to_string()
}

#[test]
fn power_cut_at_every_apply_step_recovers_at_boot() {
    let versions: Vec<String> = (0..APPLY_POINTS.len())
        .map(|i| format!("4.6.{i}"))
        .collect();
    let releases: Vec<(&str, &str)> = versions.iter().map(|v| (v.as_str(), "ok")).collect();
    let mut sb = Sandbox::cells_host_persistent("power-cut", &releases);
    let mut report = Vec::new();
    for (point, version) in APPLY_POINTS.iter().zip(&versions) {
        let old_sha = sha(&sb, "/opt/pydio/bin/cells");
        let new_sha = sha(&sb, &format!("/srv/releases/cells-{version}-ok"));
        sb.write(
            "/etc/systemd/system/cells-updater.service.d/90-failpoint.conf",
            format!(
                "[Service]\nEnvironment=CELLS_UPDATER_FAILPOINT={point}\nEnvironment=CELLS_UPDATER_FAILPOINT_ACTION=stop\n"
            )
            .as_bytes(),
            0o644,
        );
        sb.sh("systemctl daemon-reload && systemctl restart cells-updater.service");
        sb.sh(&format!(
            "(cells-updater update {version} >/dev/null 2>&1 &) </dev/null >/dev/null 2>&1"
        ));
        sb.wait_for(
            Duration::from_secs(60),
            "the daemon to freeze at the failpoint",
            &format!("journalctl -u cells-updater --no-pager -o cat | grep -q 'failpoint {point}: SIGSTOP'"),
        );
        // The drop-in goes with the cut: what booted next must not freeze again.
        std::fs::remove_file(
            sb.path("/etc/systemd/system/cells-updater.service.d/90-failpoint.conf"),
        )
        .unwrap();
        sb.power_cut_and_boot();
        let booted = Instant::now();
        // No D-Bus call until Cells is back and the journal is gone.
        let recovered = loop {
            let (done, _, _) = sb.try_sh(
                "! test -e /var/lib/cells-updater/journal.json && systemctl is-active -q cells.service \
                 && curl -sf http://127.0.0.1:443/ >/dev/null",
            );
            if done || booted.elapsed() > Duration::from_secs(30) {
                break done;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let took = booted.elapsed();
        let mut problems = Vec::new();
        if !recovered {
            problems.push(format!(
                "not recovered within 30 s: {}",
                sb.sh("systemctl status --no-pager cells-updater-recover cells-updater cells 2>&1 | tail -n 30; ls /var/lib/cells-updater")
            ));
        }
        let now_sha = sha(&sb, "/opt/pydio/bin/cells");
        let served = sb
            .try_sh("curl -sf http://127.0.0.1:443/")
            .1
            .trim()
            .to_string();
        let on_disk = if now_sha == new_sha {
            version.clone()
        } else if now_sha == old_sha {
            sb.sh("/opt/pydio/bin/cells version -f '{{.Version}}'")
                .trim()
                .to_string()
        } else {
            problems.push("the binary is neither the old nor the new one".into());
            String::new()
        };
        if served != on_disk {
            problems.push(format!(
                "Cells serves {served:?}, the binary on disk is {on_disk}"
            ));
        }
        let caps = sb.sh("getcap /opt/pydio/bin/cells");
        if !caps.contains("cap_net_bind_service=ep") {
            problems.push(format!("capability missing: {caps:?}"));
        }
        if recovered {
            sb.wait_for(
                Duration::from_secs(30),
                "the recovery job to end",
                &format!("{GET} CurrentJob | grep -qx 'o \"/\"'"),
            );
            let installed = sb.sh(&format!("{GET} InstalledVersion"));
            if !installed.contains(&format!("\"{on_disk}\"")) {
                problems.push(format!("InstalledVersion {installed:?}, on disk {on_disk}"));
            }
            let state = sb.sh(&format!("{GET} State"));
            if !(state.contains("idle") || state.contains("staged") || state.contains("failed")) {
                problems.push(format!("state left mid-operation: {state}"));
            }
        }
        if sb.sh("ls -A /opt/pydio/bin").trim() != "cells" {
            problems.push("a temporary file was left".into());
        }
        let outcome = if now_sha == new_sha {
            "finished"
        } else {
            "undone"
        };
        eprintln!(
            "{point}: {outcome} ({on_disk}) in {:.1} s {}",
            took.as_secs_f64(),
            if problems.is_empty() { "OK" } else { "FAILED" }
        );
        report.push((point.to_string(), problems));
    }
    let failed: Vec<_> = report.iter().filter(|(_, p)| !p.is_empty()).collect();
    eprintln!(
        "power cut: {} of {} failpoints recovered at boot",
        report.len() - failed.len(),
        report.len()
    );
    assert!(failed.is_empty(), "{failed:#?}");
}
