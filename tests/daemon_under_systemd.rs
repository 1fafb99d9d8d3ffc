//! The daemon installed with dist/install.sh under a real systemd (nspawn): Type=notify
//! readiness, STATUS= text, unit facts read from systemd, idle exit and D-Bus re-activation,
//! the check timer, structured journal fields, a bad config stopping startup, and polkit
//! granting an action by rule. (The unit's hardening: tests/privilege_separation.rs.)

mod support;

use std::time::Duration;
use support::sandbox::Sandbox;
use support::*;

const CALL: &str =
    "busctl call com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";
const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

fn prepared(name: &str) -> Sandbox {
    let sb = Sandbox::up(name);
    sb.install_build();
    sb.install_fake_cells("4.4.2", &[&keys().rsa_pkcs1_pub]);
    sb
}

#[test]
fn service_lifecycle_under_real_systemd() {
    let sb = prepared("lifecycle");
    sb.write(
        "/etc/cells-updater/config.d/50-test.toml",
        b"[daemon]\nidle_exit = \"3s\"\n",
        0o644,
    );

    // Type=notify: `systemctl start` returns once READY=1 arrived, and READY=1 is sent only
    // after the name is owned, so the name must be there the moment start returns.
    sb.sh("systemctl start cells-updater.service");
    let owned = sb.sh("busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s com.pydio.CellsUpdater1");
    assert_eq!(owned.trim(), "b true");
    assert_eq!(sb.unit_prop("cells-updater.service", "Type"), "notify");
    assert_eq!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );

    // Unit facts come from systemd: BinaryPath is cells.service's ExecStart.
    sb.wait_for(
        Duration::from_secs(10),
        "InstalledVersion",
        &format!("{GET} InstalledVersion | grep -q 4.4.2"),
    );
    assert_eq!(
        sb.sh(&format!("{GET} BinaryPath")).trim(),
        "s \"/opt/pydio/bin/cells\""
    );

    // STATUS= mirrors the state, visible in systemctl status.
    sb.wait_for(Duration::from_secs(5), "STATUS text", "systemctl show -p StatusText --value cells-updater | grep -q 'Idle; Cells 4.4.2 installed'");
    let status = sb.sh("systemctl status --no-pager cells-updater.service || true");
    assert!(
        status.contains("Status: \"Idle; Cells 4.4.2 installed\""),
        "{status}"
    );

    // Structured fields reach the journal.
    let journal = sb.sh("journalctl -u cells-updater.service -o json --no-pager");
    assert!(
        journal.contains("\"READY_MS\""),
        "no READY_MS field in the journal: {journal}"
    );

    // Idle exit, then a call activates the service again through D-Bus.
    sb.wait_for(
        Duration::from_secs(20),
        "idle exit",
        "test \"$(systemctl show -p ActiveState --value cells-updater)\" = inactive",
    );
    let result = sb.sh("systemctl show -p Result --value cells-updater");
    assert_eq!(result.trim(), "success", "the idle exit is a clean one");
    sb.sh("busctl introspect com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 >/dev/null");
    assert_eq!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );

    // The check timer.
    sb.sh("systemctl enable --now cells-updater-check.timer");
    let timers = sb.sh("systemctl list-timers --all --no-pager");
    assert!(timers.contains("cells-updater-check.timer"), "{timers}");
    assert_eq!(
        sb.unit_prop("cells-updater-check.timer", "Persistent"),
        "yes"
    );
    assert_eq!(
        sb.unit_prop("cells-updater-check.timer", "RandomizedDelayUSec"),
        "1min"
    );

    // A bad key stops startup, and the journal names the file and the key.
    sb.write(
        "/etc/cells-updater/config.d/99-bad.toml",
        b"[policy]\nauto = \"always\"\n",
        0o644,
    );
    let (ok, _, _) = sb.try_sh("systemctl restart cells-updater.service");
    assert!(!ok, "a bad configuration must stop startup");
    assert_ne!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );
    let log = sb.sh("journalctl -u cells-updater.service --no-pager -o cat");
    assert!(
        log.contains("/etc/cells-updater/config.d/99-bad.toml: key [policy] auto"),
        "{log}"
    );
}

#[test]
fn polkit_grants_the_stage_action_by_rule() {
    let sb = prepared("polkit");
    sb.sh("useradd --create-home alice");
    let as_alice = |what: &str| sb.try_sh(&format!("runuser -u alice -- {what}"));

    let (ok, _, err) = as_alice("/usr/bin/cells-updater stage");
    assert!(!ok);
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.NotAuthorized"),
        "{err}"
    );
    assert!(err.contains("com.pydio.cellsupdater.stage"), "{err}");

    sb.write(
        "/etc/polkit-1/rules.d/50-cells-updater-test.rules",
        b"polkit.addRule(function(action, subject) {\n  if (action.id == \"com.pydio.cellsupdater.stage\" && subject.user == \"alice\") {\n    return polkit.Result.YES;\n  }\n});\n",
        0o644,
    );
    // polkitd reloads rules when the directory changes.
    sb.wait_for(
        Duration::from_secs(15),
        "the rule to take effect",
        &format!("runuser -u alice -- {CALL} Stage 'sa{{sv}}' '' 0 | grep -q '^o \"/com/pydio/CellsUpdater1/job/'"),
    );
    // The rule grants stage only.
    let (ok, _, err) = as_alice(&format!("{CALL} Check 'a{{sv}}' 0"));
    assert!(!ok, "check is not granted to alice");
    assert!(err.contains("com.pydio.cellsupdater.check"), "{err}");
    // pydio, the unit's User= read from systemd, passes without polkit: its check gets as far
    // as the (unreachable) update server.
    let (ok, _, err) = sb.try_sh("runuser -u pydio -- /usr/bin/cells-updater check");
    assert!(!ok);
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.ServerError"),
        "pydio should pass authorization: {err}"
    );
}

#[test]
fn watchdog_is_fed_and_only_root_may_own_the_name() {
    let sb = prepared("watchdog");
    // A 1 s watchdog: a daemon that did not send WATCHDOG=1 would be killed within it.
    sb.write(
        "/etc/systemd/system/cells-updater.service.d/50-watchdog.conf",
        b"[Service]\nWatchdogSec=1s\n",
        0o644,
    );
    sb.write(
        "/etc/cells-updater/config.d/50-test.toml",
        b"[daemon]\nidle_exit = \"0\"\n",
        0o644,
    );
    sb.sh("systemctl daemon-reload && systemctl start cells-updater.service");
    let pid = sb.unit_prop("cells-updater.service", "MainPID");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        sb.unit_prop("cells-updater.service", "ActiveState"),
        "active"
    );
    assert_eq!(
        sb.unit_prop("cells-updater.service", "MainPID"),
        pid,
        "the daemon was restarted"
    );
    assert_eq!(sb.unit_prop("cells-updater.service", "NRestarts"), "0");
    assert_ne!(
        sb.unit_prop("cells-updater.service", "WatchdogTimestampMonotonic"),
        "0",
        "no WATCHDOG=1 received"
    );

    // The bus policy lets only root own com.pydio.CellsUpdater1.
    sb.sh("systemctl stop cells-updater.service && useradd --create-home mallory");
    let (ok, _, err) = sb.try_sh(
        "runuser -u mallory -- dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
         org.freedesktop.DBus.RequestName string:com.pydio.CellsUpdater1 uint32:0",
    );
    assert!(!ok && err.contains("AccessDenied"), "{err}");
}
