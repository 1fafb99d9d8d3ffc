//! The daemon on a real private `dbus-daemon`, driven by independent clients (`busctl`,
//! `gdbus`, `setpriv`) and observed with `busctl monitor`: introspection matches the
//! contract, Check returns releases, a Stage job reports rising progress and ends with
//! JobFinished, a second Stage gets Busy, other uids are refused, and the state survives a
//! restart.

mod support;

use std::time::{Duration, Instant};
use support::bus::*;
use support::*;

const JOB_IFACE: &str = "com.pydio.CellsUpdater1.Job";

/// `(name, signature)` pairs, sorted.
fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    v.sort();
    v
}

/// The `(name, signature)` of every property in `members`' output, sorted.
fn served_properties(m: &[(String, String, String, String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = m
        .iter()
        .filter(|x| x.1 == "property")
        .map(|x| (x.0.trim_start_matches('.').to_string(), x.2.clone()))
        .collect();
    v.sort();
    v
}

/// `(member, kind, signature, result)` for every member of an interface, from busctl.
fn members(
    bus: &PrivateBus,
    path: &str,
    iface: &str,
) -> Vec<(String, String, String, String, String)> {
    let out = bus.busctl(&["introspect", DEST, path, iface]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('.'))
        .map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            (
                t[0].into(),
                t[1].into(),
                t[2].into(),
                t.get(3).copied().unwrap_or("").into(),
                t.last().copied().unwrap_or("").into(),
            )
        })
        .collect()
}

fn started() -> (StageEnv, PrivateBus, DaemonProc) {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    env.write_daemon_config("");
    let bus = PrivateBus::start();
    let daemon = DaemonProc::start(&bus, env.root.path());
    (env, bus, daemon)
}

fn publish_slow(env: &StageEnv, version: &str) -> Vec<u8> {
    let mut bytes = fake_cells(version, "ok");
    bytes.resize(2 << 20, 0x33);
    let (sum, sig) = sign(&bytes, &keys().rsa);
    env.publish_with(
        version,
        bytes.clone(),
        &sum,
        &sig,
        Delivery::Slow {
            chunk: 64 << 10,
            delay_ms: 25,
        },
        true,
    );
    bytes
}

/// Calls Stage(version) with busctl; returns the job's path.
fn start_stage(bus: &PrivateBus, version: &str) -> String {
    bus.busctl_json(&[
        "call",
        DEST,
        MANAGER,
        MANAGER_IFACE,
        "Stage",
        "sa{sv}",
        version,
        "0",
    ])["data"][0]
        .as_str()
        .expect("an object path")
        .to_string()
}

