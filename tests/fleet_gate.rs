//! Fleet, part 1: the gate before the swap, with three daemons on private buses (the
//! `fake-unit` stand-in runs each node's Cells), each with its own fleet agent
//! (`cells-updater fleet-agent`), and a real 3-member etcd on loopback.
//! - Rolling: Update on all three at once with max_parallel 1: sampled every 50 ms, never
//!   more than one node between its swap and healthy; the others wait (`waiting-for-slot`);
//!   every node ends on the release.
//! - Halt: a release that exits at start, on all three at once: the first node to get the
//!   slot rolls back and marks it bad for the cluster, which halts; the other two fail
//!   without a swap (their binaries never change).
#![cfg(all(feature = "fleet", feature = "fake-unit"))]

mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::bus::*;
use support::etcd::EtcdCluster;
use support::*;

const JOB_IFACE: &str = "com.pydio.CellsUpdater1.Job";

struct Node {
    env: StageEnv,
    bus: PrivateBus,
    _daemon: DaemonProc,
    agent: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

fn node(etcd: &EtcdCluster, name: &str) -> Node {
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.5", "ok", false), ("4.4.6", "exit", false)]);
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    env.write_daemon_config(&format!(
        "[policy]\nhealth_settle = \"300ms\"\nhealth_timeout = \"10s\"\n\
         [fleet]\nendpoints = [{}]\ncluster = \"gate\"\nnode = \"{name}\"\nlease_ttl = \"3s\"\n\
         slot_wait = \"60s\"\ntimeout = \"2s\"\n",
        endpoints.join(", ")
    ));
    let bus = PrivateBus::start();
    let daemon = env.start_fake_unit_daemon(&bus);
    let log = std::fs::File::create(env.root.path().join("daemon-agent.log")).unwrap();
    let agent = Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(["--bus-address", &bus.address, "--root"])
        .arg(env.root.path())
        .arg("fleet-agent")
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the agent's name", || {
        bus.name_has_owner("com.pydio.CellsUpdater1.Fleet")
    });
    Node {
        env,
        bus,
        _daemon: daemon,
        agent,
    }
}

fn update(n: &Node, version: &str) -> String {
    n.bus.busctl_json(&[
        "call",
        DEST,
        MANAGER,
        MANAGER_IFACE,
        "Update",
        "sa{sv}",
        version,
        "0",
    ])["data"][0]
        .as_str()
        .unwrap()
        .to_string()
}

fn job(n: &Node, job: &str, prop: &str) -> String {
    n.bus
        .busctl_json(&["get-property", DEST, job, JOB_IFACE, prop])["data"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn binary(n: &Node) -> Vec<u8> {
    std::fs::read(n.env.root.path().join("opt/pydio/bin/cells")).unwrap()
}

/// Samples the three jobs every 50 ms until they all end: the most nodes seen at once
/// between swap and healthy, whether one was seen waiting, and the end (state, error).
fn sample(nodes: &[Node], jobs: &[String]) -> (usize, bool, Vec<(String, String)>) {
    let mut most = 0;
    let mut waited = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut busy = 0;
        let mut running = 0;
        for (n, j) in nodes.iter().zip(jobs) {
            if job(n, j, "State") == "running" {
                running += 1;
                match job(n, j, "Phase").as_str() {
                    "swapping" | "restarting" | "health-check" | "rolling-back" => busy += 1,
                    "waiting-for-slot" => waited = true,
                    _ => {}
                }
            }
        }
        most = most.max(busy);
        if running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ends = nodes
        .iter()
        .zip(jobs)
        .map(|(n, j)| (job(n, j, "State"), job(n, j, "Error")))
        .collect();
    (most, waited, ends)
}

#[test]
fn nodes_take_turns_and_the_first_failure_halts_the_cluster() {
    let etcd = EtcdCluster::start(false);
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| node(&etcd, n)).collect();

    // Rolling, max_parallel 1.
    let jobs: Vec<String> = nodes.iter().map(|n| update(n, "4.4.5")).collect();
    let (most, waited, ends) = sample(&nodes, &jobs);
    println!("rolling: at most {most} node(s) between swap and healthy; ends {ends:?}");
    assert_eq!(most, 1, "more than max_parallel nodes were down at once");
    assert!(waited, "no node was seen waiting for its slot");
    for (n, end) in nodes.iter().zip(&ends) {
        assert_eq!(end.0, "succeeded", "{end:?}");
        assert_eq!(n.bus.manager_prop("InstalledVersion"), "4.4.5");
    }
    let slots = etcd.etcdctl(&[
        "get",
        "--prefix",
        "--keys-only",
        "/cells-updater/gate/slots/",
    ]);
    assert!(
        String::from_utf8_lossy(&slots.stdout).trim().is_empty(),
        "slots left"
    );

    // Halt: a release that exits at start.
    let before: Vec<Vec<u8>> = nodes.iter().map(binary).collect();
    let jobs: Vec<String> = nodes.iter().map(|n| update(n, "4.4.6")).collect();
    let (most, _, ends) = sample(&nodes, &jobs);
    println!("halt: ends {ends:?}");
    assert!(most <= 1);
    let failed_here: Vec<usize> = ends
        .iter()
        .enumerate()
        .filter(|(_, e)| e.1 == "com.pydio.CellsUpdater1.Error.UnitFailed")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed_here.len(), 1, "{ends:?}");
    for (i, end) in ends.iter().enumerate() {
        assert_eq!(end.0, "failed", "{end:?}");
        if i != failed_here[0] {
            assert!(
                end.1 == "com.pydio.CellsUpdater1.Error.FleetHalted"
                    || end.1 == "com.pydio.CellsUpdater1.Error.NoSuchVersion",
                "{end:?}"
            );
            assert_eq!(
                binary(&nodes[i]),
                before[i],
                "node {i} swapped the broken release"
            );
        }
        assert_eq!(nodes[i].bus.manager_prop("InstalledVersion"), "4.4.5");
    }
    let halt = etcd.etcdctl(&["get", "/cells-updater/gate/halt", "--print-value-only"]);
    assert!(
        String::from_utf8_lossy(&halt.stdout).contains("4.4.6 failed on"),
        "{}",
        String::from_utf8_lossy(&halt.stdout)
    );
    let bad = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/cells-updater/gate/bad/"]);
    assert!(String::from_utf8_lossy(&bad.stdout).contains("bad/4.4.6"));
}
