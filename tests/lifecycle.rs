//! The lifecycle on a real systemd, one behaviour per test: the floor rises only at commit,
//! the Enterprise build of the installed version is found and follows the rules, Cancel
//! works until the swap and is refused after it, a caller stuck in polkit stalls nothing,
//! recovery holds the job slot before the name, a crash during the automatic undo resumes the
//! undo, versions are compared as versions. And a long chain of updates, as the Cells user.

mod support;

use std::time::{Duration, Instant};
use support::sandbox::Sandbox;
use support::*;

const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";
const CALL: &str =
    "busctl call com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";
const JOB: &str = "com.pydio.CellsUpdater1.Job";

fn prop(sb: &Sandbox, name: &str) -> String {
    let v = sb.sh(&format!("{GET} {name}"));
    let v = v.trim();
    v.split_once(' ')
        .map_or(v, |(_, r)| r)
        .trim_matches('"')
        .to_string()
}

fn job_prop(sb: &Sandbox, job: &str, name: &str) -> String {
    let v = sb.sh(&format!(
        "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} {name}"
    ));
    let v = v.trim();
    v.split_once(' ')
        .map_or(v, |(_, r)| r)
        .trim_matches('"')
        .to_string()
}

/// Cells on :443 serves `version`, from a binary that has its capability.
fn serves(sb: &Sandbox, version: &str) {
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), version);
    let exe = sb.unit_prop("cells.service", "ExecStart");
    let path = exe
        .split("path=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("ExecStart path")
        .to_string();
    assert_eq!(
        sb.sh(&format!("getcap {path}")).trim(),
        format!("{path} cap_net_bind_service=ep"),
        "the capability of {path}"
    );
}

/// Runs `cmd` as the Cells user; panics with the daemon's journal when it fails.
fn as_pydio(sb: &Sandbox, cmd: &str) -> String {
    let (ok, out, err) = sb.try_sh(&format!("runuser -u pydio -- {cmd}"));
    assert!(
        ok,
        "{cmd}: {out}{err}\n{}",
        sb.sh("journalctl -u cells-updater --no-pager -o cat | tail -n 30")
    );
    out
}

#[test]
fn a_long_chain_of_updates_as_the_cells_user() {
    let sb = Sandbox::cells_host_full(
        "chain",
        &[("4.4.5", "ok"), ("4.5.0", "exit")],
        Some(("CHAIN-KEY", &[("4.4.5", "ok"), ("4.4.8", "ok")])),
    );
    // 4.4.2 -> 4.4.5.
    as_pydio(&sb, "cells-updater update 4.4.5");
    serves(&sb, "4.4.5");
    // A broken 4.5.0 is rolled back and marked bad; the floor stays at 4.4.5.
    let (ok, _, err) = sb.try_sh("runuser -u pydio -- cells-updater update 4.5.0");
    assert!(
        !ok && err.contains("Error.UnitFailed") && err.contains("rolled back to 4.4.5"),
        "{err}"
    );
    serves(&sb, "4.4.5");
    assert_eq!(prop(&sb, "PreviousVersion"), "4.4.2");
    // failed_release_does_not_raise_the_floor: 4.4.7, from a file, is newer than the floor.
    let bytes = fake_cells("4.4.7", "ok");
    let (sum, sig) = sign(&bytes, &keys().rsa);
    sb.write("/srv/cells-4.4.7", &bytes, 0o644);
    as_pydio(
        &sb,
        &format!("cells-updater stage --file /srv/cells-4.4.7 --version 4.4.7 --checksum {sum} --signature {sig}"),
    );
    as_pydio(&sb, "cells-updater apply");
    serves(&sb, "4.4.7");
    assert_eq!(prop(&sb, "PreviousVersion"), "4.4.5");
    // Rollback is the host admin's (it may bring back a vulnerable release): the Cells user
    // is refused, root rolls back to 4.4.5. 4.4.7 may come back later (equal to the floor);
    // 4.4.6 would be refused (below it).
    let (ok, _, err) = sb.try_sh("runuser -u pydio -- cells-updater rollback");
    assert!(
        !ok && err.contains("Error.NotAuthorized") && err.contains("override"),
        "{err}"
    );
    serves(&sb, "4.4.7");
    sb.sh("cells-updater rollback");
    serves(&sb, "4.4.5");
    // enterprise_same_version_is_offered: the Enterprise build of the installed 4.4.5, found
    // although the server lists only versions newer than CurrentVersion.
    sb.write("/srv/license.key", b"CHAIN-KEY\n", 0o644);
    as_pydio(
        &sb,
        "cells-updater upgrade-enterprise --license-file /srv/license.key",
    );
    serves(&sb, "4.4.5");
    assert_eq!(prop(&sb, "PackageName"), "PydioEnterprise");
    assert_eq!(prop(&sb, "BinaryPath"), "/opt/pydio/bin/cells-enterprise");
    // The next Enterprise release, through the normal Update, with the saved key.
    as_pydio(&sb, "cells-updater update 4.4.8");
    serves(&sb, "4.4.8");
    assert_eq!(prop(&sb, "InstalledVersion"), "4.4.8");
    assert_eq!(prop(&sb, "PackageName"), "PydioEnterprise");
    assert_eq!(prop(&sb, "State"), "idle");
    assert_eq!(prop(&sb, "CurrentJob"), "/");
}

