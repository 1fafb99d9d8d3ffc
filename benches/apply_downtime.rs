//! Apply downtime on a real systemd: from the old main process's exit (the unit entering
//! `inactive`) to the unit being active again, read from systemd's own timestamps
//! (InactiveEnterTimestampMonotonic, ActiveEnterTimestampMonotonic; ExecMainExitTimestamp is
//! reset when the new process starts). Also the whole restart, stop included
//! (ActiveExitTimestampMonotonic to ActiveEnterTimestampMonotonic). Each `cells-updater update` is paired, in the same
//! container and run, with a bare `systemctl restart` of the same unit.
//! Run: `cargo bench --bench apply_downtime` (as root). Env: BENCH_RUNS (default 5).

#[path = "../tests/support/mod.rs"]
mod support;

use support::sandbox::Sandbox;

/// (downtime from the old process's exit, whole restart) in ms.
fn downtime_ms(sb: &Sandbox) -> (f64, f64) {
    let t = |p: &str| -> f64 { sb.unit_prop("cells.service", p).parse().unwrap() };
    let (left, inactive, active) = (
        t("ActiveExitTimestampMonotonic"),
        t("InactiveEnterTimestampMonotonic"),
        t("ActiveEnterTimestampMonotonic"),
    );
    assert!(
        left <= inactive && inactive <= active,
        "timestamps out of order"
    );
    ((active - inactive) / 1000.0, (active - left) / 1000.0)
}

fn main() {
    let Some(runs) = support::bench_runs(5) else {
        return;
    };
    let versions: Vec<String> = (0..runs).map(|i| format!("4.6.{i}")).collect();
    let releases: Vec<(&str, &str)> = versions.iter().map(|v| (v.as_str(), "ok")).collect();
    let sb = Sandbox::cells_host("bench-downtime", &releases);
    // The binary the container runs is the debug build the tests use; what is measured here
    // is systemd's restart, which both paths share.
    // Restarts this dense would trip systemd's start rate limit (5 in 10 s); what is measured
    // is the restart itself.
    sb.write(
        "/etc/systemd/system/cells.service.d/10-bench.conf",
        b"[Unit]\nStartLimitIntervalSec=0\n",
        0o644,
    );
    sb.sh("systemctl daemon-reload");
    let (mut ours, mut bare, mut ours_all, mut bare_all) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for v in &versions {
        sb.sh("systemctl restart cells.service");
        let (d, all) = downtime_ms(&sb);
        bare.push(d);
        bare_all.push(all);
        sb.sh(&format!("cells-updater update {v} >/dev/null"));
        let (d, all) = downtime_ms(&sb);
        ours.push(d);
        ours_all.push(all);
    }
    let (o, b) = (support::median(ours.clone()), support::median(bare.clone()));
    let (oa, ba) = (support::median(ours_all), support::median(bare_all));
    println!("\napply downtime on real systemd, {runs} pairs, medians (ms)\n");
    println!("| operation | old exit to active | ratio | whole restart | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("| systemctl restart cells.service | {b:.2} | 1.00 | {ba:.2} | 1.00 |");
    println!(
        "| cells-updater update (swap, setcap, RestartUnit) | {o:.2} | {:.2} | {oa:.2} | {:.2} |",
        o / b,
        oa / ba
    );
    println!("\nall runs, old exit to active: update {ours:.2?} restart {bare:.2?}");
    println!(
        "\ntarget: downtime <= 1.2 x systemctl restart: {:.2}x {}",
        o / b,
        if o <= 1.2 * b { "MET" } else { "MISSED" }
    );
}
