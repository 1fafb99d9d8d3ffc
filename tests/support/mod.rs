//! Test support: a fake Cells binary built with the system C compiler, keys and signatures
//! made by the `openssl` command line (an implementation independent of the crates that
//! verify them), a real HTTP/1.1 update server on loopback whose faults the tests choose, and
//! filesystem snapshots for "nothing changed" assertions.
#![allow(dead_code)]

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Scratch space shared by one test binary.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("support-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    })
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ------------------------------------------------------------------ fake Cells

const VMARK: &[u8] = b"@@FAKE_CELLS_VERSION@@";
const MMARK: &[u8] = b"@@FAKE_CELLS_MODE@@";
const EMARK: &[u8] = b"@@FAKE_CELLS_EDITION@@";

/// The compiled fake Cells, built once per test binary.
pub fn fake_cells_template() -> &'static [u8] {
    static BIN: OnceLock<Vec<u8>> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake-cells.c");
        let out = scratch().join("fake-cells");
        run(Command::new("cc").args(["-O1", "-o"]).arg(&out).arg(&src));
        std::fs::read(&out).expect("fake cells binary")
    })
}

fn patch(bin: &mut [u8], mark: &[u8], value: &str, cap: usize) {
    let at = bin
        .windows(mark.len())
        .position(|w| w == mark)
        .expect("slot marker in fake cells")
        + mark.len();
    assert!(value.len() < cap - mark.len(), "slot value too long");
    bin[at..at + value.len()].copy_from_slice(value.as_bytes());
    bin[at + value.len()] = 0;
}

/// `tests/support/<name>.c` compiled once per test binary; returns the executable's path.
pub fn c_tool(name: &str) -> PathBuf {
    let out = scratch().join(name);
    if !out.exists() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/support/{name}.c"));
        run(Command::new("cc").args(["-O1", "-o"]).arg(&out).arg(&src));
    }
    out
}

/// A fake Cells binary reporting `version`, behaving as `mode` ("ok", "hang", "exit").
pub fn fake_cells(version: &str, mode: &str) -> Vec<u8> {
    let mut bin = fake_cells_template().to_vec();
    patch(&mut bin, VMARK, version, 96);
    patch(&mut bin, MMARK, mode, 64);
    bin
}

/// The Enterprise build of a fake Cells (its label says "Enterprise Distribution").
pub fn fake_cells_enterprise(version: &str, mode: &str) -> Vec<u8> {
    let mut bin = fake_cells(version, mode);
    patch(&mut bin, EMARK, "Enterprise", 64);
    bin
}

/// The same binary with its ELF `e_machine` set to another architecture.
pub fn foreign_arch(mut bin: Vec<u8>) -> Vec<u8> {
    let other: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    bin[18..20].copy_from_slice(&other.to_le_bytes());
    bin
}

// ------------------------------------------------------------------ keys (openssl)

/// Keys made by the openssl command line.
pub struct Keys {
    pub dir: PathBuf,
    /// RSA-2048 private key (Pydio-like).
    pub rsa: PathBuf,
    /// Its public key as PKCS#1 RSAPublicKey under the label "PUBLIC KEY", as Cells ships it.
    pub rsa_pkcs1_pub: PathBuf,
    /// The same public key as SubjectPublicKeyInfo.
    pub rsa_spki_pub: PathBuf,
    /// EC P-256 private key (mirror-like) and its SPKI public key.
    pub ec: PathBuf,
    pub ec_pub: PathBuf,
    /// A second RSA key, for rotation; and one nobody trusts.
    pub rsa2: PathBuf,
    pub rsa2_pub: PathBuf,
    pub rogue: PathBuf,
    pub rogue_pub: PathBuf,
}

/// The keys, generated once per test binary.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = scratch().join("keys");
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n);
        let genrsa = |out: &Path| {
            run(Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(out));
        };
        let spki = |key: &Path, out: &Path| {
            run(Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(key)
                .arg("-out")
                .arg(out));
        };
        genrsa(&p("rsa.pem"));
        spki(&p("rsa.pem"), &p("rsa-spki.pub.pem"));
        let pkcs1 = run(Command::new("openssl")
            .args(["rsa", "-RSAPublicKey_out", "-in"])
            .arg(p("rsa.pem")));
        let pkcs1 = String::from_utf8(pkcs1)
            .unwrap()
            .replace("RSA PUBLIC KEY", "PUBLIC KEY");
        assert!(pkcs1.starts_with("-----BEGIN PUBLIC KEY-----"));
        std::fs::write(p("rsa-pkcs1.pub.pem"), pkcs1).unwrap();
        run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(p("ec.pem")));
        spki(&p("ec.pem"), &p("ec.pub.pem"));
        genrsa(&p("rsa2.pem"));
        spki(&p("rsa2.pem"), &p("rsa2.pub.pem"));
        genrsa(&p("rogue.pem"));
        spki(&p("rogue.pem"), &p("rogue.pub.pem"));
        Keys {
            rsa: p("rsa.pem"),
            rsa_pkcs1_pub: p("rsa-pkcs1.pub.pem"),
            rsa_spki_pub: p("rsa-spki.pub.pem"),
            ec: p("ec.pem"),
            ec_pub: p("ec.pub.pem"),
            rsa2: p("rsa2.pem"),
            rsa2_pub: p("rsa2.pub.pem"),
            rogue: p("rogue.pem"),
            rogue_pub: p("rogue.pub.pem"),
            dir,
        }
    })
}

