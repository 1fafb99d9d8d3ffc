//! Soak on a real systemd (booted container): CLIENTS concurrent D-Bus clients (property reads,
//! `ListJobs`, `Check`, introspection; examples/hostile_client.rs `soak`) for SECONDS while
//! `cells-updater update` and `cells-updater rollback` run back to back.
//!
//! Required, and checked here (the exit status is non-zero when one fails):
//! - at least CYCLES update/rollback cycles, each ending with Cells serving the expected
//!   version and its binary carrying `cap_net_bind_service=ep`;
//! - no missed watchdog (no "Watchdog timeout" for cells-updater.service, no restart of it:
//!   the same main process from the first cycle to the last);
//! - no deadlock: every client call answered within its deadline (25 s, 90 s for Check);
//! - the daemon's RSS grows by at most 1 MiB and its fd count does not grow between the end of
//!   the first cycle and the end of the last. The daemon keeps the last 16 finished jobs on
//!   the bus (the contract's retention), which fills during the first 8 cycles, so the growth
//!   is also printed from the cycle after which retention is full; both are reported, the
//!   check applies to the second.
//!
//! Run: `cargo bench --bench soak` (as root, after `tests/run.sh` or `cargo build
//! --all-features --bins --examples`: the container runs the debug build, as the tests do).
//! Env: SOAK_SECONDS (600), SOAK_CLIENTS (50), SOAK_CYCLES (20), SOAK_PAUSE_MS (20, each
//! client's pause between calls).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::sandbox::Sandbox;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (main pid, VmRSS KiB, open fds) of cells-updater.service. The clients never pause, so a
/// call or a check helper in flight holds a descriptor for a moment: the fd count is the
/// least of five samples 100 ms apart (a leak raises every sample).
fn daemon_facts(sb: &Sandbox) -> (u64, u64, u64) {
    let out = sb.sh(
        "p=$(systemctl show -p MainPID --value cells-updater.service); f=100000; \
         for i in 1 2 3 4 5; do n=$(ls /proc/$p/fd | wc -l); [ $n -lt $f ] && f=$n; sleep 0.1; done; \
         echo $p $(awk '/^VmRSS:/ {print $2}' /proc/$p/status) $f",
    );
    let v: Vec<u64> = out
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    assert_eq!(v.len(), 3, "daemon facts: {out:?}");
    assert!(v[0] > 0, "cells-updater is not running");
    (v[0], v[1], v[2])
}

