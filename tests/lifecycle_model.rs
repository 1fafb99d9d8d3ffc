//! The lifecycle against a model (in the spirit of FoundationDB's simulation testing and
//! proptest's state machines). A small pure model says what the daemon should do; random
//! sequences of calls, kills and faults run against the real daemon on a private bus (its
//! helpers forked, its unit a stand-in supervisor: the `fake-unit` feature), and after every
//! step the daemon's properties, the binary on disk, the running Cells and the staging area
//! must agree with the model and with the invariants (never a missing or unverified binary,
//! no downgrade below the committed floor, capabilities kept, `CurrentJob` back to `/`, no
//! `Busy` when nothing runs). A failing sequence is shrunk to a minimal one and printed; the
//! ones found so far are kept below as named regression cases.
//!
//! `MODEL_SEQUENCES=N MODEL_SEED=S cargo test --all-features --test lifecycle_model` runs a
//! longer campaign (CI: 200 sequences of up to 12 steps from a fixed seed).
#![cfg(feature = "fake-unit")]

mod support;

use cells_updater::version::CellsVersion;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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
}

/// What a call must give: success, or this error name.
type Outcome = Result<(), &'static str>;

impl Model {
    fn new() -> Model {
        Model {
            installed: "4.4.2".into(),
            staged: None,
            previous: None,
            bad: BTreeSet::new(),
            floor: "4.4.2".into(),
        }
    }

    fn admits(&self, version: &str) -> bool {
        v(version) > v(&self.installed) && v(version) > v(&self.floor)
    }

    fn kind(version: &str) -> Option<Kind> {
        CATALOG.iter().find(|(c, _)| *c == version).map(|(_, k)| *k)
    }

