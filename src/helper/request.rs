//! The typed helper boundary: one [`Request`] per thing a helper does, and one reply type per
//! request. The request's kind alone decides the rights its helper runs with, its deadline and
//! its environment ([`Request::rights`]); no call site picks them. The daemon side builds a
//! request and calls [`super::Runner::call`] (or [`super::Runner::start`] to read a stream);
//! the helper side ([`super::child`]) parses the same payload types from its standard input.
//!
//! The payloads are plain data, at the bottom of the layers: the operations that give them
//! meaning (`net`, `license`, `cells_config`, `probe`) sit above and import them from here.

use super::{Input, Rights, Task};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

/// The `cells-updater internal` subcommands, one spelling each, used by both sides.
pub mod command {
    /// Runs a Cells binary passed as standard input.
    pub const PROBE: &str = "probe";
    /// Downloads a release.
    pub const FETCH: &str = "fetch";
    /// POSTs an update request to the update server.
    pub const CHECK: &str = "check";
    /// GETs the health URL.
    pub const HTTP_GET: &str = "http-get";
    /// Reads the Enterprise license as the Cells user.
    pub const LICENSE_READ: &str = "license-read";
    /// Writes the Enterprise license as the Cells user.
    pub const LICENSE_WRITE: &str = "license-write";
    /// Reads Cells' own update settings as the Cells user.
    pub const CELLS_CONFIG: &str = "cells-config";
    /// Every command, in the order above.
    pub const ALL: [&str; 7] = [
        PROBE,
        FETCH,
        CHECK,
        HTTP_GET,
        LICENSE_READ,
        LICENSE_WRITE,
        CELLS_CONFIG,
    ];
}

/// Longest a probed binary may run.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of the probed binary's output kept.
pub const PROBE_OUTPUT: usize = 4096;
/// Longest a helper acting as the Cells user may run.
const CELLS_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// What a helper's deadline adds to its own work's timeout: starting it, and its answer.
const START_MARGIN: Duration = Duration::from_secs(10);
/// The same for a check, whose own timeout covers only the request.
const CHECK_MARGIN: Duration = Duration::from_secs(15);

/// The proxy variables network helpers are given (with `NO_PROXY`).
pub const PROXY_ENV: [&str; 5] = [
    "CELLS_UPDATE_HTTP_PROXY",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// Proxy settings handed to a network helper.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProxySettings {
    /// Explicit proxy URL; `None` = `CELLS_UPDATE_HTTP_PROXY`, then `HTTPS_PROXY`/`NO_PROXY`.
    pub proxy: Option<String>,
}

/// A download: `fetch`'s request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The binary's URL (checked again by the helper).
    pub url: String,
    /// The configured server URL the rules are relative to.
    pub server_url: String,
    /// Bytes already held (resume with `Range`); 0 = from the start.
    pub offset: u64,
    /// The advertised size: never more bytes than this.
    pub size: u64,
    /// Minimum rate, bytes per second: the deadline is `max(min_deadline, size / rate)`.
    pub min_rate: u64,
    /// The shortest deadline, seconds (60 in production).
    pub min_deadline_secs: u64,
    /// Longest silence between two reads.
    pub read_timeout_secs: u64,
    /// At least this many bytes per second over every `window_secs` after the first (0: no
    /// such rule).
    #[serde(default)]
    pub window_rate: u64,
    /// The sliding window of `window_rate`, seconds.
    #[serde(default)]
    pub window_secs: u64,
    /// Proxies.
    pub proxy: ProxySettings,
    /// `[server] download_hosts`.
    #[serde(default)]
    pub download_hosts: Vec<String>,
}

impl FetchRequest {
    /// The overall deadline of this download.
    pub fn deadline(&self) -> Duration {
        let by_rate =
            Duration::from_secs(self.size.saturating_sub(self.offset) / self.min_rate.max(1));
        by_rate.max(Duration::from_secs(self.min_deadline_secs.max(1)))
    }
}