#[test]
fn enterprise_follows_the_floor_the_bad_list_and_cancel() {
    let sb = Sandbox::cells_host_full(
        "enterprise-rules",
        &[],
        Some((
            "RULES-KEY",
            &[("4.4.2", "exit"), ("4.4.1", "ok"), ("4.4.3", "ok")],
        )),
    );
    sb.write("/srv/license.key", b"RULES-KEY\n", 0o644);
    // An older Enterprise build is below the installed version.
    let (ok, _, err) = sb
        .try_sh("cells-updater upgrade-enterprise --license-file /srv/license.key --version 4.4.1");
    assert!(!ok && err.contains("Error.Downgrade"), "{err}");
    // The same version's Enterprise build fails to start: rolled back, marked bad, and the
    // license was written only once the binary was verified (it was).
    let (ok, _, err) =
        sb.try_sh("cells-updater upgrade-enterprise --license-file /srv/license.key");
    assert!(
        !ok && err.contains("Error.UnitFailed") && err.contains("rolled back"),
        "{err}"
    );
    serves(&sb, "4.4.2");
    assert_eq!(prop(&sb, "PackageName"), "PydioHome");
    assert!(
        !sb.path("/opt/pydio/bin/cells-enterprise").exists(),
        "the failed binary is gone"
    );
    // Marked bad: not installed again.
    let (ok, _, err) =
        sb.try_sh("cells-updater upgrade-enterprise --license-file /srv/license.key");
    assert!(
        !ok && err.contains("Error.NoSuchVersion") && err.contains("marked bad"),
        "{err}"
    );
    // Cancelled while downloading: nothing changed, no license rewritten.
    sb.sh("rm -f /var/cells/pydio-license");
    let mut big = fake_cells_enterprise("4.4.4", "ok");
    big.resize(8 << 20, 1);
    let (sum, sig) = sign(&big, &keys().rsa);
    sb.write("/srv/releases/cells-enterprise-4.4.4", &big, 0o644);
    let mut args = std::fs::read_to_string(sb.path("/srv/update-server.args")).unwrap();
    args.push_str(&format!(
        " --enterprise-release 4.4.4 /srv/releases/cells-enterprise-4.4.4 {sum} {sig}"
    ));
    sb.write("/srv/update-server.args", args.as_bytes(), 0o644);
    sb.serve("--slow-ms 60");
    let job = sb
        .sh(&format!(
            "{CALL} UpgradeToEnterprise 'sa{{sv}}' RULES-KEY 1 Version s 4.4.4"
        ))
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    sb.wait_for(
        Duration::from_secs(10),
        "the download",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} BytesDone | grep -qv ' 0$'"
        ),
    );
    sb.sh(&format!(
        "busctl call com.pydio.CellsUpdater1 {job} {JOB} Cancel"
    ));
    sb.wait_for(
        Duration::from_secs(10),
        "the cancel",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} State | grep -q cancelled"
        ),
    );
    assert!(
        !sb.path("/var/cells/pydio-license").exists(),
        "the license was written before verification"
    );
    assert!(!sb.path("/opt/pydio/bin/cells-enterprise").exists());
    serves(&sb, "4.4.2");
}

