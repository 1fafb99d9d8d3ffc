//! Apply, Update and Rollback jobs: swap the staged binary in with its capabilities, fix the
//! unit, restart through systemd, prove the new version healthy, and put the previous one
//! back when it is not. Every step is journaled in the persisted state before it is taken;
//! [`Shared::recover`] finishes or undoes an interrupted one at start-up (invariant I5).

use super::job::{self, Job};
use super::Shared;
use crate::config::{CapabilityPolicy, OnFailure};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::fcaps::FileCaps;
use crate::install::{self, Backups};
use crate::log;
use crate::state::{Lifecycle, Pending};
use crate::systemd::{self, HealthCheck};
use crate::trust;
use crate::version::CellsVersion;
use base64::Engine;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use zbus::object_server::InterfaceRef;

/// Longest wait for systemd's restart job.
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

/// Options of Apply (and of the apply half of Update and UpgradeToEnterprise).
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Must equal the staged version when given.
    pub version: Option<CellsVersion>,
    /// Restart the unit (default true).
    pub restart: bool,
    /// What to do when the new version does not come up.
    pub on_failure: OnFailure,
    /// Install under this file name in the binary's directory (Enterprise: `cells-enterprise`).
    pub file_name: Option<String>,
    /// Accept the installed version itself (the Enterprise build of the same version).
    pub allow_same_version: bool,
}

fn caps_b64(c: Option<&FileCaps>) -> String {
    c.map_or_else(String::new, |c| {
        base64::engine::general_purpose::STANDARD.encode(c.encode())
    })
}

