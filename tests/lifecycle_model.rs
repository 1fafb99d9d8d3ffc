//! The lifecycle against a model (in the spirit of FoundationDB's simulation testing and
//! proptest's state machines). A small pure model says what the daemon should do; random
//! sequences of calls, kills and faults run against the real daemon on a private bus (its
//! helpers forked, its unit a stand-in supervisor: the `fake-unit` feature), and after every
//! step the daemon's properties, the binary on disk, the running Cells and the staging area
//! must agree with the model and with the invariants (never a missing or unverified binary,
//! no downgrade below the committed floor (equal to it is allowed), capabilities kept, `CurrentJob` back to `/`, no
//! `Busy` when nothing runs). A failing sequence is shrunk to a minimal one and printed; the
//! ones found so far are kept below as named regression cases.
//!
//! `MODEL_SEQUENCES=N MODEL_SEED=S cargo test --all-features --test lifecycle_model` runs a
//! longer campaign (CI: 200 sequences of up to 12 steps from a fixed seed).
#![cfg(feature = "fake-unit")]

mod support;

use cells_updater::version::CellsVersion;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::bus::*;
use support::*;

const JOB_IFACE: &str = "com.pydio.CellsUpdater1.Job";

/// What a release in the catalog is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Installs and comes up.
    Good,
    /// Installs, then exits at start (fails its health check).
    Broken,
    /// Signed by a key nobody trusts.
    BadSignature,
    /// Good, served slowly (so a Cancel lands while it downloads).
    Slow,
}