fn job_state(bus: &PrivateBus, path: &str) -> String {
    bus.busctl_json(&["get-property", DEST, path, JOB_IFACE, "State"])["data"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn introspection_lists_every_member_of_the_contract() {
    let (env, bus, _d) = started();
    let m = members(&bus, MANAGER, MANAGER_IFACE);
    let want_methods = [
        (".Apply", "a{sv}", "o"),
        (".Check", "a{sv}", "aa{sv}"),
        (".InstallLicense", "s", "-"),
        (".ListJobs", "-", "ao"),
        (".Hold", "sa{sv}", "-"),
        (".Release", "-", "-"),
        (".ForgetBadVersion", "s", "-"),
        (".Rollback", "a{sv}", "o"),
        (".Stage", "sa{sv}", "o"),
        (".StageFromFd", "ha{sv}", "o"),
        (".Update", "sa{sv}", "o"),
        (".UpgradeToEnterprise", "sa{sv}", "o"),
    ];
    for (name, sig, out) in want_methods {
        assert!(
            m.iter()
                .any(|x| x.0 == name && x.1 == "method" && x.2 == sig && x.3 == out),
            "method {name}({sig}) -> {out} missing: {m:?}"
        );
    }
    let want_props = [
        ("State", "s"),
        ("InstalledVersion", "s"),
        ("PackageName", "s"),
        ("Channel", "s"),
        ("Unit", "s"),
        ("BinaryPath", "s"),
        ("StagedVersion", "s"),
        ("PreviousVersion", "s"),
        ("AvailableVersions", "as"),
        ("BadVersions", "as"),
        ("LastCheck", "t"),
        ("LastError", "s"),
        ("CurrentJob", "o"),
        ("DaemonVersion", "s"),
        ("Hold", "s"),
        ("HoldVersion", "s"),
        ("NextWindow", "t"),
    ];
    for (name, sig) in want_props {
        let dotted = format!(".{name}");
        assert!(
            m.iter()
                .any(|x| x.0 == dotted && x.1 == "property" && x.2 == sig && x.4 == "emits-change"),
            "property {name} {sig} (emits-change) missing: {m:?}"
        );
    }
    // The library's one list says the same, and the daemon serves no property beyond it.
    assert_eq!(
        pairs(cells_updater::contract::MANAGER_PROPERTIES),
        pairs(&want_props)
    );
    assert_eq!(served_properties(&m), pairs(&want_props));
    for (name, sig) in [(".JobFinished", "osss"), (".UpdateAvailable", "s")] {
        assert!(
            m.iter()
                .any(|x| x.0 == name && x.1 == "signal" && x.2 == sig),
            "signal {name} missing"
        );
    }
    let out = bus.busctl(&["introspect", DEST, MANAGER]);
    let text = String::from_utf8_lossy(&out.stdout);
    for std_iface in [
        "org.freedesktop.DBus.Introspectable",
        "org.freedesktop.DBus.Properties",
        "org.freedesktop.DBus.Peer",
    ] {
        assert!(text.contains(std_iface), "{std_iface} missing");
    }
    // The Job interface, on a real job.
    publish_slow(&env, "4.4.5");
    let job = start_stage(&bus, "4.4.5");
    assert_eq!(job, "/com/pydio/CellsUpdater1/job/1");
    let j = members(&bus, &job, JOB_IFACE);
    assert!(j
        .iter()
        .any(|x| x.0 == ".Cancel" && x.1 == "method" && x.2 == "-" && x.3 == "-"));
    let want_job = [
        ("Id", "u"),
        ("Kind", "s"),
        ("Version", "s"),
        ("State", "s"),
        ("Phase", "s"),
        ("Percent", "u"),
        ("BytesDone", "t"),
        ("BytesTotal", "t"),
        ("Error", "s"),
        ("Message", "s"),
        ("StartedAt", "t"),
        ("FinishedAt", "t"),
    ];
    for (name, sig) in want_job {
        let dotted = format!(".{name}");
        assert!(
            j.iter()
                .any(|x| x.0 == dotted && x.1 == "property" && x.2 == sig),
            "job property {name} {sig} missing: {j:?}"
        );
    }
    assert_eq!(
        pairs(cells_updater::contract::JOB_PROPERTIES),
        pairs(&want_job)
    );
    assert_eq!(served_properties(&j), pairs(&want_job));
    // The interface XML the packages install says exactly what the daemon introspects.
    for (file, path, iface) in [
        (
            "com.pydio.CellsUpdater1.Manager.xml",
            MANAGER,
            MANAGER_IFACE,
        ),
        ("com.pydio.CellsUpdater1.Job.xml", job.as_str(), JOB_IFACE),
    ] {
        let shipped = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("dist/interfaces")
                .join(file),
        )
        .unwrap();
        let live = bus.busctl(&["introspect", "--xml-interface", DEST, path]);
        let live = String::from_utf8_lossy(&live.stdout);
        let (want, got) = (xml_members(&shipped, iface), xml_members(&live, iface));
        assert!(!want.is_empty());
        assert_eq!(want, got, "{file} differs from the live introspection");
        // Every member, argument and the interface itself carries its documentation.
        let elements = shipped.matches("<method ").count()
            + shipped.matches("<signal ").count()
            + shipped.matches("<property ").count()
            + shipped.matches("<arg ").count()
            + shipped.matches("<interface ").count();
        assert_eq!(
            shipped.matches("org.gtk.GDBus.DocString").count(),
            elements,
            "{file}: an element without its DocString"
        );
    }
}

/// The members of `iface` in introspection XML, one normalized line each (argument names,
/// comments and annotations aside), sorted.
fn xml_members(xml: &str, iface: &str) -> Vec<String> {
    let mut text = xml.to_string();
    while let Some(a) = text.find("<!--") {
        let b = text[a..].find("-->").map_or(text.len(), |b| a + b + 3);
        text.replace_range(a..b, "");
    }
    let attr = |tag: &str, name: &str| -> String {
        let key = format!(" {name}=\"");
        tag.find(&key)
            .map(|i| {
                let rest = &tag[i + key.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].to_string()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut inside = false;
    let mut current: Option<String> = None;
    for tag in text.split('<').skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        let self_closing = tag.ends_with('/');
        let tag = format!(" {}", tag.trim_end_matches('/'));
        let kind = tag.split_whitespace().next().unwrap_or("").to_string();
        match kind.as_str() {
            "interface" => inside = attr(&tag, "name") == iface,
            "/interface" => inside = false,
            _ if !inside => {}
            "method" | "signal" => {
                current = Some(format!("{kind} {}", attr(&tag, "name")));
                if self_closing {
                    out.extend(current.take());
                }
            }
            "arg" => {
                if let Some(c) = current.as_mut() {
                    let dir = attr(&tag, "direction");
                    let dir = if dir.is_empty() && c.starts_with("method") {
                        "in".into()
                    } else {
                        dir
                    };
                    c.push_str(&format!(" {dir}:{}", attr(&tag, "type")));
                }
            }
            "/method" | "/signal" => out.extend(current.take()),
            "property" => out.push(format!(
                "property {} {} {}",
                attr(&tag, "name"),
                attr(&tag, "type"),
                attr(&tag, "access")
            )),
            _ => {}
        }
    }
    out.sort();
    out
}

#[test]
fn check_then_stage_reports_progress_busy_and_job_finished() {
    let (env, bus, daemon) = started();
    let bytes = publish_slow(&env, "4.4.5");

    let releases = bus.busctl_json(&["call", DEST, MANAGER, MANAGER_IFACE, "Check", "a{sv}", "0"]);
    let list = releases["data"][0].as_array().expect("aa{sv}");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["Version"]["data"], "4.4.5");
    assert_eq!(list[0]["Allowed"]["data"], true);
    assert_eq!(list[0]["Reason"]["data"], "");
    assert_eq!(list[0]["Size"]["data"], bytes.len());
    assert_eq!(
        bus.manager_prop("AvailableVersions"),
        serde_json::json!(["4.4.5"])
    );
    assert!(bus.manager_prop("LastCheck").as_u64().unwrap() > 0);
    assert_eq!(bus.manager_prop("InstalledVersion"), "4.4.2");

    let monitor = Monitor::start(&bus);
    let job = start_stage(&bus, "4.4.5");
    let second = bus.gdbus(
        None,
        MANAGER,
        "com.pydio.CellsUpdater1.Manager.Stage",
        &["4.4.5", "{}"],
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && err.contains("com.pydio.CellsUpdater1.Error.Busy"),
        "second Stage: {err}"
    );
    assert_eq!(bus.manager_prop("CurrentJob"), job.as_str());

    wait_until(Duration::from_secs(30), "the stage job to end", || {
        job_state(&bus, &job) != "running"
    });
    let messages = monitor.finish();
    assert_eq!(job_state(&bus, &job), "succeeded", "{}", daemon.log_text());

    let percents: Vec<u64> = messages
        .iter()
        .filter(|m| m["member"] == "PropertiesChanged" && m["path"] == job.as_str())
        .filter_map(|m| m["payload"]["data"][1]["Percent"]["data"].as_u64())
        .collect();
    assert!(percents.len() >= 3, "few progress updates: {percents:?}");
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "percent went down: {percents:?}"
    );
    assert_eq!(percents.last(), Some(&100));
    let finished: Vec<&serde_json::Value> = messages
        .iter()
        .filter(|m| m["member"] == "JobFinished")
        .collect();
    assert_eq!(finished.len(), 1);
    let args = &finished[0]["payload"]["data"];
    assert_eq!(args[0], job.as_str());
    assert_eq!(args[1], "succeeded");
    assert_eq!(args[2], "");
    assert!(args[3].as_str().unwrap().contains("staged 4.4.5"), "{args}");
    // The manager's State went through downloading to staged, signalled as it changed.
    let states: Vec<&str> = messages
        .iter()
        .filter(|m| m["member"] == "PropertiesChanged" && m["path"] == MANAGER)
        .filter_map(|m| m["payload"]["data"][1]["State"]["data"].as_str())
        .collect();
    assert!(
        states.contains(&"downloading") && states.last() == Some(&"staged"),
        "{states:?}"
    );
    assert_eq!(bus.manager_prop("StagedVersion"), "4.4.5");
    assert_eq!(bus.manager_prop("CurrentJob"), "/");
    let jobs = bus.busctl_json(&["call", DEST, MANAGER, MANAGER_IFACE, "ListJobs"]);
    assert_eq!(jobs["data"][0], serde_json::json!([job]));
}

#[test]
fn only_root_and_the_cells_user_may_act_other_uids_are_refused() {
    let (env, bus, _d) = started();
    env.publish("4.4.5", fake_cells("4.4.5", "ok"), &keys().rsa);
    // uid 2 (bin) is neither root nor the configured Cells user (daemon, uid 1).
    let refused = bus.gdbus(
        Some(2),
        MANAGER,
        "com.pydio.CellsUpdater1.Manager.Stage",
        &["4.4.5", "{}"],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.NotAuthorized"),
        "{err}"
    );
    assert!(
        err.contains("com.pydio.cellsupdater.stage"),
        "the refusal names the action: {err}"
    );
    let refused = bus.gdbus(
        Some(2),
        MANAGER,
        "com.pydio.CellsUpdater1.Manager.Check",
        &["{}"],
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Error.NotAuthorized"));
    assert_eq!(
        bus.manager_prop("StagedVersion"),
        "",
        "a refused call changes nothing"
    );
    assert_eq!(bus.manager_prop("LastCheck"), 0);
    // Reading is open to everyone.
    let read = bus.gdbus(
        Some(2),
        MANAGER,
        "org.freedesktop.DBus.Properties.Get",
        &[MANAGER_IFACE, "State"],
    );
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    // The Cells user may check and stage.
    let allowed = bus.gdbus(
        Some(1),
        MANAGER,
        "com.pydio.CellsUpdater1.Manager.Check",
        &["{}"],
    );
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("4.4.5"));
    let staged = bus.gdbus(
        Some(1),
        MANAGER,
        "com.pydio.CellsUpdater1.Manager.Stage",
        &["4.4.5", "{}"],
    );
    assert!(
        staged.status.success(),
        "{}",
        String::from_utf8_lossy(&staged.stderr)
    );
    wait_until(Duration::from_secs(20), "StagedVersion 4.4.5", || {
        bus.manager_prop("StagedVersion") == "4.4.5"
    });
}

#[test]
fn cli_stage_file_accepts_a_good_binary_and_rejects_a_tampered_one() {
    let (env, bus, _d) = started();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let good = fake_cells("4.4.5", "ok");
    let (sum, sig) = sign(&good, &keys().rsa);
    let mut bad = good.clone();
    bad[3000] ^= 0x40;
    let (good_path, bad_path) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good_path, &good).unwrap();
    std::fs::write(&bad_path, &bad).unwrap();
    let cli_with = |file: &std::path::Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cells-updater"))
            .args(["--bus-address", &bus.address, "stage", "--file"])
            .arg(file)
            .args([
                "--version",
                "4.4.5",
                "--checksum",
                &sum,
                "--signature",
                &sig,
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let cli = |file: &std::path::Path| cli_with(file, &[]);
    let tampered = cli(&bad_path);
    assert_eq!(tampered.status.code(), Some(1));
    let err = String::from_utf8_lossy(&tampered.stderr);
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.ChecksumMismatch"),
        "{err}\n{}",
        _d.log_text()
    );
    assert_eq!(bus.manager_prop("StagedVersion"), "");
    assert_eq!(bus.manager_prop("State"), "failed");
    assert!(bus
        .manager_prop("LastError")
        .as_str()
        .unwrap()
        .contains("SHA-256"));

    // A PackageName the contract does not spell is refused by the bus, before any byte is
    // read: InvalidArgument, and nothing staged.
    let unknown = cli_with(&good_path, &["--package", "Pydio"]);
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_ne!(unknown.status.code(), Some(0), "{err}");
    assert!(
        err.contains("com.pydio.CellsUpdater1.Error.InvalidArgument")
            && err.contains("is not PydioHome or PydioEnterprise"),
        "{err}"
    );
    assert_eq!(bus.manager_prop("StagedVersion"), "");

    let ok = cli(&good_path);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("staged 4.4.5"));
    assert_eq!(bus.manager_prop("StagedVersion"), "4.4.5");
    assert_eq!(bus.manager_prop("State"), "staged");
    assert_eq!(
        std::fs::read(env.staged_dir().join("4.4.5/cells")).unwrap(),
        good
    );
}

