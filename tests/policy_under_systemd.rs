//! Update policy on a real systemd: maintenance windows (the timer's `check --auto` stages at
//! any time and applies only inside a window; `NextWindow` says when), hold and pin (auto does
//! nothing, an explicit Update fails with `Held` unless forced, the hold survives a restart),
//! and the minimum release age (a release dated an hour ago waits; four days old, it installs).
//! The windows' arithmetic (midnight, DST) is unit-tested with a fixed clock in
//! `src/schedule.rs`; here the clock is the container's.

mod support;

use std::time::Duration;
use support::sandbox::Sandbox;

const GET: &str = "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";
const CALL: &str =
    "busctl call com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 com.pydio.CellsUpdater1.Manager";

/// A Manager property, unquoted (`s "4.4.2"` → `4.4.2`, `t 12` → `12`).
fn prop(sb: &Sandbox, name: &str) -> String {
    let v = sb.sh(&format!("{GET} {name}"));
    let v = v.trim();
    v.split_once(' ')
        .map_or(v, |(_, r)| r)
        .trim_matches('"')
        .to_string()
}

fn served(sb: &Sandbox) -> String {
    sb.sh("curl -sf http://127.0.0.1:443/").trim().to_string()
}

/// The policy file, and a stopped daemon so the next call starts one that reads it.
fn policy(sb: &Sandbox, toml: &str) {
    sb.write(
        "/etc/cells-updater/config.d/60-policy.toml",
        format!("[policy]\n{toml}\n").as_bytes(),
        0o644,
    );
    sb.sh("systemctl stop cells-updater.service");
}

fn hhmm(minutes: i64) -> String {
    let m = minutes.rem_euclid(1440);
    format!("{:02}:{:02}", m / 60, m % 60)
}

#[test]
fn windows_stage_at_any_time_and_apply_only_inside() {
    let sb = Sandbox::cells_host("policy-windows", &[("4.4.3", "ok")]);
    let now: i64 = sb.sh("date -u +%s").trim().parse().unwrap();
    let now_min = now % 86_400 / 60;
    // A window that opens in two hours (UTC), for an hour.
    let start = now_min + 120;
    let window = format!("daily {}-{}", hhmm(start), hhmm(start + 60));
    let expected_start = now - now % 86_400 + start * 60;
    policy(
        &sb,
        &format!("auto = \"patch\"\nwindows = [\"{window}\"]\ntimezone = \"UTC\""),
    );

    let out = sb.sh("cells-updater check --auto");
    assert!(
        out.contains("Auto policy allows 4.4.3: staging it now."),
        "{out}"
    );
    assert!(
        out.contains("it will be applied in the next maintenance window"),
        "{out}"
    );
    assert_eq!(prop(&sb, "StagedVersion"), "4.4.3");
    assert_eq!(prop(&sb, "InstalledVersion"), "4.4.2", "nothing is swapped");
    assert_eq!(served(&sb), "4.4.2");
    assert_eq!(
        prop(&sb, "NextWindow"),
        (expected_start * 1_000_000).to_string(),
        "NextWindow is the window's start in µs"
    );
    let status = sb.sh("cells-updater status");
    assert!(status.contains("Next window"), "{status}");
    // The timer's next run (it fires every 15 minutes) finds the staged release waiting.
    sb.sh("systemctl start cells-updater-check.service");
    assert_eq!(served(&sb), "4.4.2");

    // A window open now (it may cross midnight): the timer's run applies the staged release.
    policy(
        &sb,
        &format!(
            "auto = \"patch\"\nwindows = [\"daily {}-{}\"]\ntimezone = \"UTC\"",
            hhmm(now_min - 60),
            hhmm(now_min + 60)
        ),
    );
    sb.sh("systemctl start cells-updater-check.service");
    assert_eq!(
        sb.unit_prop("cells-updater-check.service", "Result"),
        "success"
    );
    assert_eq!(served(&sb), "4.4.3");
    assert_eq!(prop(&sb, "InstalledVersion"), "4.4.3");
    let log = sb.sh("journalctl -u cells-updater-check.service --no-pager -o cat");
    assert!(log.contains("Auto policy allows 4.4.3: updating."), "{log}");
    let next: i64 = prop(&sb, "NextWindow").parse().unwrap();
    assert!(
        next <= (now + 5) * 1_000_000 && next >= (now - 3700) * 1_000_000,
        "the open window's start: {next}"
    );
}

