//! The fleet gate (docs/fleet.md): on a node with `[fleet]`, a job that restarts Cells takes
//! a slot from the fleet agent before its swap (phase `waiting-for-slot`, at most `[fleet]
//! slot_wait`), has the agent confirm it right before the swap (still this node's, half the
//! lease left; otherwise it asks again and does not swap), and reports its outcome after the
//! health check or the rollback. The agent's answers are claims: only the error names the
//! gate expects are kept, messages are one bounded line, every call has a timeout, and an
//! agent that is gone means `FleetUnavailable` (fail closed). Without `[fleet]`, nothing.

use super::Ctx;
use crate::daemon::job::Phase;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::package::BadRelease;
use crate::state::FleetReport;
use crate::version::CellsVersion;

/// A slot the agent granted: its number and its token (the slot key's create revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Grant {
    pub slot: u32,
    pub grant: i64,
}
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::contract::{AGENT_INTERFACE as AGENT_IFACE, AGENT_NAME, AGENT_PATH};

/// The agent's error as the gate keeps it: a known fleet name, else `FleetUnavailable`.
fn claim(e: zbus::Error) -> Error {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            let msg = crate::text::one_line(&msg.unwrap_or_default(), 300);
            match name.as_str().strip_prefix(crate::error::ERROR_PREFIX) {
                Some(n @ ("FleetHalted" | "NoSuchVersion" | "FleetUnavailable")) => {
                    Error::from_name(n, msg)
                }
                _ => Error::FleetUnavailable(format!(
                    "the fleet agent refused: {}: {msg}",
                    crate::text::one_line(name.as_str(), 100)
                )),
            }
        }
        other => Error::FleetUnavailable(format!(
            "the fleet agent ({AGENT_NAME}) is not reachable: {}; in fleet mode no update \
             starts without it (systemctl status cells-updater-fleet)",
            crate::text::one_line(&other.to_string(), 200)
        )),
    }
}

async fn call<R>(
    ctx: &Ctx,
    limit: Duration,
    method: &str,
    body: &(impl serde::Serialize + zbus::zvariant::DynamicType),
) -> Result<R>
where
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    call_on(&ctx.d, limit, method, body).await
}

async fn call_on<R>(
    d: &Daemon,
    limit: Duration,
    method: &str,
    body: &(impl serde::Serialize + zbus::zvariant::DynamicType),
) -> Result<R>
where
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    let conn = d.conn()?;
    let owner = trusted_agent(conn, limit).await?;
    let proxy = zbus::Proxy::new(conn, owner, AGENT_PATH, AGENT_IFACE)
        .await
        .map_err(claim)?;
    match tokio::time::timeout(limit, proxy.call::<_, _, R>(method, body)).await {
        Ok(r) => r.map_err(claim),
        Err(_) => Err(Error::FleetUnavailable(format!(
            "the fleet agent did not answer {method} within {} s (etcd unreachable or \
             without quorum?)",
            limit.as_secs()
        ))),
    }
}

pub use crate::contract::AGENT_USER;

/// Whoever owns the agent's name must be root or the agent's own user: a local user who
/// took the name (a bus without the packaged policy) would otherwise grant every slot. The
/// owner's unique name is returned, and the call goes to it, so the name cannot change hands
/// between the check and the call.
async fn trusted_agent(conn: &zbus::Connection, limit: Duration) -> Result<String> {
    let dbus = zbus::fdo::DBusProxy::new(conn).await.map_err(claim)?;
    let name = zbus::names::BusName::try_from(AGENT_NAME)
        .map_err(|e| Error::FleetUnavailable(format!("the agent's name: {e}")))?;
    let asked = async {
        let owner = dbus.get_name_owner(name).await?;
        let uid = dbus
            .get_connection_unix_user(zbus::names::BusName::Unique(owner.clone().into_inner()))
            .await?;
        Ok::<_, zbus::fdo::Error>((owner.to_string(), uid))
    };
    let (owner, uid) = match tokio::time::timeout(limit, asked).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(claim(e.into())),
        Err(_) => {
            return Err(Error::FleetUnavailable(
                "the bus did not say who owns the fleet agent's name".into(),
            ))
        }
    };
    let agent_uid = nix::unistd::User::from_name(AGENT_USER)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    if uid == 0 || Some(uid) == agent_uid {
        return Ok(owner);
    }
    Err(Error::FleetUnavailable(format!(
        "the fleet agent's name ({AGENT_NAME}) is owned by uid {uid}, neither root nor \
         {AGENT_USER}: no slot is taken from it (install the packaged D-Bus policy \
         com.pydio.CellsUpdater1.Fleet.conf)"
    )))
}

