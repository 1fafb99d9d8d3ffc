//! The managed Cells, as the daemon learns it: the unit's facts (read from its manager, never
//! from a caller), the binary it runs, its user and working directory, and what the installed
//! binary reports about itself.

use super::units::Units;
use super::Daemon;
use crate::error::{Error, Result};
use crate::install;
use crate::log;
use crate::probe;
use crate::systemd::UnitFacts;
use crate::version::{CellsVersion, VersionBounds};
use std::path::PathBuf;
use std::time::Duration;

/// What the installed binary is.
#[derive(Debug, Clone, Default)]
pub struct Installed {
    /// The binary the unit executes (under the root prefix).
    pub binary: Option<PathBuf>,
    /// The version it reports, as it reports it (the `InstalledVersion` property), `""`
    /// when unknown.
    pub version: String,
    /// The same, parsed: `None` exactly when `version` is `""`.
    pub reported: Option<CellsVersion>,
    /// Why the version is unknown (an unsafe directory, a binary that does not answer).
    pub problem: Option<Error>,
}

pub use crate::host::CellsUser;

impl Daemon {
    /// The managed unit's facts, when its manager can be asked.
    pub async fn unit_facts(&self) -> Option<UnitFacts> {
        if matches!(self.units, Units::Absent) {
            return None;
        }
        match self.units.facts(&self.cfg.unit).await {
            Ok(f) => Some(f),
            Err(e) => {
                log::log(
                    log::Level::Warning,
                    &e.message(),
                    &[("UNIT", &self.cfg.unit)],
                );
                None
            }
        }
    }

    /// The Cells service user: `[cells] user`, else the unit's `User=`.
    pub async fn cells_user(&self) -> Option<CellsUser> {
        let facts = self.unit_facts().await;
        crate::host::cells_user(&self.cfg, facts.as_ref())
    }

    /// The uid of the Cells service user.
    pub async fn cells_uid(&self) -> Option<u32> {
        self.cells_user().await.map(|u| u.uid)
    }

    /// The binary the unit runs: `[cells] binary`, else its `ExecStart` (under the root prefix).
    pub async fn binary_path(&self) -> Option<PathBuf> {
        if self.cfg.binary.is_some() {
            return crate::host::binary_path(&self.cfg, None);
        }
        let facts = self.unit_facts().await;
        crate::host::binary_path(&self.cfg, facts.as_ref())
    }

    /// Opens the installed binary through its checked directory (no adoption: this only
    /// reads) and asks it its version in the probe helper.
    pub async fn refresh_installed(&self) -> Installed {
        let binary = self.binary_path().await;
        let mut info = Installed {
            binary: binary.clone(),
            ..Installed::default()
        };
        if let Some(b) = &binary {
            let reported = match self.open_installed(b).await {
                Ok(f) => probe::report_version(&self.runner, &f).await,
                Err(e) => Err(e),
            };
            match reported {
                Ok(v) => match CellsVersion::parse(&v) {
                    Ok(parsed) => {
                        info.reported = Some(parsed);
                        info.version = v;
                    }
                    Err(_) => {
                        info.problem = Some(Error::UnitFailed(format!(
                            "{} reports {:?}, not a version",
                            b.display(),
                            crate::text::one_line(&v, 80)
                        )))
                    }
                },
                Err(e) => info.problem = Some(e),
            }
            if let Some(e) = &info.problem {
                log::log(log::Level::Warning, &e.message(), &[]);
            }
        }
        self.installed.send_replace(Some(info.clone()));
        info
    }

    /// The installed binary, opened read-only through its directory's descriptor.
    async fn open_installed(&self, binary: &std::path::Path) -> Result<std::fs::File> {
        let cells_uid = self.cells_uid().await;
        let binary = binary.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let dir = install::open_binary_dir(&binary, cells_uid, false)?;
            dir.dir.open_file(&dir.name).map(|o| o.file).map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    // A link or a special file where the unit's binary should be (I9).
                    Error::UnsafePath(format!(
                        "{e}; cells-updater reads the Cells binary only as a regular file, \
                         never through a link: put the binary itself at {}",
                        binary.display()
                    ))
                } else {
                    Error::UnitFailed(format!(
                        "cannot open the Cells binary {}: {e}",
                        binary.display()
                    ))
                }
            })
        })
        .await
        .map_err(|e| Error::UnitFailed(format!("probe task failed: {e}")))?
    }

    /// The installed binary's edition label (`version -f '{{.PackageLabel}}'`).
    pub async fn installed_label(&self) -> String {
        let Some(b) = self.binary_path().await else {
            return String::new();
        };
        match self.open_installed(&b).await {
            Ok(f) => probe::report_label(&self.runner, &f)
                .await
                .unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// What is installed, waiting (10 s at most) for the probe that follows start-up, so the
    /// first call after activation does not see "unknown".
    pub async fn installed_settled(&self) -> Installed {
        let mut rx = self.installed.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|i| i.is_some())).await;
        self.installed().unwrap_or_default()
    }

    /// What is installed, as last probed.
    pub fn installed(&self) -> Option<Installed> {
        self.installed.borrow().clone()
    }

    /// The versions a candidate must beat: the installed one (probed now) and the floor.
    pub async fn bounds(&self) -> Result<VersionBounds> {
        let installed = self.refresh_installed().await;
        if let Some(e) = installed.problem {
            return Err(e);
        }
        let Some(reported) = installed.reported else {
            return Err(Error::UnitFailed(format!(
                "cannot tell which Cells version is installed ({}); check [cells] binary and that \
                 the unit {} exists",
                installed
                    .binary
                    .map_or("no binary found".to_string(), |b| b.display().to_string()),
                self.cfg.unit
            )));
        };
        let committed = self.store.lock().await.get().committed.clone();
        Ok(VersionBounds {
            installed: Some(reported),
            committed,
        })
    }

    /// The package in use: the persisted one (after an Enterprise upgrade), else the config.
    pub async fn package(&self) -> crate::package::Package {
        let p = self.store.lock().await.get().package_name;
        p.unwrap_or(self.cfg.package)
    }

    /// Where the license lives: the working directory, and whose it is.
    pub async fn license_location(&self) -> Result<crate::license::Location> {
        let facts = self.unit_facts().await;
        crate::host::working_dir(&self.cfg, facts.as_ref())
    }

    /// The installed license key (read as the Cells user), sent with Enterprise checks;
    /// `None` when there is no license file, an error when there is one that cannot be used
    /// (a link, a FIFO, not the Cells user's, not text).
    pub async fn license_key(&self) -> Result<Option<String>> {
        let at = self.license_location().await?;
        crate::license::read(&self.runner, &at).await
    }
}
