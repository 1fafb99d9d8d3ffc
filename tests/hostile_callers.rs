//! Hostile D-Bus callers on a private bus (the real-systemd rows are in
//! tests/trust_boundary.rs): one row per malformed call, made by an independent process
//! (examples/hostile_client.rs), each with the error it must produce, nothing changed on
//! disk, and the daemon still answering. Then 1,000 mutating calls in a burst from a uid that
//! may not act: every one NotAuthorized, the daemon's memory and descriptors back to their
//! baseline, and it still exits when idle.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::bus::*;
use support::*;

const INVALID: &str = "com.pydio.CellsUpdater1.Error.InvalidArgument";

/// (row, error it must produce, words its message must hold)
const TABLE: &[(&str, &str, &str)] = &[
    ("check_wrong_type", INVALID, "Channel"),
    ("check_unknown_key", INVALID, "Bogus"),
    ("check_bad_package", INVALID, "../Evil"),
    ("stage_traversal", INVALID, "not a Cells version"),
    ("stage_slash", INVALID, "not a Cells version"),
    ("stage_newline", INVALID, "not a Cells version"),
    // The bus itself refuses a string with a NUL (the D-Bus specification forbids it).
    ("stage_nul", "bus", ""),
    ("stage_1mib", INVALID, "not a Cells version"),
    ("stage_force_type", INVALID, "Force"),
    ("apply_version_type", INVALID, "Version"),
    ("apply_on_failure", INVALID, "explode"),
    ("apply_unknown_key", INVALID, "Exec"),
    ("update_traversal", INVALID, "not a Cells version"),
    ("update_empty_key", INVALID, ""),
    ("rollback_unknown_key", INVALID, "Version"),
    ("license_empty", INVALID, "empty"),
    ("license_1mib", INVALID, "more than"),
    ("license_control", INVALID, "binary data"),
    ("enterprise_empty", INVALID, "empty"),
    ("hold_1mib", INVALID, "1024"),
    ("hold_bad_pin", INVALID, "not a Cells version"),
    ("fd_no_metadata", INVALID, "Version is required"),
    // A closed descriptor cannot be sent at all (sendmsg answers EBADF in the caller).
    ("fd_closed", "bus", ""),
    ("fd_directory", INVALID, "not a regular file"),
    ("fd_socket", INVALID, "not a regular file"),
    ("fd_pipe_never_ends", INVALID, "not a regular file"),
    ("fd_dev_zero", INVALID, "not a regular file"),
    ("fd_fifo", INVALID, "not a regular file"),
    ("fd_write_only", INVALID, "not open for reading"),
    ("fd_empty", INVALID, "empty"),
    // Accepted at first (a regular, readable file), then refused by the job: past the size
    // limit, or seen growing while read, whichever the daemon meets first (`|`: either).
    (
        "fd_growing",
        INVALID,
        "max_binary_size|changed size while it was read",
    ),
];

fn client() -> PathBuf {
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/examples/hostile_client");
    assert!(exe.exists(), "cargo test builds examples/hostile_client");
    exe
}

/// The scratch root, but the daemon's own logs and (for a job that ran) its state file.
fn disk(env: &StageEnv, with_state: bool) -> BTreeMap<PathBuf, Option<(u64, String)>> {
    snapshot(env.root.path())
        .into_iter()
        .filter(|(p, _)| !p.to_string_lossy().starts_with("daemon-"))
        .filter(|(p, _)| with_state || !p.ends_with("state.json"))
        .collect()
}

fn started(idle: &str) -> (StageEnv, PrivateBus, DaemonProc) {
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.5", "ok", false)]);
    env.write_daemon_config("");
    let d = env.root.path().join("etc/cells-updater/config.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("60-hostile.toml"),
        format!("[server]\nmax_binary_size = 4194304\n[daemon]\nidle_exit = \"{idle}\"\n"),
    )
    .unwrap();
    let bus = PrivateBus::start();
    let daemon = DaemonProc::start(&bus, env.root.path());
    (env, bus, daemon)
}

