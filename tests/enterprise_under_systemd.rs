//! The Enterprise license and upgrade on a real systemd: bad keys change nothing; a key the
//! update server rejects is LicenseRejected and changes nothing; a valid one is saved
//! (verbatim, trimmed, owned by the Cells user, mode 0600), the Enterprise binary of the same
//! version is installed as cells-enterprise, and a drop-in points cells.service at it.

mod support;

use support::sandbox::Sandbox;

const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";
const CALL: &str =
    "busctl call com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

fn snapshot(sb: &Sandbox) -> String {
    sb.sh(
        "sha256sum /opt/pydio/bin/*; ls -la /var/cells /etc/systemd/system/cells.service.d 2>&1; \
         systemctl show -p ExecStart --value cells.service; getcap /opt/pydio/bin/*",
    )
}

#[test]
fn enterprise_upgrade_saves_the_license_and_points_the_unit_at_the_new_binary() {
    let sb = Sandbox::cells_host_full(
        "enterprise",
        &[],
        Some(("GOOD-KEY-123", &[("4.4.2", "ok"), ("4.4.3", "ok")])),
    );
    let before = snapshot(&sb);

    // Bad keys, straight to InstallLicense as the Cells user: refused, nothing written.
    for (key, says) in [
        ("''", "empty"),
        ("'   '", "empty"),
        ("\"$(printf 'A\\001B')\"", "binary"),
        ("\"$(head -c 70000 /dev/zero | tr '\\0' A)\"", "more than"),
    ] {
        let (ok, _, err) = sb.try_sh(&format!(
            "runuser -u pydio -- {CALL} InstallLicense s {key}"
        ));
        assert!(!ok && err.contains(says), "{key}: {err}");
    }
    assert_eq!(snapshot(&sb), before, "refused keys changed something");

    // A key the update server rejects.
    sb.write("/root/bad.key", b"WRONG-KEY\n", 0o600);
    let (ok, _, err) = sb.try_sh("cells-updater upgrade-enterprise --license-file /root/bad.key");
    assert!(!ok);
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.LicenseRejected"),
        "{err}"
    );
    assert!(
        err.contains("Invalid license key"),
        "the server's Title is shown: {err}"
    );
    assert_eq!(snapshot(&sb), before, "a rejected key changed something");
    assert_eq!(
        sb.sh(&format!("{GET} PackageName")).trim(),
        "s \"PydioHome\""
    );

    // A valid key, pasted with whitespace around it.
    sb.write("/root/good.key", b"  GOOD-KEY-123\n\n", 0o600);
    let (ok, out, err) =
        sb.try_sh("cells-updater upgrade-enterprise --license-file /root/good.key");
    assert!(
        ok,
        "{out}\n{err}\n{}",
        sb.sh("journalctl -u cells-updater --no-pager -o cat | tail -n 20")
    );
    assert_eq!(
        std::fs::read_to_string(sb.path("/var/cells/pydio-license")).unwrap(),
        "GOOD-KEY-123"
    );
    assert_eq!(
        sb.sh("stat -c '%U:%G %a' /var/cells/pydio-license").trim(),
        "pydio:pydio 600"
    );

    let dropin = std::fs::read_to_string(
        sb.path("/etc/systemd/system/cells.service.d/50-cells-updater.conf"),
    )
    .unwrap();
    assert_eq!(dropin, include_str!("golden/50-cells-updater.conf"));
    let exec = sb.unit_prop("cells.service", "ExecStart");
    assert!(
        exec.contains(
            "path=/opt/pydio/bin/cells-enterprise ; argv[]=/opt/pydio/bin/cells-enterprise start"
        ),
        "{exec}"
    );
    let pid = sb.unit_prop("cells.service", "MainPID");
    assert_eq!(
        sb.sh(&format!("readlink /proc/{pid}/exe")).trim(),
        "/opt/pydio/bin/cells-enterprise"
    );
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
    assert_eq!(
        sb.sh("getcap /opt/pydio/bin/cells-enterprise").trim(),
        "/opt/pydio/bin/cells-enterprise cap_net_bind_service=ep"
    );
    assert_eq!(
        sb.sh("stat -c '%U:%G %a' /opt/pydio/bin/cells-enterprise")
            .trim(),
        "root:root 755"
    );
    assert_eq!(
        sb.sh(&format!("{GET} PackageName")).trim(),
        "s \"PydioEnterprise\""
    );
    assert_eq!(
        sb.sh(&format!("{GET} BinaryPath")).trim(),
        "s \"/opt/pydio/bin/cells-enterprise\""
    );

    // Later checks are Enterprise checks carrying the saved key (the server answers 403
    // without it), and offer the next Enterprise release.
    let (ok, out, err) = sb.try_sh("cells-updater check --json");
    assert!(ok, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["releases"][0]["PackageName"], "PydioEnterprise");
    assert_eq!(doc["releases"][0]["Version"], "4.4.3");

    // The Cells user may replace the license.
    sb.sh(&format!(
        "runuser -u pydio -- {CALL} InstallLicense s 'NEW-KEY-456'"
    ));
    assert_eq!(
        std::fs::read_to_string(sb.path("/var/cells/pydio-license")).unwrap(),
        "NEW-KEY-456"
    );
    assert_eq!(
        sb.sh("stat -c '%U:%G %a' /var/cells/pydio-license").trim(),
        "pydio:pydio 600"
    );
    assert_eq!(
        sb.sh("ls -A /var/cells | grep -c cells-updater-new || true")
            .trim(),
        "0"
    );

    // Rollback returns to the Home binary, its unit and its package.
    let (ok, out, err) = sb.try_sh("cells-updater rollback");
    assert!(ok, "{out}{err}");
    let exec = sb.unit_prop("cells.service", "ExecStart");
    assert!(exec.contains("path=/opt/pydio/bin/cells ;"), "{exec}");
    let pid = sb.unit_prop("cells.service", "MainPID");
    assert_eq!(
        sb.sh(&format!("readlink /proc/{pid}/exe")).trim(),
        "/opt/pydio/bin/cells"
    );
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
    assert_eq!(
        sb.sh("getcap /opt/pydio/bin/cells").trim(),
        "/opt/pydio/bin/cells cap_net_bind_service=ep"
    );
    assert!(
        !sb.path("/opt/pydio/bin/cells-enterprise").exists(),
        "the Enterprise binary is removed"
    );
    assert_eq!(
        sb.sh(&format!("{GET} PackageName")).trim(),
        "s \"PydioHome\""
    );
}