/// Takes and confirms a slot for installing `version`; `None` without `[fleet]`. When it
/// fails after asking (cancelled, the wait over, the confirm lost, an answer too late), the
/// agent is told to give back whatever it granted this node, so no slot leaks until the
/// lease ends.
pub(super) async fn take(ctx: &Ctx, version: &str) -> Result<Option<Grant>> {
    let Some(f) = ctx.d.cfg.fleet.clone() else {
        return Ok(None);
    };
    let r = take_in(ctx, version, &f).await;
    if let Err(e) = &r {
        let limit = f.timeout * 3 + Duration::from_secs(2);
        let why = crate::text::one_line(&format!("{}: {}", e.name(), e.message()), 300);
        // Grant 0: whatever this node holds under the agent's lease (this is the one job
        // running here, and a kept report of an earlier one was delivered first).
        if let Err(g) = call::<()>(
            ctx,
            limit,
            "Report",
            &(version, 0u32, 0i64, false, why.as_str()),
        )
        .await
        {
            crate::log::log(
                crate::log::Level::Warning,
                &format!(
                    "could not give back a slot the agent may have granted for {version} ({}); \
                     it frees when the agent's lease ends",
                    g.message()
                ),
                &[("VERSION", version)],
            );
        }
    }
    r
}

/// Right before the swap, inside the job's point of no return: the slot is confirmed again
/// (still this node's, half its lease left). `Ok` without `[fleet]`.
pub(super) async fn confirm(ctx: &Ctx, grant: Option<Grant>) -> Result<()> {
    let (Some(Grant { slot, grant }), Some(f)) = (grant, ctx.d.cfg.fleet.clone()) else {
        return Ok(());
    };
    let limit = f.timeout * 3 + Duration::from_secs(2);
    call::<()>(ctx, limit, "ConfirmSlot", &(slot, grant))
        .await
        .map_err(|e| match e {
            // Halted, or the release marked bad, since the grant.
            Error::FleetHalted(_) | Error::NoSuchVersion(_) => e,
            e => Error::FleetUnavailable(format!(
                "the fleet slot was lost right before the swap ({}); nothing was swapped",
                e.message()
            )),
        })
}

