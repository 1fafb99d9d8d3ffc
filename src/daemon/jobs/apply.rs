//! The apply job (Apply, and the second half of Update and UpgradeToEnterprise): swap the
//! staged binary in with its capabilities, fix the unit, restart it, prove the new version
//! healthy, and put the previous one back when it is not. Every step is journaled before it
//! is taken; [`super::recover`] finishes or undoes an interrupted one at start-up (I5).
//!
//! The binary's directory is opened through descriptors and checked (I9); a Cells-user
//! directory is adopted once the job can no longer be cancelled. The capabilities to keep
//! come from what the daemon recorded when it last installed the binary, or from the
//! descriptor it opened and hashed, never from a path opened again.

use super::Ctx;
use crate::config::{CapabilityPolicy, OnFailure};
use crate::daemon::job::Phase;
use crate::daemon::Daemon;
use crate::dirfd::{self, Dir};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::fcaps::FileCaps;
use crate::health::HealthCheck;
use crate::install::{self, Backups, BinaryDir};
use crate::log;
use crate::package::BadRelease;
use crate::state::{InstalledRecord, Journal, JournalKind, Lifecycle, Step};
use crate::version::CellsVersion;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of Apply (and of the apply half of Update and UpgradeToEnterprise).
#[derive(Debug, Clone)]
pub(in crate::daemon) struct Options {
    /// Must equal the staged version when given.
    pub version: Option<CellsVersion>,
    /// Restart the unit (default true).
    pub restart: bool,
    /// What to do when the new version does not come up.
    pub on_failure: OnFailure,
    /// Install under this file name beside the current binary (Enterprise: `cells-enterprise`).
    pub file_name: Option<String>,
    /// The package of the staged release when it differs from the installed one (Enterprise):
    /// the same version may then be installed.
    pub cross_package: Option<crate::package::Package>,
    /// Past a hold, its pin and the release age.
    pub force: bool,
}

/// Runs blocking file work off the async runtime.
pub(in crate::daemon) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("file task failed: {e}")))?
}

/// The binary's checked directory, in a form blocking tasks can share.
pub(in crate::daemon) async fn binary_dir(
    binary: &Path,
    cells_uid: Option<u32>,
    adopt: bool,
) -> Result<Arc<BinaryDir>> {
    let binary = binary.to_path_buf();
    blocking(move || install::open_binary_dir(&binary, cells_uid, adopt).map(Arc::new)).await
}

const DROPIN_NAME: &str = "50-cells-updater.conf";

impl Daemon {
    /// The directory of unit files (`/etc/systemd/system`), opened as a root-only chain.
    fn unit_dir(&self) -> Result<Dir> {
        let path = self.cfg.path(Path::new("/etc/systemd/system"));
        dirfd::root_dir(&path, None, Error::SwapFailed)
    }

    /// The cells-updater drop-in now in force, if any.
    pub(in crate::daemon) fn read_dropin(&self) -> Option<String> {
        let dir = self
            .unit_dir()
            .ok()?
            .subdir(&format!("{}.d", self.cfg.unit), None)
            .ok()?;
        let bytes = dir.read(DROPIN_NAME, 1 << 16).ok()??;
        String::from_utf8(bytes).ok()
    }

    /// Writes or removes the drop-in (as given), then has the manager reload.
    pub(in crate::daemon) async fn put_dropin(&self, content: Option<&str>) -> Result<()> {
        let fail = |e: std::io::Error| {
            Error::from_io(
                &e,
                &format!("cannot update the drop-in of {}", self.cfg.unit),
                Error::SwapFailed,
            )
        };
        let units = self.unit_dir()?;
        let name = format!("{}.d", self.cfg.unit);
        match content {
            Some(text) => {
                let dir = units.subdir(&name, Some(0o755)).map_err(fail)?;
                dir.write_atomic(DROPIN_NAME, text.as_bytes(), 0o644)
                    .map_err(fail)?;
            }
            None => {
                if let Ok(dir) = units.subdir(&name, None) {
                    dir.remove(DROPIN_NAME).map_err(fail)?;
                    dir.sync();
                }
            }
        }
        self.units.reload().await
    }

