//! Fleet benchmarks on a real 3-member etcd with three daemons on private buses (the
//! `fake-unit` stand-in runs each node's Cells), each with its own agent, lease TTL 3 s:
//! - dead holder: from the `kill -9` of the slot holder's agent (its node past its swap) to
//!   the next node's swap, against the lease TTL (the floor: etcd frees the slot when the
//!   lease ends);
//! - halt: from the halt's write to the two jobs waiting for a slot failing `FleetHalted`,
//!   against an `etcdctl watch` of the same key seeing the write (the floor: etcd's own
//!   delivery).
//!
//! Run: `cargo bench --features fleet,fake-unit --bench fleet` (as root). Env: BENCH_RUNS (3).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::etcd::EtcdCluster;
use support::fleet::*;

fn busy(n: &Node, states: &[&str]) -> bool {
    states.contains(&n.bus.manager_prop("State").as_str().unwrap_or_default())
}

/// One dead-holder run: seconds from the kill to the next node's swap.
fn dead_holder() -> f64 {
    let etcd = EtcdCluster::start(false);
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| node(&etcd, n)).collect();
    fleet_ok(&nodes[0], &["rollout", "4.4.5", "--package", "PydioHome"]);
    let (holder, killed) = loop {
        if let Some(i) = nodes
            .iter()
            .position(|n| busy(n, &["restarting", "health-check"]))
        {
            nodes[i].kill_agent();
            break (i, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    loop {
        let next = (0..3)
            .filter(|i| *i != holder)
            .any(|i| busy(&nodes[i], &["applying", "restarting", "health-check"]));
        if next {
            return killed.elapsed().as_secs_f64();
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no next slot");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One halt run: (seconds to both waiting jobs failing, seconds to an etcdctl watch seeing it).
fn halt() -> (f64, f64) {
    let etcd = EtcdCluster::start(false);
    let nodes: Vec<Node> = ["n1", "n2"].iter().map(|n| node(&etcd, n)).collect();
    // Slot 0 held by someone else, so both jobs wait.
    let lease = etcd.etcdctl(&["lease", "grant", "60"]);
    let id = String::from_utf8_lossy(&lease.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let put = etcd.etcdctl(&[
        "put",
        &format!("--lease={id}"),
        "/cells-updater/gate/slots/0",
        r#"{"format":1,"node":"other","version":"4.4.5","since":0}"#,
    ]);
    assert!(put.status.success());
    let jobs: Vec<String> = nodes.iter().map(|n| update(n, "4.4.5")).collect();
    for (n, j) in nodes.iter().zip(&jobs) {
        while job(n, j, "Phase") != "waiting-for-slot" {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.endpoints().join(",")))
        .args(["watch", "/cells-updater/gate/halt"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = watch.stdout.take().unwrap();
    let start = Instant::now();
    let seen = std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        start.elapsed().as_secs_f64()
    });
    let w = etcd.etcdctl(&[
        "put",
        "/cells-updater/gate/halt",
        r#"{"format":1,"reason":"bench","node":"admin","at":0}"#,
    ]);
    assert!(w.status.success());
    let mut pending: Vec<usize> = vec![0, 1];
    while !pending.is_empty() {
        pending.retain(|i| job(&nodes[*i], &jobs[*i], "State") == "running");
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the halt did not arrive"
        );
    }
    let ours = start.elapsed().as_secs_f64();
    for (n, j) in nodes.iter().zip(&jobs) {
        assert_eq!(
            job(n, j, "Error"),
            "com.pydio.CellsUpdater1.Error.FleetHalted"
        );
    }
    let base = seen.join().unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    (ours, base)
}

fn main() {
    let Some(runs) = support::bench_runs(3) else {
        return;
    };
    let ttl = 3.0;
    let dead: Vec<f64> = (0..runs).map(|_| dead_holder()).collect();
    let halts: Vec<(f64, f64)> = (0..runs).map(|_| halt()).collect();
    let d = support::median(dead.clone());
    let (h, b) = (
        support::median(halts.iter().map(|x| x.0).collect()),
        support::median(halts.iter().map(|x| x.1).collect()),
    );
    println!("fleet, {runs} runs each (medians):");
    println!("| measure | seconds | baseline | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!("| kill -9 of the holder's agent to the next node's swap | {d:.2} | lease TTL {ttl:.2} | {:.2} |", d / ttl);
    println!("| halt written to 2 waiting jobs failing FleetHalted | {h:.3} | etcdctl watch {b:.3} | {:.1} |", h / b.max(0.001));
    println!("runs: dead {dead:?}; halt {halts:?}");
}
