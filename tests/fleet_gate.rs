//! Fleet, part 1: the gate before the swap, with three daemons on private buses (the
//! `fake-unit` stand-in runs each node's Cells), each with its own fleet agent
//! (`cells-updater fleet-agent`), and a real 3-member etcd on loopback.
//! - Rolling: Update on all three at once with max_parallel 1: sampled every 50 ms, never
//!   more than one node between its swap and healthy; the others wait (`waiting-for-slot`);
//!   every node ends on the release.
//! - Halt: a release that exits at start, on all three at once: the first node to get the
//!   slot rolls back and marks it bad for the cluster, which halts; the other two fail
//!   without a swap (their binaries never change).
//! - Rollout (`fleet rollout`, the agents move their own nodes): max_parallel 2 sampled every
//!   50 ms; a broken target halts the cluster after one node; `fleet status` shows it;
//!   `fleet resume` and a new target with a canary soak: the second node swaps no sooner
//!   than the soak after the first is healthy.
#![cfg(all(feature = "fleet", feature = "fake-unit"))]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::bus::*;
use support::etcd::EtcdCluster;
use support::fleet::*;
use support::*;

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
    // Each gives its slot back right after its job's end is announced.
    wait_until(Duration::from_secs(10), "no slot left", || {
        let slots = etcd.etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            "/cells-updater/gate/slots/",
        ]);
        String::from_utf8_lossy(&slots.stdout).trim().is_empty()
    });

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

