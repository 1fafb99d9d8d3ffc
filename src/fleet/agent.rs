//! The fleet agent (`cells-updater fleet-agent`, cargo feature `fleet`): the unprivileged
//! process that holds this node's etcd lease and owns `com.pydio.CellsUpdater1.Fleet`. The
//! root daemon, which keeps no network, asks it for a slot before a swap, has it confirmed
//! right before the swap, and reports the outcome; the agent answers from etcd.
//!
//! Only root (the daemon) may call it: the caller is identified by the bus.

use super::etcd::{Cluster, Lease, Slot};
use super::{FleetConfig, NodeValue, FORMAT};
use crate::error::{Error, Result};
use crate::log;
use std::sync::Arc;
use tokio::sync::Mutex;

/// The agent's well-known name.
pub const AGENT_NAME: &str = "com.pydio.CellsUpdater1.Fleet";
/// Its object.
pub const AGENT_PATH: &str = "/com/pydio/CellsUpdater1/Fleet";

struct State {
    cluster: Cluster,
    lease: Lease,
    state: String,
    last_error: String,
    version: String,
}

/// The served object.
pub struct Agent {
    cfg: FleetConfig,
    inner: Arc<Mutex<State>>,
}

/// This node's name: `[fleet] node`, else the machine id under `root`.
pub fn node_name(cfg: &FleetConfig, root: &std::path::Path) -> Result<String> {
    if let Some(n) = &cfg.node {
        return Ok(n.clone());
    }
    let id = std::fs::read_to_string(root.join("etc/machine-id")).map_err(|e| {
        Error::FleetUnavailable(format!(
            "no [fleet] node and no /etc/machine-id ({e}): name this node in [fleet] node"
        ))
    })?;
    let id = id.trim().to_string();
    if !super::name_ok(&id) {
        return Err(Error::FleetUnavailable(
            "/etc/machine-id is not a usable node name: set [fleet] node".into(),
        ));
    }
    Ok(id)
}

async fn caller_is_root(conn: &zbus::Connection, hdr: &zbus::message::Header<'_>) -> Result<()> {
    let sender = hdr
        .sender()
        .map(|s| s.to_string())
        .ok_or_else(|| Error::NotAuthorized("the call has no sender".into()))?;
    let uid = crate::daemon::auth::caller_uid(conn, &sender).await?;
    if uid != 0 {
        return Err(Error::NotAuthorized(format!(
            "uid {uid} may not call the fleet agent: only the root daemon does"
        )));
    }
    Ok(())
}

#[zbus::interface(name = "com.pydio.CellsUpdater1.Fleet")]
impl Agent {
    /// Asks for a slot to install `version`: `(granted, slot, why)`; `why` names the holders
    /// when every slot is taken. `FleetHalted`, `NoSuchVersion` (marked bad for the cluster)
    /// and `FleetUnavailable` as errors.
    async fn take_slot(
        &self,
        version: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> std::result::Result<(bool, u32, String), crate::daemon::errors::BusError> {
        caller_is_root(conn, &hdr).await?;
        let v = crate::version::CellsVersion::parse(&version)?.to_string();
        let mut s = self.inner.lock().await;
        let State { cluster, lease, .. } = &mut *s;
        let got = match cluster.take_slot(lease, &v, self.cfg.max_parallel).await {
            // The lease ran out while etcd was away longer than its TTL: take a new one
            // (what was bound to the old one is gone already) and ask again.
            Err(e) if e.message().contains("lease not found") => {
                *lease = cluster.lease().await?;
                log::log(
                    log::Level::Warning,
                    "the etcd lease had expired; a new one was granted",
                    &[],
                );
                cluster.take_slot(lease, &v, self.cfg.max_parallel).await?
            }
            other => other?,
        };
        Ok(match got {
            Slot::Held(n) => {
                s.state = "updating".into();
                (true, n, String::new())
            }
            Slot::Busy(h) => {
                s.state = "waiting-for-slot".into();
                (false, 0, format!("every slot is taken ({})", h.join(", ")))
            }
        })
    }

    /// Right before the swap: the slot is still this node's, with half its TTL left.
    async fn confirm_slot(
        &self,
        slot: u32,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> std::result::Result<(), crate::daemon::errors::BusError> {
        caller_is_root(conn, &hdr).await?;
        let mut s = self.inner.lock().await;
        let State { cluster, lease, .. } = &mut *s;
        Ok(cluster.confirm_slot(lease, slot).await?)
    }

    /// The outcome of the job that held `slot`: `bad` (it failed its health check here)
    /// marks `version` bad for the cluster and halts it; otherwise the slot is given back.
    async fn report(
        &self,
        version: String,
        slot: u32,
        bad: bool,
        reason: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> std::result::Result<(), crate::daemon::errors::BusError> {
        caller_is_root(conn, &hdr).await?;
        let v = crate::version::CellsVersion::parse(&version)?.to_string();
        let mut s = self.inner.lock().await;
        if bad {
            s.cluster.report_bad(&v, &reason, Some(slot)).await?;
            s.state = "failed".into();
            s.last_error = crate::text::one_line(&reason, 300);
            log::log(
                log::Level::Warning,
                &format!("{v} failed here: marked bad for the cluster, which is halted"),
                &[("VERSION", &v)],
            );
        } else {
            s.cluster.release_slot(slot).await?;
            s.state = "idle".into();
        }
        Ok(())
    }
}

/// Runs the agent on `bus` until SIGTERM: the lease, the heartbeat, the bus name.
pub async fn run(cfg: crate::config::Config, bus: crate::daemon::Bus) -> anyhow::Result<()> {
    let fleet = cfg.fleet.clone().ok_or_else(|| {
        anyhow::anyhow!("this node has no [fleet] section in its configuration (docs/fleet.md)")
    })?;
    let node = node_name(&fleet, &cfg.root)?;
    let mut cluster = Cluster::connect(&fleet, &node).await?;
    let lease = cluster.lease().await?;
    let inner = Arc::new(Mutex::new(State {
        cluster,
        lease,
        state: "idle".into(),
        last_error: String::new(),
        version: String::new(),
    }));
    let builder = match &bus {
        crate::daemon::Bus::System => zbus::connection::Builder::system()?,
        crate::daemon::Bus::Address(a) => zbus::connection::Builder::address(a.as_str())?,
    };
    let conn = builder
        .serve_at(
            AGENT_PATH,
            Agent {
                cfg: fleet.clone(),
                inner: inner.clone(),
            },
        )?
        .name(AGENT_NAME)?
        .build()
        .await?;
    log::info(
        &format!("fleet agent for node {node} of cluster {}", fleet.cluster),
        &[],
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut beat =
        tokio::time::interval((fleet.lease_ttl / 3).max(std::time::Duration::from_secs(1)));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = beat.tick() => {
                let mut s = inner.lock().await;
                let v = NodeValue {
                    format: FORMAT,
                    version: s.version.clone(),
                    state: s.state.clone(),
                    last_error: s.last_error.clone(),
                    heartbeat: super::now(),
                };
                let State { cluster, lease, .. } = &mut *s;
                if let Err(e) = cluster.heartbeat(lease, &v).await {
                    if e.message().contains("lease not found") {
                        if let Ok(l) = cluster.lease().await {
                            *lease = l;
                        }
                    }
                    log::log(log::Level::Warning, &e.message(), &[]);
                }
            }
        }
    }
    drop(conn);
    Ok(())
}
