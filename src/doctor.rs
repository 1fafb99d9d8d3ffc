//! `cells-updater doctor` and `cells-updater config`: the host as the daemon would see it,
//! inspected as root with the daemon's own code paths (the unit's facts from systemd, the
//! binary's directory chain opened per I9 without adopting anything, the Cells user's files
//! read by a helper running as that user, the probe and the network in their sandboxes). It
//! changes nothing on disk.

use crate::cells_config::CellsUpdateSettings;
use crate::config::{CapabilityPolicy, Config};
use crate::contract::manager_prop;
use crate::error::{Error, Result};
use crate::helper::Runner;
use crate::settings::Effective;
use crate::systemd::UnitFacts;
use crate::trust::{TrustedKey, TrustedKeys};
use serde::Serialize;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

/// The check timer `doctor` looks at.
pub const CHECK_TIMER: &str = "cells-updater-check.timer";
/// `CAP_NET_BIND_SERVICE`'s bit in a capability mask.
const CAP_NET_BIND_SERVICE: u64 = 1 << crate::fcaps::CAP_NET_BIND_SERVICE;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but not as an admin would want.
    Warn,
    /// An update would fail (or cannot be verified).
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Which check (`unit`, `binary`, …).
    pub check: &'static str,
    /// Its outcome.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do, `""` when nothing.
    pub fix: String,
}

