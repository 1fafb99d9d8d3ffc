//! Configuration: `/etc/cells-updater/config.toml`, then `config.d/*.toml` in name order,
//! later values winning. Every path is resolved under a root prefix (`/` in production, a
//! scratch tree in tests). An unknown key or a bad value is an error naming the file and key.

use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// A configuration file could not be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What `check --auto` may install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoPolicy {
    /// Never install automatically.
    None,
    /// Same major.minor, newer patch.
    Patch,
    /// Same major, newer minor or patch.
    Minor,
    /// Any newer version.
    All,
}

/// What Apply does when the new version does not come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Put the previous binary back and restart.
    #[default]
    Rollback,
    /// Leave the new binary in place.
    Keep,
}

/// Which file capabilities the new binary gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityPolicy {
    /// The same as the old binary had.
    Preserve,
    /// `cap_net_bind_service=+ep`.
    Always,
    /// None.
    Never,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root prefix every absolute path is resolved under.
    pub root: PathBuf,
    /// `[cells] unit`.
    pub unit: String,
    /// `[cells] binary`; `None` = the unit's ExecStart path.
    pub binary: Option<PathBuf>,
    /// `[cells] user`; `None` = the unit's User=.
    pub user: Option<String>,
    /// `[server] url`.
    pub server_url: String,
    /// `[server] channel`.
    pub channel: crate::package::Channel,
    /// `[server] package`.
    pub package: crate::package::Package,
    /// `[server] keys_dir` (absolute, before the root prefix).
    pub keys_dir: PathBuf,
    /// `[server] proxy`; `None` = from the environment.
    pub proxy: Option<String>,
    /// `[server] timeout`.
    pub timeout: Duration,
    /// `[server] max_binary_size`.
    pub max_binary_size: u64,
    /// `[server] min_download_rate`, bytes per second.
    pub min_download_rate: u64,
    /// `[server] download_hosts`: where a `BinaryURL` may point besides the server's host.
    pub download_hosts: Vec<String>,
    /// `[server] min_window_rate`, bytes per second over every `rate_window`.
    pub min_window_rate: u64,
    /// `[server] rate_window`.
    pub rate_window: Duration,
    /// `[policy] auto`.
    pub auto: AutoPolicy,
    /// `[policy] on_failure`.
    pub on_failure: OnFailure,
    /// `[policy] capabilities`.
    pub capabilities: CapabilityPolicy,
    /// `[policy] health_url`.
    pub health_url: Option<String>,
    /// `[policy] health_settle`.
    pub health_settle: Duration,
    /// `[policy] health_timeout`.
    pub health_timeout: Duration,
    /// `[policy] keep_versions`.
    pub keep_versions: u32,
    /// `[policy] windows`: when `check --auto` may apply (empty: any time).
    pub windows: Vec<String>,
    /// `[policy] timezone` of the windows; `None` = the host's.
    pub timezone: Option<String>,
    /// `[policy] min_release_age`: automatic installs skip younger releases.
    pub min_release_age: Duration,
    /// `[policy] check_interval`: `check --auto` asks the server at most this often.
    pub check_interval: Duration,
    /// `[server] trust_vendor_keys`: trust the keys shipped in [`VENDOR_KEYS_DIR`].
    pub trust_vendor_keys: bool,
    /// `[server] follow_cells_config`: follow the update URL and channel in Cells' own
    /// `pydio.json` (explicit `[server] url`/`channel` win).
    pub follow_cells_config: bool,
    /// Whether `[server] url` was set in a file (it then wins over Cells' own setting).
    pub server_url_set: bool,
    /// Whether `[server] channel` was set in a file.
    pub channel_set: bool,
    /// `[daemon] state_dir` (absolute, before the root prefix).
    pub state_dir: PathBuf,
    /// `[daemon] idle_exit`; zero = never.
    pub idle_exit: Duration,
    /// `[daemon] probe_user`.
    pub probe_user: String,
    /// `[daemon] metrics_file` (absolute, before the root prefix); `None` = no metrics.
    pub metrics_file: Option<PathBuf>,
    /// `[fleet]`: this node is one of a cluster's (docs/fleet.md); `None` without the section.
    pub fleet: Option<crate::fleet::FleetConfig>,
}

