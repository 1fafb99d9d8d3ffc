//! `cells-updater doctor` and `cells-updater config`: the host as the daemon would see it,
//! inspected as root with the daemon's own code paths (the unit's facts from systemd, the
//! binary's directory chain opened per I9 without adopting anything, the Cells user's files
//! read by a helper running as that user, the probe and the network in their sandboxes). It
//! changes nothing on disk.
//!
//! mod.rs holds the report's types, the host and the order of the checks; files.rs the
//! Cells host's files, settings.rs the settings, keys and server, services.rs the daemon,
//! polkit and the timer.

mod files;
mod services;
mod settings;

use crate::cells_config::CellsUpdateSettings;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::helper::Runner;
use crate::settings::Effective;
use crate::systemd::UnitFacts;
use crate::trust::{TrustedKey, TrustedKeys};
use serde::Serialize;
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
}