/// The catalog on the update server.
const CATALOG: &[(&str, Kind)] = &[
    ("4.4.3", Kind::Good),
    ("4.4.4", Kind::Slow),
    ("4.4.5", Kind::Broken),
    ("4.4.6", Kind::BadSignature),
    ("4.4.8", Kind::Good),
    ("4.5.0", Kind::Good),
];
/// Versions offered as files (StageFromFd): good, and one whose bytes were tampered with.
const FILES: &[(&str, bool)] = &[("4.4.7", true), ("4.4.9", false)];

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Check,
    Stage(&'static str),
    /// Stage a slow release and cancel it while it downloads.
    StageCancel(&'static str),
    StageFile(&'static str),
    Apply,
    Update(&'static str),
    Rollback,
    /// Update, and kill -9 the daemon after this many milliseconds; then start it again.
    KillDuringUpdate(&'static str, u64),
}

fn v(s: &str) -> CellsVersion {
    CellsVersion::parse(s).unwrap()
}

#[derive(Clone, Debug, PartialEq)]
struct Model {
    installed: String,
    staged: Option<String>,
    previous: Option<String>,
    bad: BTreeSet<String>,
    floor: String,
    /// The update server lists only versions newer than the installed one (the real server
    /// does; the private-bus world's server lists everything, to test the daemon's own
    /// refusal).
    filtering: bool,
}

/// What a call must give: success, or this error name.
type Outcome = Result<(), &'static str>;

impl Model {
    fn new(filtering: bool) -> Model {
        Model {
            installed: "4.4.2".into(),
            staged: None,
            previous: None,
            bad: BTreeSet::new(),
            floor: "4.4.2".into(),
            filtering,
        }
    }

    fn admits(&self, version: &str) -> bool {
        v(version) > v(&self.installed) && v(version) >= v(&self.floor)
    }

    fn kind(version: &str) -> Option<Kind> {
        CATALOG.iter().find(|(c, _)| *c == version).map(|(_, k)| *k)
    }

    /// Staging `version` from the server.
    fn stage(&mut self, version: &'static str) -> Outcome {
        let Some(kind) = Self::kind(version) else {
            return Err("NoSuchVersion");
        };
        if self.filtering && v(version) <= v(&self.installed) {
            return Err("NoSuchVersion");
        }
        if self.bad.contains(version) {
            return Err("NoSuchVersion");
        }
        if !self.admits(version) {
            return Err("Downgrade");
        }
        if kind == Kind::BadSignature {
            return Err("SignatureInvalid");
        }
        self.staged = Some(version.into());
        Ok(())
    }

    fn stage_file(&mut self, version: &'static str) -> Outcome {
        let good = FILES
            .iter()
            .find(|(f, _)| *f == version)
            .map(|(_, g)| *g)
            .unwrap();
        if self.bad.contains(version) {
            return Err("NoSuchVersion");
        }
        if !self.admits(version) {
            return Err("Downgrade");
        }
        if !good {
            return Err("ChecksumMismatch");
        }
        self.staged = Some(version.into());
        Ok(())
    }

    fn apply(&mut self) -> Outcome {
        let Some(staged) = self.staged.clone() else {
            return Err("NothingStaged");
        };
        if !self.admits(&staged) {
            return Err("Downgrade");
        }
        self.staged = None;
        if Self::kind(&staged) == Some(Kind::Broken) {
            self.bad.insert(staged);
            return Err("UnitFailed");
        }
        self.previous = Some(std::mem::replace(&mut self.installed, staged.clone()));
        self.floor = std::cmp::max(v(&self.floor), v(&staged)).to_string();
        Ok(())
    }

    /// The deterministic ops; `None` for those whose outcome depends on timing.
    fn step(&mut self, op: &Op) -> Option<Outcome> {
        Some(match op {
            Op::Check => Ok(()),
            Op::Stage(x) => self.stage(x),
            Op::StageCancel(x) => {
                // Whatever was staged stays; the cancelled release is not staged.
                let mut probe = self.clone();
                match probe.stage(x) {
                    Ok(()) => Err("Cancelled"),
                    Err(e) => Err(e),
                }
            }
            Op::StageFile(x) => self.stage_file(x),
            Op::Apply => self.apply(),
            Op::Update(x) => self.stage(x).and_then(|_| self.apply()),
            Op::Rollback => match self.previous.take() {
                None => Err("NoPreviousVersion"),
                Some(p) => {
                    self.installed = p;
                    Ok(())
                }
            },
            Op::KillDuringUpdate(..) => return None,
        })
    }

    /// After a kill during Update(x): the states recovery may lead to.
    fn after_kill(&self, x: &'static str) -> Vec<Model> {
        let mut out = vec![self.clone()];
        let mut staged = self.clone();
        if staged.stage(x).is_ok() {
            out.push(staged.clone());
            let mut applied = staged.clone();
            let _ = applied.apply();
            out.push(applied);
        }
        out
    }
}

fn gen(rng: &mut u64, len: usize) -> Vec<Op> {
    let mut next = |n: u64| {
        // SplitMix64.
        *rng = rng.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = *rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        (z ^ (z >> 31)) % n
    };
    let any = |i: u64| CATALOG[i as usize % CATALOG.len()].0;
    (0..len)
        .map(|_| match next(20) {
            0..=1 => Op::Check,
            2..=4 => Op::Stage(any(next(6))),
            5 => Op::StageCancel("4.4.4"),
            6..=7 => Op::StageFile(FILES[next(2) as usize].0),
            8..=10 => Op::Apply,
            11..=14 => Op::Update(any(next(6))),
            15..=17 => Op::Rollback,
            _ => Op::KillDuringUpdate(any(next(6)), next(700)),
        })
        .collect()
}

/// A release's bytes with its base64 checksum and signature, signed once per test run.
struct Signed {
    bytes: Vec<u8>,
    sum: String,
    sig: String,
}

fn signed(version: &str) -> &'static Signed {
    static ALL: std::sync::OnceLock<BTreeMap<String, Signed>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        let k = keys();
        let mut out = BTreeMap::new();
        for (version, kind) in CATALOG {
            let mut bytes = fake_cells(version, if *kind == Kind::Broken { "exit" } else { "ok" });
            if *kind == Kind::Slow {
                bytes.resize(2 << 20, 0x11);
            }
            let key = if *kind == Kind::BadSignature {
                &k.rogue
            } else {
                &k.rsa
            };
            let (sum, sig) = sign(&bytes, key);
            out.insert(version.to_string(), Signed { bytes, sum, sig });
        }
        for (version, _) in FILES {
            let bytes = fake_cells(version, "ok");
            let (sum, sig) = sign(&bytes, &k.rsa);
            out.insert(version.to_string(), Signed { bytes, sum, sig });
        }
        out
    });
    &all[version]
}

/// A connection to the daemon's bus, from the test: calls and properties with zbus (busctl
/// prints only an error's message; the model compares error names).
struct Bus {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
}

impl Bus {
    fn connect(address: &str) -> Bus {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(zbus::connection::Builder::address(address).unwrap().build())
            .unwrap();
        Bus { rt, conn }
    }

    /// A property of `path`'s `iface`, as text (strings and object paths) or a number.
    fn prop(&self, path: &str, iface: &str, name: &str) -> String {
        self.rt.block_on(async {
            let p = zbus::fdo::PropertiesProxy::builder(&self.conn)
                .destination(DEST)
                .unwrap()
                .path(path.to_string())
                .unwrap()
                .build()
                .await
                .unwrap();
            let iface = zbus::names::InterfaceName::try_from(iface.to_string()).unwrap();
            match p.get(iface, name).await {
                Ok(v) => match &*v {
                    zbus::zvariant::Value::Str(s) => s.to_string(),
                    zbus::zvariant::Value::ObjectPath(o) => o.to_string(),
                    other => format!("{other}"),
                },
                Err(e) => format!("<{e}>"),
            }
        })
    }

    fn mprop(&self, name: &str) -> String {
        self.prop(MANAGER, MANAGER_IFACE, name)
    }

    /// Calls a Manager method; `version` is the `s` argument, if any. The job's path, or the
    /// short error name.
    fn call(&self, method: &str, version: Option<&str>) -> Result<Option<String>, String> {
        use std::collections::HashMap;
        use zbus::zvariant::Value;
        self.rt.block_on(async {
            let conn = &self.conn;
            let opts: HashMap<&str, Value<'_>> = HashMap::new();
            let reply = match version {
                Some(v) => {
                    conn.call_method(Some(DEST), MANAGER, Some(MANAGER_IFACE), method, &(v, opts))
                        .await
                }
                None => {
                    conn.call_method(Some(DEST), MANAGER, Some(MANAGER_IFACE), method, &(opts,))
                        .await
                }
            };
            match reply {
                Ok(m) => Ok(m
                    .body()
                    .deserialize::<zbus::zvariant::OwnedObjectPath>()
                    .ok()
                    .map(|p| p.to_string())),
                Err(zbus::Error::MethodError(name, _, _)) => Err(name
                    .as_str()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn cancel(&self, job: &str) {
        let _ = self.rt.block_on(self.conn.call_method(
            Some(DEST),
            job,
            Some(JOB_IFACE),
            "Cancel",
            &(),
        ));
    }

    /// Waits for `job`; the short error name, or `None` on success.
    fn wait_job(&self, job: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.prop(job, JOB_IFACE, "State") == "running" {
            assert!(Instant::now() < deadline, "job {job} never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = self.prop(job, JOB_IFACE, "Error");
        (!e.is_empty()).then(|| e.rsplit('.').next().unwrap_or_default().to_string())
    }

    /// Runs a job-making call to its end: `Ok` or the error name (of the call or the job).
    fn job(&self, method: &str, version: Option<&str>) -> Result<(), String> {
        match self.call(method, version)? {
            Some(job) => match self.wait_job(&job) {
                None => Ok(()),
                Some(e) => Err(e),
            },
            None => Err("no job".into()),
        }
    }

    fn at_rest(&self) -> bool {
        self.mprop("CurrentJob") == "/" && !self.mprop("InstalledVersion").is_empty()
    }
}

/// Where a sequence runs: a private bus with a stand-in unit, or a real systemd.
trait Host {
    fn bus(&self) -> &Bus;
    /// Offers `version`'s file with StageFromFd (through the project's CLI).
    fn stage_file(&self, version: &str) -> Result<(), String>;
    /// kill -9 the daemon, and have it back at rest.
    fn kill_and_restart(&mut self);
    /// The path the host's root is reachable at from the test.
    fn root(&self) -> PathBuf;
    /// What the running Cells serves.
    fn served(&self) -> Option<String>;
    /// SHA-256 of every binary that may be installed, by version.
    fn genuine(&self) -> &BTreeMap<String, String>;
    /// The end of the daemon's log.
    fn log_tail(&self) -> String;
    /// Whether the update server lists only newer versions.
    fn filtering(&self) -> bool;
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// SHA-256 of the releases that may be installed: 4.4.2 and the genuine ones.
fn genuine_hashes(installed: &[u8]) -> BTreeMap<String, String> {
    let mut g = BTreeMap::new();
    g.insert("4.4.2".to_string(), sha_hex(installed));
    for (version, kind) in CATALOG {
        if *kind != Kind::BadSignature {
            g.insert(version.to_string(), sha_hex(&signed(version).bytes));
        }
    }
    for (version, good) in FILES {
        if *good {
            g.insert(version.to_string(), sha_hex(&signed(version).bytes));
        }
    }
    g
}

/// The bytes of `version`'s offered file (the tampered one altered after signing).
fn offered_bytes(version: &str) -> Vec<u8> {
    let good = FILES
        .iter()
        .find(|(f, _)| *f == version)
        .map(|(_, g)| *g)
        .unwrap();
    let mut bytes = signed(version).bytes.clone();
    if !good {
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
    }
    bytes
}

/// One isolated world on a private bus: a scratch root, the daemon with forked helpers and
/// the stand-in unit, the update server.
struct World {
    env: StageEnv,
    bus: PrivateBus,
    daemon: Option<DaemonProc>,
    port: u16,
    files: BTreeMap<String, PathBuf>,
    genuine: BTreeMap<String, String>,
    client: Bus,
}

impl World {
    fn new() -> World {
        let k = keys();
        let env = StageEnv::new(&[&k.rsa_pkcs1_pub]);
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cells = env.root.path().join("opt/pydio/bin/cells");
        let genuine = genuine_hashes(&std::fs::read(&cells).unwrap());
        let f = std::fs::File::open(&cells).unwrap();
        cells_updater::fcaps::set(
            std::os::fd::AsFd::as_fd(&f),
            Some(&cells_updater::fcaps::FileCaps::net_bind_service()),
        )
        .unwrap();
        let mut entries = Vec::new();
        for (version, kind) in CATALOG {
            let r = signed(version);
            let name = format!("cells-{version}");
            let delivery = if *kind == Kind::Slow {
                Delivery::Slow {
                    chunk: 64 << 10,
                    delay_ms: 60,
                }
            } else {
                Delivery::Normal
            };
            env.server.put_binary(&name, r.bytes.clone(), delivery);
            entries.push(package_json(
                version,
                &env.server.binary_url(&name),
                r.bytes.len(),
                &r.sum,
                &r.sig,
                false,
            ));
        }
        env.server.set_catalog(
            200,
            serde_json::json!({ "AvailableBinaries": entries }).to_string(),
        );
        let mut files = BTreeMap::new();
        for (version, _) in FILES {
            let path = env.root.path().join(format!("offered-{version}"));
            std::fs::write(&path, offered_bytes(version)).unwrap();
            files.insert(version.to_string(), path);
        }
        env.write_daemon_config("[policy]\nhealth_settle = \"100ms\"\nhealth_timeout = \"10s\"\n");
        let bus = PrivateBus::start();
        let client = Bus::connect(&bus.address);
        let mut w = World {
            env,
            bus,
            daemon: None,
            port,
            files,
            genuine,
            client,
        };
        w.start();
        w
    }

    fn start(&mut self) {
        self.daemon = Some(DaemonProc::start_with_env(
            &self.bus,
            self.env.root.path(),
            &[("CELLS_UPDATER_FAKE_UNIT", &self.port.to_string())],
        ));
        wait_until(Duration::from_secs(30), "the daemon at rest", || {
            self.client.at_rest()
        });
    }
}

impl Host for World {
    fn bus(&self) -> &Bus {
        &self.client
    }

    fn stage_file(&self, version: &str) -> Result<(), String> {
        let r = signed(version);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cells-updater"))
            .args(["--bus-address", &self.bus.address, "stage", "--file"])
            .arg(&self.files[version])
            .args([
                "--version",
                version,
                "--checksum",
                &r.sum,
                "--signature",
                &r.sig,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(call_error(&String::from_utf8_lossy(&out.stderr)))
        }
    }

    fn kill_and_restart(&mut self) {
        let mut d = self.daemon.take().unwrap();
        d.kill9();
        drop(d);
        self.start();
    }

    fn root(&self) -> PathBuf {
        self.env.root.path().to_path_buf()
    }

    fn served(&self) -> Option<String> {
        http_get(self.port)
    }

    fn genuine(&self) -> &BTreeMap<String, String> {
        &self.genuine
    }

    fn filtering(&self) -> bool {
        false
    }

    fn log_tail(&self) -> String {
        let log = self
            .daemon
            .as_ref()
            .map(|d| d.log_text())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The same on a real systemd: one container, reset between sequences.
struct SystemdWorld {
    sb: support::sandbox::Sandbox,
    genuine: BTreeMap<String, String>,
    client: Bus,
}

impl SystemdWorld {
    fn new() -> SystemdWorld {
        let sb = support::sandbox::Sandbox::cells_host("model", &[]);
        for (version, kind) in CATALOG {
            let r = signed(version);
            sb.add_release_signed(version, &r.bytes, &r.sum, &r.sig);
            if *kind == Kind::Slow {
                let mut args = std::fs::read_to_string(sb.path("/srv/update-server.args")).unwrap();
                args.push_str(&format!(" --slow {version}"));
                sb.write("/srv/update-server.args", args.as_bytes(), 0o644);
            }
        }
        sb.serve("--slow-ms 60");
        for (version, _) in FILES {
            sb.write(
                &format!("/srv/offered-{version}"),
                &offered_bytes(version),
                0o644,
            );
        }
        sb.write(
            "/etc/cells-updater/config.d/60-model.toml",
            b"[policy]\nhealth_settle = \"300ms\"\nhealth_timeout = \"20s\"\n",
            0o644,
        );
        sb.sh("cp -a /opt/pydio/bin/cells /srv/cells-4.4.2.orig && systemctl restart cells-updater.service");
        let genuine = genuine_hashes(&std::fs::read(sb.path("/srv/cells-4.4.2.orig")).unwrap());
        let client = Bus::connect(&format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            sb.leader
        ));
        let w = SystemdWorld {
            sb,
            genuine,
            client,
        };
        w.wait_at_rest();
        w
    }

    fn wait_at_rest(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.client.at_rest() {
            assert!(Instant::now() < deadline, "the daemon did not come to rest");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Back to the start: Cells 4.4.2 with its capability, no state, no drop-in.
    fn reset(&self) {
        self.sb.sh(
            "systemctl stop cells-updater.service; rm -rf /var/lib/cells-updater/* \
             /etc/systemd/system/cells.service.d/50-cells-updater.conf /opt/pydio/bin/cells-enterprise; \
             cp -a /srv/cells-4.4.2.orig /opt/pydio/bin/.reset && mv /opt/pydio/bin/.reset /opt/pydio/bin/cells \
             && setcap cap_net_bind_service=+ep /opt/pydio/bin/cells \
             && systemctl daemon-reload && systemctl restart cells.service && systemctl start cells-updater.service",
        );
        self.sb.wait_for(
            Duration::from_secs(10),
            "Cells 4.4.2",
            "curl -sf http://127.0.0.1:443/ | grep -qx 4.4.2",
        );
        self.wait_at_rest();
    }
}

impl Host for SystemdWorld {
    fn bus(&self) -> &Bus {
        &self.client
    }

    fn stage_file(&self, version: &str) -> Result<(), String> {
        let r = signed(version);
        let (ok, _, err) = self.sb.try_sh(&format!(
            "runuser -u pydio -- cells-updater stage --file /srv/offered-{version} --version {version} \
             --checksum {} --signature {}",
            r.sum, r.sig
        ));
        if ok {
            Ok(())
        } else {
            Err(call_error(&err))
        }
    }

    fn kill_and_restart(&mut self) {
        self.sb.sh("systemctl kill -s KILL cells-updater.service");
        // Restart=on-failure brings it back; recovery runs at start.
        std::thread::sleep(Duration::from_millis(500));
        self.sb.wait_for(
            Duration::from_secs(30),
            "the daemon to be back",
            "systemctl is-active -q cells-updater.service",
        );
        self.wait_at_rest();
    }

    fn root(&self) -> PathBuf {
        self.sb.path("/")
    }

    fn served(&self) -> Option<String> {
        let (ok, out, _) = self.sb.try_sh("curl -sf http://127.0.0.1:443/");
        ok.then(|| out.trim().to_string())
    }

    fn genuine(&self) -> &BTreeMap<String, String> {
        &self.genuine
    }

    fn filtering(&self) -> bool {
        true
    }

    fn log_tail(&self) -> String {
        self.sb
            .sh("journalctl -u cells-updater --no-pager -o cat | tail -n 40")
    }
}

fn perform(h: &mut dyn Host, op: &Op) -> Result<(), String> {
    match op {
        Op::Check => h.bus().call("Check", None).map(|_| ()),
        Op::Stage(x) => h.bus().job("Stage", Some(x)),
        Op::StageCancel(x) => {
            let job = match h.bus().call("Stage", Some(x))? {
                Some(j) => j,
                None => return Err("no job".into()),
            };
            h.bus().cancel(&job);
            match h.bus().wait_job(&job) {
                None => Ok(()),
                Some(e) => Err(e),
            }
        }
        Op::StageFile(x) => h.stage_file(x),
        Op::Apply => h.bus().job("Apply", None),
        Op::Update(x) => h.bus().job("Update", Some(x)),
        Op::Rollback => h.bus().job("Rollback", None),
        Op::KillDuringUpdate(x, ms) => {
            let _ = h.bus().call("Update", Some(x));
            std::thread::sleep(Duration::from_millis(*ms));
            h.kill_and_restart();
            Ok(())
        }
    }
}

/// The daemon's view, the disk and the running Cells against `m`.
fn check(h: &dyn Host, m: &Model) -> Vec<String> {
    let mut p = Vec::new();
    let s = |k: &str| h.bus().mprop(k);
    if s("CurrentJob") != "/" {
        p.push(format!("CurrentJob is {}", s("CurrentJob")));
    }
    if !["idle", "staged", "failed"].contains(&s("State").as_str()) {
        p.push(format!("State {} at rest", s("State")));
    }
    for (prop, want) in [
        ("InstalledVersion", Some(m.installed.clone())),
        ("StagedVersion", m.staged.clone()),
        ("PreviousVersion", m.previous.clone()),
    ] {
        if s(prop) != want.clone().unwrap_or_default() {
            p.push(format!("{prop} {:?} (model {want:?})", s(prop)));
        }
    }
    // I1, I2: a complete, genuine binary, the one the model says.
    let root = h.root();
    let cells = root.join("opt/pydio/bin/cells");
    match std::fs::read(&cells) {
        Err(e) => p.push(format!("the binary is missing: {e}")),
        Ok(bytes) => {
            let hash = sha_hex(&bytes);
            match h.genuine().iter().find(|(_, g)| **g == hash) {
                None => p.push("the installed binary is not a genuine release".into()),
                Some((ver, _)) if *ver != m.installed => p.push(format!(
                    "the binary on disk is {ver}, the model says {}",
                    m.installed
                )),
                _ => {}
            }
        }
    }
    // I4: the capability is kept.
    let caps = std::fs::File::open(&cells).ok().and_then(|f| {
        cells_updater::fcaps::get(std::os::fd::AsFd::as_fd(&f))
            .ok()
            .flatten()
    });
    if caps.map(|c| c.to_string()).as_deref() != Some("cap_net_bind_service=ep") {
        p.push(format!("capabilities {caps:?}"));
    }
    // The running Cells is the installed one.
    let served = h.served();
    if served.as_deref() != Some(m.installed.as_str()) {
        p.push(format!("Cells serves {served:?}, model {}", m.installed));
    }
    let state = root.join("var/lib/cells-updater");
    if state.join("journal.json").exists() {
        p.push("the apply journal is left".into());
    }
    let mut staged: Vec<String> = std::fs::read_dir(state.join("staged"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("manifest.json").exists())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    staged.sort();
    let want: Vec<String> = m.staged.iter().cloned().collect();
    if staged != want {
        p.push(format!("staging area holds {staged:?}, model {want:?}"));
    }
    if cells.with_file_name(".cells.cells-updater-new").exists() {
        p.push("a temporary file is left".into());
    }
    p
}

/// Reads the model back from the daemon when it is one of `allowed` (after a kill).
fn observe(h: &dyn Host, allowed: &[Model]) -> Option<Model> {
    let s = |k: &str| h.bus().mprop(k);
    let opt = |x: String| (!x.is_empty()).then_some(x);
    allowed
        .iter()
        .find(|m| {
            m.installed == s("InstalledVersion")
                && m.staged == opt(s("StagedVersion"))
                && m.previous == opt(s("PreviousVersion"))
        })
        .cloned()
}

fn log_tail(h: &dyn Host) -> String {
    if std::env::var_os("MODEL_DEBUG").is_none() {
        return String::new();
    }
    format!("\n--- daemon log\n{}", h.log_tail())
}

/// The short error name in the CLI's words (`cells-updater: <D-Bus name>: <message>`).
fn call_error(text: &str) -> String {
    for name in cells_updater::error::ERROR_NAMES {
        if text.contains(&format!("Error.{name}:")) {
            return name.to_string();
        }
    }
    text.to_string()
}

fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// Runs one sequence in a fresh world; the first problem, with the step it came at.
fn run(ops: &[Op]) -> Result<(), String> {
    run_on(&mut World::new(), ops)
}

/// Runs one sequence on `w` (at its starting state).
fn run_on(w: &mut dyn Host, ops: &[Op]) -> Result<(), String> {
    let mut m = Model::new(w.filtering());
    let problems = check(w, &m);
    if !problems.is_empty() {
        return Err(format!("before any step: {problems:?}"));
    }
    for (i, op) in ops.iter().enumerate() {
        let before = m.clone();
        let expected = m.step(op);
        let got = perform(w, op);
        match (&expected, &got) {
            // Restaging what is staged is a no-op that may end before the Cancel lands.
            (Some(Err("Cancelled")), Ok(())) if matches!(op, Op::StageCancel(x) if before.staged.as_deref() == Some(*x)) =>
                {}
            (Some(want), got) => {
                let want = want.map_err(|e| e.to_string());
                if want != *got {
                    return Err(format!(
                        "step {i} {op:?}: got {got:?}, model says {want:?}{}",
                        log_tail(w)
                    ));
                }
            }
            (None, _) => {
                let Op::KillDuringUpdate(x, _) = op else {
                    unreachable!()
                };
                let allowed = before.after_kill(x);
                match observe(w, &allowed) {
                    Some(seen) => {
                        m = seen;
                        // A broken release the recovery found unhealthy is marked bad.
                        if Model::kind(x) == Some(Kind::Broken)
                            && m.installed != *x
                            && w.bus().mprop("LastError").contains("marked bad")
                        {
                            m.bad.insert(x.to_string());
                        }
                    }
                    None => {
                        return Err(format!(
                            "step {i} {op:?}: after the kill the daemon shows {} {} {}, which is none of {allowed:?}",
                            w.bus().mprop("InstalledVersion"), w.bus().mprop("StagedVersion"), w.bus().mprop("PreviousVersion")
                        ))
                    }
                }
            }
        }
        if let Err(e) = &got {
            if e == "Busy" {
                return Err(format!("step {i} {op:?}: Busy while nothing ran"));
            }
        }
        let problems = check(w, &m);
        if !problems.is_empty() {
            return Err(format!(
                "after step {i} {op:?}: {problems:?}{}",
                log_tail(w)
            ));
        }
    }
    Ok(())
}

/// Removes steps while the sequence still fails: a minimal failing sequence.
fn shrink(mut ops: Vec<Op>) -> (Vec<Op>, String) {
    let mut why = run(&ops).err().unwrap_or_default();
    let mut i = 0;
    while i < ops.len() {
        let mut shorter = ops.clone();
        shorter.remove(i);
        match run(&shorter) {
            Err(e) => {
                ops = shorter;
                why = e;
            }
            Ok(()) => i += 1,
        }
    }
    (ops, why)
}

/// Sequences that failed once, kept as named regression cases.
fn regressions() -> Vec<(&'static str, Vec<Op>)> {
    vec![
        (
            "a kill while a new release replaces the staged one keeps one of them staged (was neither)",
            vec![Op::Stage("4.4.4"), Op::KillDuringUpdate("4.4.8", 85)],
        ),
        (
            "a rollback with a release staged rests in staged, and Apply then works (was Busy)",
            vec![Op::Update("4.4.4"), Op::Stage("4.4.8"), Op::Rollback, Op::Apply],
        ),
        (
            "a kill while idle, then a broken release is rolled back (Cells was left running)",
            vec![Op::KillDuringUpdate("4.4.6", 1247), Op::Stage("4.4.5"), Op::Apply],
        ),
        (
            "stage then update of the same version (was Busy: downloading -> applying)",
            vec![Op::Stage("4.4.3"), Op::Update("4.4.3")],
        ),
        (
            "a broken release does not raise the floor",
            vec![Op::Update("4.4.3"), Op::Update("4.4.5"), Op::StageFile("4.4.7"), Op::Apply],
        ),
        (
            "rollback, then the release it left comes back: equal to the floor is allowed (I3, \
             round 3; was Downgrade)",
            vec![Op::Update("4.4.8"), Op::Rollback, Op::Update("4.4.8"), Op::Update("4.5.0")],
        ),
        (
            "rollback, then a release between the installed version and the floor is refused",
            vec![Op::Update("4.4.3"), Op::Update("4.4.8"), Op::Rollback, Op::Update("4.4.4")],
        ),
    ]
}

#[test]
fn the_lifecycle_agrees_with_its_model() {
    let mut failures = Vec::new();
    for (name, ops) in regressions() {
        if let Err(e) = run(&ops) {
            failures.push(format!("regression case {name:?}: {e}"));
        }
    }
    let n: usize = std::env::var("MODEL_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    // Every sequence from the seed, generated up front; two worlds run them side by side.
    let mut rng = seed;
    let sequences: Vec<Vec<Op>> = (0..n)
        .map(|_| {
            let len = 1 + (gen_len(&mut rng) % 12) as usize;
            gen(&mut rng, len)
        })
        .collect();
    let steps: usize = sequences.iter().map(Vec::len).sum();
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if k >= sequences.len() || !found.lock().unwrap().is_empty() {
                    return;
                }
                if let Err(e) = run(&sequences[k]) {
                    found.lock().unwrap().push((k, e));
                }
            });
        }
    });
    if let Some((k, e)) = found
        .into_inner()
        .unwrap()
        .into_iter()
        .min_by_key(|(k, _)| *k)
    {
        let (min, why) = shrink(sequences[k].clone());
        failures.push(format!(
            "sequence {k} (seed {seed}) failed: {e}\n  minimal: {min:?}\n  because: {why}"
        ));
    }
    eprintln!(
        "model: {n} sequences, {steps} steps, seed {seed}, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_lifecycle_agrees_with_its_model_on_real_systemd() {
    // Fewer, on one container reset between sequences.
    let n: usize = std::env::var("MODEL_SYSTEMD_SEQUENCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = 0x5eed ^ 0xface;
    let mut rng = seed;
    let mut w = SystemdWorld::new();
    let started = Instant::now();
    let mut steps = 0;
    let mut failures = Vec::new();
    for k in 0..n {
        let len = 1 + (gen_len(&mut rng) % 12) as usize;
        let ops = gen(&mut rng, len);
        steps += ops.len();
        if k > 0 {
            w.reset();
        }
        if let Err(e) = run_on(&mut w, &ops) {
            failures.push(format!(
                "sequence {k} (seed {seed}): {ops:?}
  {e}"
            ));
            break;
        }
    }
    eprintln!(
        "model on real systemd: {n} sequences, {steps} steps, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{}",
        failures.join(
            "
"
        )
    );
}

fn gen_len(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}
