//! kill -9 at every apply step (invariant I5). The daemon is built with the `failpoints`
//! feature; a unit drop-in arms one named failpoint, where the daemon SIGKILLs itself
//! mid-update. Nobody calls: systemd restarts it (Restart=on-failure), and it recovers. Each time:
//! the binary is exactly the old or the new release, its capability is there, the service
//! is active and answers the version the daemon reports, the state is consistent, and no
//! temporary file is left.
#![cfg(feature = "failpoints")]

mod support;

use cells_updater::failpoint::APPLY_POINTS;
use std::time::Duration;

const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

fn sha(sb: &support::sandbox::Sandbox, path: &str) -> String {
    sb.sh(&format!("sha256sum {path} | cut -d' ' -f1"))
        .trim()
        .to_string()
}

#[test]
fn kill_9_at_every_apply_step_then_restart_recovers() {
    let versions: Vec<String> = (0..APPLY_POINTS.len())
        .map(|i| format!("4.5.{i}"))
        .collect();
    let releases: Vec<(&str, &str)> = versions.iter().map(|v| (v.as_str(), "ok")).collect();
    let sb = support::sandbox::Sandbox::cells_host("crash", &releases);
    let mut results = Vec::new();
    for (point, version) in APPLY_POINTS.iter().zip(&versions) {
        let old_sha = sha(&sb, "/opt/pydio/bin/cells");
        let old_version = sb.sh("/opt/pydio/bin/cells version -f '{{.Version}}'");
        let new_sha = sha(&sb, &format!("/srv/releases/cells-{version}-ok"));
        // Arm the failpoint and update: the daemon dies at that step.
        sb.write(
            "/etc/systemd/system/cells-updater.service.d/90-failpoint.conf",
            format!("[Service]\nEnvironment=CELLS_UPDATER_FAILPOINT={point}\n").as_bytes(),
            0o644,
        );
        sb.sh("systemctl daemon-reload && systemctl stop cells-updater.service; systemctl reset-failed cells-updater.service || true");
        let (ok, out, err) = sb.try_sh(&format!("timeout 120 cells-updater update {version}"));
        assert!(!ok, "{point}: the update should have been killed: {out}");
        assert!(err.contains("the daemon stopped"), "{point}: {err}");
        let killed = sb.sh(&format!(
            "journalctl -u cells-updater.service --no-pager -o cat | grep -c \"failpoint {point}\" || true"
        ));
        assert!(
            killed.trim() != "0",
            "{point}: the failpoint was not reached"
        );
        // No call: systemd restarts the daemon (Restart=on-failure), which finishes or undoes
        // the step by itself (the failpoint fires once).
        sb.wait_for(
            Duration::from_secs(90),
            "recovery to finish without any call",
            &format!(
                "! test -e /var/lib/cells-updater/journal.json \
                 && journalctl -u cells-updater.service --no-pager -o cat | grep -q 'interrupted Apply of {version} ' \
                 && systemctl is-active -q cells.service"
            ),
        );
        sb.wait_for(
            Duration::from_secs(30),
            "the recovery job to end",
            &format!("{GET} CurrentJob | grep -qx 'o \"/\"'"),
        );

        let now_sha = sha(&sb, "/opt/pydio/bin/cells");
        let installed = sb
            .sh(&format!("{GET} InstalledVersion"))
            .trim()
            .trim_start_matches("s ")
            .trim_matches('"')
            .to_string();
        let served = sb.try_sh("curl -sf http://127.0.0.1:443/").1;
        let caps = sb.sh("getcap /opt/pydio/bin/cells");
        let state = sb.sh(&format!("{GET} State"));
        let previous = sb.sh(&format!("{GET} PreviousVersion"));
        let temp = sb.sh("ls -A /opt/pydio/bin | grep -c cells-updater-new || true");
        let journal =
            sb.sh("test -e /var/lib/cells-updater/journal.json && echo present || echo absent");
        let mut problems = Vec::new();
        if now_sha != old_sha && now_sha != new_sha {
            problems.push("the binary is neither the old nor the new one".to_string());
        }
        if !caps.contains("cap_net_bind_service=ep") {
            problems.push(format!("capability missing: {caps:?}"));
        }
        if sb.unit_prop("cells.service", "ActiveState") != "active" {
            problems.push("cells.service is not active".into());
        }
        if served.trim() != installed {
            problems.push(format!(
                "cells serves {served:?} but InstalledVersion is {installed:?}"
            ));
        }
        let expect = if now_sha == new_sha {
            version.as_str()
        } else {
            old_version.as_str()
        };
        if installed != expect {
            problems.push(format!(
                "InstalledVersion {installed:?}, binary on disk is {expect}"
            ));
        }
        if now_sha == new_sha && !previous.contains(&old_version) {
            problems.push(format!(
                "PreviousVersion {previous:?}, expected {old_version}"
            ));
        }
        if state.contains("applying")
            || state.contains("restarting")
            || state.contains("rolling-back")
        {
            problems.push(format!("state left mid-operation: {state}"));
        }
        if temp.trim() != "0" {
            problems.push("a temporary file was left".into());
        }
        if journal.trim() != "absent" {
            problems.push("the apply journal is still there".into());
        }
        let outcome = if now_sha == new_sha {
            "finished"
        } else {
            "undone"
        };
        eprintln!(
            "{point}: {outcome} ({installed}) {}",
            if problems.is_empty() { "OK" } else { "FAILED" }
        );
        results.push((point.to_string(), problems));
    }
    let failed: Vec<_> = results.iter().filter(|(_, p)| !p.is_empty()).collect();
    eprintln!(
        "crash recovery: {} of {} failpoints recovered",
        results.len() - failed.len(),
        results.len()
    );
    assert!(failed.is_empty(), "{failed:#?}");
}
