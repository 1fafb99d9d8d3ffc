//! A private `dbus-daemon` started by the tests, the daemon under test as a child process,
//! and the independent clients used to talk to it: `busctl`, `gdbus`, `busctl monitor`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A private bus: every local user may connect, anyone may own names.
pub struct PrivateBus {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Child,
}

impl PrivateBus {
    pub fn start() -> PrivateBus {
        let dir = tempfile::Builder::new()
            .prefix("bus-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        // Other uids (setpriv tests) must reach the socket.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let sock = dir.path().join("bus.sock");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
                sock.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (package dbus) is needed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        PrivateBus {
            dir,
            address,
            child,
        }
    }

    /// `busctl --address=… ARGS`.
    pub fn busctl(&self, args: &[&str]) -> Output {
        Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args(args)
            .output()
            .unwrap()
    }

    /// Whether `name` has an owner on this bus.
    pub fn name_has_owner(&self, name: &str) -> bool {
        let out = self.busctl(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            name,
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "b true"
    }

    /// `busctl --json=short` output, parsed; panics with stderr on failure.
    pub fn busctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json=short"];
        all.extend_from_slice(args);
        let out = self.busctl(&all);
        assert!(
            out.status.success(),
            "busctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("busctl {args:?} json: {e}"))
    }

    /// A Manager property, as JSON data.
    pub fn manager_prop(&self, name: &str) -> serde_json::Value {
        self.busctl_json(&["get-property", DEST, MANAGER, MANAGER_IFACE, name])["data"].clone()
    }

    /// All Manager properties: name → JSON data.
    pub fn manager_props(&self) -> serde_json::Map<String, serde_json::Value> {
        let v = self.busctl_json(&[
            "call",
            DEST,
            MANAGER,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            "s",
            MANAGER_IFACE,
        ]);
        v["data"][0]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["data"].clone()))
            .collect()
    }

    /// `gdbus call` (an independent client that prints D-Bus error names), optionally as
    /// another uid through `setpriv`.
    pub fn gdbus(&self, as_uid: Option<u32>, path: &str, method: &str, args: &[&str]) -> Output {
        let mut cmd = match as_uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "gdbus",
                ]);
                c
            }
            None => Command::new("gdbus"),
        };
        cmd.args([
            "call",
            "--address",
            &self.address,
            "--dest",
            DEST,
            "--object-path",
            path,
            "--method",
            method,
        ]);
        cmd.args(args);
        cmd.env("HOME", "/").output().unwrap()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const DEST: &str = "com.pydio.CellsUpdater1";
pub const MANAGER: &str = "/com/pydio/CellsUpdater1";
pub const MANAGER_IFACE: &str = "com.pydio.CellsUpdater1.Manager";

/// The daemon under test, on a private bus, with a scratch root.
pub struct DaemonProc {
    child: Child,
    pub log: PathBuf,
}

impl DaemonProc {
    /// Starts `cells-updater daemon` and waits (10 s at most) until it owns its name.
    pub fn start(bus: &PrivateBus, root: &Path) -> DaemonProc {
        Self::start_with_env(bus, root, &[])
    }

    /// SIGKILL, as `kill -9`; waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// [`DaemonProc::start`] with extra environment variables.
    pub fn start_with_env(bus: &PrivateBus, root: &Path, env: &[(&str, &str)]) -> DaemonProc {
        let log = root.join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_cells-updater"))
            .args(["--bus-address", &bus.address, "--root"])
            .arg(root)
            .arg("daemon")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = DaemonProc { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if bus.name_has_owner(DEST) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not own its name: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (10 s at most) for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon ignored SIGTERM for 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `busctl monitor --json=short` recording every message of the bus to a file.
pub struct Monitor {
    child: Child,
    file: PathBuf,
}

impl Monitor {
    pub fn start(bus: &PrivateBus) -> Monitor {
        let file = bus
            .dir
            .path()
            .join(format!("monitor-{}.json", std::process::id()));
        let child = Command::new("busctl")
            .arg(format!("--address={}", bus.address))
            .args(["monitor", "--json=short"])
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // busctl prints nothing until it is a monitor; give it a moment to register.
        std::thread::sleep(Duration::from_millis(300));
        Monitor { child, file }
    }

    /// Stops monitoring and returns every recorded message.
    pub fn finish(mut self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Polls `check` every 50 ms for at most `limit`; panics with `what` on timeout.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `Update(version)` on `bus`, by busctl: the job's path.
pub fn update_on(bus: &PrivateBus, version: &str) -> String {
    let out = bus.busctl_json(&[
        "call",
        DEST,
        MANAGER,
        MANAGER_IFACE,
        "Update",
        "sa{sv}",
        version,
        "0",
    ]);
    out["data"][0]
        .as_str()
        .unwrap_or_else(|| panic!("Update({version}) returned no job: {out}"))
        .to_string()
}

/// A free port on loopback.
pub fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string()
}