/// Where the Prometheus textfile goes by default: the node_exporter textfile collector's
/// directory on Debian (written only when that directory exists).
pub const DEFAULT_METRICS_FILE: &str = "/var/lib/prometheus/node-exporter/cells-updater.prom";

/// Where the package puts the publishers' keys (Pydio's), trusted unless
/// `[server] trust_vendor_keys = false`.
pub const VENDOR_KEYS_DIR: &str = "/usr/share/cells-updater/keys.d";

/// Default location of the main file.
pub const DEFAULT_CONFIG: &str = "/etc/cells-updater/config.toml";

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/"),
            unit: "cells.service".into(),
            binary: None,
            user: None,
            server_url: "https://updatecells.pydio.com/".into(),
            channel: crate::package::Channel::Stable,
            package: crate::package::Package::Home,
            keys_dir: PathBuf::from("/etc/cells-updater/keys.d"),
            proxy: None,
            timeout: Duration::from_secs(60),
            max_binary_size: 1 << 30,
            min_download_rate: 64 << 10,
            min_window_rate: 32 << 10,
            download_hosts: vec![crate::net::PYDIO_DOWNLOAD_HOST.to_string()],
            rate_window: Duration::from_secs(60),
            auto: AutoPolicy::None,
            on_failure: OnFailure::Rollback,
            capabilities: CapabilityPolicy::Preserve,
            health_url: None,
            health_settle: Duration::from_secs(10),
            health_timeout: Duration::from_secs(90),
            keep_versions: 2,
            windows: Vec::new(),
            timezone: None,
            min_release_age: Duration::ZERO,
            check_interval: Duration::from_secs(86_400),
            trust_vendor_keys: true,
            follow_cells_config: true,
            server_url_set: false,
            channel_set: false,
            state_dir: PathBuf::from("/var/lib/cells-updater"),
            idle_exit: Duration::from_secs(300),
            probe_user: "nobody".into(),
            metrics_file: Some(PathBuf::from(DEFAULT_METRICS_FILE)),
            fleet: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    cells: Option<CellsSection>,
    server: Option<ServerSection>,
    policy: Option<PolicySection>,
    daemon: Option<DaemonSection>,
    fleet: Option<FleetSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CellsSection {
    unit: Option<String>,
    binary: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    url: Option<String>,
    channel: Option<String>,
    package: Option<String>,
    keys_dir: Option<String>,
    proxy: Option<String>,
    timeout: Option<String>,
    max_binary_size: Option<i64>,
    min_download_rate: Option<i64>,
    min_window_rate: Option<i64>,
    download_hosts: Option<Vec<String>>,
    rate_window: Option<String>,
    trust_vendor_keys: Option<bool>,
    follow_cells_config: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    auto: Option<String>,
    on_failure: Option<String>,
    capabilities: Option<String>,
    health_url: Option<String>,
    health_settle: Option<String>,
    health_timeout: Option<String>,
    keep_versions: Option<i64>,
    windows: Option<Vec<String>>,
    timezone: Option<String>,
    min_release_age: Option<String>,
    check_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetSection {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    cluster: Option<String>,
    node: Option<String>,
    max_parallel: Option<i64>,
    lease_ttl: Option<String>,
    slot_wait: Option<String>,
    canary_soak: Option<String>,
    timeout: Option<String>,
    poll: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSection {
    state_dir: Option<String>,
    idle_exit: Option<String>,
    probe_user: Option<String>,
    metrics_file: Option<String>,
}

impl Config {
    /// Loads `main` (default [`DEFAULT_CONFIG`]) and the `config.d/*.toml` beside it, all
    /// under `root`. A missing main file means all defaults.
    pub fn load(root: &Path, main: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg = Config {
            root: root.to_path_buf(),
            ..Config::default()
        };
        let main = main.map_or_else(|| under(root, Path::new(DEFAULT_CONFIG)), Path::to_path_buf);
        let mut files = Vec::new();
        if main.exists() {
            files.push(main.clone());
        }
        let dropins = main.with_file_name("config.d");
        if let Ok(entries) = std::fs::read_dir(&dropins) {
            let mut frags: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            frags.sort();
            files.extend(frags);
        }
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", file.display())))?;
            cfg.apply(&text, &file.display().to_string())?;
        }
        Ok(cfg)
    }

    /// Applies one file's text over the current values.
    pub fn apply(&mut self, text: &str, file: &str) -> Result<(), ConfigError> {
        let doc: FileDoc = toml::from_str(text)
            .map_err(|e| ConfigError(format!("{file}: {}", e.to_string().trim_end())))?;
        let bad = |key: &str, why: String| ConfigError(format!("{file}: key {key}: {why}"));
        if let Some(c) = doc.cells {
            if let Some(v) = c.unit {
                if !v.ends_with(".service") || v.contains('/') || v.len() <= 8 {
                    return Err(bad(
                        "[cells] unit",
                        format!("{v:?} is not a service unit name"),
                    ));
                }
                self.unit = v;
            }
            if let Some(v) = c.binary {
                self.binary = if v.is_empty() {
                    None
                } else {
                    Some(absolute(&v).map_err(|w| bad("[cells] binary", w))?)
                };
            }
            if let Some(v) = c.user {
                self.user = (!v.is_empty()).then_some(v);
            }
        }
        if let Some(s) = doc.server {
            if let Some(v) = s.url {
                let url = reqwest::Url::parse(&v).map_err(|e| {
                    bad(
                        "[server] url",
                        format!("{:?} is not a URL: {e}", crate::text::one_line(&v, 200)),
                    )
                })?;
                no_credentials(&url).map_err(|w| bad("[server] url", w))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(bad("[server] url", format!("{v:?} must be http or https")));
                }
                self.server_url = v;
                self.server_url_set = true;
            }
            if let Some(v) = s.channel {
                self.channel = crate::package::Channel::parse(&v)
                    .ok_or_else(|| bad("[server] channel", expected(&v, "stable, dev")))?;
                self.channel_set = true;
            }
            if let Some(v) = s.package {
                self.package = crate::package::Package::parse(&v).ok_or_else(|| {
                    bad(
                        "[server] package",
                        expected(
                            &v,
                            &crate::package::Package::ALL.map(|p| p.as_str()).join(", "),
                        ),
                    )
                })?;
            }
            if let Some(v) = s.keys_dir {
                self.keys_dir = absolute(&v).map_err(|w| bad("[server] keys_dir", w))?;
            }
            if let Some(v) = s.proxy {
                self.proxy = (!v.is_empty()).then_some(v);
            }
            if let Some(v) = s.timeout {
                self.timeout = positive(&v).map_err(|w| bad("[server] timeout", w))?;
            }
            if let Some(v) = s.max_binary_size {
                if v <= 0 {
                    return Err(bad("[server] max_binary_size", format!("{v} must be > 0")));
                }
                self.max_binary_size = v as u64;
            }
            if let Some(v) = s.min_download_rate {
                if v < 1024 {
                    return Err(bad(
                        "[server] min_download_rate",
                        format!("{v} must be at least 1024 (bytes per second)"),
                    ));
                }
                self.min_download_rate = v as u64;
            }
            if let Some(v) = s.min_window_rate {
                if v < 1024 {
                    return Err(bad(
                        "[server] min_window_rate",
                        format!("{v} must be at least 1024 (bytes per second)"),
                    ));
                }
                self.min_window_rate = v as u64;
            }
            if let Some(v) = s.download_hosts {
                for h in &v {
                    let bare = h.trim_start_matches('[').trim_end_matches(']');
                    let plain = !bare.is_empty()
                        && !bare.contains(['/', '@', ' ', '?', '#'])
                        && (bare.parse::<std::net::IpAddr>().is_ok()
                            || (!bare.contains(':') && url::Host::parse(bare).is_ok()));
                    if !plain {
                        return Err(bad(
                            "[server] download_hosts",
                            format!(
                                "{:?} is not a host name or address (no scheme, port or path)",
                                crate::text::one_line(h, 100)
                            ),
                        ));
                    }
                }
                self.download_hosts = v
                    .iter()
                    .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
                    .collect();
            }
            if let Some(v) = s.rate_window {
                let d = positive(&v).map_err(|w| bad("[server] rate_window", w))?;
                if d < Duration::from_secs(1) {
                    return Err(bad(
                        "[server] rate_window",
                        format!("{v:?} must be at least 1s"),
                    ));
                }
                self.rate_window = d;
            }
            if let Some(v) = s.trust_vendor_keys {
                self.trust_vendor_keys = v;
            }
            if let Some(v) = s.follow_cells_config {
                self.follow_cells_config = v;
            }
        }
        if let Some(p) = doc.policy {
            if let Some(v) = p.auto {
                self.auto = match v.as_str() {
                    "none" => AutoPolicy::None,
                    "patch" => AutoPolicy::Patch,
                    "minor" => AutoPolicy::Minor,
                    "all" => AutoPolicy::All,
                    _ => {
                        return Err(bad(
                            "[policy] auto",
                            expected(&v, "none, patch, minor, all"),
                        ))
                    }
                };
            }
            if let Some(v) = p.on_failure {
                self.on_failure = match v.as_str() {
                    "rollback" => OnFailure::Rollback,
                    "keep" => OnFailure::Keep,
                    _ => return Err(bad("[policy] on_failure", expected(&v, "rollback, keep"))),
                };
            }
            if let Some(v) = p.capabilities {
                self.capabilities = match v.as_str() {
                    "preserve" => CapabilityPolicy::Preserve,
                    "always" => CapabilityPolicy::Always,
                    "never" => CapabilityPolicy::Never,
                    _ => {
                        return Err(bad(
                            "[policy] capabilities",
                            expected(&v, "preserve, always, never"),
                        ))
                    }
                };
            }
            if let Some(v) = p.health_url {
                if !v.is_empty() {
                    let url = reqwest::Url::parse(&v).map_err(|e| {
                        bad(
                            "[policy] health_url",
                            format!("{:?} is not a URL: {e}", crate::text::one_line(&v, 200)),
                        )
                    })?;
                    no_credentials(&url).map_err(|w| bad("[policy] health_url", w))?;
                }
                self.health_url = (!v.is_empty()).then_some(v);
            }
            if let Some(v) = p.health_settle {
                self.health_settle =
                    parse_duration(&v).map_err(|w| bad("[policy] health_settle", w))?;
            }
            if let Some(v) = p.health_timeout {
                self.health_timeout =
                    positive(&v).map_err(|w| bad("[policy] health_timeout", w))?;
            }
            if let Some(v) = p.keep_versions {
                if !(1..=100).contains(&v) {
                    return Err(bad(
                        "[policy] keep_versions",
                        format!("{v} must be 1 to 100"),
                    ));
                }
                self.keep_versions = v as u32;
            }
            if let Some(v) = p.windows {
                for w in &v {
                    crate::schedule::Window::parse(w).map_err(|e| bad("[policy] windows", e))?;
                }
                self.windows = v;
            }
            if let Some(v) = p.timezone {
                if !v.is_empty() {
                    jiff::tz::TimeZone::get(&v).map_err(|e| {
                        bad(
                            "[policy] timezone",
                            format!("{v:?} is not a time zone ({e})"),
                        )
                    })?;
                }
                self.timezone = (!v.is_empty()).then_some(v);
            }
            if let Some(v) = p.min_release_age {
                self.min_release_age =
                    parse_duration(&v).map_err(|w| bad("[policy] min_release_age", w))?;
            }
            if let Some(v) = p.check_interval {
                self.check_interval =
                    positive(&v).map_err(|w| bad("[policy] check_interval", w))?;
            }
        }
        if let Some(d) = doc.daemon {
            if let Some(v) = d.state_dir {
                self.state_dir = absolute(&v).map_err(|w| bad("[daemon] state_dir", w))?;
            }
            if let Some(v) = d.idle_exit {
                self.idle_exit = parse_duration(&v).map_err(|w| bad("[daemon] idle_exit", w))?;
            }
            if let Some(v) = d.probe_user {
                if v.is_empty() || v == "root" {
                    return Err(bad(
                        "[daemon] probe_user",
                        format!("{v:?}: the probe must run as an unprivileged user"),
                    ));
                }
                self.probe_user = v;
            }
            if let Some(v) = d.metrics_file {
                self.metrics_file = if v.is_empty() {
                    None
                } else {
                    let p = absolute(&v).map_err(|w| bad("[daemon] metrics_file", w))?;
                    if p.file_name().is_none() {
                        return Err(bad("[daemon] metrics_file", format!("{v:?} names no file")));
                    }
                    Some(p)
                };
            }
        }
        if let Some(f) = doc.fleet {
            let mut fleet = self.fleet.take().unwrap_or_default();
            apply_fleet(&mut fleet, f, &bad)?;
            self.fleet = Some(fleet);
        }
        Ok(())
    }

    /// `abs` resolved under the root prefix.
    pub fn path(&self, abs: &Path) -> PathBuf {
        under(&self.root, abs)
    }

    /// The state directory, under the root prefix.
    pub fn state_dir(&self) -> PathBuf {
        self.path(&self.state_dir)
    }

    /// Where and how the update server is asked.
    pub fn server_settings(&self) -> crate::update_server::ServerSettings {
        crate::update_server::ServerSettings {
            url: self.server_url.clone(),
            timeout: self.timeout,
            proxy: crate::net::ProxySettings {
                proxy: self.proxy.clone(),
            },
            download_hosts: self.download_hosts.clone(),
        }
    }

    /// The windows as a schedule (checked when the configuration was read).
    pub fn schedule(&self) -> Result<crate::schedule::Schedule, ConfigError> {
        crate::schedule::Schedule::parse(&self.windows, self.timezone.as_deref())
            .map_err(|e| ConfigError(format!("[policy] windows: {e}")))
    }

    /// The vendor keys directory, under the root prefix.
    pub fn vendor_keys_dir(&self) -> PathBuf {
        self.path(Path::new(VENDOR_KEYS_DIR))
    }

    /// Every directory whose keys are trusted: `[server] keys_dir`, then the vendor's.
    pub fn trusted_key_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.keys_dir()];
        if self.trust_vendor_keys {
            dirs.push(self.vendor_keys_dir());
        }
        dirs
    }

    /// The trusted keys directory, under the root prefix.
    pub fn keys_dir(&self) -> PathBuf {
        self.path(&self.keys_dir)
    }
}

