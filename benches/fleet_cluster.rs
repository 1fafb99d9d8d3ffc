//! The coordination's cost on real systemd: three booted nodes (tests/support/cluster.rs:
//! one network namespace, a 3-member etcd, each node's Cells on its own 127.0.0.N:443 taking
//! 1 s to answer after a start, health settle 1 s).
//! - baseline: the three nodes out of the fleet (no `[fleet]`), one `cells-updater update`
//!   after the other, each returning when its node is healthy;
//! - rollout: the same nodes in the fleet, one `fleet rollout` at `max_parallel` 1, until
//!   every node runs the target and is at rest.
//!
//! The same nodes, releases and machine in each run; the ratio is the overhead (target
//! 1.10, aim 1.05).
//!
//! Run (as root): `cargo build --all-features --examples && cargo bench --features fleet
//! --bench fleet_cluster`. Like the other real-systemd benches it installs the debug build
//! the tests use (target/debug/cells-updater, with `fleet`) into the nodes. Env: BENCH_RUNS
//! (3).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::cluster::*;

fn main() {
    let Some(runs) = support::bench_runs(3) else {
        return;
    };
    let versions: Vec<String> = (0..2 * runs).map(|i| format!("4.5.{i}")).collect();
    let offered: Vec<(&str, &str)> = versions.iter().map(|v| (v.as_str(), "ok")).collect();
    let c = Cluster::start_with(false, &offered);
    let (mut base, mut roll) = (Vec::new(), Vec::new());
    for pair in versions.chunks(2) {
        let (single, target) = (&pair[0], &pair[1]);
        for n in &c.nodes {
            n.leave();
        }
        let t = Instant::now();
        for n in &c.nodes {
            n.sb.sh(&format!("cells-updater update {single} >/dev/null"));
        }
        base.push(t.elapsed().as_secs_f64());
        c.wait_all_on(single, Duration::from_secs(30));
        for n in &c.nodes {
            n.join();
        }
        let t = Instant::now();
        c.nodes[0].fleet_ok(&format!("rollout {target} --package PydioHome"));
        c.wait_all_on(target, Duration::from_secs(180));
        roll.push(t.elapsed().as_secs_f64());
        eprintln!(
            "run: 3 single updates {:.2} s, rollout {:.2} s",
            base[base.len() - 1],
            roll[roll.len() - 1]
        );
    }
    let (b, r) = (support::median(base), support::median(roll));
    println!("fleet_cluster (3 booted nodes, max_parallel 1, median of {runs})");
    println!("  3 single-node updates back to back  {b:7.2} s");
    println!("  rollout of the same 3 nodes          {r:7.2} s");
    println!(
        "  ratio                                {:7.3}  (target <= 1.10)",
        r / b
    );
}