#[test]
fn a_restarted_daemon_shows_the_same_persisted_properties() {
    let (env, bus, mut daemon) = started();
    env.publish("4.4.5", fake_cells("4.4.5", "ok"), &keys().rsa);
    bus.busctl_json(&[
        "call",
        DEST,
        MANAGER,
        MANAGER_IFACE,
        "Stage",
        "sa{sv}",
        "4.4.5",
        "0",
    ]);
    wait_until(Duration::from_secs(20), "StagedVersion 4.4.5", || {
        bus.manager_prop("StagedVersion") == "4.4.5"
    });
    let before = bus.manager_props();
    assert_eq!(daemon.stop(), Some(0), "SIGTERM is a clean stop");

    let _again = DaemonProc::start(&bus, env.root.path());
    wait_until(Duration::from_secs(10), "InstalledVersion", || {
        bus.manager_prop("InstalledVersion") == "4.4.2"
    });
    let after = bus.manager_props();
    for key in [
        "State",
        "StagedVersion",
        "PreviousVersion",
        "AvailableVersions",
        "LastCheck",
        "LastError",
        "PackageName",
        "Channel",
        "Unit",
        "BinaryPath",
        "InstalledVersion",
    ] {
        assert_eq!(before[key], after[key], "{key} differs after a restart");
    }
    assert_eq!(after["StagedVersion"], "4.4.5");
    assert!(after["LastCheck"].as_u64().unwrap() > 0);
}

