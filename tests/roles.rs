//! The two roles of docs/dbus-api.md ("Who may call what"), row by row, as the Cells user, as
//! nobody and as root. Each row is one well-formed call made by an independent process
//! (examples/hostile_client.rs, `role NAME`): a `cells` row is the Cells application's (the
//! unit's `User=` may make it without polkit), an `admin` row a host admin's only. A call the
//! role allows must get past authorization (what it does then is the method's own business:
//! a job for a version nobody offers fails at once); a call it does not allow must be
//! `NotAuthorized`, naming the action, with nothing changed on disk. Then the admin's hold
//! binds the Cells user, and a job can be cancelled by its starter and a host admin only.
//!
//! Twice: on a private bus (the Cells user is `daemon`, uid 1; polkit is not reachable, so
//! every other caller is refused), and on real systemd with real polkitd (the Cells user is
//! `pydio`; polkit's default `auth_admin_keep` refuses a non-interactive call).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::bus::*;
use support::*;

const NOT_AUTHORIZED: &str = "com.pydio.CellsUpdater1.Error.NotAuthorized";
const HELD: &str = "com.pydio.CellsUpdater1.Error.Held";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Cells,
    Nobody,
    Root,
}

const EVERYONE: [Who; 3] = [Who::Cells, Who::Nobody, Who::Root];

/// The host the rows run against.
trait Host {
    /// `hostile_client ARGS` as `who`, its JSON answer.
    fn client(&self, who: Who, args: &[&str]) -> serde_json::Value;
    /// Everything the daemon acts on, with contents' hashes.
    fn disk(&self) -> String;
    /// A Manager property, as text.
    fn prop(&self, name: &str) -> String;
    /// A job's `State`.
    fn job_state(&self, job: &str) -> String;
    /// The daemon's log.
    fn log(&self) -> String;
}

fn role_rows() -> Vec<(String, String)> {
    let out = std::process::Command::new(local_client())
        .arg("role-rows")
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    assert!(rows.len() >= 20, "{rows:?}");
    rows
}

fn local_client() -> PathBuf {
    let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/examples/hostile_client");
    assert!(exe.exists(), "cargo test builds examples/hostile_client");
    exe
}

