//! The rollback job: the recorded previous version, its capabilities and drop-in, restarted.
//! It is the only way back to an older version (I3), and it does not lower the floor.

use super::apply::{self, binary_dir, blocking, restart_and_prove, target_name};
use super::Ctx;
use crate::daemon::job::Phase;
use crate::error::{Error, Result};
use crate::fcaps;
use crate::install::{self, Backups};
use crate::state::{InstalledRecord, Journal, JournalKind, Lifecycle, Step};
use std::os::fd::AsFd;
use std::path::PathBuf;

/// `Rollback` without a recorded previous version.
pub(in crate::daemon) fn no_previous() -> Error {
    Error::NoPreviousVersion(
        "there is no previous version to roll back to: none is recorded until an update is \
         applied here, and a rollback uses it up; install the release you want with \
         `cells-updater update VERSION`"
            .into(),
    )
}

pub(in crate::daemon) async fn run(ctx: &Ctx) -> Result<String> {
    let d = &ctx.d;
    let doc = d.store.lock().await.get().clone();
    let Some(previous) = doc.previous_version.clone() else {
        return Err(no_previous());
    };
    let state = d.state_dir().await?;
    let (backup, backup_file) = blocking(move || {
        Backups::open(&state)?.get(&previous).ok_or_else(|| {
            Error::RollbackFailed(format!(
                "the kept binary of {previous} is missing or damaged"
            ))
        })
    })
    .await?;
    let backup_caps = fcaps::get(backup_file.as_fd())
        .map_err(|e| {
            Error::RollbackFailed(format!("cannot read the kept binary's capabilities: {e}"))
        })?
        .and_then(|c| c.preservable());
    let installed = d.refresh_installed().await;
    let current = installed
        .binary
        .clone()
        .ok_or_else(|| Error::SwapFailed("cannot tell which binary the unit runs".into()))?;
    let cells_uid = d.cells_uid().await;
    // Back to the path the kept binary was installed at.
    let target = PathBuf::from(&backup.path);
    binary_dir(&current, cells_uid, false).await?;
    binary_dir(&target, cells_uid, false).await?;
    let dropin_now = d.read_dropin();
    let dropin_after = if target == current {
        dropin_now.clone()
    } else {
        d.dropin_for(&target, dropin_now.clone()).await?
    };
    // The kept binary's record is typed (a record that does not decode is no backup); what
    // an earlier daemon left without a package is of the configured one.
    let to_version = backup.version.clone();
    let to_package = backup.package.unwrap_or(d.cfg.package);
    let new_sha256 = backup.sha256;
    let from_package = d.package().await;
    ctx.job.update(|j| j.version = to_version.to_string()).await;
    // On a cluster node a rollback restarts Cells too: it takes a slot like an update.
    let slot = super::fleet_gate::take(ctx, &to_version.to_string()).await?;
    let version = to_version.clone();
    let result: Result<String> = async {
        ctx.job.cancel.check()?;
        ctx.job.cancel.commit()?;
        ctx.set_state(Lifecycle::RollingBack).await?;
        ctx.phase(Phase::RollingBack).await;
        let cur_dir = binary_dir(&current, cells_uid, true).await?;
        let adoption = apply::record_adoption(d, &cur_dir).await?;
        let tgt_dir = binary_dir(&target, cells_uid, true).await?;
        let now = {
            let (c, limit) = (cur_dir.clone(), d.cfg.max_binary_size);
            blocking(move || install::open_and_inspect(&c.dir, &c.name, limit).map(|(_, o)| o))
                .await?
        };
        let mut j = Journal {
            kind: JournalKind::Rollback,
            step: Step::Swapping,
            // When the probe could not tell (a binary that does not start), the version the
            // daemon recorded for this very file.
            from_version: installed.reported.clone().or_else(|| {
                doc.installed
                    .as_ref()
                    .filter(|r| r.sha256 == Some(now.sha256))
                    .and_then(|r| r.version.clone())
            }),
            from_package,
            to_version,
            to_package,
            old_binary: current.display().to_string(),
            target: target.display().to_string(),
            old_sha256: now.sha256,
            new_sha256,
            old_caps: now.caps.and_then(|c| c.preservable()),
            new_caps: backup_caps,
            dropin_before: dropin_now,
            dropin_after,
            previous_before: doc.previous_version.clone(),
            on_failure: crate::config::OnFailure::Keep,
            restart: true,
            fleet_slot: slot.map(|g| g.slot),
            fleet_grant: slot.map_or(0, |g| g.grant),
        };
        // The slot once more, right before the swap (as an update does).
        super::fleet_gate::confirm(ctx, slot).await?;
        ctx.journal(Some(&j)).await?;
        {
            let _atomic = d.atomic.lock().await;
            let sha = j.new_sha256;
            let name = target_name(&target)?;
            let t = tgt_dir.clone();
            blocking(move || {
                install::install(
                    &backup_file,
                    &sha,
                    &t.dir,
                    &name,
                    backup_caps.as_ref(),
                    || {},
                )
            })
            .await?;
            j.step = Step::Swapped;
            let mut store = d.store.lock().await;
            store.update(|s| {
                s.previous_version = None;
                s.package_name = Some(j.to_package);
                s.installed = Some(InstalledRecord::new_of(&j));
            })?;
            store.set_journal(Some(j.clone()))?;
        }
        finish(ctx, &mut j).await.map(|m| format!("{m}{adoption}"))
    }
    .await;
    // A failed rollback is not a verdict on the release it went back to (not `swapped`).
    super::fleet_gate::report(ctx, slot, &version, to_package, false, &result).await;
    result
}

/// After the rollback's swap: drop-in, restart, proof, then the binary it replaced goes
/// (when it sat at another path).
pub(in crate::daemon) async fn finish(ctx: &Ctx, j: &mut Journal) -> Result<String> {
    let d = &ctx.d;
    let result = async {
        if d.read_dropin() != j.dropin_after {
            d.put_dropin(j.dropin_after.as_deref()).await?;
        }
        j.step = Step::Restarting;
        ctx.journal(Some(j)).await?;
        ctx.set_state(Lifecycle::Restarting).await?;
        ctx.phase(Phase::Restarting).await;
        restart_and_prove(ctx, Some(&j.to_version), j.to_package).await?;
        if j.target != j.old_binary {
            let cells_uid = d.cells_uid().await;
            let old = binary_dir(std::path::Path::new(&j.old_binary), cells_uid, false).await?;
            let _ = old.dir.remove(&old.name);
            old.dir.sync();
        }
        Ok::<(), Error>(())
    }
    .await;
    ctx.journal(None).await?;
    match result {
        Ok(()) => {
            ctx.rest().await?;
            let from = match &j.from_version {
                None => "a version its binary did not report".to_string(),
                Some(v) => v.to_string(),
            };
            Ok(format!(
                "rolled back to {} (from {from}); Cells may have migrated data while {from} ran",
                j.to_version
            ))
        }
        Err(e) => Err(Error::RollbackFailed(format!(
            "{} was put back but did not come up: {}",
            j.to_version,
            e.message()
        ))),
    }
}
