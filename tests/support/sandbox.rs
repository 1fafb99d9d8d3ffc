//! A real systemd (PID 1) and system bus in a `systemd-nspawn -b` container, booted from a
//! cached Debian rootfs with `--volatile=overlay` (tests/sandbox/systemd-sandbox.sh). The
//! repository is bound read-only at /src, so builds are installed with /src/dist/install.sh.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One container at a time per test binary: the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sandbox/systemd-sandbox.sh")
}

/// The cached rootfs, shared by every test and by the demo.
pub fn rootfs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sandbox/rootfs")
}

pub struct Sandbox {
    dir: PathBuf,
    pub leader: u32,
    /// For a container whose disk survives a power cut: the overlay it boots from.
    persistent: Option<PathBuf>,
    /// A network namespace the container joins instead of its own (a cluster's nodes).
    netns: Option<PathBuf>,
    _guard: Option<MutexGuard<'static, ()>>,
}

/// The lock every container of this test binary holds; a cluster holds it for its nodes.
pub fn lock() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sandbox {
    /// Boots a container named `name` (a fresh overlay over the cached rootfs).
    pub fn up(name: &str) -> Sandbox {
        let mut sb = Self::prepare(name, None, Some(lock()));
        sb.boot();
        sb
    }

    /// Boots a container whose disk survives a power cut: a host overlay of the cached rootfs
    /// with its own upper directory, booted read-write (`--volatile=overlay` would start every
    /// boot from the clean rootfs, and a reboot test could not fail).
    pub fn up_persistent(name: &str) -> Sandbox {
        let guard = lock();
        let merged = Self::overlay(name);
        let mut sb = Self::prepare(name, Some(merged), Some(guard));
        sb.boot();
        sb
    }

    /// A cluster node: like [`Sandbox::up_persistent`], in the network namespace `netns`
    /// (shared with the other nodes and etcd), under the lock its cluster holds.
    pub fn up_node(name: &str, netns: &Path) -> Sandbox {
        let merged = Self::overlay(name);
        let mut sb = Self::prepare(name, Some(merged), None);
        sb.netns = Some(netns.to_path_buf());
        sb.boot();
        sb
    }

    /// A fresh host overlay of the cached rootfs for container `name`: its merged directory.
    /// It lives beside the container's state directory, not in it: `systemd-sandbox.sh down`
    /// unmounts whatever is mounted under that directory, and a disk mounted there was gone
    /// at the next boot (which then built a whole rootfs into the bare mount point).
    fn overlay(name: &str) -> PathBuf {
        let state = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/sandbox")
            .join(name);
        let _ = Command::new(script()).arg("down").arg(&state).output();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/sandbox")
            .join(format!("{name}.disk"));
        let merged = dir.join("merged");
        let _ = Command::new("umount").arg(&merged).output();
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                rootfs().display(),
                dir.join("upper").display(),
                dir.join("work").display()
            ))
            .arg(&merged)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "overlay mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        merged
    }

    fn prepare(
        name: &str,
        persistent: Option<PathBuf>,
        guard: Option<MutexGuard<'static, ()>>,
    ) -> Sandbox {
        assert!(
            std::env::var_os("CELLS_UPDATER_TEST_TIER").is_none_or(|t| t != "fast"),
            "this test boots a container: tests/run.sh --fast runs only files that never do \
             (move it to a file of the full tier)"
        );
        assert!(
            nix::unistd::geteuid().is_root(),
            "booting systemd-nspawn needs root (.ci/run runs as root)"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/sandbox")
            .join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new(script()).arg("down").arg(&dir).output();
        Sandbox {
            dir,
            leader: 0,
            persistent,
            netns: None,
            _guard: guard,
        }
    }

    fn boot(&mut self) {
        let mut cmd = Command::new(script());
        cmd.arg("up")
            .arg(&self.dir)
            .arg("--")
            .arg(format!("--bind-ro={}:/src", env!("CARGO_MANIFEST_DIR")))
            // As on a real host, systemd may load its BPF programs: IPAddressDeny= and
            // IPAddressAllow= of the helpers' units then act (nspawn forbids bpf() by default,
            // and systemd then runs the unit without its IP filter).
            .args(["--system-call-filter=bpf", "--capability=CAP_BPF"]);
        match &self.persistent {
            Some(merged) => cmd
                .env("SANDBOX_ROOTFS", merged)
                .env("SANDBOX_PERSIST", "1"),
            None => cmd.env("SANDBOX_ROOTFS", rootfs()),
        };
        if let Some(ns) = &self.netns {
            // nspawn joins it (no --private-network): `ip netns exec` does not work here.
            cmd.env("SANDBOX_NET", "host")
                .arg(format!("--network-namespace-path={}", ns.display()));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "sandbox up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = Command::new(script())
            .arg("env")
            .arg(&self.dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&env.stdout);
        self.leader = text
            .lines()
            .find_map(|l| l.strip_prefix("export SANDBOX_LEADER="))
            .and_then(|v| v.trim().parse().ok())
            .expect("sandbox leader pid");
    }

    /// Cuts the power: SIGKILL to the container's PID 1 (the kernel kills everything in it,
    /// no clean shutdown), then boots it again from the same disk. The host's page cache
    /// survives, so this proves recovery at boot, not fsync durability.
    pub fn power_cut_and_boot(&mut self) {
        self.power_cut();
        self.boot();
    }

    /// Cuts the power and leaves the container off (its disk kept for [`Sandbox::power_on`]).
    pub fn power_cut(&mut self) {
        assert!(
            self.persistent.is_some(),
            "a power cut needs a persistent disk"
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.leader as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = Command::new(script()).arg("down").arg(&self.dir).output();
    }

    /// Boots a container whose power was cut, from the same disk.
    pub fn power_on(&mut self) {
        self.boot();
    }

    /// Runs a command inside as root.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new(script())
            .arg("exec")
            .arg(&self.dir)
            .arg("--")
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a shell snippet inside; panics with its output when it fails.
    pub fn sh(&self, snippet: &str) -> String {
        let out = self.exec(&["bash", "-c", snippet]);
        assert!(
            out.status.success(),
            "in sandbox: {snippet}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// A shell snippet's output and success, without panicking.
    pub fn try_sh(&self, snippet: &str) -> (bool, String, String) {
        let out = self.exec(&["bash", "-c", snippet]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// A path inside the container, seen from the host.
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.leader))
    }

    /// Writes a file inside the container (parents created).
    pub fn write(&self, inside: &str, bytes: &[u8], mode: u32) {
        let p = self.path(inside);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn unit_prop(&self, unit: &str, prop: &str) -> String {
        self.sh(&format!("systemctl show -p {prop} --value {unit}"))
            .trim()
            .to_string()
    }

    /// Polls a shell condition (exit 0) every 100 ms for at most `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, snippet: &str) {
        let deadline = Instant::now() + limit;
        loop {
            if self.try_sh(snippet).0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what} ({snippet})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Installs this build with dist/install.sh, the way every install happens, and makes
    /// systemd and the bus read the new files.
    pub fn install_build(&self) {
        self.sh(
            "/src/dist/install.sh --binary /src/target/debug/cells-updater --prefix /usr >/dev/null \
             && systemctl daemon-reload \
             && systemctl enable cells-updater-recover.service 2>/dev/null \
             && busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig",
        );
    }

    /// A Cells installation as the protocol describes it (minus AmbientCapabilities): user
    /// pydio, /opt/pydio/bin/cells (the fake, reporting `version`), cells.service, the keys.
    pub fn install_fake_cells(&self, version: &str, keys: &[&Path]) {
        self.sh(
            "useradd --system --home-dir /var/cells --create-home pydio && mkdir -p /opt/pydio/bin",
        );
        self.write(
            "/opt/pydio/bin/cells",
            &super::fake_cells(version, "ok"),
            0o755,
        );
        self.write(
            "/etc/systemd/system/cells.service",
            b"[Unit]\nDescription=Pydio Cells\nAssertFileIsExecutable=/opt/pydio/bin/cells\n\n[Service]\nUser=pydio\nGroup=pydio\n\
              ExecStart=/opt/pydio/bin/cells start\nRestart=on-failure\n\
              Environment=CELLS_WORKING_DIR=/var/cells\n\
              LimitNOFILE=65536\nKillSignal=INT\nTimeoutStopSec=5\n\n[Install]\nWantedBy=multi-user.target\n",
            0o644,
        );
        for (i, k) in keys.iter().enumerate() {
            self.write(
                &format!("/etc/cells-updater/keys.d/{i}.pem"),
                &std::fs::read(k).unwrap(),
                0o644,
            );
        }
        self.sh("systemctl daemon-reload");
    }

    /// Boots, installs cells-updater and a running Cells 4.4.2, and serves `releases`
    /// (version, mode) from a local update server.
    pub fn cells_host(name: &str, releases: &[(&str, &str)]) -> Sandbox {
        Self::cells_host_full(name, releases, None)
    }

    /// Like [`Sandbox::cells_host`], with PydioEnterprise releases offered to `key`.
    pub fn cells_host_full(
        name: &str,
        releases: &[(&str, &str)],
        enterprise: Option<(&str, &[(&str, &str)])>,
    ) -> Sandbox {
        Self::cells_host_on(Sandbox::up(name), releases, enterprise)
    }

    /// [`Sandbox::cells_host`] on a container whose disk survives a power cut; the update
    /// server and Cells are started at boot.
    pub fn cells_host_persistent(name: &str, releases: &[(&str, &str)]) -> Sandbox {
        let sb = Self::cells_host_on(Sandbox::up_persistent(name), releases, None);
        sb.write(
            "/etc/systemd/system/update-server.service",
            b"[Service]\nExecStart=/bin/sh -c 'exec /src/target/debug/examples/update_server \
              --listen 127.0.0.1:8080 $(cat /srv/update-server.args)'\n\n[Install]\n\
              WantedBy=multi-user.target\n",
            0o644,
        );
        sb.sh(
            "systemctl stop update-server.service; systemctl reset-failed update-server.service; \
             systemctl daemon-reload && systemctl enable --now update-server.service",
        );
        sb
    }

    fn cells_host_on(
        sb: Sandbox,
        releases: &[(&str, &str)],
        enterprise: Option<(&str, &[(&str, &str)])>,
    ) -> Sandbox {
        let server = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/debug/examples/update_server");
        assert!(server.exists(), "cargo test builds examples/update_server");
        let k = super::keys();
        sb.install_build();
        sb.install_fake_cells("4.4.2", &[&k.rsa_pkcs1_pub]);
        sb.sh("setcap cap_net_bind_service=+ep /opt/pydio/bin/cells && systemctl enable --now cells.service");
        sb.wait_for(
            Duration::from_secs(10),
            "cells on :443",
            "curl -sf http://127.0.0.1:443/ | grep -qx 4.4.2",
        );
        let mut args = String::new();
        for (version, mode) in releases {
            let bytes = super::fake_cells(version, mode);
            let (sum, sig) = super::sign(&bytes, &k.rsa);
            let file = format!("/srv/releases/cells-{version}-{mode}");
            sb.write(&file, &bytes, 0o644);
            args.push_str(&format!(" --release {version} {file} {sum} {sig}"));
        }
        if let Some((key, list)) = enterprise {
            args.push_str(&format!(" --enterprise-key {key}"));
            for (version, mode) in list {
                let bytes = super::fake_cells_enterprise(version, mode);
                let (sum, sig) = super::sign(&bytes, &k.rsa);
                let file = format!("/srv/releases/cells-enterprise-{version}-{mode}");
                sb.write(&file, &bytes, 0o644);
                args.push_str(&format!(
                    " --enterprise-release {version} {file} {sum} {sig}"
                ));
            }
        }
        sb.write("/srv/update-server.args", args.as_bytes(), 0o644);
        sb.serve("");
        sb.write(
            "/etc/cells-updater/config.d/50-test.toml",
            b"[server]\nurl = \"http://127.0.0.1:8080/\"\n[policy]\nhealth_settle = \"2s\"\nhealth_timeout = \"30s\"\n",
            0o644,
        );
        sb.wait_for(
            Duration::from_secs(5),
            "the update server",
            "curl -s -X POST -d '{}' http://127.0.0.1:8080/a/update-server/ | grep -q AvailableBinaries",
        );
        sb
    }
}

impl Sandbox {
    /// Adds a release (`bytes` signed by the test key) to the update server's catalog; the
    /// next [`Sandbox::serve`] offers it.
    pub fn add_release(&self, version: &str, bytes: &[u8]) {
        let (sum, sig) = super::sign(bytes, &super::keys().rsa);
        self.add_release_signed(version, bytes, &sum, &sig);
    }

    /// [`Sandbox::add_release`] with a given checksum and signature.
    pub fn add_release_signed(&self, version: &str, bytes: &[u8], sum: &str, sig: &str) {
        let file = format!("/srv/releases/cells-{version}-extra");
        self.write(&file, bytes, 0o644);
        let mut args = std::fs::read_to_string(self.path("/srv/update-server.args")).unwrap();
        args.push_str(&format!(" --release {version} {file} {sum} {sig}"));
        self.write("/srv/update-server.args", args.as_bytes(), 0o644);
    }

    /// (Re)starts the container's update server with its releases and `extra` flags
    /// (`--slow-ms N`, `--error-title TEXT`).
    pub fn serve(&self, extra: &str) {
        self.serve_on("127.0.0.1:8080", extra)
    }

    /// `serve` on another address (`HOST:PORT`).
    pub fn serve_on(&self, listen: &str, extra: &str) {
        self.sh(&format!(
            "systemctl stop update-server.service 2>/dev/null; systemctl reset-failed update-server.service 2>/dev/null; \
             systemd-run --quiet --unit=update-server /src/target/debug/examples/update_server \
             --listen {listen} $(cat /srv/update-server.args) {extra}"
        ));
        self.wait_for(
            Duration::from_secs(5),
            "the update server",
            &format!("curl -s -o /dev/null http://{listen}/ "),
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg(&self.dir).output();
        if let Some(merged) = &self.persistent {
            let _ = Command::new("umount").arg(merged).output();
        }
    }
}