    /// The drop-in that makes the unit run `target` (a path under the root prefix): none when
    /// the unit file itself names it, else one pointing `ExecStart` (and its assertion) there.
    pub(in crate::daemon) async fn dropin_for(
        &self,
        target: &Path,
        current: Option<String>,
    ) -> Result<Option<String>> {
        let facts = self.unit_facts().await;
        let unit_target =
            PathBuf::from("/").join(target.strip_prefix(&self.cfg.root).unwrap_or(target));
        match &facts {
            Some(f) => {
                let names_other = f.exec_path.as_deref() != Some(unit_target.as_path())
                    || f.assert_executable
                        .iter()
                        .any(|a| Path::new(a) != unit_target);
                if !names_other {
                    // ExecStart already names it: through our drop-in (keep it) or the unit
                    // file itself (then no drop-in is needed).
                    return Ok(current);
                }
                crate::dropin::render_dropin(
                    &self.cfg.unit,
                    &unit_target,
                    &f.exec_args,
                    !f.assert_executable.is_empty(),
                )
                .map(Some)
            }
            None => Ok(current),
        }
    }

    fn health(&self) -> HealthCheck {
        HealthCheck {
            settle: self.cfg.health_settle,
            timeout: self.cfg.health_timeout,
            url: self.cfg.health_url.clone(),
        }
    }
}

/// Restarts the unit and waits until it is healthy and its binary reports `version` (compared
/// as versions: `v4.4.5` is 4.4.5; `None`: a binary put back that never reported one, of
/// which only its health can be proved) and, when it prints an edition label, the edition of
/// `package`.
pub(in crate::daemon) async fn restart_and_prove(
    ctx: &Ctx,
    version: Option<&CellsVersion>,
    package: crate::package::Package,
) -> Result<()> {
    let d = &ctx.d;
    let before = d.units.facts(&d.cfg.unit).await?;
    d.units.restart(&d.cfg.unit, false).await?;
    failpoint::hit("apply-after-restart");
    ctx.set_state(Lifecycle::HealthCheck).await?;
    ctx.phase(Phase::HealthCheck).await;
    d.units
        .wait_healthy(&d.cfg.unit, &d.health(), before.n_restarts, &d.runner)
        .await?;
    let now = d.refresh_installed().await;
    let shown = version.map_or("the previous release".into(), |v| v.to_string());
    if let Some(want) = version {
        if now.reported.as_ref() != Some(want) {
            return Err(Error::UnitFailed(format!(
                "after the restart the binary reports {:?}, not {want}",
                crate::text::one_line(&now.version, 80)
            )));
        }
    }
    let label = d.installed_label().await;
    if !label.is_empty() {
        let enterprise = crate::probe::label_is_enterprise(&label);
        if enterprise != (package == crate::package::Package::Enterprise) {
            return Err(Error::UnitFailed(format!(
                "after the restart the binary says it is {label:?}, not the {package} build of {shown}"
            )));
        }
    }
    Ok(())
}