/// Short ids of several keys, for one line.
fn short_ids(ids: &[String]) -> String {
    ids.iter()
        .map(|id| crate::trust::keys_short_id(id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn finding(check: &'static str, level: Level, message: String, fix: &str) -> Finding {
    Finding {
        check,
        level,
        message,
        fix: fix.to_string(),
    }
}

/// Where a trusted key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// Shipped with the package (`/usr/share/cells-updater/keys.d`).
    Vendor,
    /// The admin's (`/etc/cells-updater/keys.d`).
    Etc,
}

/// A trusted key, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// Hex SHA-256 of its SPKI DER.
    pub id: String,
    /// `rsa-2048`, `ec-p256`.
    pub algorithm: String,
    /// Where it comes from.
    pub source: KeySource,
    /// Its file.
    pub file: String,
}

/// The public key found in Cells' `pydio.json`: reported, never trusted.
#[derive(Debug, Clone, Serialize)]
pub struct CellsKey {
    /// The id of its first key block, when every block parses.
    pub id: Option<String>,
    /// The ids of every key block found (more than one is warned about).
    pub ids: Vec<String>,
    /// Why it does not parse.
    pub problem: Option<String>,
    /// True when every key found is trusted anyway (from `/etc` or the vendor).
    pub trusted: bool,
    /// The keys in canonical PEM form, rebuilt from the parsed keys (never the Cells user's
    /// text itself).
    #[serde(skip)]
    pub pems: Vec<String>,
}

/// What `cells-updater config` prints: the settings in force and their sources.
#[derive(Debug, Clone)]
pub struct SettingsReport {
    /// The server URL and channel.
    pub effective: Effective,
    /// The trusted keys, or why they cannot be loaded.
    pub keys: Result<Vec<KeyReport>>,
    /// `pydio.json`'s key.
    pub cells_key: Option<CellsKey>,
    /// Why `pydio.json` was not read (not following it is not a problem).
    pub cells_problem: Option<String>,
    /// The working directory whose `pydio.json` was looked at.
    pub cells_dir: Option<PathBuf>,
}

/// The host as the daemon sees it.
pub struct Host {
    /// The configuration.
    pub cfg: Config,
    /// The system bus, when it can be reached.
    pub bus: Option<zbus::Connection>,
    /// How helpers run (transient units under systemd).
    pub runner: Runner,
    /// The managed unit's facts, or why they cannot be read.
    pub facts: Result<UnitFacts>,
}

impl Host {
    /// Connects to the system bus (5 s at most) and reads the unit's facts.
    pub async fn open(cfg: Config) -> Host {
        let bus =
            match tokio::time::timeout(Duration::from_secs(5), zbus::Connection::system()).await {
                Ok(Ok(c)) => Some(c),
                _ => None,
            };
        let runner = match &bus {
            Some(c) if std::path::Path::new("/run/systemd/system").is_dir() => {
                Runner::Systemd(c.clone())
            }
            _ => Runner::Fork {
                exe: PathBuf::from("/proc/self/exe"),
                user: cfg.probe_user.clone(),
            },
        };
        let facts = match &bus {
            Some(c) => crate::systemd::unit_facts(c, &cfg.unit).await,
            None => Err(Error::UnitFailed(
                "the system bus cannot be reached: systemd cannot be asked about the unit".into(),
            )),
        };
        Host {
            cfg,
            bus,
            runner,
            facts,
        }
    }

    fn facts(&self) -> Option<&UnitFacts> {
        self.facts.as_ref().ok()
    }

    /// What `pydio.json` says, when it is followed and can be read.
    async fn cells_settings(
        &self,
    ) -> (Option<CellsUpdateSettings>, Option<String>, Option<PathBuf>) {
        let at = match crate::host::working_dir(&self.cfg, self.facts()) {
            Ok(at) => at,
            Err(e) => return (None, Some(e.message()), None),
        };
        match crate::cells_config::read(&self.runner, &at.dir, &at.user, &at.group).await {
            Ok(s) => (s, None, Some(at.dir)),
            Err(e) => (None, Some(e.message()), Some(at.dir)),
        }
    }

    /// The trusted keys, each with its source.
    pub fn keys(&self) -> Result<Vec<KeyReport>> {
        let mut out: Vec<KeyReport> = Vec::new();
        let mut dirs = vec![(self.cfg.keys_dir(), KeySource::Etc)];
        if self.cfg.trust_vendor_keys {
            dirs.push((self.cfg.vendor_keys_dir(), KeySource::Vendor));
        }
        for (dir, source) in dirs {
            for k in TrustedKeys::load_dir(&dir)?.keys() {
                if !out.iter().any(|have| have.id == k.id) {
                    out.push(KeyReport {
                        id: k.id.clone(),
                        algorithm: k.algorithm(),
                        source,
                        file: k.source.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The settings in force, each with its source (`cells-updater config`).
    pub async fn settings(&self) -> SettingsReport {
        let (cells, problem, dir) = if self.cfg.follow_cells_config {
            self.cells_settings().await
        } else {
            (None, None, None)
        };
        let effective = crate::settings::effective(&self.cfg, cells.as_ref());
        let keys = self.keys();
        let cells_key = effective.cells_key.as_ref().map(|pem| {
            let parsed: Result<Vec<TrustedKey>> = crate::trust::parse_pem_keys(pem, "pydio.json");
            let (found, problem) = match parsed {
                Ok(k) if !k.is_empty() => (k, None),
                Ok(_) => (Vec::new(), Some("no public key in it".to_string())),
                Err(e) => (Vec::new(), Some(e.message())),
            };
            let ids: Vec<String> = found.iter().map(|k| k.id.clone()).collect();
            let trusted = !ids.is_empty()
                && ids
                    .iter()
                    .all(|id| keys.as_ref().is_ok_and(|ks| ks.iter().any(|k| &k.id == id)));
            CellsKey {
                id: ids.first().cloned(),
                ids,
                problem,
                trusted,
                pems: found.iter().filter_map(|k| k.to_pem().ok()).collect(),
            }
        });
        SettingsReport {
            effective,
            keys,
            cells_key,
            cells_problem: problem,
            cells_dir: dir,
        }
    }

    /// Every check, in order.
    pub async fn doctor(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut helper_ran: Option<std::result::Result<(), String>> = None;
        out.push(self.check_unit());
        let binary = crate::host::binary_path(&self.cfg, self.facts());
        let cells_uid = crate::host::cells_user(&self.cfg, self.facts()).map(|u| u.uid);
        let opened = match &binary {
            None => {
                out.push(finding(
                    "binary",
                    Level::Fail,
                    format!(
                        "no Cells binary: {} has no ExecStart and [cells] binary is not set",
                        self.cfg.unit
                    ),
                    "set [cells] binary in /etc/cells-updater/config.toml",
                ));
                None
            }
            Some(b) => self.check_binary(b, cells_uid, &mut out),
        };
        let mut installed = String::new();
        if let Some((file, _)) = &opened {
            let version = crate::probe::report_version(&self.runner, file).await;
            match version {
                Ok(v) if crate::version::CellsVersion::parse(&v).is_ok() => {
                    helper_ran = Some(Ok(()));
                    let label = crate::probe::report_label(&self.runner, file)
                        .await
                        .unwrap_or_default();
                    out.push(finding(
                        "version",
                        Level::Ok,
                        format!(
                            "the binary reports {v}{}",
                            if label.is_empty() {
                                String::new()
                            } else {
                                format!(" ({label})")
                            }
                        ),
                        "",
                    ));
                    installed = v;
                }
                Ok(v) => out.push(finding(
                    "version",
                    Level::Fail,
                    format!(
                        "the binary reports {:?}, not a version",
                        crate::text::one_line(&v, 80)
                    ),
                    "is [cells] binary (or ExecStart) the Cells binary?",
                )),
                Err(e) => {
                    if !matches!(e, Error::VersionMismatch(_)) {
                        helper_ran = Some(Err(e.message()));
                    } else {
                        helper_ran = Some(Ok(()));
                    }
                    out.push(finding(
                        "version",
                        Level::Fail,
                        format!("the binary cannot tell its version: {}", e.message()),
                        "run it by hand: <binary> version",
                    ));
                }
            }
            out.push(self.check_capability(file));
        }
        out.extend(self.check_working_dir().await);
        let settings = self.settings().await;
        out.extend(self.check_settings(&settings));
        out.push(self.check_keys(&settings));
        let server = self.check_server(&settings.effective, &installed).await;
        if let Some(ran) = &server.1 {
            if helper_ran.as_ref().is_none_or(|r| r.is_err()) {
                helper_ran = Some(ran.clone());
            }
        }
        out.push(server.0);
        out.push(self.check_disk(opened.as_ref().map_or(0, |(_, size)| *size)));
        out.push(self.check_polkit().await);
        out.push(self.check_timer().await);
        out.push(match helper_ran {
            Some(Ok(())) => finding(
                "sandbox",
                Level::Ok,
                match &self.runner {
                    Runner::Systemd(_) => "helpers run as transient units (dynamic users, no capabilities)".into(),
                    Runner::Fork { user, .. } => format!("helpers run as forked children (user {user}): systemd is not the service manager here"),
                },
                "",
            ),
            Some(Err(e)) => finding(
                "sandbox",
                Level::Fail,
                format!("a sandboxed helper cannot run: {e}"),
                "systemd must start transient units with DynamicUser=yes; see journalctl -u 'cells-updater-*'",
            ),
            None => finding(
                "sandbox",
                Level::Warn,
                "not tried: there was no binary to probe and no server to ask".into(),
                "",
            ),
        });
        out.push(self.check_daemon().await);
        out
    }

    fn check_unit(&self) -> Finding {
        match &self.facts {
            Err(e) => finding(
                "unit",
                Level::Fail,
                e.message(),
                "install the Cells service (Pydio's guide: /etc/systemd/system/cells.service), or \
                 set [cells] unit",
            ),
            Ok(f) => {
                let exec = f
                    .exec_path
                    .as_ref()
                    .map_or("no ExecStart".to_string(), |p| p.display().to_string());
                let user = if f.user.is_empty() { "root" } else { &f.user };
                let msg = format!(
                    "{}: {} ({}), runs {exec} as {user}",
                    f.name, f.active_state, f.sub_state
                );
                if f.user.is_empty() && self.cfg.user.is_none() {
                    finding(
                        "unit",
                        Level::Warn,
                        format!("{msg}: Cells runs as root"),
                        "run Cells as its own user (User=pydio), as Pydio's guide does",
                    )
                } else if f.active_state != "active" {
                    finding(
                        "unit",
                        Level::Warn,
                        msg,
                        "systemctl start cells; journalctl -u cells",
                    )
                } else {
                    finding("unit", Level::Ok, msg, "")
                }
            }
        }
    }

    /// The binary's directory chain and the file; returns the open binary and its size.
    fn check_binary(
        &self,
        binary: &std::path::Path,
        cells_uid: Option<u32>,
        out: &mut Vec<Finding>,
    ) -> Option<(std::fs::File, u64)> {
        let dir = match crate::install::open_binary_dir(binary, cells_uid, false) {
            Ok(d) => d,
            Err(e) => {
                let fix = if matches!(e, Error::UnsafePath(_)) {
                    "apply the chown/chmod the message gives"
                } else {
                    "check [cells] binary and the unit's ExecStart"
                };
                out.push(finding("binary-dir", Level::Fail, e.message(), fix));
                return None;
            }
        };
        out.push(if dir.adoptable.is_empty() {
            finding(
                "binary-dir",
                Level::Ok,
                format!(
                    "{}: every directory is root's and not writable by others",
                    dir.dir.path().display()
                ),
                "",
            )
        } else {
            finding(
                "binary-dir",
                Level::Ok,
                format!(
                    "{} belong to the Cells user: the first update adopts them (root-owned, mode \
                     0755), so Cells can no longer replace its own binary",
                    dir.adoptable
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "",
            )
        });
        match crate::install::open_and_inspect(&dir.dir, &dir.name, self.cfg.max_binary_size) {
            Ok((file, on_disk)) => {
                out.push(finding(
                    "binary",
                    Level::Ok,
                    format!(
                        "{}: {:.1} MiB, sha256 {}",
                        binary.display(),
                        on_disk.size as f64 / 1048576.0,
                        &crate::trust::hex(&on_disk.sha256)[..16]
                    ),
                    "",
                ));
                Some((file, on_disk.size))
            }
            Err(e) => {
                out.push(finding(
                    "binary",
                    Level::Fail,
                    e.message(),
                    "reinstall Cells (Pydio's guide), or fix [cells] binary",
                ));
                None
            }
        }
    }

    fn check_capability(&self, file: &std::fs::File) -> Finding {
        let caps = crate::fcaps::get(file.as_fd());
        let ambient = self
            .facts()
            .is_some_and(|f| f.ambient_capabilities & CAP_NET_BIND_SERVICE != 0);
        match caps {
            Err(e) => finding(
                "capability",
                Level::Fail,
                format!("cannot read the binary's file capabilities: {e}"),
                "",
            ),
            Ok(Some(c)) if c.to_string().contains("cap_net_bind_service") => finding(
                "capability",
                Level::Ok,
                format!(
                    "the binary has {c}{}",
                    match self.cfg.capabilities {
                        CapabilityPolicy::Never => "; [policy] capabilities = never drops it at the next update",
                        _ => "; updates keep it",
                    }
                ),
                "",
            ),
            _ if ambient => finding(
                "capability",
                Level::Ok,
                "the unit grants CAP_NET_BIND_SERVICE with AmbientCapabilities=; the binary needs no file capability".into(),
                "",
            ),
            _ if self.cfg.capabilities == CapabilityPolicy::Never => finding(
                "capability",
                Level::Ok,
                "no file capability, as [policy] capabilities = never asks".into(),
                "",
            ),
            _ => finding(
                "capability",
                Level::Fail,
                "the binary has no cap_net_bind_service and the unit grants none: Cells cannot \
                 bind ports below 1024 (443)"
                    .into(),
                "setcap 'cap_net_bind_service=+ep' <binary> once (updates keep it), or \
                 AmbientCapabilities=CAP_NET_BIND_SERVICE in the unit, or [policy] capabilities \
                 = always",
            ),
        }
    }

    async fn check_working_dir(&self) -> Vec<Finding> {
        let at = match crate::host::working_dir(&self.cfg, self.facts()) {
            Ok(at) => at,
            Err(e) => {
                return vec![finding(
                    "working-dir",
                    Level::Fail,
                    e.message(),
                    "set User= in the unit, or [cells] user",
                )]
            }
        };
        let mut out = Vec::new();
        // A report only: lstat, nothing is opened or followed.
        match std::fs::symlink_metadata(&at.dir) {
            Err(_) => out.push(finding(
                "working-dir",
                Level::Warn,
                format!("{} does not exist yet", at.dir.display()),
                "start Cells once (it creates it), or set CELLS_WORKING_DIR in the unit",
            )),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(m.uid()))
                    .ok()
                    .flatten()
                    .map_or(m.uid().to_string(), |u| u.name);
                if m.file_type().is_symlink() || !m.is_dir() {
                    out.push(finding(
                        "working-dir",
                        Level::Fail,
                        format!("{} is not a directory (a link or a file)", at.dir.display()),
                        "point CELLS_WORKING_DIR at the real directory",
                    ));
                } else if owner != at.user {
                    out.push(finding(
                        "working-dir",
                        Level::Warn,
                        format!(
                            "{} belongs to {owner}, not to {}: the license is written as {}",
                            at.dir.display(),
                            at.user,
                            at.user
                        ),
                        "chown the working directory to the Cells user",
                    ));
                } else {
                    out.push(finding(
                        "working-dir",
                        Level::Ok,
                        format!("{} (the Cells user's, {})", at.dir.display(), at.user),
                        "",
                    ));
                }
            }
        }
        let enterprise = self.package().await == crate::package::Package::Enterprise;
        out.push(match crate::license::read(&self.runner, &at).await {
            Ok(Some(k)) => finding(
                "license",
                Level::Ok,
                format!(
                    "{} bytes in {}/{}",
                    k.len(),
                    at.dir.display(),
                    crate::license::LICENSE_FILE
                ),
                "",
            ),
            Ok(None) if enterprise => finding(
                "license",
                Level::Fail,
                "Cells Enterprise is configured, but there is no license file".into(),
                "cells-updater license install --file KEYFILE",
            ),
            Ok(None) => finding(
                "license",
                Level::Ok,
                "none (Cells Home needs none)".into(),
                "",
            ),
            Err(e) => finding(
                "license",
                Level::Fail,
                e.message(),
                "cells-updater license install --file KEYFILE replaces it",
            ),
        });
        out
    }

    /// The package in use: the daemon's (after an Enterprise upgrade), else the config's.
    async fn package(&self) -> crate::package::Package {
        if let Some(bus) = &self.bus {
            if let Ok(Ok(p)) = tokio::time::timeout(
                Duration::from_secs(10),
                manager_property(bus, manager_prop::PACKAGE_NAME),
            )
            .await
            {
                if let Some(p) = String::try_from(p)
                    .ok()
                    .and_then(|s| crate::package::Package::parse(&s))
                {
                    return p;
                }
            }
        }
        self.cfg.package
    }

    fn check_settings(&self, s: &SettingsReport) -> Vec<Finding> {
        let e = &s.effective;
        let mut out = vec![finding(
            "server-url",
            Level::Ok,
            format!(
                "{} ({}); channel {} ({})",
                e.url, e.url_source, e.channel, e.channel_source
            ),
            "",
        )];
        if let (Some(p), true) = (&s.cells_problem, self.cfg.follow_cells_config) {
            out.push(finding(
                "pydio-json",
                Level::Warn,
                format!("Cells' own update settings are not followed: {p}"),
                "",
            ));
        }
        if let Some(k) = &s.cells_key {
            if k.ids.len() > 1 {
                out.push(finding(
                    "pydio-json",
                    Level::Warn,
                    format!(
                        "pydio.json's publicKey holds {} keys ({}); Pydio gives one: a second \
                         key is a sign that someone added it",
                        k.ids.len(),
                        short_ids(&k.ids)
                    ),
                    "check the publicKey in pydio.json; `config --cells-key` prints no key \
                     while there is more than one",
                ));
            }
            out.push(match (&k.id, k.trusted) {
                (Some(_), true) => finding(
                    "pydio-json",
                    Level::Ok,
                    format!(
                        "pydio.json names key {}, which is trusted from /etc or the vendor",
                        short_ids(&k.ids)
                    ),
                    "",
                ),
                (Some(_), false) => finding(
                    "pydio-json",
                    Level::Warn,
                    format!(
                        "pydio.json names key {}, which is not trusted: a file the \
                         Cells user can write is never trusted",
                        short_ids(&k.ids)
                    ),
                    "if you set that key yourself, trust it as root: cells-updater config \
                     --cells-key > /etc/cells-updater/keys.d/cells.pem",
                ),
                (None, _) => finding(
                    "pydio-json",
                    Level::Warn,
                    format!(
                        "pydio.json has a publicKey that is not a usable key: {}",
                        k.problem.clone().unwrap_or_default()
                    ),
                    "",
                ),
            });
        }
        out
    }

    fn check_keys(&self, s: &SettingsReport) -> Finding {
        if let Ok(k) = &s.keys {
            let mut per_file: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
            for key in k {
                per_file.entry(&key.file).or_default().push(key.id.clone());
            }
            if let Some((file, ids)) = per_file.iter().find(|(_, ids)| ids.len() > 1) {
                return finding(
                    "keys",
                    Level::Warn,
                    format!(
                        "{} holds {} keys ({}), all trusted; one key per file is the rule, so \
                         that a key added beside another is seen",
                        crate::text::one_line(file, 200),
                        ids.len(),
                        short_ids(ids)
                    ),
                    "keep one key per file in the keys directory",
                );
            }
        }
        match &s.keys {
            Err(e) => finding(
                "keys",
                Level::Fail,
                e.message(),
                "fix or remove the named file",
            ),
            Ok(k) if k.is_empty() => finding(
                "keys",
                Level::Fail,
                "no key is trusted: no release can be verified".into(),
                "put the publisher's PEM key in /etc/cells-updater/keys.d/, or set [server] \
                 trust_vendor_keys = true",
            ),
            Ok(k) => finding(
                "keys",
                Level::Ok,
                k.iter()
                    .map(|k| {
                        format!(
                            "{} {} ({})",
                            crate::trust::keys_short_id(&k.id),
                            k.algorithm,
                            match k.source {
                                KeySource::Vendor => "vendor",
                                KeySource::Etc => "/etc",
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                "",
            ),
        }
    }

    /// The update server; also whether the network helper ran.
    async fn check_server(
        &self,
        e: &Effective,
        installed: &str,
    ) -> (Finding, Option<std::result::Result<(), String>>) {
        let settings = crate::update_server::ServerSettings {
            url: e.url.clone(),
            ..self.cfg.server_settings()
        };
        let current = if installed.is_empty() {
            "0.0.0"
        } else {
            installed
        };
        let package = self.package().await;
        let request = crate::update_server::UpdateRequest::new(e.channel, package, current);
        match crate::update_server::check(&self.runner, &settings, &request).await {
            Ok(resp) => {
                let versions: Vec<String> = resp
                    .available_binaries
                    .iter()
                    .map(|p| crate::text::one_line(&p.version, 40))
                    .collect();
                (
                    finding(
                        "server",
                        Level::Ok,
                        if versions.is_empty() {
                            format!(
                                "{} answers: nothing newer than {current} for {package} ({})",
                                e.url, e.channel
                            )
                        } else {
                            format!(
                                "{} answers: {} ({package}, {})",
                                e.url,
                                versions.join(", "),
                                e.channel
                            )
                        },
                        "",
                    ),
                    Some(Ok(())),
                )
            }
            Err(err) => {
                let ran = if matches!(err, Error::ServerError(_)) {
                    Some(Ok(()))
                } else {
                    Some(Err(err.message()))
                };
                (
                    finding(
                        "server",
                        Level::Fail,
                        format!("{}: {}", e.url, err.message()),
                        "check the network, the proxy and [server] url",
                    ),
                    ran,
                )
            }
        }
    }

    fn check_disk(&self, binary_size: u64) -> Finding {
        // The daemon's own rule, for a release the size of the installed binary.
        let need = crate::stage::space_needed(binary_size);
        // The state directory, or its nearest existing parent before the first run.
        let mut dir = self.cfg.state_dir();
        while !dir.exists() {
            match dir.parent() {
                Some(p) => dir = p.to_path_buf(),
                None => break,
            }
        }
        match nix::sys::statvfs::statvfs(&dir) {
            Err(e) => finding(
                "disk",
                Level::Warn,
                format!("cannot tell the free space of {}: {e}", dir.display()),
                "",
            ),
            Ok(st) => {
                let free = st.blocks_available() * st.fragment_size();
                let msg = format!(
                    "{:.0} MiB free in {} (an update needs {:.0} MiB)",
                    free as f64 / 1048576.0,
                    dir.display(),
                    need as f64 / 1048576.0
                );
                if free < need {
                    finding(
                        "disk",
                        Level::Fail,
                        msg,
                        "free space in the state directory",
                    )
                } else {
                    finding("disk", Level::Ok, msg, "")
                }
            }
        }
    }

    async fn check_polkit(&self) -> Finding {
        let Some(bus) = &self.bus else {
            return finding(
                "polkit",
                Level::Warn,
                "the system bus cannot be reached".into(),
                "",
            );
        };
        let present = async {
            let dbus = zbus::fdo::DBusProxy::new(bus).await.ok()?;
            let name = zbus::names::BusName::try_from("org.freedesktop.PolicyKit1").ok()?;
            if dbus.name_has_owner(name.clone()).await.ok()? {
                return Some(true);
            }
            let activatable = dbus.list_activatable_names().await.ok()?;
            Some(activatable.iter().any(|n| n.as_str() == name.as_str()))
        };
        match tokio::time::timeout(Duration::from_secs(10), present).await {
            Ok(Some(true)) => finding(
                "polkit",
                Level::Ok,
                "present: admins granted by its rules may use the daemon".into(),
                "",
            ),
            _ => finding(
                "polkit",
                Level::Warn,
                "polkit is not on the system bus: only root and the Cells user may use the daemon"
                    .into(),
                "install polkitd (Debian) or polkit (RHEL) to grant other admins",
            ),
        }
    }

    async fn check_timer(&self) -> Finding {
        let Some(bus) = &self.bus else {
            return finding(
                "timer",
                Level::Warn,
                "the system bus cannot be reached".into(),
                "",
            );
        };
        match crate::systemd::timer_facts(bus, CHECK_TIMER).await {
            Ok(t) if t.load_state != "loaded" => finding(
                "timer",
                Level::Warn,
                format!("{CHECK_TIMER} is {}: no scheduled checks", t.load_state),
                "reinstall cells-updater (the package ships the timer)",
            ),
            Ok(t) if t.unit_file_state != "enabled" || t.active_state != "active" => finding(
                "timer",
                Level::Warn,
                format!(
                    "{CHECK_TIMER} is {} and {}: no scheduled checks",
                    t.unit_file_state, t.active_state
                ),
                "systemctl enable --now cells-updater-check.timer",
            ),
            Ok(t) => finding(
                "timer",
                Level::Ok,
                format!(
                    "{CHECK_TIMER} is enabled; next run {}",
                    crate::schedule::format_us(t.next_elapse_us)
                ),
                "",
            ),
            Err(e) => finding("timer", Level::Warn, e.message(), ""),
        }
    }

    async fn check_daemon(&self) -> Finding {
        let Some(bus) = &self.bus else {
            return finding(
                "daemon",
                Level::Fail,
                "the system bus cannot be reached".into(),
                "systemctl status dbus",
            );
        };
        match tokio::time::timeout(
            Duration::from_secs(30),
            manager_property(bus, manager_prop::DAEMON_VERSION),
        )
        .await
        {
            Ok(Ok(v)) => finding(
                "daemon",
                Level::Ok,
                format!(
                    "cells-updater {} answers on the system bus",
                    String::try_from(v).unwrap_or_default()
                ),
                "",
            ),
            Ok(Err(e)) => finding(
                "daemon",
                Level::Fail,
                format!("{} does not answer: {e}", crate::contract::BUS_NAME),
                "systemctl status cells-updater; journalctl -u cells-updater",
            ),
            Err(_) => finding(
                "daemon",
                Level::Fail,
                format!("{} did not answer within 30 s", crate::contract::BUS_NAME),
                "systemctl status cells-updater; journalctl -u cells-updater",
            ),
        }
    }
}

async fn manager_property(
    bus: &zbus::Connection,
    name: &str,
) -> zbus::Result<zbus::zvariant::OwnedValue> {
    let props = zbus::fdo::PropertiesProxy::builder(bus)
        .destination(crate::contract::BUS_NAME)?
        .path(crate::contract::MANAGER_PATH)?
        .build()
        .await?;
    let iface = zbus::names::InterfaceName::try_from(crate::contract::MANAGER_INTERFACE)
        .map_err(zbus::Error::from)?;
    Ok(props.get(iface, name).await?)
}