/// Runs one CLI step; checks Cells then serves `want` with its capability. Returns the
/// problem, if any.
fn step(sb: &Sandbox, cmd: &str, want: &str) -> Option<String> {
    let (ok, out, err) = sb.try_sh(&format!("timeout 300 cells-updater {cmd}"));
    if !ok {
        return Some(format!("`{cmd}` failed: {out}{err}"));
    }
    let serving = sb.try_sh("curl -sf --max-time 10 http://127.0.0.1:443/").1;
    if serving.trim() != want {
        return Some(format!(
            "after `{cmd}` Cells serves {:?}, not {want}",
            serving.trim()
        ));
    }
    let caps = sb.try_sh("getcap /opt/pydio/bin/cells").1;
    if !caps.contains("cap_net_bind_service=ep") {
        return Some(format!(
            "after `{cmd}` the binary lost its capability: {caps:?}"
        ));
    }
    None
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds = env("SOAK_SECONDS", 600);
    let clients = env("SOAK_CLIENTS", 50);
    let min_cycles = env("SOAK_CYCLES", 20);
    let pause = env("SOAK_PAUSE_MS", 20);
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--all-features", "--bins", "--examples"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build failed");

    // Enough releases for one fresh version per cycle, whatever the pace.
    let versions: Vec<String> = (1..=min_cycles * 10).map(|i| format!("4.5.{i}")).collect();
    let releases: Vec<(&str, &str)> = versions.iter().map(|v| (v.as_str(), "ok")).collect();
    let sb = Sandbox::cells_host("soak", &releases);
    // The admin's setcap; the daemon keeps it across every swap.
    sb.sh("setcap cap_net_bind_service=+ep /opt/pydio/bin/cells");
    // Two restarts a cycle, back to back: systemd's start rate limit (5 in 10 s) would refuse
    // some; what is soaked is the daemon, not that limit.
    sb.write(
        "/etc/systemd/system/cells.service.d/10-soak.conf",
        b"[Unit]\nStartLimitIntervalSec=0\n",
        0o644,
    );
    sb.sh("systemctl daemon-reload && cells-updater status >/dev/null");

    sb.sh(&format!(
        "systemd-run --quiet --unit=soak-load -p StandardOutput=file:/tmp/soak.json \
         /src/target/debug/examples/hostile_client soak {clients} {seconds} {pause}"
    ));
    let t0 = Instant::now();
    let mut problems = Vec::new();
    let mut cycles = 0u64;
    let mut first = None;
    let mut cycle_secs = Vec::new();
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    // Cycles back to back for as long as the clients run.
    while t0.elapsed() < Duration::from_secs(seconds) {
        let c0 = Instant::now();
        let v = &versions[cycles as usize % versions.len()];
        if let Some(p) = step(&sb, &format!("update {v}"), v) {
            problems.push(format!("cycle {}: {p}", cycles + 1));
            break;
        }
        if let Some(p) = step(&sb, "rollback", "4.4.2") {
            problems.push(format!("cycle {}: {p}", cycles + 1));
            break;
        }
        cycles += 1;
        cycle_secs.push(c0.elapsed().as_secs_f64());
        let facts = daemon_facts(&sb);
        if first.is_none() {
            first = Some(facts);
        }
        samples.push(facts);
    }
    let last = daemon_facts(&sb);
    sb.wait_for(
        Duration::from_secs(seconds + 180),
        "the soak clients to finish",
        "! systemctl is-active -q soak-load.service",
    );
    let report: serde_json::Value =
        serde_json::from_str(sb.sh("cat /tmp/soak.json").trim()).expect("the clients' report");
    let watchdog = sb
        .sh("journalctl -u cells-updater.service --no-pager -o cat | grep -c 'Watchdog timeout' || true")
        .trim()
        .parse::<u64>()
        .unwrap_or(0);
    let restarts = sb.unit_prop("cells-updater.service", "NRestarts");

    let (pid0, rss0, fds0) = first.unwrap_or(last);
    let (pid1, rss1, fds1) = last;
    // Two jobs a cycle: after cycle 9, 16 finished jobs are retained and the list is full.
    let (_, rss_full, fds_full) = samples.get(8).copied().unwrap_or((pid0, rss0, fds0));
    let late = report["late"].as_u64().unwrap_or(u64::MAX);
    let calls: u64 = report["calls"]
        .as_object()
        .map(|ops| {
            ops.values()
                .filter_map(|a| a.as_object())
                .flat_map(|a| a.values())
                .filter_map(|n| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let failed: Vec<String> = report["calls"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(op, a)| {
            a.as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.as_str() != "ok")
                .map(move |(k, n)| format!("{op} {k}: {n}"))
        })
        .collect();
    cycle_secs.sort_by(|a, b| a.total_cmp(b));
    let median = cycle_secs.get(cycle_secs.len() / 2).copied().unwrap_or(0.0);

    println!("soak: {clients} clients for {seconds} s (pause {pause} ms), cells-updater on a booted systemd");
    println!("| figure | value |");
    println!("| --- | ---: |");
    println!("| update/rollback cycles | {cycles} (median {median:.1} s each) |");
    println!("| client calls answered | {calls} |");
    println!("| calls past their deadline | {late} |");
    println!(
        "| calls not answered `ok` | {} |",
        if failed.is_empty() {
            "none".to_string()
        } else {
            failed.join(", ")
        }
    );
    println!("| slowest answer per call (ms) | {} |", report["max_ms"]);
    println!("| watchdog timeouts / daemon restarts | {watchdog} / {restarts} |");
    println!(
        "| daemon RSS after cycle 1 → last (KiB) | {rss0} → {rss1} ({:+} KiB) |",
        rss1 as i64 - rss0 as i64
    );
    println!(
        "| daemon RSS after cycle 9 (job retention full) → last (KiB) | {rss_full} → {rss1} ({:+} KiB) |",
        rss1 as i64 - rss_full as i64
    );
    println!("| daemon fds after cycle 1 → 9 → last | {fds0} → {fds_full} → {fds1} |");
    println!(
        "| daemon RSS per cycle (KiB) | {} |",
        samples
            .iter()
            .map(|s| s.1.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );

    if cycles < min_cycles {
        problems.push(format!(
            "{cycles} cycles in {seconds} s, fewer than {min_cycles}"
        ));
    }
    if late != 0 {
        problems.push(format!("{late} calls missed their deadline"));
    }
    if !failed.is_empty() {
        problems.push(format!("calls failed: {failed:?}"));
    }
    if watchdog != 0 || restarts != "0" || pid0 != pid1 {
        problems.push(format!(
            "the daemon was restarted ({watchdog} watchdog timeouts, NRestarts={restarts}, pid {pid0} → {pid1})"
        ));
    }
    if rss1 > rss_full + 1024 {
        problems.push(format!(
            "RSS grew by {} KiB once job retention was full",
            rss1 - rss_full
        ));
    }
    if fds1 > fds0 {
        problems.push(format!("fd count grew from {fds0} to {fds1}"));
    }
    if !problems.is_empty() {
        eprintln!("soak FAILED:\n  {}", problems.join("\n  "));
        eprintln!(
            "{}",
            sb.sh("journalctl -u cells-updater.service --no-pager -o cat | tail -n 40")
        );
        std::process::exit(1);
    }
    println!("soak passed");
}
