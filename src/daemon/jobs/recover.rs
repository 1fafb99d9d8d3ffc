//! Recovery at start-up (I5): an apply or rollback that a crash interrupted is finished or
//! undone, as a job that holds the slot from before the bus name is requested. What happened
//! is read from the journal and from the disk (the target's hash, through its directory's
//! descriptor), never assumed.

use super::apply::{self, binary_dir, blocking};
use super::{rollback, Ctx};
use crate::error::{Error, Result};
use crate::install;
use crate::log;
use crate::state::{InstalledRecord, Journal, JournalKind, Lifecycle, Step};
use std::os::fd::AsFd;
use std::path::Path;

/// True when the new bytes are at the target; the capabilities are made right on the way.
async fn new_bytes_in_place(ctx: &Ctx, j: &Journal) -> Result<bool> {
    let cells_uid = ctx.d.cells_uid().await;
    let new_sha = j.new_sha256;
    // Whatever was recorded, nothing but cap_net_bind_service is ever set from a record.
    let caps = j.new_caps.and_then(|c| c.preservable());
    for p in [&j.target, &j.old_binary] {
        if let Ok(b) = binary_dir(Path::new(p), cells_uid, false).await {
            install::clean_temp(&b.dir, &b.name);
        }
    }
    let bin = binary_dir(Path::new(&j.target), cells_uid, false).await?;
    let _atomic = ctx.d.atomic.lock().await;
    blocking(move || {
        let Ok(opened) = bin.dir.open_file(&bin.name) else {
            return Ok(false);
        };
        let (sha, _) = install::hash_file(&opened.file)
            .map_err(|e| Error::SwapFailed(format!("cannot read {}: {e}", bin.name)))?;
        if sha != new_sha {
            return Ok(false);
        }
        // The inode is root's, in a root-owned directory; its capabilities are set through
        // the descriptor that was just hashed.
        if crate::fcaps::get(opened.file.as_fd()).ok().flatten() != caps {
            crate::fcaps::set(opened.file.as_fd(), caps.as_ref()).map_err(|e| {
                Error::SwapFailed(format!(
                    "cannot restore the capabilities of {}: {e}",
                    bin.name
                ))
            })?;
        }
        Ok(true)
    })
    .await
}

/// Nothing was swapped: the drop-in as before, the unit running, the journal gone.
async fn nothing_swapped(ctx: &Ctx, j: &Journal) -> Result<String> {
    let d = &ctx.d;
    if d.read_dropin() != j.dropin_before {
        d.put_dropin(j.dropin_before.as_deref()).await?;
    }
    if let Ok(f) = d.units.facts(&d.cfg.unit).await {
        if f.active_state != "active" {
            d.units.restart(&d.cfg.unit, true).await?;
        }
    }
    ctx.journal(None).await?;
    ctx.rest().await?;
    Ok(format!(
        "an interrupted {} of {} had not swapped the binary; nothing was changed, {} still runs",
        match j.kind {
            JournalKind::Apply => "update",
            JournalKind::Rollback => "rollback",
        },
        j.to_version,
        j.from_text()
    ))
}

pub(in crate::daemon) async fn run(ctx: &Ctx) -> Result<String> {
    let d = &ctx.d;
    if let Some(why) = d.store.lock().await.damaged_journal() {
        // Nothing is guessed from a journal that cannot be read: no file is touched, and
        // the admin is told what to check.
        return Err(Error::Internal(why.to_string()));
    }
    let Some(mut j) = d.store.lock().await.journal().cloned() else {
        return Ok("nothing to recover".into());
    };
    // Recovery finishes what it starts: it cannot be cancelled.
    ctx.job.cancel.commit()?;
    j.check()?;
    log::info(
        &format!(
            "recovering an interrupted {:?} of {} (step {:?})",
            j.kind, j.to_version, j.step
        ),
        &[
            ("VERSION", &j.to_version.to_string()),
            ("PHASE", &format!("{:?}", j.step)),
        ],
    );
    if j.step == Step::Undoing {
        // The release had failed and was being undone: the undo goes on.
        d.store.lock().await.recover_to(Lifecycle::RollingBack)?;
        d.publish().await;
        return match apply::undo(ctx, &mut j).await {
            Ok(()) => Err(Error::UnitFailed(format!(
                "{} had failed and was being rolled back when cells-updater stopped; the rollback \
                 to {} is finished and {} stays marked bad",
                j.to_version,
                j.from_text(),
                j.to_version
            ))),
            Err(e) => Err(Error::RollbackFailed(format!(
                "finishing the interrupted rollback to {} failed: {}",
                j.from_text(),
                e.message()
            ))),
        };
    }
    let swapped = new_bytes_in_place(ctx, &j).await?;
    let entry = match (swapped, j.kind) {
        (true, JournalKind::Rollback) => Lifecycle::RollingBack,
        (true, JournalKind::Apply) => Lifecycle::Applying,
        (false, _) => Lifecycle::Failed,
    };
    d.store.lock().await.recover_to(entry)?;
    d.publish().await;
    if !swapped {
        return nothing_swapped(ctx, &j).await;
    }
    // The new bytes are in place: the state must say so, then the rest follows.
    j.step = j.step.max_swapped();
    {
        let mut store = d.store.lock().await;
        store.update(|s| {
            s.installed = Some(InstalledRecord::new_of(&j));
            match j.kind {
                JournalKind::Apply => {
                    s.previous_version = j.from_version.clone();
                    s.staged_version = None;
                }
                JournalKind::Rollback => {
                    s.previous_version = None;
                    s.package_name = Some(j.to_package);
                }
            }
        })?;
        store.set_journal(Some(j.clone()))?;
    }
    match j.kind {
        JournalKind::Rollback => rollback::finish(ctx, &mut j)
            .await
            .map(|m| format!("finished an interrupted rollback: {m}")),
        JournalKind::Apply => {
            let _ = d.stager.area.remove(&j.to_version);
            match apply::finish(ctx, &mut j).await {
                Ok(m) => Ok(format!("finished an interrupted update: {m}")),
                Err(e) => apply::after_failure(ctx, &mut j, e).await,
            }
        }
    }
}