/// `(BinaryChecksum, BinarySignature)` of `bytes`, both made by openssl: base64 of the raw
/// SHA-256, and `openssl dgst -sha256 -sign` (RSA PKCS#1 v1.5 or ECDSA DER, by key type).
pub fn sign(bytes: &[u8], key: &Path) -> (String, String) {
    use base64::Engine;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let file = scratch().join(format!("tosign-{n}"));
    std::fs::write(&file, bytes).unwrap();
    let digest = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .arg(&file));
    let sig = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg(&file));
    std::fs::remove_file(&file).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    (b64.encode(digest), b64.encode(sig))
}

pub mod http;
pub use http::*;

// ------------------------------------------------------------------ snapshots

/// Every file and directory under `dir` with its size and content hash (dirs: `None`).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<(u64, String)>> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Option<(u64, String)>>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let h: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                out.insert(rel, Some((meta.len(), h)));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

// ------------------------------------------------------------------ staging environment

use cells_updater::helper::Runner;
use cells_updater::stage::{Cancel, Manifest, Release, Stager, StagingArea};
use cells_updater::trust::TrustedKeys;
use cells_updater::update_server::{self, ServerSettings, UpdateRequest};
use cells_updater::version::{CellsVersion, VersionBounds};
use std::time::Duration;

/// Helpers run as forks of the built binary, as they do under the daemon without systemd.
pub fn fork_runner() -> Runner {
    Runner::Fork {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_cells-updater")),
        user: "nobody".into(),
    }
}

/// A scratch root with a state dir, an installed fake Cells 4.4.2 outside the staging area,
/// a loopback update server and a stager trusting the given public keys.
pub struct StageEnv {
    pub root: tempfile::TempDir,
    pub server: TestServer,
    /// The update server the pipeline asks (the test server).
    pub settings: ServerSettings,
    pub stager: Stager,
    pub runner: Runner,
    pub bounds: VersionBounds,
}