/// A metadata frame of `fetch`: `{"start": N}` first, and `{"interrupted": true}` before the
/// result when the transfer broke off (a resumable failure: what arrived is kept). These are
/// the shapes earlier helpers wrote: a daemon and a helper of two builds (during a package
/// upgrade) still understand each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchMeta {
    /// The offset of the first data frame's first byte.
    Start(u64),
    /// The transfer broke off (always `true`).
    Interrupted(bool),
}

/// `fetch`'s result: how many bytes it streamed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct FetchDone {
    /// Bytes sent as data frames.
    pub bytes: u64,
}

/// `check`'s request: the update request to POST.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The configured server URL.
    pub server_url: String,
    /// The `UpdateRequest` body.
    pub body: serde_json::Value,
    /// Longest the whole request may take.
    pub timeout_secs: u64,
    /// Proxies.
    pub proxy: ProxySettings,
}

/// The result of `check` (its body comes as data frames) and of `http-get`: the HTTP status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct HttpStatus {
    /// The status code.
    pub status: u16,
}

/// `http-get`'s request: the health URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpGet {
    /// The configured `[policy] health_url`.
    pub url: String,
    /// Longest the request may take.
    pub timeout_secs: u64,
}

/// The Cells service account a helper runs as (`User=` and `Group=` of the Cells unit).
#[derive(Debug, Clone, PartialEq)]
pub struct CellsAccount {
    /// The user.
    pub user: String,
    /// Its group.
    pub group: String,
}

/// `license-read`'s and `cells-config`'s request: the Cells working directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellsDir {
    /// The directory, opened by the helper as the Cells user.
    pub dir: String,
}

/// `license-read`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicenseKey {
    /// The validated key; `None` when there is no license file.
    pub key: Option<String>,
}

/// `license-write`'s request: the key to put in `<dir>/pydio-license`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicenseWrite {
    /// The Cells working directory: the only one the helper may write.
    pub dir: String,
    /// The key.
    pub key: String,
}

/// `license-write`'s result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LicensePath {
    /// The file written.
    pub path: String,
}

/// `cells-config`'s result: Cells' own update settings, `None` without a config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellsSettings<T> {
    /// The settings found.
    pub settings: Option<T>,
}

/// `probe`'s result: what one run of the probed binary gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output (at most 4 KiB).
    pub stdout: String,
    /// True when it printed more than that.
    #[serde(default)]
    pub truncated: bool,
    /// Standard error (at most 4 KiB).
    #[serde(default)]
    pub stderr: String,
}

/// One helper run, typed. The variant decides the command, the rights, the deadline and the
/// environment.
#[derive(Debug)]
pub enum Request {
    /// Run `binary` (executed from its descriptor) with `args`: no network, a dynamic user.
    Probe {
        /// The binary, open read-only.
        binary: File,
        /// Its arguments.
        args: Vec<String>,
    },
    /// Download a release: the network, a dynamic user.
    Fetch(FetchRequest),
    /// Ask the update server: the network, a dynamic user.
    Check(CheckRequest),
    /// Ask the health URL (Cells on this host): the network with loopback, a dynamic user.
    HttpGet(HttpGet),
    /// Read the license as the Cells user, writing nothing.
    LicenseRead(CellsAccount, CellsDir),
    /// Write the license as the Cells user, who may write its working directory only.
    LicenseWrite(CellsAccount, LicenseWrite),
    /// Read Cells' config file as the Cells user, writing nothing.
    CellsConfig(CellsAccount, CellsDir),
}

/// A typed request and the reply it gets back (see [`super::Runner::call`]).
pub trait Call: Into<Request> {
    /// What the helper answers.
    type Reply: serde::de::DeserializeOwned;
}

impl From<HttpGet> for Request {
    fn from(r: HttpGet) -> Self {
        Request::HttpGet(r)
    }
}

impl Call for HttpGet {
    type Reply = HttpStatus;
}

/// A request as the Cells user: `(account, payload)`.
impl From<(CellsAccount, LicenseWrite)> for Request {
    fn from((who, r): (CellsAccount, LicenseWrite)) -> Self {
        Request::LicenseWrite(who, r)
    }
}