/// Swaps the staged release in, restarts, proves it healthy; rolls back when not.
pub(in crate::daemon) async fn run(ctx: &Ctx, opts: &Options) -> Result<String> {
    let d = &ctx.d;
    let doc = d.store.lock().await.get().clone();
    let Some(staged) = doc.staged_version.clone() else {
        return Err(Error::NothingStaged(
            "nothing is staged; run Stage (or Update) first".into(),
        ));
    };
    if let Some(v) = &opts.version {
        if *v != staged {
            return Err(Error::InvalidArgument(format!(
                "Version {v} was asked for but {staged} is staged"
            )));
        }
    }
    ctx.job.update(|j| j.version = staged.to_string()).await;
    let manifest = d.stager.area.manifest(&staged).ok_or_else(|| {
        Error::NothingStaged(format!(
            "the staged files of {staged} are missing; stage it again"
        ))
    })?;
    let expected = manifest.sha256;
    let bounds = d.bounds().await?;
    match &opts.cross_package {
        None => bounds.admit(&staged)?,
        Some(_) => bounds.admit_cross(&staged)?,
    }
    let from_package = d.package().await;
    let to_package = opts.cross_package.unwrap_or(from_package);
    // A binary staged as the other edition (StageFromFd names its own) never runs on this
    // host's data: only UpgradeToEnterprise changes the edition.
    if manifest.package != to_package {
        return Err(Error::VersionMismatch(format!(
            "{staged} is staged as {}, but this host runs {to_package}: changing the edition \
             is UpgradeToEnterprise's; nothing was changed",
            manifest.package
        )));
    }
    super::stage::refuse_bad(d, to_package, &staged).await?;
    // A hold or pin set while this job downloaded stops it here, before anything changes
    // (a forced job was let past them, and said so, when it was asked for).
    if !opts.force {
        d.check_policy(opts, Some(&staged), &format!("the install of {staged}"))
            .await?;
    }
    // The kept copy is filed under the version the installed binary reports.
    let from = bounds.installed.clone().ok_or_else(|| {
        Error::SwapFailed(
            "the installed Cells binary reports no version cells-updater can read, so no copy \
             of it could be kept for Rollback; nothing was changed"
                .into(),
        )
    })?;
    let installed = d.installed().unwrap_or_default();
    let old_binary = installed
        .binary
        .ok_or_else(|| Error::SwapFailed("cannot tell which binary the unit runs".into()))?;
    let cells_uid = d.cells_uid().await;
    // The chain is checked now: an unsafe one is refused before anything changes.
    binary_dir(&old_binary, cells_uid, false).await?;
    let target = match &opts.file_name {
        Some(name) => old_binary.with_file_name(name),
        None => old_binary.clone(),
    };
    let dropin_before = d.read_dropin();
    let dropin_after = d.dropin_for(&target, dropin_before.clone()).await?;
    // On a cluster node: a slot before the swap (nothing changed yet if none comes).
    if d.cfg.fleet.is_some() && !opts.restart {
        return Err(Error::InvalidArgument(
            "Restart=false is refused on a cluster node: the release would be swapped in \
             without its health check, outside the node's fleet slot"
                .into(),
        ));
    }
    // What the journal records is typed before anything is taken or changed.
    let slot = super::fleet_gate::take(ctx, &staged.to_string()).await?;
    let swapped = std::sync::atomic::AtomicBool::new(false);
    let result: Result<String> = async {
        ctx.job.cancel.check()?;
        // The point of no return: from here on Cancel is refused and the job finishes or undoes.
        ctx.job.cancel.commit()?;
        ctx.set_state(Lifecycle::Applying).await?;
        ctx.phase(Phase::Swapping).await;
        let bin = binary_dir(&old_binary, cells_uid, true).await?;
        let adoption = record_adoption(d, &bin).await?;
        let (old_file, old) = {
            let (bin, limit) = (bin.clone(), d.cfg.max_binary_size);
            blocking(move || install::open_installed(&bin.dir, &bin.name, limit, cells_uid)).await?
        };
        let new_caps = match d.cfg.capabilities {
            CapabilityPolicy::Preserve => match &doc.installed {
                // What the daemon set when it installed this very binary.
                Some(r)
                    if r.path == old_binary.display().to_string()
                        && r.sha256 == Some(old.sha256) =>
                {
                    r.caps.and_then(|c| c.preservable())
                }
                // Otherwise what the descriptor just opened and hashed carries, of what may be
                // preserved (cap_net_bind_service).
                _ => old.caps.and_then(|c| c.preservable()),
            },
            CapabilityPolicy::Always => Some(FileCaps::net_bind_service()),
            CapabilityPolicy::Never => None,
        };
        let mut j = Journal {
            kind: JournalKind::Apply,
            step: Step::Backup,
            from_version: Some(from.clone()),
            from_package,
            to_version: staged.clone(),
            to_package,
            old_binary: old_binary.display().to_string(),
            target: target.display().to_string(),
            old_sha256: old.sha256,
            new_sha256: expected,
            old_caps: old.caps.and_then(|c| c.preservable()),
            new_caps,
            dropin_before,
            dropin_after,
            previous_before: doc.previous_version.clone(),
            on_failure: opts.on_failure,
            restart: opts.restart,
            fleet_slot: slot.map(|g| g.slot),
            fleet_grant: slot.map_or(0, |g| g.grant),
        };
        // Journal first, then move: a crash in between must find the operation recorded.
        ctx.journal(Some(&j)).await?;
        failpoint::hit("apply-before-backup");
        {
            let state = d.state_dir().await?;
            let (from, path) = (from.clone(), old_binary.clone());
            let seen = old.clone();
            blocking(move || {
                Backups::open(&state)?
                    .keep(&old_file, &seen, &from, &path, from_package)
                    .map(|_| ())
            })
            .await?;
        }
        // On a cluster node, the slot once more, right before the swap: a lease that ran
        // out during the backup stops the job here, with the old binary still in place.
        if let Err(e) = super::fleet_gate::confirm(ctx, slot).await {
            ctx.journal(None).await?;
            return Err(e);
        }
        j.step = Step::Swapping;
        ctx.journal(Some(&j)).await?;
        failpoint::hit("apply-before-swap");
        {
            let _atomic = d.atomic.lock().await;
            let staged_file = d.stager.area.open_binary(&staged)?;
            let (bin2, caps) = (bin.clone(), new_caps);
            let name = target_name(&target)?;
            blocking(move || {
                install::install(
                    &staged_file,
                    &expected,
                    &bin2.dir,
                    &name,
                    caps.as_ref(),
                    || failpoint::hit("apply-before-rename"),
                )
            })
            .await?;
            failpoint::hit("apply-after-rename");
            swapped.store(true, std::sync::atomic::Ordering::SeqCst);
            j.step = Step::Swapped;
            let mut store = d.store.lock().await;
            store.update(|s| {
                s.staged_version = None;
                s.previous_version = j.from_version.clone();
                s.installed = Some(InstalledRecord::new_of(&j));
            })?;
            store.set_journal(Some(j.clone()))?;
        }
        let _ = d.stager.area.remove(&staged);
        failpoint::hit("apply-after-state");
        log::info(
            &format!("installed {staged} at {} (was {from})", target.display()),
            &[("VERSION", &staged.to_string()), ("PHASE", "swapping")],
        );
        match finish(ctx, &mut j).await {
            Ok(msg) => Ok(format!("{msg}{adoption}")),
            Err(e) => after_failure(ctx, &mut j, e).await,
        }
    }
    .await;
    super::fleet_gate::report(
        ctx,
        slot,
        &staged,
        to_package,
        swapped.load(std::sync::atomic::Ordering::SeqCst),
        &result,
    )
    .await;
    result
}