impl Drop for StageEnv {
    /// A fake Cells started by the `fake-unit` stand-in outlives a daemon killed by its test
    /// (a file-capable binary loses its parent-death signal at exec): every process running
    /// a binary under this root goes with it.
    fn drop(&mut self) {
        let root = self.root.path().to_path_buf();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if std::fs::read_link(entry.path().join("exe")).is_ok_and(|exe| exe.starts_with(&root))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl StageEnv {
    pub fn new(trusted: &[&Path]) -> StageEnv {
        let root = tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        // Helpers run as nobody: they must reach the scratch tree.
        std::fs::set_permissions(
            root.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let bin = root.path().join("opt/pydio/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("cells"), fake_cells("4.4.2", "ok")).unwrap();
        std::fs::set_permissions(
            bin.join("cells"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let keys_dir = root.path().join("etc/cells-updater/keys.d");
        std::fs::create_dir_all(&keys_dir).unwrap();
        for (i, k) in trusted.iter().enumerate() {
            std::fs::copy(k, keys_dir.join(format!("{i}.pem"))).unwrap();
        }
        let state = root.path().join("var/lib/cells-updater");
        let state_dir =
            cells_updater::dirfd::root_dir(&state, Some(0o700), cells_updater::Error::SwapFailed)
                .unwrap();
        let server = TestServer::start();
        let runner = fork_runner();
        let stager = Stager {
            area: StagingArea::open(&state_dir).unwrap(),
            keys: TrustedKeys::load_dir(&keys_dir).unwrap(),
            runner: runner.clone(),
            max_binary_size: 64 << 20,
            min_rate: 64 << 10,
            min_deadline: Duration::from_secs(60),
            window_rate: 32 << 10,
            rate_window: Duration::from_secs(60),
        };
        StageEnv {
            root,
            settings: ServerSettings {
                url: server.base(),
                timeout: Duration::from_secs(10),
                proxy: Default::default(),
                download_hosts: Vec::new(),
            },
            server,
            stager,
            runner,
            bounds: VersionBounds {
                installed: Some(CellsVersion::parse("4.4.2").unwrap()),
                committed: Some(CellsVersion::parse("4.4.2").unwrap()),
            },
        }
    }

    /// Serves `bytes` as release `version`, signed by `key`, alone in the catalog.
    pub fn publish(&self, version: &str, bytes: Vec<u8>, key: &Path) {
        let (sum, sig) = sign(&bytes, key);
        self.publish_with(version, bytes, &sum, &sig, Delivery::Normal, false);
    }

    /// Serves `bytes` under `version` with the given checksum, signature and delivery.
    pub fn publish_with(
        &self,
        version: &str,
        bytes: Vec<u8>,
        sum: &str,
        sig: &str,
        d: Delivery,
        size_as_string: bool,
    ) {
        let name = format!("cells-{}", self.server.requests().len());
        let entry = package_json(
            version,
            &self.server.binary_url(&name),
            bytes.len(),
            sum,
            sig,
            size_as_string,
        );
        self.server.put_binary(&name, bytes, d);
        self.server.set_catalog(
            200,
            serde_json::json!({"Channel": "stable", "AvailableBinaries": [entry]}).to_string(),
        );
    }

    /// The whole pipeline: check the server, pick `version`, stage it.
    pub async fn stage(&self, version: &str) -> cells_updater::Result<Manifest> {
        let resp = update_server::check(
            &self.runner,
            &self.settings,
            &UpdateRequest::new(
                cells_updater::package::Channel::Stable,
                cells_updater::package::Package::Home,
                "4.4.2",
            ),
        )
        .await?;
        let pkg = resp
            .available_binaries
            .iter()
            .find(|p| p.version == version)
            .unwrap_or_else(|| panic!("{version:?} not in catalog"));
        let release = Release::from_offer(
            pkg,
            cells_updater::package::Package::Home,
            &self.server.base(),
            &self.settings.download_hosts,
        )?;
        self.stager
            .stage_release(
                &self.settings,
                &release,
                &self.bounds,
                &mut |_| {},
                &Cancel::new(),
            )
            .await
    }

    pub fn staged_dir(&self) -> PathBuf {
        self.stager.area.path().to_path_buf()
    }

    /// Snapshot of everything under the root except the staging directory.
    pub fn outside(&self) -> BTreeMap<PathBuf, Option<(u64, String)>> {
        let staged = self.staged_dir();
        let rel = staged.strip_prefix(self.root.path()).unwrap().to_path_buf();
        snapshot(self.root.path())
            .into_iter()
            .filter(|(p, _)| !p.starts_with(&rel))
            .collect()
    }
}

pub mod bus;

impl StageEnv {
    /// Offers `(version, mode, slow)` releases signed by the test key (a slow one is 2 MiB,
    /// sent in 64 KiB pieces 40 ms apart).
    pub fn offer(&self, releases: &[(&str, &str, bool)]) {
        let mut entries = Vec::new();
        for (version, mode, slow) in releases {
            let mut bytes = fake_cells(version, mode);
            if *slow {
                bytes.resize(2 << 20, 0x22);
            }
            let (sum, sig) = sign(&bytes, &keys().rsa);
            let name = format!("cells-{version}");
            let delivery = if *slow {
                Delivery::Slow {
                    chunk: 64 << 10,
                    delay_ms: 40,
                }
            } else {
                Delivery::Normal
            };
            self.server.put_binary(&name, bytes.clone(), delivery);
            entries.push(package_json(
                version,
                &self.server.binary_url(&name),
                bytes.len(),
                &sum,
                &sig,
                false,
            ));
        }
        self.server.set_catalog(
            200,
            serde_json::json!({ "AvailableBinaries": entries }).to_string(),
        );
    }

    /// Gives the installed Cells its capability and starts the daemon on `bus` with the
    /// stand-in unit (`fake-unit`), so updates really restart a Cells.
    pub fn start_fake_unit_daemon(&self, bus: &bus::PrivateBus) -> bus::DaemonProc {
        let cells = self.root.path().join("opt/pydio/bin/cells");
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
            .port();
        bus::DaemonProc::start_with_env(
            bus,
            self.root.path(),
            &[("CELLS_UPDATER_FAKE_UNIT", &port.to_string())],
        )
    }

    /// Writes the daemon's configuration under the root: the fake Cells as the binary, `daemon`
    /// (uid 1) as the Cells user, this env's update server, no idle exit.
    pub fn write_daemon_config(&self, extra: &str) {
        let dir = self.root.path().join("etc/cells-updater");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "[cells]\nbinary = \"/opt/pydio/bin/cells\"\nuser = \"daemon\"\n[server]\nurl = \"{}\"\n[daemon]\nidle_exit = \"0\"\n{extra}",
                self.server.base()
            ),
        )
        .unwrap();
    }
}
#[cfg(feature = "fleet")]
pub mod cluster;
#[cfg(feature = "fleet")]
pub mod etcd;
#[cfg(all(feature = "fleet", feature = "fake-unit"))]
pub mod fleet;
pub mod sandbox;

// ------------------------------------------------------------------ benchmarks

/// The middle value (the upper of the two middle ones for an even count).
pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("measurements compare"));
    v[v.len() / 2]
}

/// How many runs a benchmark makes: `BENCH_RUNS`, else `default`; `None` when the bench
/// harness only asks for the list of benchmarks (`--list`).
pub fn bench_runs(default: usize) -> Option<usize> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    Some(
        std::env::var("BENCH_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// `doctor --json`'s findings of `check`, each as "LEVEL MESSAGE".
pub fn doctor_lines(json: &str, check: &str) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(json).expect("doctor --json");
    report["checks"]
        .as_array()
        .expect("a checks array")
        .iter()
        .filter(|c| c["check"] == check)
        .map(|c| {
            format!(
                "{} {}",
                c["level"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}