#[test]
fn hold_and_pin_stop_automatic_installs_and_survive_a_restart() {
    let sb = Sandbox::cells_host(
        "policy-hold",
        &[("4.4.3", "ok"), ("4.4.4", "ok"), ("4.4.5", "ok")],
    );
    policy(&sb, "auto = \"patch\"\ncheck_interval = \"1s\"");

    // A pin: automatic installs stop at 4.4.3; the newer ones are listed as held.
    sb.sh("cells-updater hold --version 4.4.3 --reason 'validated up to 4.4.3'");
    assert_eq!(prop(&sb, "HoldVersion"), "4.4.3");
    let out = sb.sh("sleep 1; cells-updater check --auto");
    assert!(out.contains("Auto policy allows 4.4.3"), "{out}");
    assert_eq!(served(&sb), "4.4.3");
    let doc: serde_json::Value =
        serde_json::from_str(&sb.sh("cells-updater check --json")).unwrap();
    let reasons: Vec<(String, String)> = doc["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["Version"].as_str().unwrap().to_string(),
                r["Reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("4.4.4".to_string(), "held".to_string()),
            ("4.4.5".to_string(), "held".to_string())
        ]
    );

    // A hold: auto installs nothing, an explicit Update fails with Held.
    sb.sh("cells-updater hold --reason 'freeze for the audit'");
    assert_eq!(prop(&sb, "Hold"), "freeze for the audit");
    assert_eq!(prop(&sb, "HoldVersion"), "");
    let out = sb.sh("sleep 1; cells-updater check --auto");
    assert!(
        out.contains("Held (freeze for the audit): nothing is installed automatically."),
        "{out}"
    );
    assert_eq!(served(&sb), "4.4.3");
    let (ok, _, err) = sb.try_sh(&format!("{CALL} Update 'sa{{sv}}' 4.4.4 0"));
    assert!(!ok);
    assert!(
        err.contains("updates are held (freeze for the audit)"),
        "{err}"
    );
    let (ok, _, err) = sb.try_sh("cells-updater update 4.4.4");
    assert!(!ok);
    assert!(err.contains("com.pydio.CellsUpdater1.Error.Held"), "{err}");
    assert_eq!(prop(&sb, "StagedVersion"), "", "nothing was staged");

    // It survives the daemon's restart.
    sb.sh("systemctl restart cells-updater.service");
    assert_eq!(prop(&sb, "Hold"), "freeze for the audit");

    // Force goes through, and the journal says so.
    sb.sh(&format!("{CALL} Update 'sa{{sv}}' 4.4.4 1 Force b true"));
    sb.wait_for(
        Duration::from_secs(60),
        "the forced update",
        &format!("{GET} InstalledVersion | grep -q 4.4.4"),
    );
    assert_eq!(served(&sb), "4.4.4");
    let log = sb.sh("journalctl -u cells-updater --no-pager -o cat");
    assert!(log.contains("forced past the hold"), "{log}");

    // Released: the timer's run proceeds.
    sb.sh("cells-updater unhold");
    assert_eq!(prop(&sb, "Hold"), "");
    sb.sh("sleep 1; systemctl start cells-updater-check.service");
    assert_eq!(served(&sb), "4.4.5");
}

#[test]
fn young_releases_wait_for_the_minimum_age() {
    let sb = Sandbox::cells_host("policy-age", &[("4.4.3", "ok")]);
    policy(
        &sb,
        "auto = \"patch\"\nmin_release_age = \"3d\"\ncheck_interval = \"1s\"",
    );
    // Published an hour ago.
    sb.serve("--age 4.4.3 3600");
    let now: i64 = sb.sh("date -u +%s").trim().parse().unwrap();
    let out = sb.sh("cells-updater check --auto");
    assert!(out.contains("Auto policy: nothing to install."), "{out}");
    assert_eq!(served(&sb), "4.4.2");
    let doc: serde_json::Value =
        serde_json::from_str(&sb.sh("cells-updater check --json")).unwrap();
    let r = &doc["releases"][0];
    assert_eq!(
        (r["Allowed"].as_bool(), r["Reason"].as_str()),
        (Some(false), Some("too-new"))
    );
    let eligible = r["EligibleAt"].as_i64().unwrap();
    let expected = now - 3600 + 3 * 86_400;
    assert!((eligible - expected).abs() <= 5, "{eligible} vs {expected}");
    let table = sb.sh("cells-updater check");
    assert!(table.contains("too-new (eligible "), "{table}");

    // Published four days ago: it installs.
    sb.serve(&format!("--age 4.4.3 {}", 4 * 86_400));
    let out = sb.sh("sleep 1; cells-updater check --auto");
    assert!(out.contains("Auto policy allows 4.4.3: updating."), "{out}");
    assert_eq!(served(&sb), "4.4.3");
}
