//! Apply on a real systemd: a fake Cells 4.4.2 serves its version on :443 as user pydio (the
//! port needs the binary's file capability: cells.service has no AmbientCapabilities), a
//! local update server inside the container offers signed releases, and the Cells user asks
//! cells-updater to update. The new binary keeps cap_net_bind_service and is root-owned; a
//! release that exits at start is rolled back by itself and marked bad; Rollback works, and
//! the release it left can be installed again.

mod support;

use support::sandbox::Sandbox;

const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

fn prop(sb: &Sandbox, name: &str) -> String {
    sb.sh(&format!("{GET} {name}")).trim().to_string()
}

#[test]
fn update_by_the_cells_user_keeps_the_capability_and_rollback_restores() {
    let sb = Sandbox::cells_host("apply-ok", &[("4.4.5", "ok")]);
    let before_pid = sb.unit_prop("cells.service", "MainPID");

    let (ok, out, err) = sb.try_sh("runuser -u pydio -- cells-updater update 4.4.5");
    assert!(
        ok,
        "update failed:\n{out}\n{err}\n{}",
        sb.sh("journalctl -u cells-updater --no-pager -o cat | tail -n 30")
    );
    assert!(out.contains("4.4.5 is installed and healthy"), "{out}");

    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.5");
    assert_ne!(
        sb.unit_prop("cells.service", "MainPID"),
        before_pid,
        "cells was restarted"
    );
    assert_eq!(
        sb.sh("getcap /opt/pydio/bin/cells").trim(),
        "/opt/pydio/bin/cells cap_net_bind_service=ep"
    );
    assert_eq!(
        sb.sh("stat -c '%U:%G %a' /opt/pydio/bin/cells").trim(),
        "root:root 755"
    );
    assert_eq!(prop(&sb, "InstalledVersion"), "s \"4.4.5\"");
    assert_eq!(prop(&sb, "PreviousVersion"), "s \"4.4.2\"");
    assert_eq!(prop(&sb, "StagedVersion"), "s \"\"");
    assert_eq!(prop(&sb, "State"), "s \"idle\"");
    assert_eq!(
        sb.sh("ls -A /opt/pydio/bin").trim(),
        "cells",
        "no temporary file is left"
    );
    assert!(
        !sb.path("/etc/systemd/system/cells.service.d/50-cells-updater.conf")
            .exists(),
        "same path: no drop-in"
    );

    // The same version again: the server lists only newer versions, so it is not offered.
    let (ok, _, err) = sb.try_sh("cells-updater update 4.4.5");
    assert!(!ok && err.contains("Error.NoSuchVersion"), "{err}");

    // Rollback puts 4.4.2 back, with its capability.
    let (ok, out, err) = sb.try_sh("cells-updater rollback");
    assert!(ok, "rollback failed:\n{out}\n{err}");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
    assert_eq!(
        sb.sh("getcap /opt/pydio/bin/cells").trim(),
        "/opt/pydio/bin/cells cap_net_bind_service=ep"
    );
    assert_eq!(prop(&sb, "InstalledVersion"), "s \"4.4.2\"");
    assert_eq!(prop(&sb, "PreviousVersion"), "s \"\"");
    // 4.4.5 is the floor now, and the release the rollback left: it may come back (I3,
    // round 3: equal to the floor is allowed), with its capability.
    let (ok, out, err) = sb.try_sh("cells-updater update 4.4.5");
    assert!(ok, "the rolled-back release is refused:\n{out}\n{err}");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.5");
    assert_eq!(
        sb.sh("getcap /opt/pydio/bin/cells").trim(),
        "/opt/pydio/bin/cells cap_net_bind_service=ep"
    );
    assert_eq!(prop(&sb, "PreviousVersion"), "s \"4.4.2\"");
}