/// Waits until `job` no longer runs and the daemon has nothing running.
fn wait_job_end(h: &dyn Host, job: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = h.job_state(job);
        if state != "running" && h.prop("CurrentJob") == "/" {
            return state;
        }
        assert!(Instant::now() < deadline, "job {job} still {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One row as one caller: allowed or refused, as the role table says.
fn one(h: &dyn Host, row: &str, role: &str, who: Who, version: Option<&str>) -> serde_json::Value {
    let before = h.disk();
    let mut args = vec!["role", row];
    if let Some(v) = version {
        args.push(v);
    }
    let got = h.client(who, &args);
    let error = got["error"].as_str().unwrap_or_default();
    let message = got["message"].as_str().unwrap_or_default();
    let may = who == Who::Root || (who == Who::Cells && role == "cells");
    if may {
        assert_ne!(error, NOT_AUTHORIZED, "{row} as {who:?} was refused: {got}");
        assert_ne!(error, "client-side", "{row} as {who:?}: {got}");
        if let Some(job) = got["job"].as_str() {
            wait_job_end(h, job);
        }
    } else {
        assert_eq!(
            error, NOT_AUTHORIZED,
            "{row} as {who:?} must be refused: {got}"
        );
        assert!(
            message.contains("com.pydio.cellsupdater."),
            "{row} as {who:?}: the message names no action: {message}"
        );
        if who == Who::Cells {
            assert!(
                message.contains("Cells service user") && message.contains("host admin"),
                "{row}: the message does not say whose action it is: {message}"
            );
        }
        assert_eq!(
            h.disk(),
            before,
            "{row} as {who:?}: something changed on disk"
        );
    }
    got
}

fn every_row(h: &dyn Host) {
    for (row, role) in role_rows() {
        for who in EVERYONE {
            one(h, &row, &role, who, None);
        }
        match row.as_str() {
            "hold" => {
                // Root's hold now binds the Cells user: no update, no Force past it, no
                // Release (the next row).
                assert_eq!(h.prop("Hold"), "held by the roles test");
                let got = one(h, "update", "cells", Who::Cells, Some("4.4.7"));
                assert_eq!(got["error"], HELD, "{got}");
                one(h, "update_force", "admin", Who::Cells, Some("4.4.7"));
                // The Enterprise upgrade is an install too: held as well.
                let got = one(h, "enterprise", "cells", Who::Cells, None);
                assert_eq!(got["error"], HELD, "{got}");
                assert_eq!(h.prop("StagedVersion"), "");
            }
            "release" => assert_eq!(h.prop("Hold"), "", "root released the hold"),
            _ => {}
        }
    }
}

/// A job can be cancelled by the uid that started it and by a host admin, by nobody else.
fn cancel_rows(h: &dyn Host) {
    let start = |who: Who| -> String {
        let got = h.client(who, &["role", "stage", "4.4.7"]);
        got["job"]
            .as_str()
            .unwrap_or_else(|| panic!("no job: {got}"))
            .to_string()
    };
    let cancel = |who: Who, job: &str| h.client(who, &["cancel", job]);
    // Root's job (the timer's are root's too): the Cells user and nobody cannot stop it.
    let job = start(Who::Root);
    for who in [Who::Cells, Who::Nobody] {
        let got = cancel(who, &job);
        assert_eq!(
            got["error"], NOT_AUTHORIZED,
            "cancel of root's job as {who:?}: {got}"
        );
        assert!(
            got["message"].as_str().unwrap().contains("manage-policy"),
            "{got}"
        );
        assert_eq!(h.job_state(&job), "running", "{who:?} stopped root's job");
    }
    let got = cancel(Who::Root, &job);
    assert_eq!(got["error"], "", "{got}");
    assert_eq!(wait_job_end(h, &job), "cancelled");
    // The Cells user's own job: it may cancel it; so may root.
    let job = start(Who::Cells);
    assert_eq!(cancel(Who::Nobody, &job)["error"], NOT_AUTHORIZED);
    let got = cancel(Who::Cells, &job);
    assert_eq!(got["error"], "", "{got}");
    assert_eq!(wait_job_end(h, &job), "cancelled");
    let job = start(Who::Cells);
    assert_eq!(cancel(Who::Root, &job)["error"], "");
    assert_eq!(wait_job_end(h, &job), "cancelled");
    assert_eq!(h.prop("StagedVersion"), "");
}

/// Refusals are logged in full a few times per uid per minute, then summed up: a burst of 30
/// (well inside a minute, or across one boundary at most) adds at most 6 full lines.
fn refusals_are_rate_limited(h: &dyn Host, stop: impl FnOnce()) {
    let full = |log: &str| {
        log.lines()
            .filter(|l| l.contains("uid 65534 may not perform"))
            .count()
    };
    let before = full(&h.log());
    for _ in 0..30 {
        let got = h.client(Who::Nobody, &["role", "hold"]);
        assert_eq!(got["error"], NOT_AUTHORIZED);
    }
    stop();
    let log = h.log();
    let added = full(&log) - before;
    assert!(
        added <= 6,
        "{added} full refusal lines for 30 refusals:\n{log}"
    );
    assert!(
        log.contains("uid 65534: ") && log.contains("more refused calls in the last minute"),
        "no summary line:\n{log}"
    );
}

struct PrivateHost {
    env: StageEnv,
    bus: PrivateBus,
    daemon: std::cell::RefCell<DaemonProc>,
}

impl Host for PrivateHost {
    fn client(&self, who: Who, args: &[&str]) -> serde_json::Value {
        let mut cmd = match who {
            Who::Root => std::process::Command::new(local_client()),
            Who::Cells | Who::Nobody => {
                let uid = if who == Who::Cells { 1 } else { 65534 };
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                ])
                .arg(local_client());
                c
            }
        };
        let out = cmd
            .args(["--address", &self.bus.address])
            .args(args)
            .env("TMPDIR", "/tmp")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} as {who:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
    fn disk(&self) -> String {
        let all: BTreeMap<PathBuf, Option<(u64, String)>> = snapshot(self.env.root.path())
            .into_iter()
            .filter(|(p, _)| !p.to_string_lossy().starts_with("daemon-"))
            .collect();
        format!("{all:?}")
    }
    fn prop(&self, name: &str) -> String {
        match self.bus.manager_prop(name) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        }
    }
    fn job_state(&self, job: &str) -> String {
        self.bus.busctl_json(&[
            "get-property",
            DEST,
            job,
            "com.pydio.CellsUpdater1.Job",
            "State",
        ])["data"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn log(&self) -> String {
        self.daemon.borrow().log_text()
    }
}

#[test]
fn on_a_private_bus_the_cells_user_works_inside_the_admins_policy() {
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.7", "ok", true)]);
    env.write_daemon_config("");
    let bus = PrivateBus::start();
    let daemon = DaemonProc::start(&bus, env.root.path());
    let h = PrivateHost {
        env,
        bus,
        daemon: std::cell::RefCell::new(daemon),
    };
    every_row(&h);
    cancel_rows(&h);
    refusals_are_rate_limited(&h, || {
        h.daemon.borrow_mut().stop();
    });
}

struct SystemdHost {
    sb: support::sandbox::Sandbox,
}

const CLIENT: &str = "/src/target/debug/examples/hostile_client";
const GET: &str = "busctl get-property com.pydio.CellsUpdater1";

impl Host for SystemdHost {
    fn client(&self, who: Who, args: &[&str]) -> serde_json::Value {
        let prefix = match who {
            Who::Root => "",
            Who::Cells => "runuser -u pydio -- ",
            Who::Nobody => "setpriv --reuid=65534 --regid=65534 --clear-groups ",
        };
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let out = self
            .sb
            .sh(&format!("cd /tmp && {prefix}{CLIENT} {}", quoted.join(" ")));
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
    fn disk(&self) -> String {
        self.sb.sh(
            "find /opt/pydio /var/lib/cells-updater /var/cells /etc/systemd/system/cells.service.d \
             -printf '%p %y %m %u\\n' 2>/dev/null | sort; \
             find /opt/pydio /var/lib/cells-updater /var/cells -type f -exec sha256sum {} + | sort",
        )
    }
    fn prop(&self, name: &str) -> String {
        let out = self.sb.sh(&format!(
            "{GET} /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager {name}"
        ));
        // `s "text"` or `o "/path"`.
        out.trim()
            .split_once(' ')
            .map_or(String::new(), |(_, v)| v.trim_matches('"').to_string())
    }
    fn job_state(&self, job: &str) -> String {
        let out = self
            .sb
            .sh(&format!("{GET} {job} com.pydio.CellsUpdater1.Job State"));
        out.trim()
            .trim_start_matches("s ")
            .trim_matches('"')
            .to_string()
    }
    fn log(&self) -> String {
        self.sb
            .sh("journalctl -u cells-updater.service --no-pager -o cat")
    }
}

#[test]
fn on_real_systemd_the_cells_user_works_inside_the_admins_policy() {
    let sb = support::sandbox::Sandbox::cells_host("roles", &[]);
    let mut slow = fake_cells("4.4.7", "ok");
    slow.resize(8 << 20, 7);
    sb.add_release("4.4.7", &slow);
    sb.serve("--slow-ms 60");
    sb.sh("cells-updater status >/dev/null");
    let h = SystemdHost { sb };
    every_row(&h);
    cancel_rows(&h);
    refusals_are_rate_limited(&h, || {
        h.sb.sh("systemctl stop cells-updater.service");
    });
    // Still serving the release it had: nothing any row did reached Cells.
    assert_eq!(h.sb.sh("curl -sf http://127.0.0.1:443/").trim(), "4.4.2");
}