fn caps_from_b64(s: &str) -> Option<FileCaps> {
    if s.is_empty() {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    FileCaps::decode(&raw).ok()
}

fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Writes or removes the drop-in (as given), then has systemd reload.
async fn put_dropin(shared: &Shared, content: Option<&str>) -> Result<()> {
    let path = shared.cfg.path(&systemd::dropin_path(&shared.cfg.unit));
    match content {
        Some(text) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::SwapFailed(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            crate::stage::write_synced(&path, text.as_bytes())
                .map_err(|e| Error::SwapFailed(format!("cannot write {}: {e}", path.display())))?;
            let _ = std::fs::set_permissions(
                &path,
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            );
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => crate::stage::sync_dir(path.parent().unwrap_or(Path::new("/"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::SwapFailed(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )))
            }
        },
    }
    if let Some(bus) = shared.system_bus().await {
        systemd::reload(&bus).await?;
    }
    Ok(())
}

impl Shared {
    fn health(&self) -> HealthCheck {
        HealthCheck {
            settle: self.cfg.health_settle,
            timeout: self.cfg.health_timeout,
            url: self.cfg.health_url.clone(),
        }
    }

    async fn journal(&self, pending: Option<Pending>) -> Result<()> {
        self.store.lock().await.update(|d| d.pending = pending)
    }

    async fn step(&self, p: &mut Pending, step: &str) -> Result<()> {
        p.step = step.to_string();
        self.journal(Some(p.clone())).await
    }

    async fn set_state(&self, to: Lifecycle) -> Result<()> {
        self.store.lock().await.transition(to)?;
        self.publish().await;
        Ok(())
    }

    /// Restarts the unit and waits until it is healthy and reports `version`.
    async fn restart_and_prove(&self, version: &str) -> Result<()> {
        let bus = self.system_bus().await.ok_or_else(|| {
            Error::UnitFailed("systemd is not reachable on the system bus".into())
        })?;
        let before = systemd::unit_facts(&bus, &self.cfg.unit).await?;
        systemd::restart(&bus, &self.cfg.unit, false, RESTART_TIMEOUT).await?;
        failpoint::hit("apply-after-restart");
        self.set_state(Lifecycle::HealthCheck).await?;
        systemd::wait_healthy(&bus, &self.cfg.unit, &self.health(), before.n_restarts).await?;
        let now = self.refresh_installed().await;
        if now.version != version {
            return Err(Error::UnitFailed(format!(
                "after the restart the binary reports {:?}, not {version}",
                now.version
            )));
        }
        Ok(())
    }

    /// Swaps the staged release in, restarts, proves it healthy; rolls back when not.
    pub(super) async fn apply_work(
        self: &Arc<Self>,
        iface: &InterfaceRef<Job>,
        opts: &ApplyOptions,
    ) -> Result<String> {
        let doc = self.store.lock().await.get().clone();
        if doc.staged_version.is_empty() {
            return Err(Error::NothingStaged(
                "nothing is staged; run Stage (or Update) first".into(),
            ));
        }
        let staged = CellsVersion::parse(&doc.staged_version)?;
        if let Some(v) = &opts.version {
            if *v != staged {
                return Err(Error::InvalidArgument(format!(
                    "Version {v} was asked for but {staged} is staged"
                )));
            }
        }
        let manifest = self.stager.area.manifest(&staged).ok_or_else(|| {
            Error::NothingStaged(format!(
                "the staged files of {staged} are missing; stage it again"
            ))
        })?;
        let expected = trust::decode_checksum(&manifest.sha256)?;
        let floor = self.floor().await?;
        if !opts.allow_same_version {
            floor.admit(&staged)?;
        } else if floor.installed.as_ref().is_some_and(|i| staged < *i) {
            return Err(Error::Downgrade(format!(
                "{staged} is older than the installed version"
            )));
        }
        let from = floor.installed.map(|v| v.to_string()).unwrap_or_default();
        let installed = self.installed();
        let old_binary = installed
            .binary
            .ok_or_else(|| Error::SwapFailed("cannot tell which binary the unit runs".into()))?;
        let facts = self.unit_facts().await;
        let target = match &opts.file_name {
            Some(name) => old_binary.with_file_name(name),
            None => old_binary.clone(),
        };
        let old = install::inspect(&old_binary)?;
        let new_caps = match self.cfg.capabilities {
            CapabilityPolicy::Preserve => old.caps,
            CapabilityPolicy::Always => Some(FileCaps::net_bind_service()),
            CapabilityPolicy::Never => None,
        };
        // A drop-in is needed when the unit's ExecStart (or its assertion) names another file.
        let dropin_path = self.cfg.path(&systemd::dropin_path(&self.cfg.unit));
        let dropin_before = read_opt(&dropin_path);
        let unit_target =
            PathBuf::from("/").join(target.strip_prefix(&self.cfg.root).unwrap_or(&target));
        let dropin_after = match &facts {
            Some(f)
                if f.exec_path.as_deref() != Some(unit_target.as_path())
                    || f.assert_executable
                        .iter()
                        .any(|a| Path::new(a) != unit_target) =>
            {
                let asserts = !f.assert_executable.is_empty();
                Some(systemd::render_dropin(
                    &self.cfg.unit,
                    &unit_target,
                    &f.exec_args,
                    asserts,
                ))
            }
            _ => dropin_before.clone(),
        };
        let mut p = Pending {
            kind: "apply".into(),
            step: "backup".into(),
            from_version: from.clone(),
            to_version: staged.to_string(),
            old_binary: old_binary.display().to_string(),
            target: target.display().to_string(),
            old_sha256: trust::encode_checksum(&old.sha256),
            new_sha256: manifest.sha256.clone(),
            old_caps: caps_b64(old.caps.as_ref()),
            new_caps: caps_b64(new_caps.as_ref()),
            dropin_before: dropin_before.clone(),
            dropin_after: dropin_after.clone(),
            previous_before: doc.previous_version.clone(),
            on_failure: match opts.on_failure {
                OnFailure::Rollback => "rollback".into(),
                OnFailure::Keep => "keep".into(),
            },
        };
        // Journal first, then move: a crash in between must find the operation recorded.
        self.step(&mut p, "backup").await?;
        self.set_state(Lifecycle::Applying).await?;
        job::update(iface, |d| {
            d.phase = "swapping".into();
            d.version = staged.to_string();
        })
        .await;
        failpoint::hit("apply-before-backup");
        let backups = Backups::new(&self.cfg.state_dir());
        backups.keep(&old_binary, &from, &self.package().await)?;
        self.step(&mut p, "swapping").await?;
        failpoint::hit("apply-before-swap");
        {
            let _atomic = self.atomic.lock().await;
            let staged_bin = self.stager.area.binary(&staged);
            install::swap(&staged_bin, &expected, &target, new_caps.as_ref(), || {
                failpoint::hit("apply-before-rename")
            })?;
            failpoint::hit("apply-after-rename");
            p.step = "swapped".into();
            let highest = std::cmp::max(
                CellsVersion::parse(&doc.highest_installed).ok(),
                Some(staged.clone()),
            );
            let mut store = self.store.lock().await;
            store.update(|d| {
                d.pending = Some(p.clone());
                d.staged_version.clear();
                d.previous_version = from.clone();
                d.highest_installed = highest.map(|v| v.to_string()).unwrap_or_default();
            })?;
        }
        let _ = self.stager.area.remove(&staged);
        iface.get_mut().await.committed = true;
        failpoint::hit("apply-after-state");
        log::info(
            &format!("installed {staged} at {} (was {from})", target.display()),
            &[("VERSION", &staged.to_string()), ("PHASE", "swapping")],
        );
        let outcome = self.finish_apply(iface, &mut p, opts.restart).await;
        match outcome {
            Ok(msg) => Ok(msg),
            Err(e) => self.after_failure(iface, &mut p, e).await,
        }
    }

    /// The steps after the swap: drop-in, restart, health.
    async fn finish_apply(
        &self,
        iface: &InterfaceRef<Job>,
        p: &mut Pending,
        restart: bool,
    ) -> Result<String> {
        if p.dropin_after != p.dropin_before {
            put_dropin(self, p.dropin_after.as_deref()).await?;
        }
        failpoint::hit("apply-after-dropin");
        if !restart {
            self.journal(None).await?;
            self.set_state(Lifecycle::Idle).await?;
            self.refresh_installed().await;
            return Ok(format!(
                "installed {} (was {}); the unit was not restarted: restart {} to run it",
                p.to_version, p.from_version, self.cfg.unit
            ));
        }
        self.step(p, "restarting").await?;
        self.set_state(Lifecycle::Restarting).await?;
        job::update(iface, |d| d.phase = "restarting".into()).await;
        let v = p.to_version.clone();
        let proved = async {
            job::update(iface, |d| d.phase = "health-check".into()).await;
            self.restart_and_prove(&v).await
        };
        proved.await?;
        failpoint::hit("apply-after-health");
        self.journal(None).await?;
        self.set_state(Lifecycle::Idle).await?;
        Backups::new(&self.cfg.state_dir())
            .prune(self.cfg.keep_versions as usize, &[p.from_version.as_str()]);
        Ok(format!(
            "{} {} is installed and healthy (was {}); the previous binary is kept for Rollback",
            self.cfg.unit, p.to_version, p.from_version
        ))
    }

    /// After the swap something failed: roll back (or keep, as configured) and report.
    async fn after_failure(
        &self,
        iface: &InterfaceRef<Job>,
        p: &mut Pending,
        cause: Error,
    ) -> Result<String> {
        let why = cause.message();
        if p.on_failure == "keep" {
            self.journal(None).await?;
            return Err(Error::UnitFailed(format!(
                "{} did not come up ({why}); it was kept as configured (on_failure = keep); \
                 Rollback returns to {}",
                p.to_version, p.from_version
            )));
        }
        job::update(iface, |d| d.phase = "rolling-back".into()).await;
        match self.undo(p).await {
            Ok(()) => {
                let bad = p.to_version.clone();
                let before = p.previous_before.clone();
                self.store.lock().await.update(|d| {
                    if !d.bad_versions.contains(&bad) {
                        d.bad_versions.push(bad.clone());
                    }
                    d.previous_version = before;
                    d.pending = None;
                })?;
                Err(Error::UnitFailed(format!(
                    "{} did not come up ({why}); rolled back to {}, which is running again. {} is \
                     marked bad and will not be installed automatically. It ran, so Cells may \
                     already have migrated data for it: check the Cells logs before using {}",
                    p.to_version, p.from_version, p.to_version, p.from_version
                )))
            }
            Err(e) => Err(Error::RollbackFailed(format!(
                "{} did not come up ({why}), and rolling back to {} failed too: {}. Restore \
                 {} from {} by hand",
                p.to_version,
                p.from_version,
                e.message(),
                p.old_binary,
                Backups::new(&self.cfg.state_dir())
                    .binary(&p.from_version)
                    .display()
            ))),
        }
    }

    /// Puts the old binary, its capabilities and the drop-in back, restarts, proves it.
    async fn undo(&self, p: &mut Pending) -> Result<()> {
        self.step(p, "rolling-back").await?;
        self.set_state(Lifecycle::RollingBack).await?;
        let backups = Backups::new(&self.cfg.state_dir());
        let backup = backups.binary(&p.from_version);
        let old_sha = trust::decode_checksum(&p.old_sha256)?;
        {
            let _atomic = self.atomic.lock().await;
            install::swap(
                &backup,
                &old_sha,
                Path::new(&p.old_binary),
                caps_from_b64(&p.old_caps).as_ref(),
                || {},
            )?;
            if p.target != p.old_binary {
                let _ = std::fs::remove_file(&p.target);
            }
        }
        if p.dropin_after != p.dropin_before {
            put_dropin(self, p.dropin_before.as_deref()).await?;
        }
        self.set_state(Lifecycle::Restarting).await?;
        self.restart_and_prove(&p.from_version.clone()).await?;
        self.set_state(Lifecycle::Idle).await?;
        Ok(())
    }

    /// Rollback: the recorded previous version, its capabilities and drop-in, restarted.
    pub(super) async fn rollback_work(
        self: &Arc<Self>,
        iface: &InterfaceRef<Job>,
    ) -> Result<String> {
        let doc = self.store.lock().await.get().clone();
        if doc.previous_version.is_empty() {
            return Err(Error::NothingStaged(
                "there is no previous version to roll back to".into(),
            ));
        }
        let backups = Backups::new(&self.cfg.state_dir());
        let backup = backups.get(&doc.previous_version).ok_or_else(|| {
            Error::RollbackFailed(format!(
                "the kept binary of {} is missing or damaged",
                doc.previous_version
            ))
        })?;
        let installed = self.refresh_installed().await;
        let current = installed
            .binary
            .clone()
            .ok_or_else(|| Error::SwapFailed("cannot tell which binary the unit runs".into()))?;
        let now = install::inspect(&current)?;
        let dropin_path = self.cfg.path(&systemd::dropin_path(&self.cfg.unit));
        let dropin_now = read_opt(&dropin_path);
        let backup_caps = install::inspect(&backups.binary(&backup.version))?.caps;
        // Back to the path the kept binary was installed at; a drop-in only if that is not
        // what the unit file itself names.
        let target = PathBuf::from(&backup.path);
        let unit_target =
            PathBuf::from("/").join(target.strip_prefix(&self.cfg.root).unwrap_or(&target));
        let dropin_after = match self.unit_facts().await {
            Some(f)
                if dropin_now.is_some()
                    && f.exec_path.as_deref() != Some(unit_target.as_path()) =>
            {
                Some(systemd::render_dropin(
                    &self.cfg.unit,
                    &unit_target,
                    &f.exec_args,
                    !f.assert_executable.is_empty(),
                ))
            }
            Some(_) if dropin_now.is_some() && target == current => dropin_now.clone(),
            _ => None,
        };
        job::update(iface, |d| {
            d.phase = "rolling-back".into();
            d.version = backup.version.clone();
        })
        .await;
        let mut p = Pending {
            kind: "rollback".into(),
            step: "rolling-back".into(),
            from_version: installed.version.clone(),
            to_version: backup.version.clone(),
            old_binary: current.display().to_string(),
            target: target.display().to_string(),
            old_sha256: trust::encode_checksum(&now.sha256),
            new_sha256: backup.sha256.clone(),
            old_caps: caps_b64(now.caps.as_ref()),
            new_caps: caps_b64(backup_caps.as_ref()),
            dropin_before: dropin_now.clone(),
            dropin_after: dropin_after.clone(),
            previous_before: doc.previous_version.clone(),
            on_failure: "keep".into(),
        };
        self.set_state(Lifecycle::RollingBack).await?;
        self.step(&mut p, "swapping").await?;
        {
            let _atomic = self.atomic.lock().await;
            let sha = trust::decode_checksum(&backup.sha256)?;
            install::swap(
                &backups.binary(&backup.version),
                &sha,
                &target,
                backup_caps.as_ref(),
                || {},
            )?;
            if target != current {
                let _ = std::fs::remove_file(&current);
            }
            // The package goes back with the binary (a rollback from an Enterprise upgrade
            // returns to PydioHome).
            let package = backup.package.clone();
            self.store.lock().await.update(|d| {
                d.previous_version.clear();
                if !package.is_empty() {
                    d.package_name = package;
                }
                d.pending = Some(Pending {
                    step: "swapped".into(),
                    ..p.clone()
                });
            })?;
        }
        iface.get_mut().await.committed = true;
        if dropin_after != dropin_now {
            put_dropin(self, dropin_after.as_deref()).await?;
        }
        self.set_state(Lifecycle::Restarting).await?;
        job::update(iface, |d| d.phase = "restarting".into()).await;
        let result = self.restart_and_prove(&backup.version).await;
        self.journal(None).await?;
        match result {
            Ok(()) => {
                self.set_state(Lifecycle::Idle).await?;
                Ok(format!(
                    "rolled back to {} (from {}); Cells may have migrated data while {} ran",
                    backup.version, installed.version, installed.version
                ))
            }
            Err(e) => Err(Error::RollbackFailed(format!(
                "{} was put back but did not come up: {}",
                backup.version,
                e.message()
            ))),
        }
    }
}

impl Shared {
    /// At start-up: finishes or undoes an apply or rollback that a crash interrupted, as a
    /// job (callers meanwhile get Busy). Leaves the unit running a verified version.
    pub(super) async fn recover_if_needed(self: &Arc<Self>) {
        let Some(p) = self.store.lock().await.get().pending.clone() else {
            return;
        };
        let kind = if p.kind == "rollback" {
            "rollback"
        } else {
            "apply"
        };
        let (path, _cancel) = match self
            .begin_job(kind, &p.to_version, super::auth::Action::Apply)
            .await
        {
            Ok(j) => j,
            Err(e) => {
                log::log(
                    log::Level::Error,
                    &format!("cannot start recovery: {e}"),
                    &[],
                );
                return;
            }
        };
        log::info(
            &format!(
                "recovering an interrupted {} of {} (step {})",
                p.kind, p.to_version, p.step
            ),
            &[("VERSION", &p.to_version), ("PHASE", &p.step)],
        );
        let iface = match self.conn() {
            Ok(c) => c.object_server().interface::<_, Job>(&path).await.ok(),
            Err(_) => None,
        };
        let outcome = match iface {
            Some(iface) => self.recover(&iface, p).await,
            None => Err(Error::Busy("job object vanished".into())),
        };
        self.conclude(&path, outcome, None).await;
    }

    async fn recover(
        self: &Arc<Self>,
        iface: &InterfaceRef<Job>,
        mut p: Pending,
    ) -> Result<String> {
        let target = PathBuf::from(&p.target);
        let old_binary = PathBuf::from(&p.old_binary);
        install::clean_temp(&target);
        install::clean_temp(&old_binary);
        let new_sha = trust::decode_checksum(&p.new_sha256)?;
        let swapped = install::inspect(&target).is_ok_and(|d| d.sha256 == new_sha);
        let entry = match (swapped, p.kind.as_str()) {
            (true, "rollback") => Lifecycle::RollingBack,
            (true, _) => Lifecycle::Applying,
            (false, _) => Lifecycle::Failed,
        };
        self.store.lock().await.recover_to(entry)?;
        self.publish().await;
        if swapped {
            // The new bytes are in place: make sure the rest is too, then prove it.
            let caps = caps_from_b64(&p.new_caps);
            if install::inspect(&target)?.caps != caps {
                let f = std::fs::File::open(&target).map_err(|e| {
                    Error::SwapFailed(format!("cannot open {}: {e}", target.display()))
                })?;
                crate::fcaps::set(std::os::fd::AsFd::as_fd(&f), caps.as_ref()).map_err(|e| {
                    Error::SwapFailed(format!(
                        "cannot restore the capabilities of {}: {e}",
                        target.display()
                    ))
                })?;
            }
            if p.kind == "rollback" {
                if p.target != p.old_binary {
                    let _ = std::fs::remove_file(&old_binary);
                }
                if read_opt(&self.cfg.path(&systemd::dropin_path(&self.cfg.unit))) != p.dropin_after
                {
                    put_dropin(self, p.dropin_after.as_deref()).await?;
                }
                self.store
                    .lock()
                    .await
                    .update(|d| d.previous_version.clear())?;
                self.set_state(Lifecycle::Restarting).await?;
                self.restart_and_prove(&p.to_version.clone()).await?;
                self.journal(None).await?;
                self.set_state(Lifecycle::Idle).await?;
                return Ok(format!(
                    "finished an interrupted rollback to {}",
                    p.to_version
                ));
            }
            let to = CellsVersion::parse(&p.to_version)?;
            let from = p.from_version.clone();
            self.store.lock().await.update(|d| {
                let highest = std::cmp::max(
                    CellsVersion::parse(&d.highest_installed).ok(),
                    Some(to.clone()),
                );
                d.highest_installed = highest.map(|v| v.to_string()).unwrap_or_default();
                d.previous_version = from.clone();
                d.staged_version.clear();
            })?;
            let _ = self.stager.area.remove(&to);
            iface.get_mut().await.committed = true;
            let outcome = self.finish_apply(iface, &mut p, true).await;
            return match outcome {
                Ok(m) => Ok(format!("finished an interrupted update: {m}")),
                Err(e) => self.after_failure(iface, &mut p, e).await,
            };
        }
        // The swap did not happen: the old binary is in place. Undo the rest.
        if p.target != p.old_binary && p.kind == "apply" {
            let _ = std::fs::remove_file(&target);
        }
        if read_opt(&self.cfg.path(&systemd::dropin_path(&self.cfg.unit))) != p.dropin_before {
            put_dropin(self, p.dropin_before.as_deref()).await?;
        }
        if let Some(bus) = self.system_bus().await {
            let facts = systemd::unit_facts(&bus, &self.cfg.unit).await?;
            if facts.active_state != "active" {
                systemd::restart(&bus, &self.cfg.unit, true, RESTART_TIMEOUT).await?;
            }
        }
        self.journal(None).await?;
        let rest = self.store.lock().await.resting();
        self.set_state(rest).await?;
        Ok(format!(
            "an interrupted {} of {} had not swapped the binary; nothing was changed, {} still runs",
            p.kind, p.to_version, p.from_version
        ))
    }
}

impl Shared {
    /// Where the license lives and who owns it: the working directory (from the unit's
    /// CELLS_WORKING_DIR, else the Cells user's home), the user's uid and the unit's group.
    async fn license_location(&self) -> Result<(PathBuf, u32, u32)> {
        let facts = self.unit_facts().await;
        let user = self
            .cfg
            .user
            .clone()
            .or_else(|| facts.as_ref().map(|f| f.user.clone()).filter(|u| !u.is_empty()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{} has no User= (and [cells] user is not set): cannot tell who owns the license",
                    self.cfg.unit
                ))
            })?;
        let pw = nix::unistd::User::from_name(&user)
            .ok()
            .flatten()
            .ok_or_else(|| {
                Error::InvalidArgument(format!("the Cells user {user:?} does not exist"))
            })?;
        let gid = facts
            .as_ref()
            .map(|f| f.group.clone())
            .filter(|g| !g.is_empty())
            .and_then(|g| nix::unistd::Group::from_name(&g).ok().flatten())
            .map_or(pw.gid.as_raw(), |g| g.gid.as_raw());
        let dir =
            crate::license::working_dir(facts.as_ref().and_then(|f| f.working_dir()), &pw.dir);
        Ok((self.cfg.path(&dir), pw.uid.as_raw(), gid))
    }

    /// Writes the Enterprise license for the unit's user, in its working directory.
    pub(super) async fn install_license_now(&self, key: &str) -> Result<PathBuf> {
        let key = crate::license::validate(key)?;
        let (dir, uid, gid) = self.license_location().await?;
        let path = crate::license::write(&dir, &key, uid, gid)?;
        log::info(&format!("license installed at {}", path.display()), &[]);
        Ok(path)
    }

    /// The installed license key, sent with Enterprise checks (the server wants it).
    pub(super) async fn license_key(&self) -> Option<String> {
        let (dir, _, _) = self.license_location().await.ok()?;
        let text = std::fs::read_to_string(dir.join(crate::license::LICENSE_FILE)).ok()?;
        crate::license::validate(&text).ok()
    }

    /// UpgradeToEnterprise: the key checked by the update server, saved, then the
    /// Enterprise binary of the same version staged and applied as `cells-enterprise`.
    pub(super) async fn enterprise_work(
        self: &Arc<Self>,
        iface: &InterfaceRef<Job>,
        key: &str,
        version: Option<CellsVersion>,
        mut opts: ApplyOptions,
    ) -> Result<String> {
        let floor = self.floor().await?;
        let installed = floor
            .installed
            .clone()
            .ok_or_else(|| Error::UnitFailed("the installed version is unknown".into()))?;
        let want = version.unwrap_or_else(|| installed.clone());
        if want < installed {
            return Err(Error::Downgrade(format!(
                "{want} is older than the installed {installed}"
            )));
        }
        job::update(iface, |d| {
            d.version = want.to_string();
            d.phase = "downloading".into();
        })
        .await;
        let mut request = crate::update_server::UpdateRequest::new(
            &self.cfg.channel,
            "PydioEnterprise",
            &installed.to_string(),
        );
        request.license_info.insert("Key".into(), key.to_string());
        let resp = crate::update_server::check_license(
            self.http()?,
            &self.cfg.server_url,
            &request,
            self.cfg.timeout,
        )
        .await?;
        let any = crate::version::VersionFloor::default();
        let ctx = crate::policy::Context {
            package: "PydioEnterprise",
            floor: &any,
            bad: &[],
            max_binary_size: self.cfg.max_binary_size,
        };
        let offer = resp
            .available_binaries
            .iter()
            .map(|p| crate::policy::assess(p, &ctx))
            .find(|a| a.version.as_ref() == Some(&want))
            .ok_or_else(|| {
                Error::NoSuchVersion(format!(
                    "the update server offers no Enterprise build of {want}"
                ))
            })?;
        if !offer.allowed {
            return Err(Error::NoSuchVersion(format!(
                "the Enterprise build of {want} is not usable here ({})",
                offer.reason
            )));
        }
        let release = crate::stage::Release::from_package(&offer.package)?;
        self.install_license_now(key).await?;
        self.set_state(Lifecycle::Downloading).await?;
        let manifest = self
            .stager
            .stage_release(
                self.http()?,
                &release,
                &any,
                &mut |_| {},
                &crate::stage::Cancel::new(),
            )
            .await?;
        {
            let mut store = self.store.lock().await;
            store.transition(Lifecycle::Verifying)?;
            store.update(|d| d.staged_version = manifest.version.clone())?;
            store.transition(Lifecycle::Staged)?;
        }
        opts.version = Some(want.clone());
        opts.file_name = Some("cells-enterprise".into());
        opts.allow_same_version = true;
        let msg = self.apply_work(iface, &opts).await?;
        self.store
            .lock()
            .await
            .update(|d| d.package_name = "PydioEnterprise".into())?;
        self.publish().await;
        Ok(format!(
            "Pydio Cells Enterprise {want}: license saved; {msg}"
        ))
    }
}
