//! The Prometheus textfile: written when the daemon starts and on every state change, with
//! the installed version, the state, the last check and update times, the updates and
//! rollbacks counters, the update available and the hold; each version of it passes
//! `promtool check metrics` (Debian's prometheus package, an independent parser). The
//! daemon drives real updates with the stand-in unit (`fake-unit`).
#![cfg(feature = "fake-unit")]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::bus::*;
use support::*;

/// The samples in the file, by series (`name{labels}`), after promtool accepted it.
fn samples(file: &std::path::Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(file).unwrap();
    let check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("promtool (Debian's prometheus, installed by tests/deps.sh)");
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn cli(bus: &PrivateBus, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(args)
        .env("CELLS_UPDATER_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_textfile_follows_every_state_change_and_passes_promtool() {
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.3", "ok", false), ("4.4.4", "exit", false)]);
    let dir = env.root.path().join("var/lib/prometheus/node-exporter");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cells-updater.prom");
    env.write_daemon_config("[policy]\nhealth_settle = \"200ms\"\nhealth_timeout = \"5s\"\n");
    let bus = PrivateBus::start();
    let _d = env.start_fake_unit_daemon(&bus);
    let info = |v: &str| {
        format!(
            "cells_updater_info{{installed_version=\"{v}\",package=\"PydioHome\",channel=\"stable\",daemon_version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )
    };

    // At start: what is installed, nothing done yet.
    wait_until(Duration::from_secs(10), "the first metrics", || {
        file.exists() && std::fs::read_to_string(&file).unwrap().contains("4.4.2")
    });
    let m = samples(&file);
    assert_eq!(m[&info("4.4.2")], 1.0);
    assert_eq!(m["cells_updater_state{state=\"idle\"}"], 1.0);
    assert_eq!(m["cells_updater_last_check_timestamp_seconds"], 0.0);
    assert_eq!(m["cells_updater_updates_total{result=\"success\"}"], 0.0);
    assert_eq!(m["cells_updater_update_available{version=\"\"}"], 0.0);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644, "node_exporter (another user) reads it");

    // A check: an update is available.
    let before = cells_updater::daemon::now_us() as f64 / 1e6;
    assert!(cli(&bus, &["check"]).0);
    let m = samples(&file);
    assert_eq!(m["cells_updater_update_available{version=\"4.4.4\"}"], 1.0);
    assert!(m["cells_updater_last_check_timestamp_seconds"] >= before.floor());

    // A good update, then one that does not come up and is rolled back.
    let (ok, out) = cli(&bus, &["update", "4.4.3"]);
    assert!(ok, "{out}");
    let m = samples(&file);
    assert_eq!(m[&info("4.4.3")], 1.0);
    assert_eq!(m["cells_updater_updates_total{result=\"success\"}"], 1.0);
    assert!(m["cells_updater_last_update_timestamp_seconds"] >= before.floor());
    let (ok, out) = cli(&bus, &["update", "4.4.4"]);
    assert!(!ok, "{out}");
    let m = samples(&file);
    assert_eq!(m[&info("4.4.3")], 1.0);
    assert_eq!(m["cells_updater_updates_total{result=\"failure\"}"], 1.0);
    assert_eq!(m["cells_updater_rollbacks_total"], 1.0);
    assert_eq!(m["cells_updater_state{state=\"failed\"}"], 1.0);

    // A requested rollback; a hold.
    let (ok, out) = cli(&bus, &["rollback"]);
    assert!(ok, "{out}");
    let m = samples(&file);
    assert_eq!(m[&info("4.4.2")], 1.0);
    assert_eq!(m["cells_updater_rollbacks_total"], 2.0);
    assert_eq!(m["cells_updater_held"], 0.0);
    assert!(cli(&bus, &["hold", "--reason", "audit"]).0);
    assert_eq!(samples(&file)["cells_updater_held"], 1.0);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "no temporary file is left beside it");
}
