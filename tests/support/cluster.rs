//! A Cells cluster on real systemd: three booted nodes (`systemd-nspawn -b`, each on its own
//! overlay of the cached rootfs, so its disk survives a power cut) in one network namespace
//! the test creates, with a 3-member etcd and one update server in the same namespace. Node
//! `i` (1-based) runs its Cells on `127.0.0.(i+1):443` as `cells.service` (user pydio, the
//! capability on its binary), cells-updater installed by `dist/install.sh`, and the packaged
//! `cells-updater-fleet.service` enabled. Nothing leaves loopback.

use super::etcd::EtcdCluster;
use super::sandbox::{self, Sandbox};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

/// The lease TTL every node's agent uses: short, so a power cut frees its slot quickly.
pub const TTL: Duration = Duration::from_secs(3);

/// How long each node's Cells takes from its start to answering: long enough for the
/// watcher (every 100 ms) to see every restart.
pub const START_MS: u64 = 1000;

/// The releases the update server offers: two good ones and a broken one between them.
pub const RELEASES: &[(&str, &str)] = &[("4.4.5", "ok"), ("4.4.6", "exit"), ("4.4.7", "ok")];

/// A network namespace made with `ip netns add` (loopback up), deleted when dropped.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn create(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        for args in [
            vec!["netns", "add", name],
            vec!["-n", name, "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Netns {
            name: name.into(),
            path: PathBuf::from(format!("/run/netns/{name}")),
        }
    }

    /// Runs `f` on a thread that has joined the namespace (setns acts on one thread only).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap()
    }

    /// Starts `f` on a thread inside the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = std::fs::File::open(&self.path).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One node: its container and its Cells address.
pub struct ClusterNode {
    pub sb: Sandbox,
    pub name: String,
    /// Where its Cells listens (`127.0.0.N:443`).
    pub addr: SocketAddr,
    /// Its configuration (config.d/50-test.toml) without and with `[fleet]`.
    plain: String,
    fleet: String,
}

impl ClusterNode {
    /// Takes the node out of the fleet (no `[fleet]`, agent stopped, daemon restarted): its
    /// updates are a single node's again. [`ClusterNode::join`] puts it back.
    pub fn leave(&self) {
        self.configure(&self.plain, "stop");
    }

    pub fn join(&self) {
        self.configure(&self.fleet, "start");
        self.sb.wait_for(
            Duration::from_secs(30),
            "the fleet agent",
            "busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
             NameHasOwner s com.pydio.CellsUpdater1.Fleet | grep -q true",
        );
    }

    fn configure(&self, config: &str, agent: &str) {
        self.sb.write(
            "/etc/cells-updater/config.d/50-test.toml",
            config.as_bytes(),
            0o644,
        );
        self.sb.sh(&format!(
            "systemctl stop cells-updater-fleet.service cells-updater.service \
             && systemctl {agent} cells-updater-fleet.service"
        ));
    }

    pub fn sha(&self) -> String {
        self.sb
            .sh("sha256sum /opt/pydio/bin/cells | cut -d' ' -f1")
            .trim()
            .to_string()
    }

    /// A Manager property as `busctl` prints it (`s "idle"`).
    pub fn prop(&self, name: &str) -> String {
        self.sb
            .try_sh(&format!(
                "busctl get-property com.pydio.CellsUpdater1 /com/pydio/CellsUpdater1 \
                 com.pydio.CellsUpdater1.Manager {name}"
            ))
            .1
            .trim()
            .to_string()
    }

    /// `cells-updater fleet ARGS` on this node, as root: (success, stdout, stderr).
    pub fn fleet(&self, args: &str) -> (bool, String, String) {
        self.sb.try_sh(&format!("cells-updater fleet {args}"))
    }

    pub fn fleet_ok(&self, args: &str) -> String {
        let (ok, out, err) = self.fleet(args);
        assert!(ok, "{}: fleet {args}: {out}{err}", self.name);
        out
    }

    pub fn agent_up(&self) -> bool {
        self.sb
            .try_sh(
                "busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
                 NameHasOwner s com.pydio.CellsUpdater1.Fleet | grep -q true",
            )
            .0
    }

    /// The node's logs, for a failure message.
    pub fn logs(&self) -> String {
        self.sb
            .try_sh(
                "journalctl --no-pager -o short-monotonic -u cells-updater -u cells-updater-fleet \
                 -u cells -u cells-updater-recover | tail -n 60",
            )
            .1
    }
}

/// The version served at `addr` (an HTTP GET), `None` when nothing answers in 500 ms. Call it
/// inside the cluster's namespace.
pub fn served(addr: SocketAddr) -> Option<String> {
    match probe(addr) {
        Probe::Up(v) => Some(v),
        Probe::Refused | Probe::Unknown => None,
    }
}

/// What one look at a node's Cells found.
pub enum Probe {
    /// It answered with this version.
    Up(String),
    /// Nothing listens (the kernel refused the connection): the node is down.
    Refused,
    /// No answer in time, or a broken one: a slow sample on a loaded machine, not evidence.
    Unknown,
}