#[test]
fn every_malformed_call_is_refused_and_changes_nothing() {
    let (env, bus, _d) = started("0");
    let rows = std::process::Command::new(client())
        .args(["--address", &bus.address, "rows"])
        .output()
        .unwrap();
    let listed: Vec<String> = String::from_utf8_lossy(&rows.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let tabled: Vec<String> = TABLE.iter().map(|r| r.0.to_string()).collect();
    assert_eq!(
        listed, tabled,
        "the client's rows and this table are the same"
    );
    for (row, want, says) in TABLE {
        let job_row = *row == "fd_growing";
        let before = disk(&env, !job_row);
        let out = std::process::Command::new(client())
            .args(["--address", &bus.address, "row", row])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{row}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let (error, message) = (
            got["error"].as_str().unwrap(),
            got["message"].as_str().unwrap(),
        );
        if *want == "bus" {
            assert!(
                !error.starts_with("com.pydio"),
                "{row}: the daemon saw it: {got}"
            );
        } else {
            assert_eq!(error, *want, "{row}: {got}");
            assert!(
                says.split('|').any(|w| message.contains(w)),
                "{row}: {message:?} does not say {says:?}"
            );
        }
        let len = got["message_len"].as_u64().unwrap();
        assert!(
            len < 1500,
            "{row}: the message echoes the input: {len} bytes"
        );
        assert_eq!(
            disk(&env, !job_row),
            before,
            "{row}: something changed on disk"
        );
        assert_eq!(
            bus.manager_prop("DaemonVersion"),
            env!("CARGO_PKG_VERSION"),
            "{row}: the daemon no longer answers"
        );
        assert_eq!(bus.manager_prop("CurrentJob"), "/", "{row}");
    }
    // A job's failure is recorded, and nothing was staged.
    assert_eq!(bus.manager_prop("StagedVersion"), "");
    assert!(std::fs::read_dir(env.staged_dir().join(".work"))
        .unwrap()
        .next()
        .is_none());
}

fn rss_kib_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    (
        rss,
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
    )
}

#[test]
fn a_burst_from_an_unauthorized_uid_is_refused_and_leaves_nothing_behind() {
    let (env, bus, mut d) = started("12s");
    let started_at = Instant::now();
    // Warm up the code paths the burst takes, then measure the baseline.
    let burst = |n: &str| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(client())
            .args(["--address", &bus.address, "burst", n])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // As many calls in flight as the measured burst (100): the allocator's high-water
    // mark is reached before the baseline, so what remains after is what the burst kept.
    burst("1000");
    std::thread::sleep(Duration::from_millis(300));
    let (rss0, fds0) = rss_kib_and_fds(d.pid());
    let got = burst("1000");
    assert_eq!(
        got["answers"],
        serde_json::json!({"com.pydio.CellsUpdater1.Error.NotAuthorized": 1000}),
        "{got}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, fds1) = rss_kib_and_fds(d.pid());
    println!(
        "burst of 1000 in {:.2} s; RSS {rss0} -> {rss1} KiB, fds {fds0} -> {fds1}",
        got["seconds"].as_f64().unwrap()
    );
    assert_eq!(fds1, fds0, "descriptors back to the baseline");
    assert!(
        rss1 <= rss0 + 1024,
        "RSS {rss0} -> {rss1} KiB: more than 1 MiB kept"
    );
    assert!(env
        .outside()
        .keys()
        .all(|p| !p.starts_with("var/lib/cells-updater/staged/4")));
    // Unauthorized calls kept nobody awake: it exits on time, counted from its start.
    let deadline = started_at + Duration::from_secs(30);
    while d.exited().is_none() {
        assert!(Instant::now() < deadline, "the daemon did not idle out");
        std::thread::sleep(Duration::from_millis(100));
    }
    let lived = started_at.elapsed();
    assert!(
        lived < Duration::from_secs(20),
        "it lived {lived:?}: the burst kept it awake"
    );
    assert!(d.log_text().contains("idle; exiting"), "{}", d.log_text());
}

/// Files, sizes, modes and owners of everything the daemon acts on in a container, with
/// the contents' hashes; the state file aside when a row's job ran.
fn container_disk(sb: &support::sandbox::Sandbox, with_state: bool) -> String {
    let state = if with_state { "" } else { "! -name state.json" };
    sb.sh(&format!(
        "find /opt/pydio /var/lib/cells-updater /var/cells /etc/systemd/system/cells.service.d \
         {state} -printf '%p %y %m %u\\n' | sort; \
         find /opt/pydio /var/lib/cells-updater /var/cells -type f {state} -exec sha256sum {{}} + | sort"
    ))
}

#[test]
fn on_real_systemd_the_same_rows_and_a_burst_through_polkit() {
    let sb = support::sandbox::Sandbox::cells_host("hostile", &[("4.4.5", "ok")]);
    sb.write(
        "/etc/cells-updater/config.d/60-hostile.toml",
        b"[server]\nmax_binary_size = 4194304\n[daemon]\nidle_exit = \"10s\"\n",
        0o644,
    );
    sb.sh("systemctl stop cells-updater.service; cells-updater status >/dev/null");
    let client = "/src/target/debug/examples/hostile_client";
    for (row, want, says) in TABLE {
        let job_row = *row == "fd_growing";
        let before = container_disk(&sb, !job_row);
        let got: serde_json::Value =
            serde_json::from_str(&sb.sh(&format!("{client} row {row}"))).unwrap();
        let error = got["error"].as_str().unwrap();
        if *want == "bus" {
            assert!(!error.starts_with("com.pydio"), "{row}: {got}");
        } else {
            assert_eq!(error, *want, "{row}: {got}");
            assert!(
                says.split('|')
                    .any(|w| got["message"].as_str().unwrap().contains(w)),
                "{row}: {got}"
            );
        }
        assert_eq!(
            container_disk(&sb, !job_row),
            before,
            "{row}: something changed on disk"
        );
        assert!(
            sb.sh("cells-updater status")
                .contains("Installed version: 4.4.2"),
            "{row}"
        );
    }
    // 1,000 calls from nobody: polkit (real polkitd) is asked for at most 8 at a time, the
    // others are refused at once; all NotAuthorized, the watchdog fed throughout. (A fresh
    // daemon: the job of the growing-file row would keep the last one awake 10 minutes.)
    sb.sh("systemctl restart cells-updater.service && cells-updater status >/dev/null && sleep 1");
    let pid = sb.unit_prop("cells-updater.service", "MainPID");
    let mem = |pid: &str| -> (u64, usize) {
        let rss = sb.sh(&format!("awk '/VmRSS/ {{print $2}}' /proc/{pid}/status"));
        let fds = sb.sh(&format!("ls /proc/{pid}/fd | wc -l"));
        (rss.trim().parse().unwrap(), fds.trim().parse().unwrap())
    };
    sb.sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups {client} burst 1000"
    ));
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, fds0) = mem(&pid);
    let got: serde_json::Value = serde_json::from_str(&sb.sh(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups {client} burst 1000"
    )))
    .unwrap();
    assert_eq!(
        got["answers"],
        serde_json::json!({"com.pydio.CellsUpdater1.Error.NotAuthorized": 1000}),
        "{got}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, fds1) = mem(&pid);
    println!(
        "real systemd: burst of 1000 in {:.2} s; RSS {rss0} -> {rss1} KiB, fds {fds0} -> {fds1}",
        got["seconds"].as_f64().unwrap()
    );
    assert_eq!(fds1, fds0);
    assert!(rss1 <= rss0 + 1024, "RSS {rss0} -> {rss1} KiB");
    assert_eq!(
        sb.unit_prop("cells-updater.service", "MainPID"),
        pid,
        "no restart"
    );
    assert_eq!(sb.unit_prop("cells-updater.service", "NRestarts"), "0");
    // And it idles out: unauthorized calls do not keep it awake.
    sb.wait_for(
        Duration::from_secs(25),
        "the daemon's idle exit",
        "! systemctl is-active --quiet cells-updater.service",
    );
    let log = sb.sh("journalctl -u cells-updater.service --no-pager -o cat");
    assert!(log.contains("idle; exiting"), "{log}");
    assert!(!log.contains("Watchdog timeout"), "{log}");
}

