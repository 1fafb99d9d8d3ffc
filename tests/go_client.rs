//! The Go client (clients/go/cellsupdater, godbus) drives the real daemon on a private bus:
//! Check, typed errors at call time and at a job's end, Update followed with progress,
//! Rollback. The daemon's unit is the stand-in supervisor (`fake-unit`), so the update
//! really restarts a Cells.
#![cfg(feature = "fake-unit")]

mod support;

use std::path::Path;
use support::bus::*;
use support::*;

#[test]
fn the_go_client_drives_the_daemon() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    env.offer(&[
        ("4.4.1", "ok", false),
        ("4.4.5", "ok", true),
        ("4.4.6", "exit", false),
    ]);
    env.write_daemon_config("[policy]\nhealth_settle = \"200ms\"\nhealth_timeout = \"10s\"\n");
    let bus = PrivateBus::start();
    let _d = env.start_fake_unit_daemon(&bus);

    // An offline GOPATH: the package, and godbus from Debian's golang-dbus-dev.
    let gopath = env.root.path().join("gopath");
    let pkg = gopath.join("src/github.com/pydio/cells-updater/clients/go");
    std::fs::create_dir_all(&pkg).unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/go/cellsupdater"),
        pkg.join("cellsupdater"),
    )
    .unwrap();
    let go = |args: &[&str]| {
        std::process::Command::new("go")
            .args(args)
            .current_dir(pkg.join("cellsupdater"))
            // Inside GOPATH by its link (the real path is outside, where GOPATH mode would
            // not resolve godbus's /v5 import): go takes the working directory from PWD.
            .env("PWD", pkg.join("cellsupdater"))
            .env("GO111MODULE", "off")
            .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
            .env(
                "GOCACHE",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
            )
            .env("GOFLAGS", "")
            .env("CELLS_UPDATER_BUS_ADDRESS", &bus.address)
            .output()
            .expect("go (Debian's golang-go, installed by tests/deps.sh)")
    };
    let vet = go(&["vet", "."]);
    assert!(
        vet.status.success(),
        "go vet: {}",
        String::from_utf8_lossy(&vet.stderr)
    );
    let fmt = std::process::Command::new("gofmt")
        .arg("-l")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/go/cellsupdater"))
        .output()
        .unwrap();
    assert!(
        fmt.stdout.is_empty(),
        "gofmt: {}",
        String::from_utf8_lossy(&fmt.stdout)
    );
    let out = go(&["test", "-count=1", "-v", "."]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "go test failed:\n{text}");
    assert!(text.contains("--- PASS: TestAgainstTheDaemon"), "{text}");
}

/// The Go package's names are the contract's: the bus name, paths, interfaces, the error
/// prefix and one `Err*` value per error name, no more, no fewer.
#[test]
fn the_go_constants_are_the_contracts() {
    use cells_updater::contract;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/go/cellsupdater");
    let main = std::fs::read_to_string(dir.join("cellsupdater.go")).unwrap();
    let errors = std::fs::read_to_string(dir.join("errors.go")).unwrap();
    for line in [
        format!("BusName          = {:?}", contract::BUS_NAME),
        format!(
            "ManagerPath      = dbus.ObjectPath({:?})",
            contract::MANAGER_PATH
        ),
        format!("ManagerInterface = {:?}", contract::MANAGER_INTERFACE),
        format!("JobInterface     = {:?}", contract::JOB_INTERFACE),
    ] {
        assert!(main.contains(&line), "cellsupdater.go lacks {line}");
    }
    assert!(errors.contains(&format!("const ErrorPrefix = {:?}", contract::ERROR_PREFIX)));
    let go: Vec<&str> = errors
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Err"))
        .filter_map(|l| l.split_once("= &Error{Name: \""))
        .map(|(_, rest)| rest.trim_end_matches("\"}"))
        .collect();
    assert_eq!(go, cells_updater::error::ERROR_NAMES);
    // Every key the Go client reads from a release, a job or the Manager is a contract name.
    let job = std::fs::read_to_string(dir.join("job.go")).unwrap();
    let test = std::fs::read_to_string(dir.join("cellsupdater_test.go")).unwrap();
    let names = |list: &[(&str, &str)]| list.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
    for (file, text, opener, list) in [
        (
            "cellsupdater.go",
            &main,
            "str(d, \"",
            contract::RELEASE_KEYS,
        ),
        ("cellsupdater.go", &main, "d[\"", contract::RELEASE_KEYS),
        ("job.go", &job, "p[\"", contract::JOB_PROPERTIES),
        (
            "cellsupdater_test.go",
            &test,
            "st.String(\"",
            contract::MANAGER_PROPERTIES,
        ),
    ] {
        let keys = quoted_after(text, opener);
        assert!(!keys.is_empty(), "{file}: no key after {opener}");
        for k in keys {
            assert!(
                names(list).contains(&k),
                "{file} reads {k:?}, which the contract does not name"
            );
        }
    }
}

/// Each string literal that follows `opener` (which ends in its opening quote) in `text`.
fn quoted_after(text: &str, opener: &str) -> Vec<String> {
    text.split(opener)
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(k, _)| k.to_string()))
        .collect()
}
