//! A journal that cannot be read back: the daemon dies between its swap and the health check
//! (failpoint `apply-after-rename`), then its journal is damaged (capabilities that are not
//! base64, a version that is not one). At the next start the daemon still comes up, and its
//! recovery acts on nothing: the job fails with `Internal` naming the journal and what to
//! check, the state is `failed` with that message, the journal file and the binary are
//! byte for byte as they were. (The fake unit stands in for systemd: a private bus.)
#![cfg(all(feature = "failpoints", feature = "fake-unit"))]

mod support;

use sha2::Digest;
use std::time::Duration;
use support::bus::*;
use support::*;

fn sha(path: &std::path::Path) -> Vec<u8> {
    sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

#[test]
fn a_damaged_journal_is_reported_and_nothing_acts_on_it() {
    let rows: &[(&str, &str)] = &[("new_caps", "!!"), ("to_version", "four")];
    for (field, value) in rows {
        let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
        env.offer(&[("4.4.6", "ok", false)]);
        env.write_daemon_config("[policy]\nhealth_settle = \"300ms\"\nhealth_timeout = \"10s\"\n");
        let bus = PrivateBus::start();
        let port = free_port();
        let _first = DaemonProc::start_with_env(
            &bus,
            env.root.path(),
            &[
                ("CELLS_UPDATER_FAKE_UNIT", &port),
                ("CELLS_UPDATER_FAILPOINT", "apply-after-rename"),
            ],
        );
        update_on(&bus, "4.4.6");
        wait_until(
            Duration::from_secs(60),
            "the daemon to die after its swap",
            || !bus.name_has_owner(DEST),
        );
        let journal = env.root.path().join("var/lib/cells-updater/journal.json");
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
        doc[*field] = serde_json::Value::from(*value);
        let damaged = serde_json::to_vec_pretty(&doc).unwrap();
        std::fs::write(&journal, &damaged).unwrap();
        let cells = env.root.path().join("opt/pydio/bin/cells");
        let before = sha(&cells);

        let second = DaemonProc::start_with_env(
            &bus,
            env.root.path(),
            &[("CELLS_UPDATER_FAKE_UNIT", &port)],
        );
        wait_until(Duration::from_secs(30), "recovery to end", || {
            bus.manager_prop("State") == "failed"
        });
        let last = bus.manager_prop("LastError");
        let last = last.as_str().unwrap_or_default();
        assert!(
            last.contains("journal.json file") && last.contains("is damaged"),
            "{field}: {last}\n{}",
            second.log_text()
        );
        assert!(
            last.contains("Check it and its capabilities by hand"),
            "{field}: {last}"
        );
        assert_eq!(std::fs::read(&journal).unwrap(), damaged, "{field}");
        assert_eq!(sha(&cells), before, "{field}: recovery touched the binary");
        let jobs = bus.busctl_json(&["call", DEST, MANAGER, MANAGER_IFACE, "ListJobs"]);
        let job = jobs["data"][0][0].as_str().unwrap().to_string();
        let error = bus.busctl_json(&[
            "get-property",
            DEST,
            &job,
            "com.pydio.CellsUpdater1.Job",
            "Error",
        ])["data"]
            .clone();
        assert_eq!(error, "com.pydio.CellsUpdater1.Error.Internal", "{field}");
        assert!(bus.name_has_owner(DEST), "{field}: the daemon is still up");
    }
}
