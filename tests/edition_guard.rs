//! A binary of the other edition never runs on this host's data. The Cells user offers a
//! genuine, signed Enterprise build to a Home host with `StageFromFd` and
//! `PackageName=PydioEnterprise` (the edition check passes: the binary is what it says), then
//! asks `Apply`: the daemon refuses with `VersionMismatch` naming UpgradeToEnterprise, before
//! anything changes (the binary, the versions, nothing marked bad). Without the check in
//! apply, the Enterprise binary was swapped in and started on Home data, and the genuine Home
//! release was marked bad. (The fake unit stands in for systemd: a private bus.)
#![cfg(feature = "fake-unit")]

mod support;

use support::bus::*;
use support::*;

#[test]
fn apply_refuses_a_binary_staged_as_the_other_edition() {
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.write_daemon_config("[policy]\nhealth_settle = \"300ms\"\nhealth_timeout = \"10s\"\n");
    let bus = PrivateBus::start();
    let port = free_port();
    let _d =
        DaemonProc::start_with_env(&bus, env.root.path(), &[("CELLS_UPDATER_FAKE_UNIT", &port)]);
    assert_eq!(bus.manager_prop("PackageName"), "PydioHome");
    let enterprise = fake_cells_enterprise("4.4.5", "ok");
    let (sum, sig) = sign(&enterprise, &keys().rsa);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = dir.path().join("cells-enterprise");
    std::fs::write(&file, &enterprise).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // As the Cells user (uid 1 owns the fake unit's Cells here, as in dbus_contract).
    let cli = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=1", "--regid=1", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_cells-updater"))
            .args(["--bus-address", &bus.address])
            .args(args)
            .output()
            .unwrap()
    };
    let staged = cli(&[
        "stage",
        "--file",
        file.to_str().unwrap(),
        "--version",
        "4.4.5",
        "--checksum",
        &sum,
        "--signature",
        &sig,
        "--package",
        "PydioEnterprise",
    ]);
    assert_eq!(
        staged.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&staged.stderr)
    );
    assert_eq!(bus.manager_prop("StagedVersion"), "4.4.5");

    let binary = env.root.path().join("opt/pydio/bin/cells");
    let before = std::fs::read(&binary).unwrap();
    let applied = cli(&["apply"]);
    let err = String::from_utf8_lossy(&applied.stderr);
    assert_ne!(applied.status.code(), Some(0), "{err}");
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.VersionMismatch")
            && err.contains("staged as PydioEnterprise")
            && err.contains("UpgradeToEnterprise"),
        "{err}\n{}",
        _d.log_text()
    );
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        before,
        "the binary changed"
    );
    assert_eq!(bus.manager_prop("InstalledVersion"), "4.4.2");
    assert_eq!(bus.manager_prop("StagedVersion"), "4.4.5");
    assert_eq!(bus.manager_prop("BadVersions"), serde_json::json!([]));
    assert_eq!(bus.manager_prop("PackageName"), "PydioHome");
}