impl Call for (CellsAccount, LicenseWrite) {
    type Reply = LicensePath;
}

/// `license-read` (the payload alone cannot tell it from `cells-config`).
#[derive(Debug)]
pub struct ReadLicense(pub CellsAccount, pub CellsDir);

impl From<ReadLicense> for Request {
    fn from(ReadLicense(who, r): ReadLicense) -> Self {
        Request::LicenseRead(who, r)
    }
}

impl Call for ReadLicense {
    type Reply = LicenseKey;
}

/// `cells-config`, whose settings are read as `T`.
#[derive(Debug)]
pub struct ReadCellsConfig<T>(
    pub CellsAccount,
    pub CellsDir,
    pub std::marker::PhantomData<T>,
);

impl<T> From<ReadCellsConfig<T>> for Request {
    fn from(ReadCellsConfig(who, r, _): ReadCellsConfig<T>) -> Self {
        Request::CellsConfig(who, r)
    }
}

impl<T: serde::de::DeserializeOwned> Call for ReadCellsConfig<T> {
    type Reply = CellsSettings<T>;
}

/// `probe` of an open binary.
#[derive(Debug)]
pub struct Probe {
    /// The binary, open read-only.
    pub binary: File,
    /// Its arguments.
    pub args: Vec<String>,
}

impl From<Probe> for Request {
    fn from(p: Probe) -> Self {
        Request::Probe {
            binary: p.binary,
            args: p.args,
        }
    }
}

impl Call for Probe {
    type Reply = ProbeOutput;
}

