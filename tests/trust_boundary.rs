//! The trust boundary (I9, I10): the Cells user, any local user and the update server are
//! adversaries. Each test performs one attack and checks that it changes nothing it should
//! not. The private-bus tests run the daemon with forked helpers; the others boot a real
//! systemd, where helpers are transient units.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};
use support::bus::*;
use support::sandbox::Sandbox;
use support::*;

const JOB_IFACE: &str = "com.pydio.CellsUpdater1.Job";
const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

/// A path with its owner, group, mode and content (size, hash; `None` for a directory).
type Entry = (String, u32, u32, u32, Option<(u64, String)>);

/// Every path under `dir` with owner, group, mode and content hash.
fn tree(dir: &Path) -> Vec<Entry> {
    let contents = snapshot(dir);
    let mut out = Vec::new();
    for (rel, content) in contents {
        let m = std::fs::symlink_metadata(dir.join(&rel)).unwrap();
        out.push((
            rel.display().to_string(),
            m.uid(),
            m.gid(),
            m.mode(),
            content,
        ));
    }
    let m = std::fs::metadata(dir).unwrap();
    out.push((".".into(), m.uid(), m.gid(), m.mode(), None));
    out
}

fn call(bus: &PrivateBus, method: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["call", DEST, MANAGER, MANAGER_IFACE, method];
    all.extend_from_slice(args);
    bus.busctl(&all)
}

fn job_prop(bus: &PrivateBus, job: &str, prop: &str) -> serde_json::Value {
    bus.busctl_json(&["get-property", DEST, job, JOB_IFACE, prop])["data"].clone()
}

fn wait_job(bus: &PrivateBus, job: &str) -> (String, String, String) {
    wait_until(Duration::from_secs(60), "the job to end", || {
        job_prop(bus, job, "State") != "running"
    });
    (
        job_prop(bus, job, "State").as_str().unwrap().to_string(),
        job_prop(bus, job, "Error").as_str().unwrap().to_string(),
        job_prop(bus, job, "Message").as_str().unwrap().to_string(),
    )
}

fn job_path(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string()
}