#[test]
fn cli_status_json_and_unreachable_exit_code() {
    let (_env, bus, _d) = started();
    // The installed version is learnt just after READY (it runs a probe).
    wait_until(Duration::from_secs(10), "InstalledVersion", || {
        bus.manager_prop("InstalledVersion") == "4.4.2"
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(["--bus-address", &bus.address, "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["format"], 1);
    assert_eq!(doc["State"], "idle");
    assert_eq!(doc["InstalledVersion"], "4.4.2");
    assert_eq!(doc["CurrentJob"], "/");

    let empty = PrivateBus::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(["--bus-address", &empty.address, "status"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "no daemon on the bus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server that trickles (a byte every 2 s after the first 4 KiB) never fills a frame: the
/// daemon still sees a Cancel within a second, and the job ends cancelled.
#[test]
fn cancel_takes_effect_within_a_second_while_the_server_trickles() {
    let (env, bus, _d) = started();
    let mut bytes = fake_cells("4.4.5", "ok");
    bytes.resize(1 << 20, 0x55);
    let (sum, sig) = sign(&bytes, &keys().rsa);
    env.publish_with(
        "4.4.5",
        bytes,
        &sum,
        &sig,
        Delivery::Trickle {
            first: 4096,
            every_ms: 2000,
        },
        false,
    );
    let job = start_stage(&bus, "4.4.5");
    wait_until(Duration::from_secs(10), "the download", || {
        bus.busctl_json(&["get-property", DEST, &job, JOB_IFACE, "Phase"])["data"] == "downloading"
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(job_state(&bus, &job), "running");
    let t0 = Instant::now();
    let cancel = bus.busctl(&["call", DEST, &job, JOB_IFACE, "Cancel"]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    while job_state(&bus, &job) == "running" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the cancel was not seen within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    assert_eq!(job_state(&bus, &job), "cancelled");
    assert!(took < Duration::from_secs(1), "the cancel took {took:?}");
    assert_eq!(bus.manager_prop("StagedVersion"), "");
}

#[test]
fn job_cancel_stops_a_download_and_leaves_nothing_staged() {
    let (env, bus, _d) = started();
    let mut bytes = fake_cells("4.4.5", "ok");
    bytes.resize(4 << 20, 0x44);
    let (sum, sig) = sign(&bytes, &keys().rsa);
    // 64 KiB every 50 ms: about 3 s for the whole binary.
    env.publish_with(
        "4.4.5",
        bytes,
        &sum,
        &sig,
        Delivery::Slow {
            chunk: 64 << 10,
            delay_ms: 50,
        },
        false,
    );
    let monitor = Monitor::start(&bus);
    let job = start_stage(&bus, "4.4.5");
    wait_until(Duration::from_secs(10), "bytes to arrive", || {
        bus.busctl_json(&["get-property", DEST, &job, JOB_IFACE, "BytesDone"])["data"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    // Another uid may not cancel it.
    let refused = bus.gdbus(Some(2), &job, "com.pydio.CellsUpdater1.Job.Cancel", &[]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Error.NotAuthorized"));
    let cancel = bus.busctl(&["call", DEST, &job, JOB_IFACE, "Cancel"]);
    assert!(
        cancel.status.success(),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    wait_until(Duration::from_secs(10), "the job to end", || {
        job_state(&bus, &job) != "running"
    });
    let messages = monitor.finish();
    assert_eq!(job_state(&bus, &job), "cancelled");
    let finished = messages
        .iter()
        .find(|m| m["member"] == "JobFinished")
        .expect("JobFinished");
    assert_eq!(finished["payload"]["data"][1], "cancelled");
    assert_eq!(
        finished["payload"]["data"][2],
        "com.pydio.CellsUpdater1.Error.Cancelled"
    );
    assert_eq!(bus.manager_prop("StagedVersion"), "");
    assert_eq!(
        bus.manager_prop("State"),
        "idle",
        "a cancel comes to rest, it is no failure"
    );
    assert!(!env.staged_dir().join("4.4.5").exists());
    assert!(
        !env.staged_dir().join(".work/4.4.5").exists(),
        "a cancelled download leaves no partial"
    );
    // A finished job can no longer be cancelled.
    let again = bus.gdbus(None, &job, "com.pydio.CellsUpdater1.Job.Cancel", &[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("Error.InvalidArgument"));
}

#[test]
fn finished_jobs_are_held_until_sixteen_newer_exist() {
    let (env, bus, _d) = started();
    env.publish("4.4.5", fake_cells("4.4.5", "ok"), &keys().rsa);
    let mut jobs = Vec::new();
    for _ in 0..17 {
        // After the first, staging 4.4.5 again is a no-op: quick jobs, one after the other.
        let job = start_stage(&bus, "4.4.5");
        wait_until(Duration::from_secs(20), "the job to end", || {
            job_state(&bus, &job) != "running"
        });
        assert_eq!(job_state(&bus, &job), "succeeded");
        jobs.push(job);
    }
    let held =
        bus.busctl_json(&["call", DEST, MANAGER, MANAGER_IFACE, "ListJobs"])["data"][0].clone();
    let held: Vec<&str> = held
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(held.len(), 16, "{held:?}");
    assert_eq!(
        held[0], jobs[1],
        "the oldest job went once 16 newer existed"
    );
    assert_eq!(*held.last().unwrap(), jobs[16].as_str());
    let gone = bus.busctl(&["get-property", DEST, &jobs[0], JOB_IFACE, "State"]);
    assert!(!gone.status.success(), "job 1's object should be gone");
    // Ids keep increasing.
    assert!(jobs[16].ends_with("/job/17"));
}

fn wait_job_end(bus: &PrivateBus, job: &str) -> (String, String) {
    wait_until(Duration::from_secs(30), "the job to end", || {
        job_state(bus, job) != "running"
    });
    let error = bus.busctl_json(&["get-property", DEST, job, JOB_IFACE, "Error"])["data"]
        .as_str()
        .unwrap()
        .to_string();
    (job_state(bus, job), error)
}

/// A hostile server offers a genuinely signed Home build with an empty PackageName to an
/// Enterprise host: the binary's edition is compared with the package the host asked for,
/// so it is refused before any swap (an empty name once counted as Home, and passed).
#[test]
fn an_empty_package_name_does_not_pass_the_edition_check() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    env.write_daemon_config("");
    let dropins = env.root.path().join("etc/cells-updater/config.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("50-enterprise.toml"),
        "[server]\npackage = \"PydioEnterprise\"\n",
    )
    .unwrap();
    // The Cells user's working directory, where an Enterprise host keeps its license.
    let work = env.root.path().join("usr/sbin/.config/pydio/cells");
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(1), Some(1)).unwrap();
    std::fs::write(work.join("pydio-license"), "EDITION-KEY\n").unwrap();
    std::os::unix::fs::chown(work.join("pydio-license"), Some(1), Some(1)).unwrap();
    let bus = PrivateBus::start();
    let _d = DaemonProc::start(&bus, env.root.path());
    assert_eq!(bus.manager_prop("PackageName"), "PydioEnterprise");
    let bytes = fake_cells("4.4.5", "ok");
    let (sum, sig) = sign(&bytes, &keys().rsa);
    env.server
        .put_binary("cells-4.4.5", bytes.clone(), Delivery::Normal);
    let mut entry = package_json(
        "4.4.5",
        &env.server.binary_url("cells-4.4.5"),
        bytes.len(),
        &sum,
        &sig,
        false,
    );
    entry.as_object_mut().unwrap().remove("PackageName");
    env.server.set_enterprise(
        "EDITION-KEY",
        serde_json::json!({ "AvailableBinaries": [entry] }).to_string(),
    );
    let job = start_stage(&bus, "4.4.5");
    let (state, error) = wait_job_end(&bus, &job);
    let message = bus.busctl_json(&["get-property", DEST, &job, JOB_IFACE, "Message"])["data"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(state, "failed");
    assert_eq!(
        error, "com.pydio.CellsUpdater1.Error.VersionMismatch",
        "{message}"
    );
    let message = bus.busctl_json(&["get-property", DEST, &job, JOB_IFACE, "Message"])["data"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("not the PydioEnterprise edition"),
        "{message}"
    );
    assert_eq!(bus.manager_prop("StagedVersion"), "");
}

/// An admin's hold set while an Update downloads stops it before the swap: the job fails
/// with Held and the installed binary is untouched.
#[test]
fn a_hold_set_during_a_download_stops_the_job_before_the_swap() {
    let (env, bus, _d) = started();
    publish_slow(&env, "4.4.5");
    let before = std::fs::read(env.root.path().join("opt/pydio/bin/cells")).unwrap();
    let job = update_on(&bus, "4.4.5");
    wait_until(Duration::from_secs(10), "the download", || {
        bus.busctl_json(&["get-property", DEST, &job, JOB_IFACE, "Phase"])["data"] == "downloading"
    });
    let held = bus.busctl(&[
        "call",
        DEST,
        MANAGER,
        MANAGER_IFACE,
        "Hold",
        "sa{sv}",
        "freeze",
        "0",
    ]);
    assert!(
        held.status.success(),
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
    let (state, error) = wait_job_end(&bus, &job);
    assert_eq!(
        (state.as_str(), error.as_str()),
        ("failed", "com.pydio.CellsUpdater1.Error.Held")
    );
    assert_eq!(
        std::fs::read(env.root.path().join("opt/pydio/bin/cells")).unwrap(),
        before
    );
}

/// A Check for another channel or package (any caller allowed to Check may ask one) is
/// answered, but recorded nowhere: it must not stand in for the timer's next check, nor put
/// releases the timer cannot install into AvailableVersions.
#[test]
fn a_check_for_another_channel_is_not_recorded() {
    let (env, bus, _d) = started();
    env.offer(&[("4.4.5", "ok", false)]);
    let out = bus.busctl(&[
        "call",
        DEST,
        MANAGER,
        MANAGER_IFACE,
        "Check",
        "a{sv}",
        "1",
        "Channel",
        "s",
        "dev",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bus.manager_prop("LastCheck"), 0);
    assert_eq!(bus.manager_prop("AvailableVersions"), serde_json::json!([]));
    let out = bus.busctl(&["call", DEST, MANAGER, MANAGER_IFACE, "Check", "a{sv}", "0"]);
    assert!(out.status.success());
    assert!(bus.manager_prop("LastCheck").as_u64().unwrap() > 0);
    assert_eq!(
        bus.manager_prop("AvailableVersions"),
        serde_json::json!(["4.4.5"])
    );
}