/// `abs` (an absolute path) placed under `root`.
pub fn under(root: &Path, abs: &Path) -> PathBuf {
    let rel: PathBuf = abs
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    root.join(rel)
}

/// Applies one file's `[fleet]` section.
fn apply_fleet(
    f: &mut crate::fleet::FleetConfig,
    s: FleetSection,
    bad: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    use crate::fleet::name_ok;
    if let Some(v) = s.endpoints {
        let mut schemes = Vec::new();
        for e in &v {
            let shown = crate::text::one_line(e, 200);
            let url = reqwest::Url::parse(e).map_err(|err| {
                bad(
                    "[fleet] endpoints",
                    format!("{shown:?} is not a URL: {err}"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(bad(
                    "[fleet] endpoints",
                    format!("{shown:?} must be http://HOST:PORT or https://HOST:PORT"),
                ));
            }
            no_credentials(&url).map_err(|w| bad("[fleet] endpoints", w))?;
            schemes.push(url.scheme().to_string());
        }
        if schemes.iter().any(|s| s != &schemes[0]) {
            return Err(bad(
                "[fleet] endpoints",
                "mixes http:// and https://: use one (https with [fleet] ca, cert and key)".into(),
            ));
        }
        f.endpoints = v;
    }
    if let Some(v) = s.prefix {
        let ok = v.is_empty() || (v.starts_with('/') && !v.contains("..") && !v.contains('\0'));
        if !ok {
            return Err(bad(
                "[fleet] prefix",
                format!("{v:?} must be empty or an etcd key prefix starting with /"),
            ));
        }
        f.prefix = v.trim_end_matches('/').to_string();
    }
    for (key, v, slot) in [
        ("[fleet] ca", s.ca, &mut f.ca),
        ("[fleet] cert", s.cert, &mut f.cert),
        ("[fleet] key", s.key, &mut f.key),
    ] {
        if let Some(v) = v {
            *slot = if v.is_empty() {
                None
            } else {
                Some(absolute(&v).map_err(|w| bad(key, w))?)
            };
        }
    }
    if let Some(v) = s.cluster {
        if !name_ok(&v) {
            return Err(bad(
                "[fleet] cluster",
                format!("{v:?} must be 1 to 64 letters, digits, '.', '_' or '-'"),
            ));
        }
        f.cluster = v;
    }
    if let Some(v) = s.node {
        if !(v.is_empty() || name_ok(&v)) {
            return Err(bad(
                "[fleet] node",
                format!("{v:?} must be empty (the machine id) or 1 to 64 letters, digits, '.', '_' or '-'"),
            ));
        }
        f.node = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = s.max_parallel {
        if !(1..=64).contains(&v) {
            return Err(bad("[fleet] max_parallel", format!("{v} must be 1 to 64")));
        }
        f.max_parallel = v as u32;
    }
    if let Some(v) = s.lease_ttl {
        let d = positive(&v).map_err(|w| bad("[fleet] lease_ttl", w))?;
        if d < Duration::from_secs(2) || d > Duration::from_secs(3600) {
            return Err(bad(
                "[fleet] lease_ttl",
                format!("{v:?} must be between 2s and 1h"),
            ));
        }
        f.lease_ttl = d;
    }
    if let Some(v) = s.slot_wait {
        let d = positive(&v).map_err(|w| bad("[fleet] slot_wait", w))?;
        if d > Duration::from_secs(24 * 3600) {
            return Err(bad(
                "[fleet] slot_wait",
                format!("{v:?} must be at most 24h"),
            ));
        }
        f.slot_wait = d;
    }
    if let Some(v) = s.canary_soak {
        f.canary_soak = parse_duration(&v).map_err(|w| bad("[fleet] canary_soak", w))?;
    }
    if let Some(v) = s.timeout {
        let d = positive(&v).map_err(|w| bad("[fleet] timeout", w))?;
        if d > Duration::from_secs(60) {
            return Err(bad("[fleet] timeout", format!("{v:?} must be at most 60s")));
        }
        f.timeout = d;
    }
    if let Some(v) = s.poll {
        let d = positive(&v).map_err(|w| bad("[fleet] poll", w))?;
        if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
            return Err(bad(
                "[fleet] poll",
                format!("{v:?} must be between 1s and 24h"),
            ));
        }
        f.poll = d;
    }
    Ok(())
}

fn absolute(v: &str) -> Result<PathBuf, String> {
    let p = Path::new(v);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{v:?} must be an absolute path without \"..\""));
    }
    Ok(p.to_path_buf())
}