async fn take_in(ctx: &Ctx, version: &str, f: &crate::fleet::FleetConfig) -> Result<Option<Grant>> {
    ctx.phase(Phase::WaitingForSlot).await;
    // An earlier job's outcome the agent has not taken yet goes first: a verdict is never
    // overtaken by a new grant, and its late release can never free this job's grant.
    let kept = ctx.d.store.lock().await.get().fleet_report.clone();
    if let Some(r) = kept {
        deliver(&ctx.d, &r).await.map_err(|e| {
            Error::FleetUnavailable(format!(
                "the outcome of {} on this node has not reached the cluster yet ({}); no new \
                 slot is taken before it does",
                r.version,
                e.message()
            ))
        })?;
        clear_if(&ctx.d, &r).await;
    }
    let limit = f.timeout * 3 + Duration::from_secs(2);
    let deadline = Instant::now() + f.slot_wait;
    loop {
        ctx.job.cancel.check()?;
        let (granted, slot, grant, busy): (bool, u32, i64, String) =
            call(ctx, limit, "TakeSlot", &(version,)).await?;
        let why = if granted {
            match call::<()>(ctx, limit, "ConfirmSlot", &(slot, grant)).await {
                Ok(()) => {
                    crate::log::info(
                        &format!("fleet slot {slot} held for {version}"),
                        &[("VERSION", version)],
                    );
                    return Ok(Some(Grant { slot, grant }));
                }
                // Lost between the grant and the confirm: ask again, do not swap.
                Err(e) => e.message(),
            }
        } else {
            crate::text::one_line(&busy, 300)
        };
        if Instant::now() >= deadline {
            return Err(Error::FleetUnavailable(format!(
                "no fleet slot for {version} within [fleet] slot_wait ({} s): {why}; nothing \
                 was changed",
                f.slot_wait.as_secs()
            )));
        }
        tokio::select! {
            () = ctx.job.cancel.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Records the outcome of the job that held `slot` (sent when the job has ended): a failure after the swap (rolled back,
/// or kept with OnFailure=keep) becomes the cluster's verdict; anything else gives the slot
/// back. An agent that is away (killed, restarting) gets it later: the outcome is kept in
/// the state and sent again until the agent takes it.
pub(super) async fn report(
    ctx: &Ctx,
    grant: Option<Grant>,
    version: &CellsVersion,
    package: crate::package::Package,
    swapped: bool,
    result: &Result<String>,
) {
    let (Some(Grant { slot, grant }), Some(_)) = (grant, ctx.d.cfg.fleet.as_ref()) else {
        return;
    };
    let entry = BadRelease::new(package, version.clone());
    let bad = result.is_err()
        && (swapped || ctx.d.store.lock().await.get().bad_versions.contains(&entry));
    let reason = match result {
        Err(e) => crate::text::one_line(&format!("{}: {}", e.name(), e.message()), 300),
        Ok(_) => String::new(),
    };
    keep(
        ctx,
        FleetReport {
            version: version.clone(),
            slot,
            grant,
            bad,
            reason,
        },
    )
    .await;
}

/// Keeps the job's outcome in the state before the job's end is recorded: a crash before it
/// is delivered loses nothing, and a next job on this node delivers it before taking a slot.
/// A kept verdict is never replaced by a lesser outcome.
async fn keep(ctx: &Ctx, r: FleetReport) {
    if let Ok(mut k) = ctx.fleet.lock() {
        *k = Some(r.clone());
    }
    let kept = ctx.d.store.lock().await.update(|s| match &s.fleet_report {
        Some(old) if old.bad && !r.bad => {}
        _ => s.fleet_report = Some(r.clone()),
    });
    if let Err(e) = kept {
        crate::log::log(
            crate::log::Level::Error,
            &format!("cannot keep the fleet report of {}: {e}", r.version),
            &[("VERSION", &r.version.to_string())],
        );
    }
}

/// Sends the job's outcome, if it held a slot (after its end was recorded).
pub(super) async fn send_kept_outcome(ctx: &Ctx) {
    let r = ctx.fleet.lock().ok().and_then(|mut k| k.take());
    if r.is_some() {
        send_kept(&ctx.d).await;
    }
}

/// After recovery from a crash, the outcome of the interrupted job that held a slot: a
/// success only when the release it installed runs now.
pub(super) async fn report_recovered(
    ctx: &Ctx,
    j: &crate::state::Journal,
    result: &Result<String>,
) {
    let (Some(slot), Some(_)) = (j.fleet_slot, ctx.d.cfg.fleet.as_ref()) else {
        return;
    };
    let entry = BadRelease::new(j.to_package, j.to_version.clone());
    let marked = ctx.d.store.lock().await.get().bad_versions.contains(&entry);
    let runs = ctx
        .d
        .installed()
        .is_some_and(|i| i.reported.as_ref() == Some(&j.to_version));
    let apply = j.kind == crate::state::JournalKind::Apply;
    let r = match result {
        Ok(_) if runs => FleetReport {
            version: j.to_version.clone(),
            slot,
            grant: j.fleet_grant,
            bad: false,
            reason: String::new(),
        },
        _ => FleetReport {
            version: j.to_version.clone(),
            slot,
            grant: j.fleet_grant,
            bad: apply && marked,
            reason: match result {
                Err(e) => crate::text::one_line(&format!("{}: {}", e.name(), e.message()), 300),
                Ok(m) => crate::text::one_line(&format!("recovered after a crash: {m}"), 300),
            },
        },
    };
    keep(ctx, r).await;
}

/// Delivers the kept report, if any, and clears it once taken (only if it is still the one
/// kept); otherwise tries again in the background.
async fn send_kept(d: &Arc<Daemon>) {
    let Some(r) = d.store.lock().await.get().fleet_report.clone() else {
        return;
    };
    if deliver(d, &r).await.is_ok() {
        clear_if(d, &r).await;
        return;
    }
    crate::log::log(
        crate::log::Level::Warning,
        &format!(
            "the fleet agent did not take the outcome of {}; it is kept and sent again until \
             it does",
            r.version
        ),
        &[("VERSION", &r.version.to_string())],
    );
    resend_kept(d.clone());
}

async fn deliver(d: &Daemon, r: &FleetReport) -> Result<()> {
    let Some(f) = d.cfg.fleet.as_ref() else {
        return Ok(());
    };
    let limit = f.timeout * 3 + Duration::from_secs(2);
    call_on::<()>(
        d,
        limit,
        "Report",
        &(
            r.version.to_string(),
            r.slot,
            r.grant,
            r.bad,
            r.reason.as_str(),
        ),
    )
    .await
}

/// Clears the kept report if it is still `r` (a newer one is left for its own delivery).
async fn clear_if(d: &Daemon, r: &FleetReport) {
    let _ = d.store.lock().await.update(|s| {
        if s.fleet_report.as_ref() == Some(r) {
            s.fleet_report = None;
        }
    });
}

/// How long the background loop offers a kept report (the daemon stays up meanwhile); after
/// that it is offered again at the next start and before the next slot.
const RESEND_FOR: Duration = Duration::from_secs(3600);

/// One background loop at a time.
static RESENDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends the kept report, if any, every 2 s until the agent takes it. Called at start-up
/// too.
pub(in crate::daemon) fn resend_kept(d: Arc<Daemon>) {
    use std::sync::atomic::Ordering;
    if RESENDING.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async move {
        let until = Instant::now() + RESEND_FOR;
        while Instant::now() < until {
            let Some(r) = d.store.lock().await.get().fleet_report.clone() else {
                break;
            };
            d.touch();
            if deliver(&d, &r).await.is_ok() {
                clear_if(&d, &r).await;
                crate::log::info(
                    &format!("the fleet agent took the kept outcome of {}", r.version),
                    &[("VERSION", &r.version.to_string())],
                );
                continue;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        RESENDING.store(false, Ordering::SeqCst);
    });
}