pub fn probe(addr: SocketAddr) -> Probe {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Probe::Refused,
        Err(_) => return Probe::Unknown,
    };
    let mut text = String::new();
    let read = s
        .set_read_timeout(Some(Duration::from_millis(500)))
        .and_then(|_| s.write_all(b"GET / HTTP/1.0\r\n\r\n"))
        .and_then(|_| s.read_to_string(&mut text));
    match (read, text.split("\r\n\r\n").nth(1)) {
        (Ok(_), Some(body)) if !body.trim().is_empty() => Probe::Up(body.trim().to_string()),
        _ => Probe::Unknown,
    }
}

/// A child process killed when dropped.
pub struct Owned(pub Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Cluster {
    // Dropped in this order: the nodes go down before etcd and the namespace.
    pub nodes: Vec<ClusterNode>,
    pub server: Owned,
    pub etcd: EtcdCluster,
    pub releases: tempfile::TempDir,
    pub netns: Netns,
    _guard: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Three nodes on Cells 4.4.2 with their agents joined, etcd on TLS with client
    /// certificates when `tls` (the agents get theirs through `LoadCredential=`).
    pub fn start(tls: bool) -> Cluster {
        Self::start_with(tls, RELEASES)
    }

    /// [`Cluster::start`] with the update server offering `releases` (version, fake mode).
    pub fn start_with(tls: bool, offered: &[(&str, &str)]) -> Cluster {
        let guard = sandbox::lock();
        let started = Instant::now();
        let netns = Netns::create("cu-fleet");
        let etcd = EtcdCluster::start_in(tls, Some(&netns.path));
        let releases = tempfile::tempdir().unwrap();
        let server = serve(&netns, releases.path(), offered);
        let mut c = Cluster {
            nodes: Vec::new(),
            server,
            etcd,
            releases,
            netns,
            _guard: guard,
        };
        for i in 1..=3 {
            let node = c.boot_node(i);
            c.nodes.push(node);
        }
        for n in &c.nodes {
            n.sb.wait_for(Duration::from_secs(30), "the fleet agent", "busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s com.pydio.CellsUpdater1.Fleet | grep -q true");
        }
        eprintln!(
            "cluster of 3 up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        c
    }

    fn boot_node(&self, i: usize) -> ClusterNode {
        let name = format!("n{i}");
        let addr: SocketAddr = format!("127.0.0.{}:443", i + 1).parse().unwrap();
        let sb = Sandbox::up_node(&format!("fleet-{name}"), &self.netns.path);
        let k = super::keys();
        sb.install_build();
        sb.install_fake_cells("4.4.2", &[&k.rsa_pkcs1_pub]);
        sb.write(
            "/etc/systemd/system/cells.service.d/10-address.conf",
            format!(
                "[Service]\nEnvironment=FAKE_CELLS_ADDR={} FAKE_CELLS_START_MS={START_MS}\n",
                addr.ip()
            )
            .as_bytes(),
            0o644,
        );
        // journald in memory: a persistent journal grows the overlay on every boot.
        sb.write(
            "/etc/systemd/journald.conf.d/10-volatile.conf",
            b"[Journal]\nStorage=volatile\n",
            0o644,
        );
        sb.sh(
            "setcap cap_net_bind_service=+ep /opt/pydio/bin/cells && systemctl daemon-reload \
             && systemctl enable --now cells.service",
        );
        let endpoints: Vec<String> = self
            .etcd
            .endpoints()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        let mut fleet = format!(
            "[fleet]\nendpoints = [{}]\ncluster = \"c\"\nnode = \"{name}\"\nlease_ttl = \"{}s\"\n\
             slot_wait = \"120s\"\ntimeout = \"2s\"\npoll = \"2s\"\n",
            endpoints.join(", "),
            TTL.as_secs()
        );
        if let Some(certs) = &self.etcd.certs {
            // Root's copies (the CLI's), handed to the agent by systemd.
            for (from, to) in [
                (&certs.ca, "ca.pem"),
                (&certs.client_crt, "client.pem"),
                (&certs.client_key, "client.key"),
            ] {
                sb.write(
                    &format!("/etc/cells-updater/fleet/{to}"),
                    &std::fs::read(from).unwrap(),
                    0o600,
                );
            }
            fleet.push_str(
                "ca = \"/etc/cells-updater/fleet/ca.pem\"\ncert = \"/etc/cells-updater/fleet/client.pem\"\n\
                 key = \"/etc/cells-updater/fleet/client.key\"\n",
            );
            sb.write(
                "/etc/systemd/system/cells-updater-fleet.service.d/50-tls.conf",
                b"[Service]\nLoadCredential=etcd-ca:/etc/cells-updater/fleet/ca.pem\n\
                  LoadCredential=etcd-cert:/etc/cells-updater/fleet/client.pem\n\
                  LoadCredential=etcd-key:/etc/cells-updater/fleet/client.key\n",
                0o644,
            );
        }
        let plain = format!(
            "[server]\nurl = \"http://127.0.0.1:8080/\"\n[policy]\nhealth_settle = \"1s\"\n\
             health_timeout = \"20s\"\nhealth_url = \"http://{addr}/\"\n"
        );
        let fleet = format!("{plain}{fleet}");
        sb.write(
            "/etc/cells-updater/config.d/50-test.toml",
            fleet.as_bytes(),
            0o644,
        );
        sb.sh("systemctl daemon-reload && systemctl enable --now cells-updater-fleet.service");
        let node = ClusterNode {
            sb,
            name,
            addr,
            plain,
            fleet,
        };
        node.sb.wait_for(
            Duration::from_secs(10),
            "cells on its address",
            &format!("curl -sf http://{addr}/ | grep -qx 4.4.2"),
        );
        node
    }

    /// `sha256` of the release file `version`'s binary.
    pub fn release_sha(&self, version: &str) -> String {
        let out = Command::new("sha256sum")
            .arg(self.releases.path().join(format!("cells-{version}")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// Waits until every node serves `version` and is at rest, at most `limit`.
    pub fn wait_all_on(&self, version: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let addrs = self.addrs();
            let served: Vec<Option<String>> = self
                .netns
                .run(move || addrs.into_iter().map(served).collect());
            let done = served.iter().all(|s| s.as_deref() == Some(version))
                && self.nodes.iter().all(|n| n.prop("CurrentJob") == "o \"/\"");
            if done {
                return;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {}\n{}", n.name, n.logs()))
                    .collect();
                panic!(
                    "not every node on {version} after {limit:?}: {served:?}\n{}\n{}",
                    self.nodes[0].fleet("status").1,
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The update server, in the namespace on 127.0.0.1:8080, offering `releases` (signed by
/// the test key) from `dir`.
fn serve(netns: &Netns, dir: &Path, releases: &[(&str, &str)]) -> Owned {
    let k = super::keys();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.path.display()))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/examples/update_server"))
        .args(["--listen", "127.0.0.1:8080"]);
    for (version, mode) in releases {
        let bytes = super::fake_cells(version, mode);
        let file = dir.join(format!("cells-{version}"));
        std::fs::write(&file, &bytes).unwrap();
        let (sum, sig) = super::sign(&bytes, &k.rsa);
        cmd.arg("--release")
            .arg(version)
            .arg(&file)
            .arg(sum)
            .arg(sig);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let server = Owned(child);
    let up = netns.run(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect("127.0.0.1:8080").is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(up, "the update server did not start");
    server
}

/// What a watcher saw: every 100 ms it asks each node's Cells for its version.
pub struct Watch {
    /// The most nodes refusing at one sample.
    pub most_down: usize,
    /// Per node, whether it ever refused.
    pub ever_down: Vec<bool>,
    /// Per node, how many times it went from answering (or the start) to refusing.
    pub restarts: Vec<usize>,
    last_up: Vec<bool>,
    /// Per node, every version it served, in order, without repeats.
    pub versions: Vec<Vec<String>>,
    pub samples: usize,
}

/// A watcher running in the cluster's namespace until stopped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Watch>,
}

impl Watcher {
    pub fn start(c: &Cluster) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs = c.addrs();
        let flag = stop.clone();
        let handle = c.netns.spawn(move || {
            let mut w = Watch {
                most_down: 0,
                ever_down: vec![false; addrs.len()],
                restarts: vec![0; addrs.len()],
                last_up: vec![true; addrs.len()],
                versions: vec![Vec::new(); addrs.len()],
                samples: 0,
            };
            while !flag.load(Ordering::SeqCst) {
                let tick = Instant::now();
                // Ask all at once: one sample is one moment.
                let seen: Vec<Probe> = std::thread::scope(|s| {
                    let hs: Vec<_> = addrs.iter().map(|a| s.spawn(|| probe(*a))).collect();
                    hs.into_iter().map(|h| h.join().unwrap()).collect()
                });
                let down = seen.iter().filter(|v| matches!(v, Probe::Refused)).count();
                w.most_down = w.most_down.max(down);
                for (i, v) in seen.into_iter().enumerate() {
                    match v {
                        Probe::Refused => {
                            if w.last_up[i] {
                                w.restarts[i] += 1;
                            }
                            w.ever_down[i] = true;
                            w.last_up[i] = false;
                        }
                        Probe::Up(v) => {
                            w.last_up[i] = true;
                            if w.versions[i].last() != Some(&v) {
                                w.versions[i].push(v);
                            }
                        }
                        Probe::Unknown => {}
                    }
                }
                w.samples += 1;
                if let Some(rest) = Duration::from_millis(100).checked_sub(tick.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            w
        });
        Watcher { stop, handle }
    }

    pub fn stop(self) -> Watch {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}