impl Request {
    /// The helper subcommand.
    pub fn command(&self) -> &'static str {
        match self {
            Request::Probe { .. } => command::PROBE,
            Request::Fetch(_) => command::FETCH,
            Request::Check(_) => command::CHECK,
            Request::HttpGet(_) => command::HTTP_GET,
            Request::LicenseRead(..) => command::LICENSE_READ,
            Request::LicenseWrite(..) => command::LICENSE_WRITE,
            Request::CellsConfig(..) => command::CELLS_CONFIG,
        }
    }

    /// True when its helper streams bulk bytes back (a download): its output pipe is made
    /// large. Other helpers say little.
    pub fn streams(&self) -> bool {
        matches!(self, Request::Fetch(_))
    }

    /// The rights its helper runs with: the least this kind of work needs.
    pub fn rights(&self) -> Rights {
        let cells_user = |who: &CellsAccount, rw: Option<&str>| Rights::CellsUser {
            user: who.user.clone(),
            group: who.group.clone(),
            rw: rw.map(PathBuf::from),
        };
        match self {
            Request::Probe { .. } => Rights::Sandbox,
            Request::Fetch(r) => Rights::Network {
                loopback: needs_loopback(&r.server_url, &r.proxy),
            },
            Request::Check(r) => Rights::Network {
                loopback: needs_loopback(&r.server_url, &r.proxy),
            },
            // The health URL is Cells on this host.
            Request::HttpGet(_) => Rights::Network { loopback: true },
            Request::LicenseRead(who, _) | Request::CellsConfig(who, _) => cells_user(who, None),
            Request::LicenseWrite(who, r) => cells_user(who, Some(&r.dir)),
        }
    }

    /// Longest its helper may run; it is stopped then.
    pub fn timeout(&self) -> Duration {
        match self {
            Request::Probe { .. } => PROBE_TIMEOUT + START_MARGIN,
            Request::Fetch(r) => r.deadline() + 3 * START_MARGIN,
            Request::Check(r) => Duration::from_secs(r.timeout_secs) + CHECK_MARGIN,
            Request::HttpGet(r) => Duration::from_secs(r.timeout_secs) + START_MARGIN,
            Request::LicenseRead(..) | Request::LicenseWrite(..) | Request::CellsConfig(..) => {
                CELLS_USER_TIMEOUT
            }
        }
    }

    /// The environment it gets: the daemon's own proxy variables for the update server's
    /// requests, nothing for the others.
    fn env(&self) -> Vec<String> {
        self.env_from(|k| std::env::var(k).ok())
    }

    fn env_from(&self, var: impl Fn(&str) -> Option<String>) -> Vec<String> {
        match self {
            Request::Fetch(_) | Request::Check(_) => PROXY_ENV
                .iter()
                .chain(&["NO_PROXY", "no_proxy"])
                .filter_map(|k| var(k).map(|v| format!("{k}={v}")))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The task the runner starts.
    pub(super) fn into_task(self) -> crate::error::Result<Task> {
        let encode = |v: serde_json::Result<Vec<u8>>| {
            v.map_err(|e| {
                crate::error::Error::Internal(format!("cannot encode a helper request: {e}"))
            })
        };
        let (command, rights, timeout, env, streams) = (
            self.command(),
            self.rights(),
            self.timeout(),
            self.env(),
            self.streams(),
        );
        let (args, input) = match self {
            Request::Probe { binary, args } => (args, Input::File(binary)),
            Request::Fetch(r) => (Vec::new(), Input::Json(encode(serde_json::to_vec(&r))?)),
            Request::Check(r) => (Vec::new(), Input::Json(encode(serde_json::to_vec(&r))?)),
            Request::HttpGet(r) => (Vec::new(), Input::Json(encode(serde_json::to_vec(&r))?)),
            Request::LicenseRead(_, r) | Request::CellsConfig(_, r) => {
                (Vec::new(), Input::Json(encode(serde_json::to_vec(&r))?))
            }
            Request::LicenseWrite(_, r) => {
                (Vec::new(), Input::Json(encode(serde_json::to_vec(&r))?))
            }
        };
        Ok(Task {
            command,
            args,
            rights,
            input,
            timeout,
            env,
            streams,
        })
    }
}

/// Whether a URL names this host.
pub fn host_is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(v)) => v.is_loopback(),
        Some(url::Host::Ipv6(v)) => v.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether a network helper for `server_url` may reach loopback addresses at all (the
/// systemd IP filter around it): only when the server, or a proxy the helper would use, is
/// on loopback. The helper's own address policy then decides per URL.
pub fn needs_loopback(server_url: &str, proxy: &ProxySettings) -> bool {
    let env_proxies = PROXY_ENV.iter().filter_map(|k| std::env::var(k).ok());
    std::iter::once(server_url.to_string())
        .chain(proxy.proxy.clone())
        .chain(env_proxies)
        .any(|u| reqwest::Url::parse(&u).is_ok_and(|u| host_is_loopback(&u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> CellsAccount {
        CellsAccount {
            user: "pydio".into(),
            group: "pydio".into(),
        }
    }

    fn fetch(server: &str) -> FetchRequest {
        FetchRequest {
            url: format!("{server}/cells"),
            server_url: server.into(),
            offset: 0,
            size: 100 << 20,
            min_rate: 1 << 20,
            min_deadline_secs: 60,
            read_timeout_secs: 30,
            window_rate: 0,
            window_secs: 0,
            proxy: ProxySettings::default(),
            download_hosts: Vec::new(),
        }
    }

    fn check(server: &str) -> CheckRequest {
        CheckRequest {
            server_url: server.into(),
            body: serde_json::json!({}),
            timeout_secs: 30,
            proxy: ProxySettings::default(),
        }
    }

    /// Row by row: each kind runs with the least rights it needs, and only `license-write`
    /// may write anywhere (the working directory it names). A request cannot ask for more.
    /// The fetch helper's metadata keeps the shapes earlier builds wrote and read.
    #[test]
    fn fetch_metadata_keeps_its_wire_shapes() {
        for (meta, text) in [
            (FetchMeta::Start(5), r#"{"start":5}"#),
            (FetchMeta::Interrupted(true), r#"{"interrupted":true}"#),
        ] {
            assert_eq!(serde_json::to_string(&meta).unwrap(), text);
            assert_eq!(serde_json::from_str::<FetchMeta>(text).unwrap(), meta);
        }
        assert!(serde_json::from_str::<FetchMeta>(r#""interrupted""#).is_err());
        assert!(serde_json::from_str::<FetchMeta>(r#"{"status":200}"#).is_err());
    }

    #[test]
    fn the_kind_decides_the_rights() {
        let binary = File::open("/dev/null").unwrap();
        let dir = || CellsDir {
            dir: "/var/cells".into(),
        };
        let rows: Vec<(Request, &str, Rights)> = vec![
            (
                Request::Probe {
                    binary,
                    args: vec!["version".into()],
                },
                "probe",
                Rights::Sandbox,
            ),
            (
                Request::Fetch(fetch("https://updatecells.pydio.com")),
                "fetch",
                Rights::Network { loopback: false },
            ),
            (
                Request::Fetch(fetch("http://127.0.0.1:8080")),
                "fetch",
                Rights::Network { loopback: true },
            ),
            (
                Request::Check(check("https://updatecells.pydio.com")),
                "check",
                Rights::Network { loopback: false },
            ),
            (
                Request::Check(check("http://localhost:8080")),
                "check",
                Rights::Network { loopback: true },
            ),
            (
                Request::HttpGet(HttpGet {
                    url: "https://127.0.0.1/".into(),
                    timeout_secs: 5,
                }),
                "http-get",
                Rights::Network { loopback: true },
            ),
            (
                Request::LicenseRead(who(), dir()),
                "license-read",
                Rights::CellsUser {
                    user: "pydio".into(),
                    group: "pydio".into(),
                    rw: None,
                },
            ),
            (
                Request::CellsConfig(who(), dir()),
                "cells-config",
                Rights::CellsUser {
                    user: "pydio".into(),
                    group: "pydio".into(),
                    rw: None,
                },
            ),
            (
                Request::LicenseWrite(
                    who(),
                    LicenseWrite {
                        dir: "/var/cells".into(),
                        key: "k".into(),
                    },
                ),
                "license-write",
                Rights::CellsUser {
                    user: "pydio".into(),
                    group: "pydio".into(),
                    rw: Some(PathBuf::from("/var/cells")),
                },
            ),
        ];
        for (req, command, rights) in rows {
            assert_eq!(req.command(), command);
            assert!(command::ALL.contains(&command), "{command}");
            assert_eq!(req.rights(), rights, "{command}");
            let task = req.into_task().unwrap();
            assert_eq!(task.rights, rights, "{command}");
            assert_eq!(task.command, command);
            assert_eq!(
                task.streams,
                command == "fetch",
                "{command}: only a download streams"
            );
        }
    }

    /// Deadlines follow the work: a download's grows with its size, the others are fixed.
    #[test]
    fn deadlines_follow_the_work() {
        let small = Request::Fetch(fetch("https://u"));
        let mut big = fetch("https://u");
        big.size = 10 << 30;
        let big = Request::Fetch(big);
        assert_eq!(small.timeout(), Duration::from_secs(100 + 30));
        assert_eq!(big.timeout(), Duration::from_secs(10 * 1024 + 30));
        assert_eq!(
            Request::Check(check("https://u")).timeout(),
            Duration::from_secs(45)
        );
    }

    /// Only the update server's requests carry the proxy variables.
    #[test]
    fn only_update_server_requests_get_the_proxy_environment() {
        let var = |k: &str| (k == "HTTPS_PROXY").then(|| "http://proxy.example:3128".to_string());
        let want = vec!["HTTPS_PROXY=http://proxy.example:3128".to_string()];
        assert_eq!(Request::Check(check("https://u")).env_from(var), want);
        assert_eq!(Request::Fetch(fetch("https://u")).env_from(var), want);
        let health = Request::HttpGet(HttpGet {
            url: "https://127.0.0.1/".into(),
            timeout_secs: 5,
        });
        assert!(health.env_from(var).is_empty());
        let probe = Request::Probe {
            binary: File::open("/dev/null").unwrap(),
            args: Vec::new(),
        };
        assert!(probe.env_from(var).is_empty());
    }
}