    /// Staging `version` from the server.
    fn stage(&mut self, version: &'static str) -> Outcome {
        let Some(kind) = Self::kind(version) else {
            return Err("NoSuchVersion");
        };
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
                None => Err("NothingStaged"),
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

/// One isolated world: a scratch root, a private bus, the daemon, the update server.
struct World {
    env: StageEnv,
    bus: PrivateBus,
    daemon: Option<DaemonProc>,
    port: u16,
    files: BTreeMap<String, PathBuf>,
    /// SHA-256 of every binary that may be installed, by version.
    genuine: BTreeMap<String, String>,
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
}

fn sha_hex(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
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
        let mut genuine = BTreeMap::new();
        genuine.insert(
            "4.4.2".to_string(),
            sha_hex(&std::fs::read(&cells).unwrap()),
        );
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
            genuine.insert(version.to_string(), sha_hex(&r.bytes));
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
        for (version, good) in FILES {
            let mut bytes = signed(version).bytes.clone();
            if *good {
                genuine.insert(version.to_string(), sha_hex(&bytes));
            } else {
                // Tampered after signing.
                let n = bytes.len();
                bytes[n - 1] ^= 0xff;
            }
            let path = env.root.path().join(format!("offered-{version}"));
            std::fs::write(&path, &bytes).unwrap();
            files.insert(version.to_string(), path);
        }
        env.write_daemon_config("[policy]\nhealth_settle = \"100ms\"\nhealth_timeout = \"10s\"\n");
        let bus = PrivateBus::start();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(
                zbus::connection::Builder::address(bus.address.as_str())
                    .unwrap()
                    .build(),
            )
            .unwrap();
        let mut w = World {
            env,
            bus,
            daemon: None,
            port,
            files,
            genuine,
            rt,
            conn,
        };
        w.start();
        w
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

    fn start(&mut self) {
        self.daemon = Some(DaemonProc::start_with_env(
            &self.bus,
            self.env.root.path(),
            &[("CELLS_UPDATER_FAKE_UNIT", &self.port.to_string())],
        ));
        wait_until(Duration::from_secs(30), "the daemon at rest", || {
            self.at_rest()
        });
    }

    fn at_rest(&self) -> bool {
        self.mprop("CurrentJob") == "/" && !self.mprop("InstalledVersion").is_empty()
    }

    /// Calls a Manager method with zbus (an independent client would print only the
    /// message; the model compares error names). `version` is the `s` argument, if any.
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

    fn job_prop(&self, job: &str, prop: &str) -> String {
        self.prop(job, JOB_IFACE, prop)
    }

    /// Waits for `job`; the short error name, or `None` on success.
    fn wait_job(&self, job: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.job_prop(job, "State") == "running" {
            assert!(Instant::now() < deadline, "job {job} never ended");
            std::thread::sleep(Duration::from_millis(20));
        }
        let e = self.job_prop(job, "Error");
        (!e.is_empty()).then(|| e.rsplit('.').next().unwrap_or_default().to_string())
    }

    /// Runs a job-making call to its end: `Ok` or the error name (of the call or the job).
    fn job(&self, method: &str, version: Option<&str>) -> Result<(), String> {
        match self.call(method, version) {
            Err(e) => Err(e),
            Ok(Some(job)) => match self.wait_job(&job) {
                None => Ok(()),
                Some(e) => Err(e),
            },
            Ok(None) => Err("no job".into()),
        }
    }

    fn stage_file(&self, version: &str) -> Result<(), String> {
        let r = signed(version);
        let (sum, sig) = (r.sum.as_str(), r.sig.as_str());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cells-updater"))
            .args(["--bus-address", &self.bus.address, "stage", "--file"])
            .arg(&self.files[version])
            .args(["--version", version, "--checksum", sum, "--signature", sig])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(call_error(&String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Performs `op`; `Ok`/`Err(name)` as the daemon answered.
    fn perform(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Check => self.call("Check", None).map(|_| ()),
            Op::Stage(x) => self.job("Stage", Some(x)),
            Op::StageCancel(x) => {
                let job = match self.call("Stage", Some(x)) {
                    Ok(Some(j)) => j,
                    Ok(None) => return Err("no job".into()),
                    Err(e) => return Err(e),
                };
                let _ = self.rt.block_on(self.conn.call_method(
                    Some(DEST),
                    job.as_str(),
                    Some(JOB_IFACE),
                    "Cancel",
                    &(),
                ));
                match self.wait_job(&job) {
                    None => Ok(()),
                    Some(e) => Err(e),
                }
            }
            Op::StageFile(x) => self.stage_file(x),
            Op::Apply => self.job("Apply", None),
            Op::Update(x) => self.job("Update", Some(x)),
            Op::Rollback => self.job("Rollback", None),
            Op::KillDuringUpdate(x, ms) => {
                let _ = self.call("Update", Some(x));
                std::thread::sleep(Duration::from_millis(*ms));
                let mut d = self.daemon.take().unwrap();
                d.kill9();
                drop(d);
                self.start();
                Ok(())
            }
        }
    }

    /// The daemon's view, the disk and the running Cells against `m`.
    fn check(&self, m: &Model) -> Vec<String> {
        let mut p = Vec::new();
        let s = |k: &str| self.mprop(k);
        if s("CurrentJob") != "/" {
            p.push(format!("CurrentJob is {}", s("CurrentJob")));
        }
        if !["idle", "staged", "failed"].contains(&s("State").as_str()) {
            p.push(format!("State {} at rest", s("State")));
        }
        if s("InstalledVersion") != m.installed {
            p.push(format!(
                "InstalledVersion {} (model {})",
                s("InstalledVersion"),
                m.installed
            ));
        }
        if s("StagedVersion") != m.staged.clone().unwrap_or_default() {
            p.push(format!(
                "StagedVersion {:?} (model {:?})",
                s("StagedVersion"),
                m.staged
            ));
        }
        if s("PreviousVersion") != m.previous.clone().unwrap_or_default() {
            p.push(format!(
                "PreviousVersion {:?} (model {:?})",
                s("PreviousVersion"),
                m.previous
            ));
        }
        // I1, I2: a complete, genuine binary, the one the model says.
        let cells = self.env.root.path().join("opt/pydio/bin/cells");
        match std::fs::read(&cells) {
            Err(e) => p.push(format!("the binary is missing: {e}")),
            Ok(bytes) => {
                let h = sha_hex(&bytes);
                match self.genuine.iter().find(|(_, g)| **g == h) {
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
        let f = std::fs::File::open(&cells);
        let caps = f.ok().and_then(|f| {
            cells_updater::fcaps::get(std::os::fd::AsFd::as_fd(&f))
                .ok()
                .flatten()
        });
        if caps.map(|c| c.to_string()).as_deref() != Some("cap_net_bind_service=ep") {
            p.push(format!("capabilities {caps:?}"));
        }
        // The running Cells is the installed one.
        let served = http_get(self.port);
        if served.as_deref() != Some(m.installed.as_str()) {
            p.push(format!("Cells serves {served:?}, model {}", m.installed));
        }
        if self
            .env
            .root
            .path()
            .join("var/lib/cells-updater/journal.json")
            .exists()
        {
            p.push("the apply journal is left".into());
        }
        let staged: Vec<String> = self
            .env
            .stager
            .area
            .staged()
            .into_iter()
            .map(|m| m.version)
            .collect();
        let want: Vec<String> = m.staged.iter().cloned().collect();
        if staged != want {
            p.push(format!("staging area holds {staged:?}, model {want:?}"));
        }
        if Path::new(&cells)
            .with_file_name(".cells.cells-updater-new")
            .exists()
        {
            p.push("a temporary file is left".into());
        }
        p
    }

    /// The end of the daemon's log, when MODEL_DEBUG is set.
    fn log_tail(&self) -> String {
        if std::env::var_os("MODEL_DEBUG").is_none() {
            return String::new();
        }
        let log = self
            .daemon
            .as_ref()
            .map(|d| d.log_text())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "\n--- daemon log\n{}",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Reads the model back from the daemon when it is one of `allowed` (after a kill).
    fn observe(&self, allowed: &[Model]) -> Option<Model> {
        let s = |k: &str| self.mprop(k);
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
    let mut w = World::new();
    let mut m = Model::new();
    let problems = w.check(&m);
    if !problems.is_empty() {
        return Err(format!("before any step: {problems:?}"));
    }
    for (i, op) in ops.iter().enumerate() {
        let before = m.clone();
        let expected = m.step(op);
        let got = w.perform(op);
        match (&expected, &got) {
            // Restaging what is staged is a no-op that may end before the Cancel lands.
            (Some(Err("Cancelled")), Ok(())) if matches!(op, Op::StageCancel(x) if before.staged.as_deref() == Some(*x)) =>
                {}
            (Some(want), got) => {
                let want = want.map_err(|e| e.to_string());
                if want != *got {
                    return Err(format!(
                        "step {i} {op:?}: got {got:?}, model says {want:?}{}",
                        w.log_tail()
                    ));
                }
            }
            (None, _) => {
                let Op::KillDuringUpdate(x, _) = op else {
                    unreachable!()
                };
                let allowed = before.after_kill(x);
                match w.observe(&allowed) {
                    Some(seen) => {
                        m = seen;
                        // A broken release the recovery found unhealthy is marked bad.
                        if Model::kind(x) == Some(Kind::Broken)
                            && m.installed != *x
                            && w.mprop("LastError").contains("marked bad")
                        {
                            m.bad.insert(x.to_string());
                        }
                    }
                    None => {
                        return Err(format!(
                            "step {i} {op:?}: after the kill the daemon shows {} {} {}, which is none of {allowed:?}",
                            w.mprop("InstalledVersion"), w.mprop("StagedVersion"), w.mprop("PreviousVersion")
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
        let problems = w.check(&m);
        if !problems.is_empty() {
            return Err(format!(
                "after step {i} {op:?}: {problems:?}{}",
                w.log_tail()
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
            "rollback then replay of the rolled-back version is refused",
            vec![Op::Update("4.4.8"), Op::Rollback, Op::Update("4.4.8"), Op::Update("4.5.0")],
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

fn gen_len(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}