fn expected(v: &str, allowed: &str) -> String {
    format!("{v:?} is not one of {allowed}")
}

fn positive(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() {
        return Err(format!("{v:?} must be longer than zero"));
    }
    Ok(d)
}

/// Parses a systemd-style duration: `90s`, `5min`, `1h 30min`, `250ms`, or a bare number of
/// seconds. `"0"` is zero.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let err = |why: String| {
        format!("{v:?} is not a duration (examples: 90s, 5min, 1h 30m, 250ms, 3d){why}")
    };
    let s = v.trim();
    // A bare number is seconds, as systemd reads it.
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| err(String::new()));
    }
    // jiff's "friendly" format (also ISO 8601); days count as 24 hours, months and years
    // have no fixed length and are refused.
    let span: jiff::Span = s.parse().map_err(|e| err(format!(": {e}")))?;
    let d = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| err(format!(": {e}")))?;
    Duration::try_from(d).map_err(|_| err(": it is negative".into()))
}

/// Refuses a URL that carries a user name or password (`https://user:pass@host/`): the
/// server's URL is shown in `LastError`, `STATUS=` and the journal, so a secret in it would
/// leak there. The message never repeats the URL. (Proxies keep their own settings.)
pub fn no_credentials(url: &reqwest::Url) -> std::result::Result<(), String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(());
    }
    Err(format!(
        "a URL with a user name or password (user:pass@{}) is refused: it would be copied into \
         LastError, the unit's status and the journal; give the address alone (a proxy's \
         credentials go in [server] proxy or HTTPS_PROXY)",
        url.host_str()
            .map_or(String::new(), |h| crate::text::one_line(h, 100))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30min"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert_eq!(parse_duration("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "5 parsecs", "-1s", "1mo", "2 years"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn later_fragments_win_and_defaults_hold() {
        let mut cfg = Config::default();
        cfg.apply(
            "[server]\nchannel = \"dev\"\n[policy]\nauto = \"patch\"\n",
            "a.toml",
        )
        .unwrap();
        cfg.apply("[server]\nchannel = \"stable\"\n", "b.toml")
            .unwrap();
        assert_eq!(cfg.channel, crate::package::Channel::Stable);
        assert_eq!(cfg.auto, AutoPolicy::Patch);
        assert_eq!(cfg.unit, "cells.service");
        assert_eq!(cfg.max_binary_size, 1 << 30);
    }

    #[test]
    fn bad_input_names_file_and_key() {
        let rows: &[(&str, &str)] = &[
            ("[server]\nchanel = \"dev\"\n", "chanel"),
            ("[server]\nchannel = \"beta\"\n", "[server] channel"),
            ("[policy]\nauto = \"yes\"\n", "[policy] auto"),
            (
                "[policy]\nhealth_settle = \"soon\"\n",
                "[policy] health_settle",
            ),
            (
                "[daemon]\nstate_dir = \"relative/dir\"\n",
                "[daemon] state_dir",
            ),
            ("[daemon]\nprobe_user = \"root\"\n", "[daemon] probe_user"),
            (
                "[server]\nmax_binary_size = 0\n",
                "[server] max_binary_size",
            ),
            ("[server]\ntimeout = \"0\"\n", "[server] timeout"),
            (
                "[fleet]\nendpoints = [\"etcd://h:2379\"]\n",
                "[fleet] endpoints",
            ),
            (
                "[fleet]\nendpoints = [\"http://a:2379\", \"https://b:2379\"]\n",
                "[fleet] endpoints",
            ),
            (
                "[fleet]\nendpoints = [\"https://u:pw@a:2379\"]\n",
                "[fleet] endpoints",
            ),
            ("[fleet]\ncluster = \"../x\"\n", "[fleet] cluster"),
            ("[fleet]\nnode = \"a b\"\n", "[fleet] node"),
            ("[fleet]\nmax_parallel = 0\n", "[fleet] max_parallel"),
            ("[fleet]\nlease_ttl = \"1s\"\n", "[fleet] lease_ttl"),
            ("[fleet]\nslot_wait = \"0\"\n", "[fleet] slot_wait"),
            ("[fleet]\nslot_wait = \"2d\"\n", "[fleet] slot_wait"),
            ("[fleet]\ntimeout = \"2h\"\n", "[fleet] timeout"),
            ("[fleet]\npoll = \"100ms\"\n", "[fleet] poll"),
            ("[fleet]\nca = \"relative.crt\"\n", "[fleet] ca"),
            ("[fleet]\nprefix = \"cells\"\n", "[fleet] prefix"),
            ("[fleet]\nbogus = 1\n", "bogus"),
            (
                "[server]\nmin_window_rate = 10\n",
                "[server] min_window_rate",
            ),
            (
                "[server]\ndownload_hosts = [\"https://mirror.example/\"]\n",
                "[server] download_hosts",
            ),
            (
                "[server]\ndownload_hosts = [\"\"]\n",
                "[server] download_hosts",
            ),
            (
                "[server]\nrate_window = \"500ms\"\n",
                "[server] rate_window",
            ),
            ("[server]\nurl = \"ftp://x/\"\n", "[server] url"),
            (
                "[server]\nurl = \"https://admin:s3cret@mirror.example/\"\n",
                "[server] url",
            ),
            (
                "[server]\nurl = \"https://token@mirror.example/\"\n",
                "[server] url",
            ),
            (
                "[policy]\nhealth_url = \"http://u:p@127.0.0.1/health\"\n",
                "[policy] health_url",
            ),
            ("[nonsense]\n", "nonsense"),
        ];
        for (text, key) in rows {
            let mut cfg = Config::default();
            let err = cfg
                .apply(text, "/etc/cells-updater/config.d/10-x.toml")
                .unwrap_err();
            assert!(
                err.0.starts_with("/etc/cells-updater/config.d/10-x.toml: "),
                "{err}"
            );
            assert!(err.0.contains(key), "{key}: {err}");
            assert!(!err.0.contains("s3cret"), "the password is repeated: {err}");
            assert_eq!(
                cfg.server_url,
                Config::default().server_url,
                "{text}: applied"
            );
        }
    }

    #[test]
    fn a_fleet_section_is_read_and_absent_changes_nothing() {
        assert_eq!(Config::default().fleet, None);
        let mut cfg = Config::default();
        cfg.apply(
            "[fleet]\nendpoints = [\"https://10.0.0.1:2379\"]\ncluster = \"prod\"\n\
             max_parallel = 2\nlease_ttl = \"10s\"\nprefix = \"/cells/\"\n",
            "t",
        )
        .unwrap();
        let f = cfg.fleet.clone().unwrap();
        assert_eq!(f.endpoints, ["https://10.0.0.1:2379"]);
        assert_eq!((f.cluster.as_str(), f.max_parallel), ("prod", 2));
        assert_eq!(f.lease_ttl, Duration::from_secs(10));
        assert_eq!(f.prefix, "/cells");
        // A later file changes one key and keeps the others.
        cfg.apply("[fleet]\nmax_parallel = 3\n", "t2").unwrap();
        let f = cfg.fleet.unwrap();
        assert_eq!((f.cluster.as_str(), f.max_parallel), ("prod", 3));
    }

    #[test]
    fn paths_resolve_under_root() {
        assert_eq!(
            under(Path::new("/tmp/r"), Path::new("/var/lib/x")),
            PathBuf::from("/tmp/r/var/lib/x")
        );
        assert_eq!(
            under(Path::new("/"), Path::new("/etc")),
            PathBuf::from("/etc")
        );
    }
}

#[cfg(test)]
mod dist_tests {
    use super::*;

    /// dist/config.toml documents every key with its default: uncommented, it must parse
    /// and change nothing; and every key the parser knows must appear in it.
    #[test]
    fn shipped_config_documents_every_key_with_its_default() {
        let text = include_str!("../dist/config.toml");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let mut cfg = Config::default();
        cfg.apply(&uncommented, "dist/config.toml").unwrap();
        // Written out, url and channel count as set; their values are the defaults.
        assert!(cfg.server_url_set && cfg.channel_set);
        cfg.server_url_set = false;
        cfg.channel_set = false;
        assert_eq!(format!("{cfg:?}"), format!("{:?}", Config::default()));
        let keys = [
            "unit",
            "binary",
            "user",
            "url",
            "channel",
            "package",
            "keys_dir",
            "proxy",
            "timeout",
            "max_binary_size",
            "min_download_rate",
            "min_window_rate",
            "download_hosts",
            "rate_window",
            "auto",
            "on_failure",
            "capabilities",
            "health_url",
            "health_settle",
            "health_timeout",
            "keep_versions",
            "windows",
            "timezone",
            "min_release_age",
            "check_interval",
            "trust_vendor_keys",
            "follow_cells_config",
            "state_dir",
            "idle_exit",
            "probe_user",
            "metrics_file",
        ];
        for k in keys {
            assert!(
                text.contains(&format!("#{k} = ")),
                "dist/config.toml lacks {k}"
            );
        }
    }
}
