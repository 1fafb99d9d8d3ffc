//! The packages an admin installs: the .deb on a clean real systemd (activation on the first
//! call, the check timer, `status`, the man page, an upgrade that keeps an edited config and
//! the state, `dpkg -r` leaving no daemon, `dpkg -P` leaving nothing), lintian without errors
//! and only the warnings listed in packaging/lintian-warnings.md, and the .rpm's file list and
//! scriptlets as Debian's `rpm` tool reads them. Built by packaging/build.sh (tests/run.sh runs
//! it first).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::sandbox::Sandbox;

fn one(dir: &str, ext: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let found: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|_| {
            panic!(
                "{} missing: run packaging/build.sh (tests/run.sh does)",
                d.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one .{ext} in {}: {found:?}",
        d.display()
    );
    found[0].clone()
}

const EXPECTED_FILES: &[&str] = &[
    "/etc/cells-updater/config.toml",
    "/usr/bin/cells-updater",
    "/usr/lib/systemd/system/cells-updater-check.service",
    "/usr/lib/systemd/system/cells-updater-check.timer",
    "/usr/lib/systemd/system/cells-updater.service",
    "/usr/share/dbus-1/system-services/com.pydio.CellsUpdater1.service",
    "/usr/share/dbus-1/system.d/com.pydio.CellsUpdater1.conf",
    "/usr/lib/systemd/system/cells-updater-fleet.service",
    "/usr/share/dbus-1/system.d/com.pydio.CellsUpdater1.Fleet.conf",
    "/usr/lib/sysusers.d/cells-updater-fleet.conf",
    "/usr/share/polkit-1/rules.d/50-cells-updater-fleet.rules",
    "/usr/share/polkit-1/actions/com.pydio.cellsupdater.policy",
    "/usr/share/man/man8/cells-updater.8.gz",
    "/usr/share/man/man5/cells-updater.conf.5.gz",
    "/usr/share/bash-completion/completions/cells-updater",
    "/usr/share/fish/vendor_completions.d/cells-updater.fish",
    "/usr/share/dbus-1/interfaces/com.pydio.CellsUpdater1.Manager.xml",
    "/usr/share/dbus-1/interfaces/com.pydio.CellsUpdater1.Job.xml",
    "/usr/share/cells-updater/keys.d/pydio.pem",
    "/usr/share/doc/cells-updater/dbus-api.md",
];

#[test]
fn deb_installs_activates_upgrades_removes_and_purges() {
    let deb = one("target/debian", "deb");
    let inside = format!(
        "/src/{}",
        deb.strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
    );
    let sb = Sandbox::up("deb");
    sb.sh(&format!("dpkg -i {inside}"));

    // Files in the standard places; the config is a conffile.
    let listed = sb.sh("dpkg -L cells-updater");
    for f in EXPECTED_FILES {
        assert!(
            listed.lines().any(|l| l == *f),
            "{f} not installed:\n{listed}"
        );
    }
    assert!(sb
        .sh("dpkg-query -W -f='${Conffiles}' cells-updater")
        .contains("/etc/cells-updater/config.toml"));

    // The first call activates the daemon.
    assert_ne!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );
    sb.sh("busctl introspect com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 >/dev/null");
    assert_eq!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );
    assert!(sb
        .sh("systemctl list-timers --all --no-pager")
        .contains("cells-updater-check.timer"));
    assert_eq!(
        sb.unit_prop("cells-updater-check.timer", "UnitFileState"),
        "enabled"
    );
    // The fleet agent: shipped, its user made, its unit disabled until [fleet] is set.
    assert_eq!(
        sb.unit_prop("cells-updater-fleet.service", "UnitFileState"),
        "disabled"
    );
    assert!(sb
        .sh("getent passwd cells-updater-fleet")
        .starts_with("cells-updater-fleet:"));
    assert!(sb.sh("cells-updater fleet --help").contains("rollout"));
    let status = sb.sh("cells-updater status");
    assert!(
        status.contains("State:") && status.contains("Daemon version:"),
        "{status}"
    );
    assert_eq!(
        sb.sh("man -w cells-updater").trim(),
        "/usr/share/man/man8/cells-updater.8.gz"
    );
    assert_eq!(
        sb.sh("man -w 5 cells-updater.conf").trim(),
        "/usr/share/man/man5/cells-updater.conf.5.gz"
    );

    // An admin edits the config; the daemon has state. A second install keeps both.
    sb.sh("printf '\\n[policy]\\nauto = \"patch\"\\n' >> /etc/cells-updater/config.toml");
    // No Cells here: a check fails, and the daemon records that (LastError) in its state.
    let (ok, _, err) = sb.try_sh("cells-updater check");
    assert!(
        !ok && err.contains("com.pydio.CellsUpdater1.Error.UnitFailed"),
        "{err}"
    );
    sb.wait_for(
        Duration::from_secs(10),
        "state.json",
        "grep -q last_error /var/lib/cells-updater/state.json",
    );
    let state_before = sb.sh("cat /var/lib/cells-updater/state.json");
    // A real upgrade: the same build repacked as 0.1.1-1, installed over 0.1.0-1.
    sb.sh(&format!(
        "rm -rf /tmp/next && dpkg-deb -R {inside} /tmp/next \\
         && sed -i 's/^Version: .*/Version: 0.1.1-1/' /tmp/next/DEBIAN/control \\
         && dpkg-deb -b /tmp/next /tmp/cells-updater_0.1.1-1.deb >/dev/null \\
         && dpkg -i /tmp/cells-updater_0.1.1-1.deb"
    ));
    assert_eq!(
        sb.sh("dpkg-query -W -f='${Version}' cells-updater").trim(),
        "0.1.1-1"
    );
    assert!(
        sb.sh("cat /etc/cells-updater/config.toml")
            .contains("auto = \"patch\""),
        "the edited config was replaced"
    );
    assert_eq!(
        sb.sh("cat /var/lib/cells-updater/state.json"),
        state_before,
        "the state was lost"
    );

    // Remove: no daemon left running; the config stays until purge.
    sb.sh("dpkg -r cells-updater");
    let (running, _, _) = sb.try_sh("pgrep -x cells-updater");
    assert!(!running, "a daemon is still running after dpkg -r");
    assert!(sb.path("/etc/cells-updater/config.toml").exists());
    // Purge: no state or config left.
    sb.sh("dpkg -P cells-updater");
    assert!(
        !sb.path("/etc/cells-updater").exists(),
        "config left after purge"
    );
    assert!(
        !sb.path("/var/lib/cells-updater").exists(),
        "state left after purge"
    );
    assert!(!sb.path("/usr/bin/cells-updater").exists());
}