#[test]
fn unsafe_binary_directories_are_refused_and_nothing_changes() {
    let k = keys();
    // (what is wrong, how to make it so, the phrase the message must carry)
    let rows: &[(&str, &str, &str)] = &[
        (
            "the binary directory belongs to another user",
            "chown nobody: opt/pydio/bin",
            "opt/pydio/bin belongs to another user (owner nobody (uid 65534)",
        ),
        (
            "the binary directory is world-writable",
            "chmod 0777 opt/pydio/bin",
            "opt/pydio/bin is writable by its group or by everyone",
        ),
        (
            "a parent belongs to another user",
            "chown nobody: opt/pydio",
            "opt/pydio belongs to another user",
        ),
        (
            "the binary directory is a symbolic link",
            "mv opt/pydio/bin opt/pydio/real && ln -s real opt/pydio/bin",
            "opt/pydio/bin is a symbolic link",
        ),
    ];
    let mut failures = Vec::new();
    for (what, arrange, says) in rows {
        let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
        env.publish("4.4.5", fake_cells("4.4.5", "ok"), &k.rsa);
        env.write_daemon_config("");
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(arrange)
            .current_dir(env.root.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "{arrange}");
        let bus = PrivateBus::start();
        let _d = DaemonProc::start(&bus, env.root.path());
        let opt = env.root.path().join("opt");
        let before = tree(&opt);
        let job = job_path(&call(&bus, "Update", &["sa{sv}", "4.4.5", "0"]));
        let (state, error, message) = wait_job(&bus, &job);
        let after = tree(&opt);
        if state != "failed" || error != "com.pydio.CellsUpdater1.Error.UnsafePath" {
            failures.push(format!("{what}: {state} {error}: {message}"));
        }
        if !message.contains(says) || !message.contains("Fix: ") || !message.contains("mode 0") {
            failures.push(format!(
                "{what}: message {message:?} lacks {says:?}, the mode or the fix"
            ));
        }
        if before != after {
            failures.push(format!("{what}: the binary's tree changed"));
        }
        if env
            .stager
            .area
            .staged()
            .iter()
            .any(|m| m.version.to_string() == "4.4.5")
        {
            failures.push(format!("{what}: 4.4.5 was staged"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn draft_and_pending_releases_are_listed_but_never_staged() {
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    let mut entries = Vec::new();
    for (v, status) in [
        ("4.4.5", serde_json::json!("Draft")),
        ("4.4.6", serde_json::json!(1)),
        ("4.4.7", serde_json::Value::Null),
    ] {
        let bytes = fake_cells(v, "ok");
        let (sum, sig) = sign(&bytes, &k.rsa);
        let name = format!("cells-{v}");
        env.server
            .put_binary(&name, bytes.clone(), Delivery::Normal);
        let mut e = package_json(
            v,
            &env.server.binary_url(&name),
            bytes.len(),
            &sum,
            &sig,
            false,
        );
        match status {
            serde_json::Value::Null => {
                e.as_object_mut().unwrap().remove("Status");
            }
            s => e["Status"] = s,
        }
        entries.push(e);
    }
    env.server.set_catalog(
        200,
        serde_json::json!({ "AvailableBinaries": entries }).to_string(),
    );
    env.write_daemon_config("");
    let bus = PrivateBus::start();
    let _d = DaemonProc::start(&bus, env.root.path());
    let releases = bus.busctl_json(&["call", DEST, MANAGER, MANAGER_IFACE, "Check", "a{sv}", "0"]);
    let list = releases["data"][0].as_array().unwrap();
    let verdict = |v: &str| {
        let r = list
            .iter()
            .find(|r| r["Version"]["data"] == v)
            .unwrap_or_else(|| panic!("{v} not listed: {list:?}"));
        (r["Allowed"]["data"].clone(), r["Reason"]["data"].clone())
    };
    assert_eq!(verdict("4.4.5"), (false.into(), "not-released".into()));
    assert_eq!(verdict("4.4.6"), (false.into(), "not-released".into()));
    assert_eq!(
        verdict("4.4.7"),
        (true.into(), "".into()),
        "an absent Status is Released"
    );
    for v in ["4.4.5", "4.4.6"] {
        let job = job_path(&call(&bus, "Stage", &["sa{sv}", v, "0"]));
        let (state, error, message) = wait_job(&bus, &job);
        assert_eq!(state, "failed");
        assert_eq!(
            error, "com.pydio.CellsUpdater1.Error.NoSuchVersion",
            "{message}"
        );
        assert!(message.contains("not released"), "{message}");
    }
    assert!(env.stager.area.staged().is_empty());
    let job = job_path(&call(&bus, "Stage", &["sa{sv}", "", "0"]));
    let (state, _, message) = wait_job(&bus, &job);
    assert_eq!(state, "succeeded", "{message}");
    assert!(message.contains("staged 4.4.7"), "{message}");
}

#[test]
fn helpers_leave_the_daemons_session() {
    // Without systemd (as when an admin runs `doctor` from a shell) helpers are forked. The
    // probed binary reports its session id: it must not be the daemon's, whose session may
    // own a root terminal that a binary could type into (TIOCSTI).
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    std::fs::write(
        env.root.path().join("opt/pydio/bin/cells"),
        fake_cells("0.0.0", "session"),
    )
    .unwrap();
    env.write_daemon_config("");
    let bus = PrivateBus::start();
    let d = DaemonProc::start(&bus, env.root.path());
    wait_until(Duration::from_secs(10), "the first probe", || {
        bus.manager_prop("InstalledVersion") != ""
    });
    let reported = bus.manager_prop("InstalledVersion");
    let probe_sid: i32 = reported
        .as_str()
        .and_then(|v| v.split('.').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the probe reported {reported}"));
    let daemon_sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(d.pid() as i32)))
        .unwrap()
        .as_raw();
    assert!(probe_sid > 0);
    assert_ne!(
        probe_sid, daemon_sid,
        "the probed binary runs in the daemon's session"
    );
}

#[test]
fn received_fds_do_not_leak_into_children() {
    // The installed "Cells" reports the number of descriptors it was started with. The
    // daemon probes it (a forked helper, as without systemd) while it holds a descriptor that
    // a caller sent with StageFromFd: only 0-2 may reach the probed binary.
    let k = keys();
    let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
    std::fs::write(
        env.root.path().join("opt/pydio/bin/cells"),
        fake_cells("0.0.0", "introspect"),
    )
    .unwrap();
    env.write_daemon_config("");
    let frag = env.root.path().join("etc/cells-updater/config.d");
    std::fs::create_dir_all(&frag).unwrap();
    std::fs::write(
        frag.join("50-big.toml"),
        "[server]\nmax_binary_size = 4294967296\n",
    )
    .unwrap();
    let bus = PrivateBus::start();
    let _d = DaemonProc::start(&bus, env.root.path());
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    let want = serde_json::Value::from(format!("{nobody}.0.1-fds.3"));
    wait_until(Duration::from_secs(10), "the first probe", || {
        bus.manager_prop("InstalledVersion") != ""
    });
    assert_eq!(bus.manager_prop("InstalledVersion"), want);

    // A large sparse file: copying and hashing it keeps the received descriptor open a while.
    let big = env.root.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let zero = base64_of(&[0u8; 32]);
    // The project's own client passes the descriptor (StageFromFd) and follows the job.
    let mut client = std::process::Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(["--bus-address", &bus.address, "stage", "--file"])
        .arg(&big)
        .args([
            "--version",
            "99999.0.0",
            "--checksum",
            &zero,
            "--signature",
            &zero,
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the StageFromFd job", || {
        bus.manager_prop("CurrentJob") != "/"
    });
    let job = bus.manager_prop("CurrentJob").as_str().unwrap().to_string();
    let mut during = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while job_prop(&bus, &job, "State") == "running" && Instant::now() < deadline {
        // The descriptor is read (copied and hashed) during the downloading phase.
        let copying = |b: &PrivateBus| {
            job_prop(b, &job, "State") == "running" && job_prop(b, &job, "Phase") == "downloading"
        };
        let before = copying(&bus);
        // Check probes the installed binary again.
        call(&bus, "Check", &["a{sv}", "0"]);
        let seen = bus.manager_prop("InstalledVersion");
        assert_eq!(seen, want, "a descriptor leaked into the probed binary");
        if before && copying(&bus) {
            during += 1;
        }
    }
    let _ = client.wait();
    assert!(
        during > 0,
        "no probe ran while the descriptor was held; the test proved nothing"
    );
    eprintln!("{during} probes ran while StageFromFd held the caller's descriptor");
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The Cells user, owner of its binary directory (Pydio's documented layout), swaps `cells`
/// with a link to a root-only file that carries a capability, as fast as it can, while it
/// asks for an Update, and later while the admin asks for a Rollback (a host admin's action).
#[test]
fn symlink_race_on_the_binary_leaks_nothing_and_moves_no_capability() {
    let sb = Sandbox::cells_host("race", &[("4.4.5", "ok")]);
    let exchanger = std::fs::read(c_tool("exchanger")).unwrap();
    sb.write("/usr/local/bin/exchanger", &exchanger, 0o755);
    sb.sh(
        "printf SECRET-MARKER-7f3a > /root/bait && chmod 0700 /root/bait \
         && setcap cap_sys_admin+ep /root/bait && chown -R pydio: /opt/pydio /var/cells \
         && setcap cap_net_bind_service=+ep /opt/pydio/bin/cells",
    );
    let race = |round: &str, what: &str, caller: &str| -> u64 {
        sb.sh(&format!(
            "rm -f /tmp/race-*; ln -s /root/bait /opt/pydio/bin/bait && chown -h pydio: /opt/pydio/bin/bait \
             && systemd-run --quiet --unit=race-{round} --uid=pydio /usr/local/bin/exchanger \
             /opt/pydio/bin cells bait /tmp/race-count /tmp/race-stop"
        ));
        sb.wait_for(
            Duration::from_secs(10),
            "200 swaps",
            "test \"$(cat /tmp/race-count 2>/dev/null || echo 0)\" -ge 200",
        );
        // The Cells user asks, as often as it must: an attempt that meets the link is refused
        // as UnsafePath, with nothing changed; one that does not adopts the directory.
        let mut attempts = Vec::new();
        for _ in 0..40 {
            let (ok, out, err) = sb.try_sh(&format!("{caller}timeout 120 cells-updater {what}"));
            let text = format!("{out}{err}");
            assert!(
                ok || text.contains("Error.UnsafePath"),
                "{what} under the race failed otherwise: {text}"
            );
            attempts.push(text);
            if sb.sh("stat -c %U /opt/pydio/bin").trim() == "root" {
                break;
            }
        }
        sb.sh("touch /tmp/race-stop");
        sb.wait_for(
            Duration::from_secs(10),
            "the exchanger to stop",
            &format!("! systemctl is-active -q race-{round}.service"),
        );
        let swaps: u64 = sb.sh("cat /tmp/race-count").trim().parse().unwrap();
        eprintln!(
            "{what}: {swaps} swaps, {} attempt(s): {attempts:#?}",
            attempts.len()
        );
        // Put the binary back if the race left the link in its place (root can: the
        // directory is root's now), and drop the link.
        sb.sh(
            "if [ -L /opt/pydio/bin/cells ]; then exchanger --once /opt/pydio/bin cells bait; fi; \
             rm -f /opt/pydio/bin/bait",
        );
        swaps
    };
    let swaps = race("update", "update 4.4.5", "runuser -u pydio -- ");
    assert!(swaps >= 200, "only {swaps} swaps");
    // The directory is root's now: the Cells user can no longer create anything there.
    let (created, _, _) = sb.try_sh("runuser -u pydio -- touch /opt/pydio/bin/x");
    assert!(
        !created,
        "the Cells user can still write its binary directory"
    );
    // Finish the update if the race made every attempt fail.
    if !sb.sh(&format!("{GET} InstalledVersion")).contains("4.4.5") {
        let (ok, out, err) = sb.try_sh("runuser -u pydio -- cells-updater update 4.4.5");
        assert!(
            ok,
            "update after the race: {out}{err}\n{}",
            sb.sh("journalctl -u cells-updater -u cells.service --no-pager -o cat | tail -n 60")
        );
    }
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.5");

    // An admin re-applies Pydio's layout (chown clears the file capability, which the
    // daemon recorded); the race starts again, against Rollback.
    sb.sh("chown -R pydio: /opt/pydio");
    let swaps = race("rollback", "rollback", "");
    assert!(swaps >= 200, "only {swaps} swaps");
    if !sb.sh(&format!("{GET} InstalledVersion")).contains("4.4.2") {
        let (ok, out, err) = sb.try_sh("cells-updater rollback");
        assert!(ok, "rollback after the race: {out}{err}");
    }
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");

    // The bait's content is nowhere but in the bait, not even in root's own state.
    let found = sb.sh(
        "grep -rlF -D skip SECRET-MARKER /opt /var /srv /tmp /etc /home /usr/local /root 2>/dev/null || true",
    );
    let found: Vec<&str> = found
        .lines()
        .filter(|l| *l != "/root/bait" && !l.starts_with("/var/log/journal"))
        .collect();
    assert!(
        found.is_empty(),
        "the root-only content was copied to {found:?}"
    );
    // No capability moved: only the Cells binaries (installed and kept) carry one, and only
    // cap_net_bind_service.
    let caps = sb.sh("getcap -r /opt /var/lib/cells-updater /usr/local 2>/dev/null || true");
    for line in caps.lines() {
        assert!(
            line.ends_with("cap_net_bind_service=ep"),
            "a capability moved: {line}\n{caps}"
        );
    }
    assert!(
        caps.contains("/opt/pydio/bin/cells cap_net_bind_service=ep"),
        "{caps}"
    );
    let log = sb.sh("journalctl -u cells-updater --no-pager -o cat");
    assert!(
        log.contains("adopted /opt/pydio/bin") || log.contains("adopted /opt/pydio"),
        "{log}"
    );
}

#[test]
fn license_link_and_fifo_are_refused_and_never_sent() {
    let sb = Sandbox::cells_host_full("license", &[], Some(("KEY-1", &[("4.4.2", "ok")])));
    sb.serve("--log-requests /srv/requests.log");
    sb.write(
        "/etc/cells-updater/config.d/60-enterprise.toml",
        b"[server]\npackage = \"PydioEnterprise\"\n",
        0o644,
    );
    sb.sh("systemctl restart cells-updater.service 2>/dev/null || true");
    sb.sh("printf SECRET-MARKER-91c2 > /root/secret && chmod 0600 /root/secret && chown -R pydio: /var/cells");
    // A link to a root-only file.
    sb.sh("runuser -u pydio -- ln -s /root/secret /var/cells/pydio-license");
    let (ok, _, err) = sb.try_sh("cells-updater check");
    assert!(!ok);
    assert!(err.contains("Error.LicenseRejected"), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    // A FIFO: the daemon keeps answering, and the check fails at once, clearly.
    sb.sh("rm /var/cells/pydio-license && runuser -u pydio -- mkfifo /var/cells/pydio-license");
    sb.sh("(cells-updater check > /run/check.out 2>&1; echo $? > /run/check.rc) </dev/null >/dev/null 2>&1 &");
    let started = Instant::now();
    sb.sh(&format!("timeout 1 {GET} State"));
    assert!(started.elapsed() < Duration::from_secs(2));
    sb.wait_for(
        Duration::from_secs(10),
        "the check to end",
        "test -e /run/check.rc",
    );
    let out = sb.sh("cat /run/check.out");
    assert_eq!(sb.sh("cat /run/check.rc").trim(), "1", "{out}");
    assert!(
        out.contains("Error.LicenseRejected") && out.contains("not a regular file"),
        "{out}"
    );
    // Neither content ever reached the update server.
    let sent = sb.sh("cat /srv/requests.log 2>/dev/null || true");
    assert!(!sent.contains("SECRET-MARKER"), "{sent}");
    // A genuine license is sent.
    sb.sh("rm /var/cells/pydio-license && printf KEY-1 | cells-updater license install");
    let (ok, out, err) = sb.try_sh("cells-updater check");
    assert!(ok, "{out}{err}");
    assert!(sb.sh("cat /srv/requests.log").contains("\"Key\":\"KEY-1\""));
}

#[test]
fn update_server_text_cannot_inject_sd_notify_lines() {
    let sb = Sandbox::cells_host("inject", &[("4.4.5", "ok")]);
    sb.serve(
        "--error-title \"$(printf 'Database down\\nMAINPID=1\\nSTOPPING=1\\nREADY=0\\x1b[2J')\"",
    );
    sb.sh("systemctl start cells-updater.service");
    let pid = sb.unit_prop("cells-updater.service", "MainPID");
    let (ok, _, err) = sb.try_sh("cells-updater stage 4.4.5");
    assert!(!ok && err.contains("Error.ServerError"), "{err}");
    assert!(
        !err.contains('\x1b'),
        "an escape sequence reached the terminal: {err:?}"
    );
    sb.wait_for(
        Duration::from_secs(5),
        "STATUS to say Failed",
        "systemctl show -p StatusText --value cells-updater | grep -q Failed",
    );
    let shown = sb.sh("systemctl show -p MainPID -p StatusText -p ActiveState cells-updater");
    assert!(shown.contains(&format!("MainPID={pid}\n")), "{shown}");
    assert!(shown.contains("ActiveState=active"), "{shown}");
    let status = sb.unit_prop("cells-updater.service", "StatusText");
    assert!(
        status.contains("Database down MAINPID=1 STOPPING=1 READY=0"),
        "{status:?}"
    );
    assert!(!status.contains('\x1b'), "{status:?}");
    assert_eq!(status.lines().count(), 1, "{status:?}");
}

#[test]
fn the_license_is_written_as_the_cells_user_not_as_root() {
    // The working directory is the Cells user's: a link planted there must not make root
    // write elsewhere. As the Cells user, the write meets the user's own rights.
    let sb = Sandbox::cells_host("license-write", &[]);
    sb.sh("chown -R pydio: /var/cells && runuser -u pydio -- ln -s /etc /var/cells/etc-link");
    // Point the working directory through the link: as pydio, /etc is not writable.
    sb.write(
        "/etc/systemd/system/cells.service.d/60-wd.conf",
        b"[Service]\nEnvironment=CELLS_WORKING_DIR=/var/cells/etc-link\n",
        0o644,
    );
    sb.sh("systemctl daemon-reload && systemctl restart cells-updater.service 2>/dev/null || true");
    let (ok, _, err) = sb.try_sh("printf KEY-2 | cells-updater license install");
    assert!(!ok, "the license must not land in /etc");
    assert!(err.contains("Error."), "{err}");
    assert!(!Path::new(&sb.path("/etc/pydio-license")).exists());
    // In its own directory it works, and the file is the Cells user's, mode 0600.
    sb.sh("rm /etc/systemd/system/cells.service.d/60-wd.conf && systemctl daemon-reload");
    sb.sh("printf KEY-2 | cells-updater license install");
    assert_eq!(
        sb.sh("stat -c '%U %a' /var/cells/pydio-license").trim(),
        "pydio 600"
    );
    let m = std::fs::metadata(sb.path("/var/cells/pydio-license")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
}

/// A capability other than `cap_net_bind_service` on the Cells user's binary (set by hand, or
/// reported by a filesystem the Cells user mounted there, FUSE) never moves to the root-owned
/// binary that replaces it, nor to the kept copy that Rollback puts back.
#[test]
fn only_net_bind_service_moves_from_the_old_binary() {
    let sb = Sandbox::cells_host("capmove", &[("4.4.5", "ok")]);
    sb.sh("chown -R pydio: /opt/pydio /var/cells \
         && setcap 'cap_sys_admin,cap_setuid,cap_net_bind_service=+ep' /opt/pydio/bin/cells");
    let (ok, out, err) = sb.try_sh("runuser -u pydio -- cells-updater update 4.4.5");
    assert!(ok, "update: {out}{err}");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.5");
    let only = |what: &str| {
        let caps = sb.sh("getcap -r /opt/pydio /var/lib/cells-updater 2>/dev/null || true");
        assert!(!caps.is_empty(), "{what}: no capability at all");
        for line in caps.lines() {
            assert!(
                line.ends_with(" cap_net_bind_service=ep"),
                "{what}: a capability moved: {line}\n{caps}"
            );
        }
    };
    only("after the update");
    let (ok, out, err) = sb.try_sh("cells-updater rollback");
    assert!(ok, "rollback: {out}{err}");
    assert_eq!(sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
    only("after the rollback");
}
