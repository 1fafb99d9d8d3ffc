//! A real 3-member etcd cluster on loopback (Debian's etcd-server), started by the test, each
//! member a background process in its own data directory; optionally on TLS with client
//! certificates made by the openssl CLI at test time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Certificates for a TLS cluster: a CA, one server/peer certificate for 127.0.0.1, and a
/// client certificate.
pub struct Certs {
    pub ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl {args}"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_certs(dir: &Path) -> Certs {
    openssl(
        dir,
        "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
         -subj /CN=test-ca -keyout ca.key -out ca.crt",
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        openssl(
            dir,
            &format!(
                "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN={name} \
                 -keyout {name}.key -out {name}.csr"
            ),
        );
        openssl(
            dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
                 -extfile {ext} -out {name}.crt"
            ),
        );
    }
    Certs {
        ca: dir.join("ca.crt"),
        server_crt: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_crt: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}

/// The cluster; its members are killed when it is dropped.
pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    /// (client port, peer port) per member.
    ports: Vec<(u16, u16)>,
    members: Vec<Option<Child>>,
    pub certs: Option<Certs>,
    token: String,
    /// The network namespace the members and etcdctl run in (`None`: the test's own).
    netns: Option<PathBuf>,
}

impl EtcdCluster {
    /// Three members, healthy (a leader elected) before it returns.
    pub fn start(tls: bool) -> EtcdCluster {
        Self::start_in(tls, None)
    }

    /// [`EtcdCluster::start`] in the network namespace `netns` (a cluster of booted nodes
    /// shares it), reached through `nsenter --net`.
    pub fn start_in(tls: bool, netns: Option<&Path>) -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = tls.then(|| make_certs(dir.path()));
        let ports = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut c = EtcdCluster {
            token: format!("t{}", std::process::id()),
            dir,
            ports,
            members: vec![None, None, None],
            certs,
            netns: netns.map(Path::to_path_buf),
        };
        for i in 0..3 {
            c.spawn(i, "new");
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    fn scheme(&self) -> &str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client URLs, member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|(c, _)| format!("{}://127.0.0.1:{c}", self.scheme()))
            .collect()
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let s = self.scheme().to_string();
        let (client, peer) = self.ports[i];
        let initial: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(j, (_, p))| format!("m{j}={s}://127.0.0.1:{p}"))
            .collect();
        let mut cmd = self.command("etcd");
        cmd.args([
            "--name",
            &format!("m{i}"),
            "--data-dir",
            &self.dir.path().join(format!("m{i}")).display().to_string(),
            "--listen-client-urls",
            &format!("{s}://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("{s}://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("{s}://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("{s}://127.0.0.1:{peer}"),
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-token",
            &self.token,
            "--initial-cluster-state",
            state,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ]);
        if let Some(c) = &self.certs {
            let p = |p: &PathBuf| p.display().to_string();
            cmd.args([
                "--client-cert-auth",
                "--trusted-ca-file",
                &p(&c.ca),
                "--cert-file",
                &p(&c.server_crt),
                "--key-file",
                &p(&c.server_key),
                "--peer-client-cert-auth",
                "--peer-trusted-ca-file",
                &p(&c.ca),
                "--peer-cert-file",
                &p(&c.server_crt),
                "--peer-key-file",
                &p(&c.server_key),
            ]);
        }
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd (Debian etcd-server: tests/deps.sh installs it)");
        self.members[i] = Some(child);
    }

    /// `etcdctl ARGS` against the cluster (with the client certificate on TLS).
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.command("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints().join(",")));
        if let Some(c) = &self.certs {
            cmd.arg(format!("--cacert={}", c.ca.display()))
                .arg(format!("--cert={}", c.client_crt.display()))
                .arg(format!("--key={}", c.client_key.display()));
        }
        cmd.args(args).output().unwrap()
    }

    /// `program` in the cluster's network namespace.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                // nsenter execs `program` (no fork for a network namespace): the child is it.
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(program);
                c
            }
        }
    }

    /// Waits until the cluster has a leader and answers a linearizable read.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let out = self.etcdctl(&["--command-timeout=1s", "get", "health-probe"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd is not healthy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
    }
}