#[test]
fn cancel_works_before_the_swap_and_is_refused_after_it() {
    let sb = Sandbox::cells_host("cancel", &[]);
    let mut slow = fake_cells("4.4.5", "ok");
    slow.resize(8 << 20, 7);
    sb.add_release("4.4.5", &slow);
    sb.serve("--slow-ms 60");
    let before = sb.sh("sha256sum /opt/pydio/bin/cells; stat -c '%U %a' /opt/pydio/bin");
    // Before the swap: the job ends cancelled and nothing changed.
    let job = sb
        .sh(&format!(
            "runuser -u pydio -- {CALL} Update 'sa{{sv}}' 4.4.5 0"
        ))
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    sb.wait_for(
        Duration::from_secs(10),
        "the download",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} Phase | grep -q downloading"
        ),
    );
    sb.sh(&format!(
        "runuser -u pydio -- busctl call com.pydio.CellsUpdater1 {job} {JOB} Cancel"
    ));
    sb.wait_for(
        Duration::from_secs(10),
        "the cancel",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} State | grep -q cancelled"
        ),
    );
    assert_eq!(
        job_prop(&sb, &job, "Error"),
        "com.pydio.CellsUpdater1.Error.Cancelled"
    );
    assert_eq!(
        sb.sh("sha256sum /opt/pydio/bin/cells; stat -c '%U %a' /opt/pydio/bin"),
        before
    );
    assert_eq!(prop(&sb, "StagedVersion"), "");
    serves(&sb, "4.4.2");
    // After the swap (a slow health check keeps the job in restarting/health-check): Cancel
    // is refused with NotCancellable and the job finishes.
    sb.write(
        "/etc/cells-updater/config.d/60-slow-health.toml",
        b"[policy]\nhealth_settle = \"6s\"\n",
        0o644,
    );
    sb.sh("systemctl restart cells-updater.service 2>/dev/null || true");
    as_pydio(&sb, "cells-updater stage 4.4.5");
    let job = sb
        .sh(&format!("runuser -u pydio -- {CALL} Apply 'a{{sv}}' 0"))
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    sb.wait_for(
        Duration::from_secs(20),
        "the health check",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} Phase | grep -q health-check"
        ),
    );
    let (ok, _, err) = sb.try_sh(&format!(
        "runuser -u pydio -- dbus-send --system --print-reply --dest=com.pydio.CellsUpdater1 {job} {JOB}.Cancel"
    ));
    assert!(
        !ok && err.contains("com.pydio.CellsUpdater1.Error.NotCancellable")
            && err.contains("past the swap"),
        "{err}"
    );
    sb.wait_for(
        Duration::from_secs(30),
        "the apply",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} State | grep -q succeeded"
        ),
    );
    serves(&sb, "4.4.5");
}