/// The file name of a target path.
pub(in crate::daemon) fn target_name(target: &Path) -> Result<String> {
    target
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::SwapFailed(format!("{} is not a path to a file", target.display())))
}

/// Logs and records directories adopted by this opening; returns the sentence for the job's
/// message ("" when none).
pub(in crate::daemon) async fn record_adoption(d: &Daemon, bin: &BinaryDir) -> Result<String> {
    if bin.adopted.is_empty() {
        return Ok(String::new());
    }
    let list: Vec<String> = bin
        .adopted
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let msg = format!(
        ". {} now belong{} to root (they belonged to the Cells user): Cells can no longer \
         overwrite its own binary, which is the point of cells-updater.",
        list.join(" and "),
        if list.len() == 1 { "s" } else { "" }
    );
    log::log(
        log::Level::Warning,
        &format!("adopted {} (made root:root, go-w)", list.join(", ")),
        &[("ADOPTED", &list.join(":"))],
    );
    d.store.lock().await.update(|s| {
        for p in &list {
            if !s.adopted.contains(p) {
                s.adopted.push(p.clone());
            }
        }
    })?;
    Ok(msg)
}

/// The steps after the swap: drop-in, restart, health; then the release is committed.
pub(in crate::daemon) async fn finish(ctx: &Ctx, j: &mut Journal) -> Result<String> {
    let d = &ctx.d;
    if d.read_dropin() != j.dropin_after {
        d.put_dropin(j.dropin_after.as_deref()).await?;
    }
    failpoint::hit("apply-after-dropin");
    if !j.restart {
        commit(ctx, j).await?;
        return Ok(format!(
            "installed {} (was {}); the unit was not restarted: restart {} to run it",
            j.to_version,
            j.from_text(),
            d.cfg.unit
        ));
    }
    j.step = Step::Restarting;
    ctx.journal(Some(j)).await?;
    ctx.set_state(Lifecycle::Restarting).await?;
    ctx.phase(Phase::Restarting).await;
    restart_and_prove(ctx, Some(&j.to_version), j.to_package).await?;
    failpoint::hit("apply-after-health");
    commit(ctx, j).await?;
    if let Ok(state) = d.store.lock().await.dir().try_clone() {
        let (keep, from) = (d.cfg.keep_versions as usize, j.from_version.clone());
        let _ = blocking(move || {
            Backups::open(&state)?.prune(keep, &from.iter().collect::<Vec<_>>());
            Ok(())
        })
        .await;
    }
    Ok(format!(
        "{} {} is installed and healthy (was {}); the previous binary is kept for Rollback",
        d.cfg.unit,
        j.to_version,
        j.from_text()
    ))
}

/// The release passed: the floor rises to it, its package is the one in use, the journal
/// ends.
async fn commit(ctx: &Ctx, j: &Journal) -> Result<()> {
    let to = j.to_version.clone();
    {
        let mut store = ctx.d.store.lock().await;
        store.update(|s| {
            s.committed = std::cmp::max(s.committed.clone(), Some(to.clone()));
            s.package_name = Some(j.to_package);
            // What is now installed (or older) is no longer available.
            s.available_versions.retain(|v| *v > to);
        })?;
        store.set_journal(None)?;
    }
    ctx.rest().await
}