#[test]
fn a_rollout_moves_the_nodes_halts_on_a_broken_release_and_soaks_its_canary() {
    let etcd = EtcdCluster::start(false);
    // Each node's admin allows up to 3 at once; each rollout says how many.
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node_with(n, &format!("{}max_parallel = 3\n", endpoints(&etcd))))
        .collect();

    // max_parallel 2: the agents see the target and ask their daemons.
    let said = fleet_ok(
        &nodes[0],
        &[
            "rollout",
            "4.4.5",
            "--max-parallel",
            "2",
            "--package",
            "PydioHome",
        ],
    );
    assert!(said.contains("2 node(s) at a time"), "{said}");
    let w = watch_rollout(&nodes, "4.4.5", || false);
    println!("rollout max_parallel 2: at most {} node(s) at once", w.most);
    assert!(
        w.most <= 2,
        "more than max_parallel nodes were down at once"
    );
    assert!(
        w.busy.iter().all(|b| *b),
        "a node never updated: {:?}",
        w.busy
    );
    // The nodes' records follow within a heartbeat.
    let mut table = String::new();
    wait_until(
        Duration::from_secs(10),
        "every node's record on 4.4.5",
        || {
            table = fleet_ok(&nodes[1], &["status"]);
            ["n1", "n2", "n3"].iter().all(|n| {
                table
                    .lines()
                    .any(|l| l.starts_with(n) && l.contains(" 4.4.5 ") && l.contains("idle"))
            })
        },
    );
    assert!(
        table.contains("Target:   PydioHome 4.4.5, 2 at a time"),
        "{table}"
    );

    // A broken target: one node tries it and rolls back; the cluster halts; the others
    // never swap it.
    let before: Vec<Vec<u8>> = nodes.iter().map(binary).collect();
    fleet_ok(
        &nodes[0],
        &[
            "rollout",
            "4.4.6",
            "--max-parallel",
            "1",
            "--package",
            "PydioHome",
        ],
    );
    let halted = || {
        !etcd
            .etcdctl(&["get", "/cells-updater/gate/halt", "--print-value-only"])
            .stdout
            .is_empty()
    };
    let w = watch_rollout(&nodes, "4.4.6", halted);
    // Let the other agents see the halt and a poll go by: still nothing moves.
    std::thread::sleep(Duration::from_secs(3));
    let w2 = watch_rollout(&nodes, "4.4.6", || true);
    let tried: Vec<usize> = (0..3).filter(|i| w.busy[*i]).collect();
    println!("broken rollout: nodes that swapped: {tried:?}");
    assert_eq!(tried.len(), 1, "{:?}", w.busy);
    assert!(!w2.busy.iter().any(|b| *b), "a node moved while halted");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.bus.manager_prop("InstalledVersion"), "4.4.5");
        if i != tried[0] {
            assert_eq!(binary(n), before[i], "node {i} swapped the broken release");
        }
    }
    let st: serde_json::Value =
        serde_json::from_str(&fleet_ok(&nodes[2], &["status", "--json"])).unwrap();
    assert_eq!(st["quorum"], true, "{st}");
    assert_eq!(st["bad"][0]["version"], "4.4.6", "{st}");
    assert!(
        st["halt"]["reason"]
            .as_str()
            .unwrap()
            .contains("4.4.6 failed on"),
        "{st}"
    );
    assert_eq!(st["members"].as_array().unwrap().len(), 3, "{st}");
    let refused = fleet(&nodes[0], &["rollout", "4.4.6", "--package", "PydioHome"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("halted"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Resume, and a new good target with a canary soak of 4 s: the second node's swap comes
    // no sooner than the soak after the first is healthy.
    fleet_ok(&nodes[0], &["resume"]);
    let refused = fleet(&nodes[0], &["rollout", "4.4.6", "--package", "PydioHome"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("marked bad"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    fleet_ok(
        &nodes[0],
        &[
            "rollout",
            "4.4.7",
            "--max-parallel",
            "3",
            "--canary-soak",
            "4s",
            "--package",
            "PydioHome",
        ],
    );
    let w = watch_rollout(&nodes, "4.4.7", || false);
    let mut at: Vec<Instant> = w.reached.iter().map(|t| t.unwrap()).collect();
    at.sort();
    let gap = at[1] - at[0];
    println!("canary: the second node ran 4.4.7 {gap:?} after the first (soak 4 s)");
    // The soak is counted in whole seconds from the canary's report.
    assert!(gap >= Duration::from_secs(3), "{gap:?}");
    // Each node gives its slot back once its job has ended.
    let mut st = serde_json::Value::Null;
    wait_until(Duration::from_secs(10), "every slot given back", || {
        st = serde_json::from_str(&fleet_ok(&nodes[2], &["status", "--json"])).unwrap();
        st["slots"].as_array().unwrap().is_empty()
    });
    assert_eq!(st["canary"]["version"], "4.4.7", "{st}");
}

#[test]
fn a_dead_agent_frees_its_slot_by_its_lease_and_its_outcome_waits_for_it() {
    let etcd = EtcdCluster::start(false);
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| node(&etcd, n)).collect();
    fleet_ok(&nodes[0], &["rollout", "4.4.5", "--package", "PydioHome"]);
    // The first node past its swap: its agent is killed there (kill -9).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (holder, killed_at) = loop {
        let swapped = nodes.iter().position(|n| {
            matches!(
                n.bus.manager_prop("State").as_str().unwrap_or_default(),
                "restarting" | "health-check"
            )
        });
        if let Some(i) = swapped {
            nodes[i].kill_agent();
            break (i, Instant::now());
        }
        assert!(Instant::now() < deadline, "no node reached its swap");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Its daemon finishes the update without the agent, and keeps the outcome.
    wait_until(
        Duration::from_secs(30),
        "the holder's update to end",
        || {
            nodes[holder].bus.manager_prop("InstalledVersion") == "4.4.5"
                && nodes[holder].bus.manager_prop("State") == "idle"
        },
    );
    wait_until(Duration::from_secs(10), "the kept report", || {
        state_file(&nodes[holder]).contains("\"fleet_report\": {")
    });
    // The slot frees when the dead agent's lease ends (TTL 3 s): the next node swaps.
    let others: Vec<usize> = (0..3).filter(|i| *i != holder).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let next = loop {
        if others.iter().any(|i| {
            matches!(
                nodes[*i]
                    .bus
                    .manager_prop("State")
                    .as_str()
                    .unwrap_or_default(),
                "applying" | "restarting" | "health-check"
            )
        }) {
            break killed_at.elapsed();
        }
        assert!(Instant::now() < deadline, "no other node got the slot");
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "kill -9 of the slot holder's agent to the next node's swap: {next:?} (lease TTL 3 s)"
    );
    assert!(next <= Duration::from_secs(3 + 5), "{next:?}");
    wait_until(Duration::from_secs(60), "every node on 4.4.5", || {
        nodes
            .iter()
            .all(|n| n.bus.manager_prop("InstalledVersion") == "4.4.5")
    });
    // The agent comes back: the daemon hands it the kept outcome.
    nodes[holder].agent = start_agent(&nodes[holder].env, &nodes[holder].bus);
    wait_until(Duration::from_secs(15), "the kept report taken", || {
        state_file(&nodes[holder]).contains("\"fleet_report\": null")
    });
    wait_until(Duration::from_secs(10), "every slot given back", || {
        let st: serde_json::Value =
            serde_json::from_str(&fleet_ok(&nodes[0], &["status", "--json"])).unwrap();
        st["slots"].as_array().unwrap().is_empty()
    });
}

#[test]
fn without_quorum_no_node_starts_and_the_rollout_resumes_by_itself() {
    let mut etcd = EtcdCluster::start(false);
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| node(&etcd, n)).collect();
    for n in &mut nodes {
        n.kill_agent();
    }
    fleet_ok(&nodes[0], &["rollout", "4.4.5", "--package", "PydioHome"]);
    etcd.kill(1);
    etcd.kill(2);
    // Within the member's election timeout it knows it has no leader.
    let mut err = String::new();
    wait_until(Duration::from_secs(10), "status to say no quorum", || {
        let out = fleet(&nodes[0], &["status"]);
        err = String::from_utf8_lossy(&out.stderr).to_string();
        !out.status.success() && err.contains("no quorum")
    });
    for n in &mut nodes {
        n.agent = Command::new(env!("CARGO_BIN_EXE_cells-updater"))
            .args(["--bus-address", &n.bus.address, "--root"])
            .arg(n.env.root.path())
            .args(["fleet", "agent"])
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(n.env.root.path().join("daemon-agent.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
    }
    // 5 s without quorum: nothing moves, and an admin's update fails closed.
    let w = watch_rollout(&nodes, "4.4.5", {
        let start = Instant::now();
        move || start.elapsed() > Duration::from_secs(5)
    });
    assert!(!w.busy.iter().any(|b| *b), "a node moved without quorum");
    for n in &nodes {
        assert_eq!(n.bus.manager_prop("InstalledVersion"), "4.4.2");
    }
    let j = update(&nodes[1], "4.4.5");
    wait_until(Duration::from_secs(30), "the update to fail", || {
        job(&nodes[1], &j, "State") == "failed"
    });
    assert_eq!(
        job(&nodes[1], &j, "Error"),
        "com.pydio.CellsUpdater1.Error.FleetUnavailable"
    );
    // Quorum back: the agents join and the rollout goes on by itself.
    etcd.restart(1);
    etcd.restart(2);
    let w = watch_rollout(&nodes, "4.4.5", || false);
    assert!(w.most <= 1, "{}", w.most);
}

#[test]
fn an_agent_with_no_endpoints_joins_the_etcd_the_cells_unit_names() {
    let etcd = EtcdCluster::start(false);
    let url = etcd.endpoints()[0].replace("http://", "etcd://");
    let n = node_with_unit(&url);
    wait_until(Duration::from_secs(15), "the node's record", || {
        let out = etcd.etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            "/mycells/cells-updater/gate/nodes/",
        ]);
        String::from_utf8_lossy(&out.stdout).contains("nodes/solo")
    });
    let log = std::fs::read_to_string(n.env.root.path().join("daemon-agent.log")).unwrap();
    assert!(
        log.contains("etcd from cells.service Environment=CELLS_REGISTRY"),
        "{log}"
    );
    // doctor says where the endpoints came from, that etcd and the agent answer, and that
    // this node's heartbeat is there.
    let out = Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(["--bus-address", &n.bus.address, "--root"])
        .arg(n.env.root.path())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    let fleet = doctor_lines(&String::from_utf8_lossy(&out.stdout), "fleet");
    println!("doctor: {fleet:?}");
    for want in [
        "ok node solo of cluster gate, etcd http://127.0.0.1",
        "(from cells.service Environment=CELLS_REGISTRY)",
        "ok the fleet agent is on the bus",
        "ok etcd answers: 3 member(s), leader m",
        "ok this node's heartbeat is",
    ] {
        assert!(fleet.iter().any(|l| l.contains(want)), "{want}: {fleet:?}");
    }
}

/// One node whose `[fleet]` names no endpoints; its cells.service names `url`/mycells.
fn node_with_unit(url: &str) -> Node {
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.5", "ok", false)]);
    let dir = env.root.path().join("etc/systemd/system");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cells.service"),
        format!(
            "[Service]\nUser=pydio\nEnvironment=CELLS_WORKING_DIR=/var/cells \
             CELLS_REGISTRY={url}/mycells\nExecStart=/opt/pydio/bin/cells start\n"
        ),
    )
    .unwrap();
    env.write_daemon_config(
        "[fleet]\ncluster = \"gate\"\nnode = \"solo\"\nlease_ttl = \"3s\"\ntimeout = \"2s\"\n",
    );
    let bus = PrivateBus::start();
    let daemon = env.start_fake_unit_daemon(&bus);
    let agent = start_agent(&env, &bus);
    Node {
        env,
        bus,
        _daemon: daemon,
        agent,
    }
}

#[test]
fn a_local_user_posing_as_the_agent_grants_no_slot() {
    let etcd = EtcdCluster::start(false);
    let mut n = node(&etcd, "n1");
    n.kill_agent();
    // uid 1 takes the agent's name (a bus without the packaged policy lets it) and grants
    // every slot.
    let exe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/debug/examples/hostile_client");
    assert!(exe.exists(), "cargo build --examples builds hostile_client");
    n.agent = Command::new("setpriv")
        .args(["--reuid=1", "--regid=1", "--clear-groups"])
        .arg(&exe)
        .args(["--address", &n.bus.address, "fake-agent"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the impostor's name", || {
        n.bus.name_has_owner("com.pydio.CellsUpdater1.Fleet")
    });
    let before = binary(&n);
    let j = update(&n, "4.4.5");
    wait_until(Duration::from_secs(30), "the update to end", || {
        job(&n, &j, "State") != "running"
    });
    assert_eq!(
        job(&n, &j, "Error"),
        "com.pydio.CellsUpdater1.Error.FleetUnavailable"
    );
    let msg = job(&n, &j, "Message");
    assert!(msg.contains("owned by uid 1"), "{msg}");
    assert_eq!(binary(&n), before, "the impostor's slot let a swap through");
    assert_eq!(n.bus.manager_prop("InstalledVersion"), "4.4.2");
}

#[test]
fn a_rollout_over_tls_with_client_certificates_and_a_node_without_one() {
    let etcd = EtcdCluster::start(true);
    let c = etcd.certs.as_ref().unwrap();
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    let tls = format!(
        "endpoints = [{}]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        endpoints.join(", "),
        c.ca,
        c.client_crt,
        c.client_key
    );
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node_with(n, &tls))
        .collect();
    fleet_ok(&nodes[0], &["rollout", "4.4.5", "--package", "PydioHome"]);
    let w = watch_rollout(&nodes, "4.4.5", || false);
    println!("TLS rollout: at most {} node(s) at once", w.most);
    assert_eq!(w.most, 1);
    // A node with the CA but no client certificate: its agent says why and joins nothing;
    // its daemon installs nothing (fail closed).
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.5", "ok", false)]);
    env.write_daemon_config(&format!(
        "[fleet]\nendpoints = [{}]\nca = {:?}\ncluster = \"gate\"\nnode = \"n4\"\n\
         lease_ttl = \"3s\"\ntimeout = \"2s\"\n",
        endpoints.join(", "),
        c.ca
    ));
    let bus = PrivateBus::start();
    let _daemon = env.start_fake_unit_daemon(&bus);
    let log_path = env.root.path().join("daemon-agent.log");
    let _agent = Killed(
        Command::new(env!("CARGO_BIN_EXE_cells-updater"))
            .args(["--bus-address", &bus.address, "--root"])
            .arg(env.root.path())
            .args(["fleet", "agent"])
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(20), "the agent to say why", || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains("etcd did not answer")
    });
    assert!(!bus.name_has_owner("com.pydio.CellsUpdater1.Fleet"));
    let out = fleet(
        &Node {
            env,
            bus,
            _daemon,
            agent: Command::new("true").spawn().unwrap(),
        },
        &["status"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcd did not answer"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn garbage_in_the_target_moves_nothing_and_crashes_nothing() {
    let etcd = EtcdCluster::start(false);
    let mut n = node(&etcd, "n1");
    let before = binary(&n);
    let put = etcd.etcdctl(&[
        "put",
        "/cells-updater/gate/target",
        "{\"format\":1,\"version\":\"\u{1b}[2J4.4.5\"}",
    ]);
    assert!(put.status.success());
    // Two polls go by: the agent reads it, refuses it, and stays up.
    std::thread::sleep(Duration::from_secs(5));
    assert!(n.agent.try_wait().unwrap().is_none(), "the agent died");
    assert_eq!(binary(&n), before);
    assert_eq!(n.bus.manager_prop("State"), "idle");
    let table = fleet_ok(&n, &["status"]);
    assert!(
        table.contains("Unreadable: the etcd key /cells-updater/gate/target"),
        "{table}"
    );
    assert!(!table.contains('\u{1b}'), "{table}");
    let log = std::fs::read_to_string(n.env.root.path().join("daemon-agent.log")).unwrap();
    assert!(log.contains("/cells-updater/gate/target"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "the agent's log carries the escape"
    );
    // A good target replaces it: the same agent moves its node.
    fleet_ok(&n, &["rollout", "4.4.5", "--package", "PydioHome"]);
    wait_until(Duration::from_secs(30), "the node on 4.4.5", || {
        n.bus.manager_prop("InstalledVersion") == "4.4.5"
    });
    n.kill_agent();
}

#[test]
fn an_etcd_writer_cannot_widen_a_rollout_past_each_nodes_limit() {
    let etcd = EtcdCluster::start(false);
    let nodes: Vec<Node> = ["n1", "n2", "n3"].iter().map(|n| node(&etcd, n)).collect();
    // Written straight into etcd: every node at once, outside windows, no soak.
    let out = etcd.etcdctl(&[
        "put",
        "/cells-updater/gate/target",
        r#"{"format":1,"version":"4.4.5","package":"PydioHome","max_parallel":64,"canary_soak":0,"now":true,"by":"intruder","at":0}"#,
    ]);
    assert!(out.status.success());
    let w = watch_rollout(&nodes, "4.4.5", || false);
    println!(
        "target with max_parallel 64 on nodes limited to 1: at most {} at once",
        w.most
    );
    assert_eq!(w.most, 1, "the writer widened the rollout");
}

#[test]
fn a_verdict_etcd_could_not_take_is_kept_and_written_when_quorum_returns() {
    let mut etcd = EtcdCluster::start(false);
    let nodes: Vec<Node> = ["n1"].iter().map(|n| node(&etcd, n)).collect();
    let n = &nodes[0];
    // The broken release takes the slot, swaps, and fails its health check while etcd has
    // lost its quorum.
    let j = update(n, "4.4.6");
    wait_until(Duration::from_secs(30), "the swap", || {
        matches!(
            n.bus.manager_prop("State").as_str().unwrap_or_default(),
            "restarting" | "health-check" | "rolling-back"
        )
    });
    etcd.kill(1);
    etcd.kill(2);
    wait_until(Duration::from_secs(60), "the job to end", || {
        job(n, &j, "State") != "running"
    });
    assert_eq!(
        job(n, &j, "Error"),
        "com.pydio.CellsUpdater1.Error.UnitFailed"
    );
    wait_until(Duration::from_secs(15), "the kept verdict", || {
        let st = state_file(n);
        st.contains("\"fleet_report\": {") && st.contains("\"bad\": true")
    });
    // While it is kept, this node takes no new slot (the verdict goes first).
    let j2 = update(n, "4.4.5");
    wait_until(Duration::from_secs(60), "the second job to end", || {
        job(n, &j2, "State") != "running"
    });
    let msg = job(n, &j2, "Message");
    assert!(msg.contains("has not reached the cluster yet"), "{msg}");
    assert_eq!(n.bus.manager_prop("InstalledVersion"), "4.4.2");
    // Quorum back: the verdict and the halt are written.
    etcd.restart(1);
    etcd.restart(2);
    wait_until(
        Duration::from_secs(60),
        "bad/4.4.6 and the halt in etcd",
        || {
            let bad = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/cells-updater/gate/bad/"]);
            let halt = etcd.etcdctl(&["get", "/cells-updater/gate/halt", "--print-value-only"]);
            String::from_utf8_lossy(&bad.stdout).contains("bad/4.4.6")
                && String::from_utf8_lossy(&halt.stdout).contains("4.4.6 failed on n1")
        },
    );
}

#[test]
fn a_daemon_killed_after_its_grant_gets_its_slot_back_once_it_is_at_rest_again() {
    let etcd = EtcdCluster::start(false);
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.5", "ok", false)]);
    env.write_daemon_config(&format!(
        "[policy]\nhealth_settle = \"300ms\"\nhealth_timeout = \"10s\"\n\
         [fleet]\n{}cluster = \"gate\"\nnode = \"n1\"\nlease_ttl = \"3s\"\n\
         timeout = \"2s\"\n",
        endpoints(&etcd)
    ));
    let bus = PrivateBus::start();
    let port = free_port();
    // The daemon dies right after the grant, before its swap (a failpoint would do the same;
    // here: the slot seen in etcd).
    let mut first = start_daemon_on(&env, &bus, &port, &[]);
    let agent = Killed(start_agent(&env, &bus));
    let _j = update_on(&bus, "4.4.5");
    let slots = || {
        let out = etcd.etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            "/cells-updater/gate/slots/",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    wait_until(Duration::from_secs(30), "the grant", || !slots().is_empty());
    first.kill9();
    // While it is away the slot stays: its outcome (or its recovery's) is not known yet.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !slots().is_empty(),
        "the slot went before the node's outcome"
    );
    // Back, at rest: the agent gives the slot back (its live lease would keep it for ever).
    let _second = start_daemon_on(&env, &bus, &port, &[]);
    let back = Instant::now();
    wait_until(Duration::from_secs(15), "the slot given back", || {
        slots().is_empty()
    });
    println!(
        "daemon back at rest: slot given back in {:?}",
        back.elapsed()
    );
    drop(agent);
}

#[test]
fn a_grant_lost_before_the_swap_is_given_back_by_its_token() {
    let etcd = EtcdCluster::start(false);
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.5", "ok", false)]);
    env.write_daemon_config(&format!(
        "[fleet]\n{}cluster = \"gate\"\nnode = \"n1\"\nslot_wait = \"2s\"\ntimeout = \"2s\"\n",
        endpoints(&etcd)
    ));
    let bus = PrivateBus::start();
    let _daemon = start_daemon_on(&env, &bus, &free_port(), &[]);
    // An agent (as root) that grants, then loses every grant before the confirm, and prints
    // every report it gets.
    let exe = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/debug/examples/hostile_client");
    let mut fake = Killed(
        Command::new(&exe)
            .args(["--address", &bus.address, "fake-agent", "lossy"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = fake.0.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            l2.lock().unwrap().push(l);
        }
    });
    wait_until(Duration::from_secs(10), "the fake agent's name", || {
        bus.name_has_owner("com.pydio.CellsUpdater1.Fleet")
    });
    let before = std::fs::read(env.root.path().join("opt/pydio/bin/cells")).unwrap();
    let j = update_on(&bus, "4.4.5");
    wait_until(Duration::from_secs(30), "the job to end", || {
        bus.busctl_json(&["get-property", DEST, &j, JOB_IFACE, "State"])["data"] != "running"
    });
    assert_eq!(
        std::fs::read(env.root.path().join("opt/pydio/bin/cells")).unwrap(),
        before,
        "swapped without a confirmed slot"
    );
    // The job that never confirmed gives back whatever it was granted (grant 0: every slot
    // of this node under the agent's lease).
    wait_until(Duration::from_secs(5), "the give-back report", || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "report 4.4.5 0 0 false")
    });
}

/// A crash between the swap and the health check on a cluster node: the journal recorded the
/// slot, so the recovery at the next start reports the outcome (here the release fails its
/// health check: the verdict and the halt reach etcd).
#[cfg(feature = "failpoints")]
#[test]
fn recovery_after_a_crash_reports_the_interrupted_jobs_outcome() {
    let etcd = EtcdCluster::start(false);
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[("4.4.6", "exit", false)]);
    env.write_daemon_config(&format!(
        "[policy]\nhealth_settle = \"300ms\"\nhealth_timeout = \"10s\"\n\
         [fleet]\n{}cluster = \"gate\"\nnode = \"n1\"\nlease_ttl = \"3s\"\n\
         timeout = \"2s\"\n",
        endpoints(&etcd)
    ));
    let bus = PrivateBus::start();
    let cells = env.root.path().join("opt/pydio/bin/cells");
    let f = std::fs::File::open(&cells).unwrap();
    cells_updater::fcaps::set(
        std::os::fd::AsFd::as_fd(&f),
        Some(&cells_updater::fcaps::FileCaps::net_bind_service()),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let _first = DaemonProc::start_with_env(
        &bus,
        env.root.path(),
        &[
            ("CELLS_UPDATER_FAKE_UNIT", &port),
            ("CELLS_UPDATER_FAILPOINT", "apply-after-rename"),
        ],
    );
    let _agent = Killed(start_agent(&env, &bus));
    let _j = update_on(&bus, "4.4.6");
    wait_until(
        Duration::from_secs(60),
        "the daemon to die after its swap",
        || !bus.name_has_owner("com.pydio.CellsUpdater1"),
    );
    assert!(
        std::fs::read_to_string(env.root.path().join("var/lib/cells-updater/journal.json"))
            .unwrap()
            .contains("\"fleet_slot\": 0"),
        "the journal does not record the slot"
    );
    let _second =
        DaemonProc::start_with_env(&bus, env.root.path(), &[("CELLS_UPDATER_FAKE_UNIT", &port)]);
    wait_until(
        Duration::from_secs(60),
        "the recovery's verdict in etcd",
        || {
            let bad = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/cells-updater/gate/bad/"]);
            let halt = etcd.etcdctl(&["get", "/cells-updater/gate/halt", "--print-value-only"]);
            String::from_utf8_lossy(&bad.stdout).contains("bad/4.4.6")
                && String::from_utf8_lossy(&halt.stdout).contains("4.4.6 failed on n1")
        },
    );
    wait_until(Duration::from_secs(30), "the old release back", || {
        bus.manager_prop("InstalledVersion") == "4.4.2"
    });
}