/// Any caller allowed to Check (here root, as the timer) floods it: 40 at once. Each gets the
/// releases, but the server is asked a few times, not 40: calls that arrive while one asks
/// share its answer, so a flood cannot start helper units without bound. An update started
/// meanwhile is not refused as Busy.
#[test]
fn a_flood_of_checks_asks_the_server_a_few_times_not_once_each() {
    let sb = support::sandbox::Sandbox::cells_host("checkflood", &[("4.4.5", "ok")]);
    sb.serve("--log-requests /srv/requests.log");
    sb.sh("cells-updater status >/dev/null");
    // An admin's update starts while the flood is asking the server (the soak found that the
    // job was refused as Busy then, "cannot go from checking to downloading").
    sb.sh(
        "for i in $(seq 40); do busctl --timeout=120 call com.pydio.CellsUpdater1 \
         /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager Check 'a{sv}' 0 \
         >/tmp/check.$i 2>&1 & done; \
         for n in $(seq 1000); do \
           busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 \
             com.pydio.CellsUpdater1.Manager State | grep -q checking && touch /tmp/seen && break; \
         done; \
         cells-updater update 4.4.5 >/tmp/update.out 2>&1; echo $? >/tmp/update.rc; wait",
    );
    assert!(
        sb.try_sh("test -e /tmp/seen").0,
        "the checks never showed the checking state"
    );
    assert_eq!(
        sb.sh("cat /tmp/update.rc").trim(),
        "0",
        "an update during a Check: {}",
        sb.sh("cat /tmp/update.out")
    );
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.5");
    for i in 1..=40 {
        let answer = sb.sh(&format!("cat /tmp/check.{i}"));
        assert!(answer.contains("4.4.5"), "call {i}: {answer}");
    }
    let asked: usize = sb
        .sh("grep -c PackageName /srv/requests.log || true")
        .trim()
        .parse()
        .unwrap();
    assert!(
        (1..=8).contains(&asked),
        "40 concurrent Checks asked the server {asked} times"
    );
}