#[test]
fn a_release_that_exits_at_start_is_rolled_back_and_marked_bad() {
    let sb = Sandbox::cells_host("apply-broken", &[("4.4.6", "exit")]);
    // Recent restarts use up part of systemd's start budget (5 in 10 s); the crash loop of
    // the broken release uses the rest. The rollback's own restart must still happen.
    sb.sh("systemctl restart cells.service; systemctl restart cells.service");
    let (ok, out, err) = sb.try_sh("runuser -u pydio -- cells-updater update 4.4.6");
    assert!(!ok, "a broken release must fail:\n{out}");
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.UnitFailed"),
        "{err}"
    );
    assert!(err.contains("rolled back to 4.4.2"), "{err}");
    assert!(
        err.contains("migrated"),
        "the message warns about migrations: {err}"
    );

    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
    assert_eq!(
        sb.sh("getcap /opt/pydio/bin/cells").trim(),
        "/opt/pydio/bin/cells cap_net_bind_service=ep"
    );
    assert_eq!(sb.unit_prop("cells.service", "ActiveState"), "active");
    assert_eq!(prop(&sb, "InstalledVersion"), "s \"4.4.2\"");
    assert_eq!(prop(&sb, "State"), "s \"failed\"");
    assert!(prop(&sb, "LastError").contains("rolled back"));
    let check = sb.sh("cells-updater check --json");
    let doc: serde_json::Value = serde_json::from_str(&check).unwrap();
    let rel = &doc["releases"][0];
    assert_eq!(rel["Version"], "4.4.6");
    assert_eq!(rel["Allowed"], false);
    assert_eq!(rel["Reason"], "bad");
    assert_eq!(sb.sh("ls -A /opt/pydio/bin").trim(), "cells");
    // The mark is listed, and only a host admin can clear it: the Cells user, whose own
    // update failed (and who could make any one health check fail), cannot.
    assert_eq!(prop(&sb, "BadVersions"), "as 1 \"PydioHome:4.4.6\"");
    assert!(sb
        .sh("cells-updater status")
        .contains("Marked bad:        PydioHome:4.4.6"));
    let (ok, _, err) = sb.try_sh("runuser -u pydio -- cells-updater forget-bad 4.4.6");
    assert!(
        !ok && err.contains("Error.NotAuthorized") && err.contains("manage-policy"),
        "{err}"
    );
    assert_eq!(prop(&sb, "BadVersions"), "as 1 \"PydioHome:4.4.6\"");
    let (ok, _, err) = sb.try_sh("cells-updater forget-bad 4.4.7");
    assert!(
        !ok && err.contains("Error.InvalidArgument") && err.contains("not marked bad"),
        "{err}"
    );
    // An entry spelled neither as a version nor as a BadVersions entry: refused, saying
    // which, and the mark stays.
    for bad in ["PydioPwned:4.4.6", "four", "PydioHome:"] {
        let (ok, _, err) = sb.try_sh(&format!("cells-updater forget-bad '{bad}'"));
        assert!(
            !ok && err.contains("Error.InvalidArgument")
                && err.contains("neither a version nor a BadVersions entry"),
            "{bad}: {err}"
        );
        assert_eq!(prop(&sb, "BadVersions"), "as 1 \"PydioHome:4.4.6\"");
    }
    sb.sh("cells-updater forget-bad 4.4.6");
    assert_eq!(prop(&sb, "BadVersions"), "as 0");
    let log = sb.sh("journalctl -u cells-updater --no-pager -o cat");
    assert!(
        log.contains("uid 0 cleared the bad mark of PydioHome:4.4.6"),
        "{log}"
    );
    // Allowed again: it is tried (and, still broken, rolled back and marked once more).
    let (ok, _, err) = sb.try_sh("cells-updater update 4.4.6");
    assert!(!ok && err.contains("Error.UnitFailed"), "{err}");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
    assert_eq!(prop(&sb, "BadVersions"), "as 1 \"PydioHome:4.4.6\"");
}

#[test]
fn the_timer_installs_only_what_the_auto_policy_allows() {
    let sb = Sandbox::cells_host("apply-auto", &[("4.4.3", "ok"), ("4.5.0", "ok")]);
    // Default policy none: the timer's command checks and installs nothing.
    let out = sb.sh("cells-updater check --auto");
    assert!(out.contains("Auto policy: nothing to install."), "{out}");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
    // patch: 4.4.3 yes, 4.5.0 (a minor release) no. What the timer unit runs:
    sb.write(
        "/etc/cells-updater/config.d/60-auto.toml",
        b"[policy]\nauto = \"patch\"\n",
        0o644,
    );
    sb.sh("systemctl start cells-updater-check.service");
    assert_eq!(
        sb.unit_prop("cells-updater-check.service", "Result"),
        "success"
    );
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.3");
    assert_eq!(prop(&sb, "InstalledVersion"), "s \"4.4.3\"");
    let log = sb.sh("journalctl -u cells-updater-check.service --no-pager -o cat");
    assert!(log.contains("Auto policy allows 4.4.3"), "{log}");
}