#[test]
fn a_caller_stuck_in_polkit_does_not_stall_a_job() {
    let sb = Sandbox::cells_host("polkit-stall", &[]);
    let mut slow = fake_cells("4.4.5", "ok");
    slow.resize(12 << 20, 3);
    sb.add_release("4.4.5", &slow);
    sb.serve("--slow-ms 60");
    sb.sh("useradd --create-home alice");
    // polkit takes 6 s to say no to alice (cancelling root's job is manage-policy's).
    sb.write(
        "/etc/polkit-1/rules.d/50-slow.rules",
        b"polkit.addRule(function(action, subject) {\n  if (action.id == \"com.pydio.cellsupdater.manage-policy\" && subject.user == \"alice\") {\n    var t = Date.now() + 6000; while (Date.now() < t) {}\n    return polkit.Result.NO;\n  }\n});\n",
        0o644,
    );
    let job = sb
        .sh(&format!("{CALL} Update 'sa{{sv}}' 4.4.5 0"))
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    sb.wait_for(
        Duration::from_secs(10),
        "the download",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} BytesDone | grep -qv ' 0$'"
        ),
    );
    sb.sh(&format!(
        "(runuser -u alice -- busctl call com.pydio.CellsUpdater1 {job} {JOB} Cancel > /run/alice.out 2>&1; echo $? > /run/alice.rc) </dev/null >/dev/null 2>&1 &"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let bytes = |sb: &Sandbox| -> u64 { job_prop(sb, &job, "BytesDone").parse().unwrap() };
    let a = bytes(&sb);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let b = bytes(&sb);
    assert!(
        !sb.path("/run/alice.rc").exists(),
        "polkit answered alice within {:?}; the test proved nothing",
        t.elapsed()
    );
    assert!(
        b > a,
        "the job's progress stalled while alice waited for polkit ({a} -> {b})"
    );
    sb.wait_for(
        Duration::from_secs(20),
        "alice's answer",
        "test -e /run/alice.rc",
    );
    let alice = sb.sh("cat /run/alice.out");
    assert!(
        alice.contains("may not perform com.pydio.cellsupdater.manage-policy"),
        "{alice}"
    );
    sb.wait_for(
        Duration::from_secs(60),
        "the update",
        &format!(
            "busctl get-property com.pydio.CellsUpdater1 {job} {JOB} State | grep -q succeeded"
        ),
    );
    serves(&sb, "4.4.5");
}

#[test]
fn recovery_holds_the_job_slot_before_the_activating_call() {
    let sb = Sandbox::cells_host("recovery-slot", &[("4.4.5", "ok"), ("4.4.6", "ok")]);
    // Die after the swap, and stay down (no Restart=), so that a call activates it.
    sb.write(
        "/etc/systemd/system/cells-updater.service.d/90-failpoint.conf",
        b"[Service]\nEnvironment=CELLS_UPDATER_FAILPOINT=apply-after-state\nRestart=no\n",
        0o644,
    );
    sb.sh("systemctl daemon-reload && systemctl stop cells-updater.service");
    let (ok, _, err) = sb.try_sh("cells-updater update 4.4.5");
    assert!(!ok && err.contains("the daemon stopped"), "{err}");
    // The call that activates the daemon finds the slot taken by the recovery.
    let (ok, _, err) = sb.try_sh(&format!("{CALL} Update 'sa{{sv}}' 4.4.6 0"));
    assert!(
        !ok && err.contains("is running"),
        "the activating Update was not refused: {err}"
    );
    sb.wait_for(
        Duration::from_secs(60),
        "recovery",
        &format!("{GET} CurrentJob | grep -qx 'o \"/\"'"),
    );
    assert!(!sb.path("/var/lib/cells-updater/journal.json").exists());
    serves(&sb, "4.4.5");
    assert_eq!(prop(&sb, "InstalledVersion"), "4.4.5");
    assert_eq!(prop(&sb, "PreviousVersion"), "4.4.2");
    let log = sb.sh("journalctl -u cells-updater --no-pager -o cat");
    assert!(log.contains("finished an interrupted update"), "{log}");
}

#[test]
fn a_crash_during_the_automatic_undo_resumes_the_undo() {
    for point in cells_updater::failpoint::UNDO_POINTS {
        let sb = Sandbox::cells_host(&format!("undo-{point}"), &[("4.4.6", "exit")]);
        sb.write(
            "/etc/systemd/system/cells-updater.service.d/90-failpoint.conf",
            format!("[Service]\nEnvironment=CELLS_UPDATER_FAILPOINT={point}\n").as_bytes(),
            0o644,
        );
        sb.sh("systemctl daemon-reload && systemctl stop cells-updater.service");
        let (ok, _, err) = sb.try_sh("cells-updater update 4.4.6");
        assert!(!ok && err.contains("the daemon stopped"), "{point}: {err}");
        // No call: systemd restarts the daemon (Restart=on-failure), which resumes the undo.
        sb.wait_for(
            Duration::from_secs(90),
            "the undo to finish",
            "! test -e /var/lib/cells-updater/journal.json && systemctl is-active -q cells.service \
             && curl -sf http://127.0.0.1:443/ | grep -qx 4.4.2",
        );
        serves(&sb, "4.4.2");
        assert_eq!(prop(&sb, "InstalledVersion"), "4.4.2", "{point}");
        assert_eq!(prop(&sb, "PreviousVersion"), "", "{point}");
        let out = sb.sh("cells-updater check --json");
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["releases"][0]["Reason"], "bad", "{point}: {out}");
        assert!(sb
            .sh("journalctl -u cells-updater --no-pager -o cat")
            .contains("was being rolled back"));
    }
}

#[test]
fn a_leading_v_is_compared_as_a_version() {
    // The release is advertised as 4.4.9; its binary says v4.4.9.
    let sb = Sandbox::cells_host("leading-v", &[]);
    sb.add_release("4.4.9", &fake_cells("v4.4.9", "ok"));
    sb.serve("");
    as_pydio(&sb, "cells-updater update 4.4.9");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "v4.4.9");
    assert_eq!(prop(&sb, "State"), "idle", "no spurious rollback");
}

#[test]
fn stage_now_then_update_the_same_version() {
    // The README's "stage now, apply in the maintenance window", and the timer's check --auto
    // when the release it picks was staged earlier: the restage is a no-op, then the apply.
    let sb = Sandbox::cells_host("stage-then-update", &[("4.4.3", "ok")]);
    as_pydio(&sb, "cells-updater stage 4.4.3");
    assert_eq!(prop(&sb, "State"), "staged");
    as_pydio(&sb, "cells-updater update 4.4.3");
    serves(&sb, "4.4.3");
    assert_eq!(prop(&sb, "State"), "idle");
    assert_eq!(prop(&sb, "StagedVersion"), "");
}
