//! Cluster nodes for the fleet tests and benchmarks: each a daemon on its own private bus
//! (the `fake-unit` stand-in runs its Cells), its own update server and its own fleet agent,
//! all joined to one real etcd.

use super::bus::*;
use super::etcd::EtcdCluster;
use super::*;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const JOB_IFACE: &str = "com.pydio.CellsUpdater1.Job";

pub struct Node {
    pub env: StageEnv,
    pub bus: PrivateBus,
    pub _daemon: DaemonProc,
    pub agent: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl Node {
    pub fn kill_agent(&mut self) {
        self.agent.kill().unwrap();
        self.agent.wait().unwrap();
    }
}

pub fn node(etcd: &EtcdCluster, name: &str) -> Node {
    node_with(name, &endpoints(etcd))
}

/// `endpoints = [...]` of `etcd`, a line of `[fleet]`.
pub fn endpoints(etcd: &EtcdCluster) -> String {
    let endpoints: Vec<String> = etcd.endpoints().iter().map(|e| format!("{e:?}")).collect();
    format!("endpoints = [{}]\n", endpoints.join(", "))
}

/// A node whose `[fleet]` section has `fleet` (endpoints, or none) besides the test's
/// settings.
pub fn node_with(name: &str, fleet: &str) -> Node {
    let env = StageEnv::new(&[&keys().rsa_pkcs1_pub]);
    env.offer(&[
        ("4.4.5", "ok", false),
        ("4.4.6", "exit", false),
        ("4.4.7", "ok", false),
    ]);
    env.write_daemon_config(&format!(
        "[policy]\nhealth_settle = \"300ms\"\nhealth_timeout = \"10s\"\n\
         [fleet]\n{fleet}cluster = \"gate\"\nnode = \"{name}\"\nlease_ttl = \"3s\"\n\
         slot_wait = \"60s\"\ntimeout = \"2s\"\npoll = \"2s\"\n"
    ));
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

/// Starts a daemon on `bus` whose fake Cells serves on `port` (the same port across restarts,
/// so a new daemon finds the Cells the last one started), with `env` besides.
pub fn start_daemon_on(
    env: &StageEnv,
    bus: &PrivateBus,
    port: &str,
    extra: &[(&str, &str)],
) -> DaemonProc {
    let cells = env.root.path().join("opt/pydio/bin/cells");
    let f = std::fs::File::open(&cells).unwrap();
    cells_updater::fcaps::set(
        std::os::fd::AsFd::as_fd(&f),
        Some(&cells_updater::fcaps::FileCaps::net_bind_service()),
    )
    .unwrap();
    let mut all = vec![("CELLS_UPDATER_FAKE_UNIT", port)];
    all.extend_from_slice(extra);
    DaemonProc::start_with_env(bus, env.root.path(), &all)
}

/// A child killed when dropped (a panicking test leaves no process behind).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_agent(env: &StageEnv, bus: &PrivateBus) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.root.path().join("daemon-agent.log"))
        .unwrap();
    let agent = Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(["--bus-address", &bus.address, "--root"])
        .arg(env.root.path())
        .args(["fleet", "agent"])
        .stderr(log)
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the agent's name", || {
        bus.name_has_owner("com.pydio.CellsUpdater1.Fleet")
    });
    agent
}

/// `cells-updater fleet ARGS` with node `n`'s configuration.
pub fn fleet(n: &Node, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cells-updater"))
        .args(["--bus-address", &n.bus.address, "--root"])
        .arg(n.env.root.path())
        .arg("fleet")
        .args(args)
        .output()
        .unwrap()
}

pub fn fleet_ok(n: &Node, args: &[&str]) -> String {
    let out = fleet(n, args);
    assert!(
        out.status.success(),
        "fleet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What a rollout did, sampled every 50 ms until every node runs `version` or `stop` says
/// so: the most nodes seen between their swap and healthy at once, which nodes ever were,
/// and when each first ran `version`.
pub struct Watched {
    pub most: usize,
    pub busy: Vec<bool>,
    pub reached: Vec<Option<Instant>>,
}

pub fn watch_rollout(nodes: &[Node], version: &str, mut stop: impl FnMut() -> bool) -> Watched {
    let mut w = Watched {
        most: 0,
        busy: vec![false; nodes.len()],
        reached: vec![None; nodes.len()],
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut busy = 0;
        for (i, n) in nodes.iter().enumerate() {
            let state = n.bus.manager_prop("State");
            if matches!(
                state.as_str().unwrap_or_default(),
                "applying" | "restarting" | "health-check" | "rolling-back"
            ) {
                busy += 1;
                w.busy[i] = true;
            }
            if w.reached[i].is_none() && n.bus.manager_prop("InstalledVersion") == version {
                w.reached[i] = Some(Instant::now());
            }
        }
        w.most = w.most.max(busy);
        if w.reached.iter().all(Option::is_some) || (busy == 0 && stop()) {
            return w;
        }
        assert!(Instant::now() < deadline, "the rollout did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `Update(version)` on a node: the job's path.
pub fn update(n: &Node, version: &str) -> String {
    update_on(&n.bus, version)
}

pub fn job(n: &Node, job: &str, prop: &str) -> String {
    n.bus
        .busctl_json(&["get-property", DEST, job, JOB_IFACE, prop])["data"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn binary(n: &Node) -> Vec<u8> {
    std::fs::read(n.env.root.path().join("opt/pydio/bin/cells")).unwrap()
}

/// Samples the three jobs every 50 ms until they all end: the most nodes seen at once
/// between swap and healthy, whether one was seen waiting, and the end (state, error).
pub fn sample(nodes: &[Node], jobs: &[String]) -> (usize, bool, Vec<(String, String)>) {
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

pub fn state_file(n: &Node) -> String {
    std::fs::read_to_string(n.env.root.path().join("var/lib/cells-updater/state.json"))
        .unwrap_or_default()
}