/// After the swap something failed: roll back (or keep, as configured) and report.
pub(in crate::daemon) async fn after_failure(
    ctx: &Ctx,
    j: &mut Journal,
    cause: Error,
) -> Result<String> {
    let why = cause.message();
    if j.on_failure == OnFailure::Keep {
        ctx.journal(None).await?;
        return Err(Error::UnitFailed(format!(
            "{} did not come up ({why}); it was kept as configured (on_failure = keep); \
             Rollback returns to {}",
            j.to_version,
            j.from_text()
        )));
    }
    ctx.phase(Phase::RollingBack).await;
    match undo(ctx, j).await {
        Ok(()) => Err(Error::UnitFailed(format!(
            "{} did not come up ({why}); rolled back to {}, which is running again. {} is \
             marked bad and will not be installed again. It ran, so Cells may already have \
             migrated data for it: check the Cells logs before using {}",
            j.to_version,
            j.from_text(),
            j.to_version,
            j.from_text()
        ))),
        Err(e) => {
            let backup = match ctx.d.store.lock().await.dir().try_clone() {
                Ok(state) => match (Backups::open(&state), &j.from_version) {
                    (Ok(b), Some(v)) => b.path_of(v).display().to_string(),
                    _ => String::new(),
                },
                Err(_) => String::new(),
            };
            Err(Error::RollbackFailed(format!(
                "{} did not come up ({why}), and rolling back to {} failed too: {}. Restore {} \
                 from {backup} by hand",
                j.to_version,
                j.from_text(),
                e.message(),
                j.old_binary
            )))
        }
    }
}

/// Puts the old binary, its capabilities and the drop-in back, restarts, proves it. The
/// failed version is marked bad first, and the journal says the undo began, so a crash in the
/// middle resumes the undo (never the failed release).
pub(in crate::daemon) async fn undo(ctx: &Ctx, j: &mut Journal) -> Result<()> {
    let d = &ctx.d;
    {
        let mut store = d.store.lock().await;
        let bad = BadRelease::new(j.to_package, j.to_version.clone());
        store.update(|s| {
            if !s.bad_versions.contains(&bad) {
                s.bad_versions.push(bad.clone());
            }
            s.previous_version = j.previous_before.clone();
        })?;
        j.step = Step::Undoing;
        store.set_journal(Some(j.clone()))?;
        store.transition(Lifecycle::RollingBack)?;
    }
    d.publish().await;
    failpoint::hit("undo-after-mark");
    let old_binary = PathBuf::from(&j.old_binary);
    let target = PathBuf::from(&j.target);
    let cells_uid = d.cells_uid().await;
    if target == old_binary {
        put_back_old(d, j).await?;
    }
    failpoint::hit("undo-after-restore");
    if d.read_dropin() != j.dropin_before {
        d.put_dropin(j.dropin_before.as_deref()).await?;
    }
    ctx.set_state(Lifecycle::Restarting).await?;
    restart_and_prove(ctx, j.from_version.as_ref(), j.from_package).await?;
    if target != old_binary {
        // Only now that no drop-in points at it does the failed binary go (I1).
        let bin = binary_dir(&target, cells_uid, false).await?;
        let _ = bin.dir.remove(&bin.name);
        bin.dir.sync();
    }
    let mut store = d.store.lock().await;
    store.update(|s| {
        s.installed = Some(InstalledRecord::old_of(j));
        s.package_name = Some(j.from_package);
        s.counters.rollbacks += 1;
    })?;
    store.set_journal(None)?;
    Ok(())
}

/// Writes the kept copy of the old binary back over the target, unless it is already there.
pub(in crate::daemon) async fn put_back_old(d: &Daemon, j: &Journal) -> Result<()> {
    let old_sha = j.old_sha256;
    let cells_uid = d.cells_uid().await;
    let bin = binary_dir(Path::new(&j.old_binary), cells_uid, false).await?;
    let state = d.state_dir().await?;
    let (from, caps) = (
        j.from_version.clone(),
        j.old_caps.and_then(|c| c.preservable()),
    );
    let _atomic = d.atomic.lock().await;
    blocking(move || {
        let on_disk = bin
            .dir
            .open_file(&bin.name)
            .ok()
            .and_then(|o| install::hash_file(&o.file).ok());
        if on_disk.map(|(h, _)| h) == Some(old_sha) {
            return Ok(());
        }
        let backups = Backups::open(&state)?;
        let (_, file) = from.as_ref().and_then(|v| backups.get(v)).ok_or_else(|| {
            Error::RollbackFailed(format!(
                "the kept binary of {} is missing or damaged",
                from.as_ref()
                    .map_or("the previous release".into(), |v| v.to_string())
            ))
        })?;
        install::install(&file, &old_sha, &bin.dir, &bin.name, caps.as_ref(), || {})
    })
    .await
}
