//! The fleet gate (docs/fleet.md): on a node with `[fleet]`, a job that restarts Cells takes
//! a slot from the fleet agent before its swap (phase `waiting-for-slot`, at most `[fleet]
//! slot_wait`), has the agent confirm it right before the swap (still this node's, half the
//! lease left; otherwise it asks again and does not swap), and reports its outcome after the
//! health check or the rollback. The agent's answers are claims: only the error names the
//! gate expects are kept, messages are one bounded line, every call has a timeout, and an
//! agent that is gone means `FleetUnavailable` (fail closed). Without `[fleet]`, nothing.

use super::Ctx;
use crate::daemon::job::Phase;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

const AGENT_NAME: &str = "com.pydio.CellsUpdater1.Fleet";
const AGENT_PATH: &str = "/com/pydio/CellsUpdater1/Fleet";
const AGENT_IFACE: &str = "com.pydio.CellsUpdater1.Fleet";

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
    let conn = ctx.d.conn()?;
    let proxy = zbus::Proxy::new(conn, AGENT_NAME, AGENT_PATH, AGENT_IFACE)
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

/// Takes and confirms a slot for installing `version`; `None` without `[fleet]`. When it
/// fails after asking (cancelled, the wait over, the confirm lost, an answer too late), the
/// agent is told to give back whatever it granted this node, so no slot leaks until the
/// lease ends.
pub(super) async fn take(ctx: &Ctx, version: &str) -> Result<Option<u32>> {
    let Some(f) = ctx.d.cfg.fleet.clone() else {
        return Ok(None);
    };
    let r = take_in(ctx, version, &f).await;
    if let Err(e) = &r {
        let limit = f.timeout * 3 + Duration::from_secs(2);
        let why = crate::text::one_line(&format!("{}: {}", e.name(), e.message()), 300);
        if let Err(g) =
            call::<()>(ctx, limit, "Report", &(version, 0u32, false, why.as_str())).await
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
pub(super) async fn confirm(ctx: &Ctx, slot: Option<u32>) -> Result<()> {
    let (Some(slot), Some(f)) = (slot, ctx.d.cfg.fleet.clone()) else {
        return Ok(());
    };
    let limit = f.timeout * 3 + Duration::from_secs(2);
    call::<()>(ctx, limit, "ConfirmSlot", &(slot,))
        .await
        .map_err(|e| {
            Error::FleetUnavailable(format!(
                "the fleet slot was lost right before the swap ({}); nothing was swapped",
                e.message()
            ))
        })
}

async fn take_in(ctx: &Ctx, version: &str, f: &crate::fleet::FleetConfig) -> Result<Option<u32>> {
    ctx.phase(Phase::WaitingForSlot).await;
    let limit = f.timeout * 3 + Duration::from_secs(2);
    let deadline = Instant::now() + f.slot_wait;
    loop {
        ctx.job.cancel.check()?;
        let (granted, slot, busy): (bool, u32, String) =
            call(ctx, limit, "TakeSlot", &(version,)).await?;
        let why = if granted {
            match call::<()>(ctx, limit, "ConfirmSlot", &(slot,)).await {
                Ok(()) => {
                    crate::log::info(
                        &format!("fleet slot {slot} held for {version}"),
                        &[("VERSION", version)],
                    );
                    return Ok(Some(slot));
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

/// Reports the outcome of the job that held `slot`: a failure after the swap (rolled back,
/// or kept with OnFailure=keep) becomes the cluster's verdict; anything else gives the slot
/// back.
pub(super) async fn report(
    ctx: &Ctx,
    slot: Option<u32>,
    version: &str,
    package: &str,
    swapped: bool,
    result: &Result<String>,
) {
    let (Some(slot), Some(f)) = (slot, ctx.d.cfg.fleet.clone()) else {
        return;
    };
    let entry = crate::policy::bad_entry(package, version);
    let bad = result.is_err()
        && (swapped || ctx.d.store.lock().await.get().bad_versions.contains(&entry));
    let reason = match result {
        Err(e) => crate::text::one_line(&format!("{}: {}", e.name(), e.message()), 300),
        Ok(_) => String::new(),
    };
    let limit = f.timeout * 3 + Duration::from_secs(2);
    if let Err(e) = call::<()>(ctx, limit, "Report", &(version, slot, bad, reason.as_str())).await {
        crate::log::log(
            crate::log::Level::Warning,
            &format!(
                "could not report the outcome of {version} to the fleet agent ({}); its slot \
                 stays held until the agent stops (or etcdctl del of the slot key)",
                e.message()
            ),
            &[("VERSION", version)],
        );
    }
}