#[test]
fn lintian_reports_no_errors_and_only_listed_warnings() {
    let deb = one("target/debian", "deb");
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit", "--fail-on", "error"])
        .arg(&deb)
        .output()
        .expect("lintian (package lintian)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lintian errors:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/lintian-warnings.md"),
    )
    .unwrap();
    let unlisted: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("W: ") || l.starts_with("E: "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|tag| !listed.contains(&format!("`{tag}`")))
        .collect();
    assert!(
        unlisted.is_empty(),
        "warnings not explained in packaging/lintian-warnings.md: {unlisted:?}\n{text}"
    );
}

#[test]
fn rpm_lists_the_files_and_its_scriptlets() {
    let rpm = one("target/generate-rpm", "rpm");
    let files = Command::new("rpm")
        .args(["-qpl"])
        .arg(&rpm)
        .output()
        .expect("rpm (package rpm)");
    assert!(
        files.status.success(),
        "{}",
        String::from_utf8_lossy(&files.stderr)
    );
    let files = String::from_utf8_lossy(&files.stdout);
    for f in EXPECTED_FILES {
        assert!(
            files.lines().any(|l| l == *f),
            "{f} not in the rpm:\n{files}"
        );
    }
    assert!(files
        .lines()
        .any(|l| l == "/usr/share/zsh/site-functions/_cells-updater"));
    let scripts = Command::new("rpm")
        .args(["-qp", "--scripts"])
        .arg(&rpm)
        .output()
        .unwrap();
    let scripts = String::from_utf8_lossy(&scripts.stdout);
    assert!(scripts.contains("postinstall scriptlet"), "{scripts}");
    assert!(scripts.contains("preuninstall scriptlet"), "{scripts}");
    assert!(scripts.contains("postuninstall scriptlet"), "{scripts}");
    assert!(
        scripts.contains("systemctl enable --now cells-updater-check.timer"),
        "{scripts}"
    );
    assert!(
        scripts.contains("systemctl stop cells-updater-check.service cells-updater.service"),
        "{scripts}"
    );
    let config = Command::new("rpm")
        .args(["-qpc"])
        .arg(&rpm)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&config.stdout).trim(),
        "/etc/cells-updater/config.toml"
    );
}

#[test]
fn rpm_installs_activates_and_erases_in_a_booted_container() {
    let rpm = one("target/generate-rpm", "rpm");
    let inside = format!(
        "/src/{}",
        rpm.strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
    );
    let sb = Sandbox::up("rpm");
    // Debian's rpm database knows nothing of dbus and systemd, which dpkg installed.
    sb.sh(&format!("rpm -i --nodeps {inside}"));
    let listed = sb.sh("rpm -ql cells-updater");
    for f in EXPECTED_FILES {
        assert!(
            listed.lines().any(|l| l == *f),
            "{f} not installed:\n{listed}"
        );
    }
    // %post ran under the booted systemd: the timer is enabled and running.
    assert_eq!(
        sb.unit_prop("cells-updater-check.timer", "UnitFileState"),
        "enabled"
    );
    assert_eq!(
        sb.unit_prop("cells-updater-check.timer", "ActiveState"),
        "active"
    );
    // D-Bus activation on the first call.
    assert_ne!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );
    sb.sh("busctl introspect com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 >/dev/null");
    assert_eq!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );
    assert!(sb.sh("cells-updater status").contains("Daemon version:"));
    assert_eq!(
        sb.sh("man -w cells-updater").trim(),
        "/usr/share/man/man8/cells-updater.8.gz"
    );
    assert!(sb
        .sh("cat /usr/share/dbus-1/interfaces/com.pydio.CellsUpdater1.Manager.xml")
        .contains("<interface name=\"com.pydio.CellsUpdater1.Manager\">"));
    // Erase: %preun stops the daemon and the timer; nothing of ours is left running.
    sb.sh("rpm -e cells-updater");
    let (running, _, _) = sb.try_sh("pgrep -x cells-updater");
    assert!(!running, "a daemon is still running after rpm -e");
    assert!(!sb.path("/usr/bin/cells-updater").exists());
    assert_ne!(
        sb.unit_prop("cells-updater-check.timer", "ActiveState"),
        "active"
    );
}
