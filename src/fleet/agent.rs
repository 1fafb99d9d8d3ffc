//! The fleet agent (`cells-updater fleet-agent`, cargo feature `fleet`): the unprivileged
//! process that holds this node's etcd lease and owns `com.pydio.CellsUpdater1.Fleet`. The
//! root daemon, which keeps no network, asks it for a slot before a swap, has it confirmed
//! right before the swap, and reports the outcome; the agent answers from etcd.
//!
//! Only root (the daemon) may call it: the caller is identified by the bus.
//!
//! It also carries the rollout: it watches the cluster's keys (and looks again every
//! `[fleet] poll` as a fallback), and when the target names a newer release than this node
//! runs, inside the node's `[policy] windows` unless the rollout says `--now`, it asks its
//! own daemon to `Update` (a hold still binds: the daemon refuses with `Held`). A report it
//! cannot write while etcd is away is kept and written once etcd is back.

use super::etcd::{Cluster, Lease, Slot};
use super::{FleetConfig, NodeValue, FORMAT};
use crate::contract::manager_prop as P;
use crate::error::{Error, Result};
use crate::log;
use crate::package::Package;
use std::sync::Arc;
use tokio::sync::Mutex;

pub use crate::contract::{AGENT_NAME, AGENT_PATH};

struct State {
    cluster: Cluster,
    lease: Lease,
    state: String,
    last_error: String,
    version: String,
    /// The daemon connection (its unique bus name) the current grant went to: a daemon that
    /// died before reporting leaves the slot, which the agent then gives back itself.
    granted_to: Option<String>,
    /// The token of that grant.
    grant: i64,
    /// The last Update this agent asked for, and when.
    tried: Option<(String, std::time::Instant)>,
    /// The grant's holder was seen gone and its daemon at rest on the last beat: on the next
    /// one the slot is given back. A daemon's recovery reports right after it comes to rest;
    /// one beat in between lets that report (a bad verdict, the halt) land first.
    rest_seen: bool,
}

impl State {
    /// Writes an outcome to etcd: the verdict or the canary first, then the grant back (no
    /// other node may take the slot before the halt, or before the soak has started). A
    /// `grant` of 0 (a job that never learned of its grant) gives back every slot this node
    /// holds under this lease.
    async fn write_outcome(
        &mut self,
        version: &str,
        slot: u32,
        grant: i64,
        bad: bool,
        reason: &str,
    ) -> Result<()> {
        if bad {
            // The verdict and, once it is written, the grant back.
            return self
                .cluster
                .report_bad(version, reason, Some((slot, grant)))
                .await;
        }
        if reason.is_empty() {
            // The canary is a nicety: a target another writer left unreadable must not keep
            // the slot (the release below always runs).
            if let Err(e) = self.cluster.record_healthy(version).await {
                log::log(
                    log::Level::Warning,
                    &format!("the canary of {version} was not recorded: {}", e.message()),
                    &[("VERSION", version)],
                );
            }
        }
        if grant != 0 {
            self.cluster.release_grant(slot, grant).await?;
        } else {
            let State { cluster, lease, .. } = self;
            cluster.release_mine(lease).await?;
        }
        Ok(())
    }

    /// The daemon that holds the grant left the bus without reporting (it crashed or was
    /// killed): the slot goes back once the daemon is on the bus again and at rest (its
    /// recovery, which reports the outcome, has ended; a daemon at rest holds no slot). Never
    /// before: another node must not take the slot before this node's verdict.
    /// After "updating": once the daemon is at rest again, what the heartbeat says comes
    /// from it (a job that ended without an outcome for the agent, such as one refused before
    /// its slot, leaves nothing else to tell).
    fn settle(&mut self, rest: Option<AtRest>) {
        let Some(r) = rest else { return };
        if self.state != "updating" {
            return;
        }
        self.state = if r.failed { "failed" } else { "idle" }.into();
        self.last_error = r.last_error;
        if !r.version.is_empty() {
            self.version = r.version;
        }
    }

    async fn reclaim(&mut self, conn: &zbus::Connection) {
        let Some(to) = self.granted_to.clone() else {
            return;
        };
        let t = std::time::Duration::from_secs(5);
        let gone = match tokio::time::timeout(t, zbus::fdo::DBusProxy::new(conn)).await {
            Ok(Ok(p)) => match zbus::names::BusName::try_from(to.as_str()) {
                Ok(n) => matches!(
                    tokio::time::timeout(t, p.name_has_owner(n)).await,
                    Ok(Ok(false))
                ),
                Err(_) => true,
            },
            _ => false,
        };
        if !gone {
            self.rest_seen = false;
            return;
        }
        let at_rest = matches!(
            daemon_prop(conn, P::STATE).await.as_deref(),
            Ok("idle" | "staged" | "failed")
        ) && matches!(
            daemon_path_prop(conn, P::CURRENT_JOB).await.as_deref(),
            Ok("/")
        );
        if !at_rest {
            self.rest_seen = false;
            return;
        }
        if !std::mem::replace(&mut self.rest_seen, true) {
            return;
        }
        self.rest_seen = false;
        let State { cluster, lease, .. } = self;
        if cluster.release_mine(lease).await.is_ok() {
            self.granted_to = None;
            self.state = "idle".into();
            log::log(
                log::Level::Warning,
                "the daemon that held this node's slot left the bus without reporting and is \
                 at rest again; the slot was given back",
                &[],
            );
        }
    }
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
    /// Asks for a slot to install `version`: `(granted, slot, grant, why)`; `grant` is the
    /// token `Report` gives back; `why` names the holders when every slot is taken. `FleetHalted`, `NoSuchVersion` (marked bad for the cluster)
    /// and `FleetUnavailable` as errors.
    async fn take_slot(
        &self,
        version: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> std::result::Result<(bool, u32, i64, String), crate::daemon::errors::BusError> {
        caller_is_root(conn, &hdr).await?;
        let v = crate::version::CellsVersion::parse(&version)?.to_string();
        let sender = hdr.sender().map(|n| n.to_string());
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
            Slot::Held(n, grant) => {
                s.state = "updating".into();
                s.granted_to = sender;
                s.rest_seen = false;
                s.grant = grant;
                (true, n, grant, String::new())
            }
            Slot::Busy(h) => {
                s.state = "waiting-for-slot".into();
                (
                    false,
                    0,
                    0,
                    format!("every slot is taken ({})", h.join(", ")),
                )
            }
        })
    }

    /// Right before the swap: the slot is still this node's, with half its TTL left.
    async fn confirm_slot(
        &self,
        slot: u32,
        grant: i64,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> std::result::Result<(), crate::daemon::errors::BusError> {
        caller_is_root(conn, &hdr).await?;
        let mut s = self.inner.lock().await;
        let State { cluster, lease, .. } = &mut *s;
        Ok(cluster.confirm_slot(lease, slot, grant).await?)
    }

    /// The outcome of a job that asked for a slot: `bad` (it failed its health check here)
    /// marks `version` bad for the cluster and halts it; then the grant `grant` of `slot` is
    /// given back (`grant` 0: every slot this node holds, for a job that never learned of
    /// its grant). Success with no `reason` makes this node the rollout's canary when it is
    /// the first. When etcd does not take it, the call fails (`FleetUnavailable`) and the
    /// daemon keeps the outcome and sends it again.
    // The D-Bus signature (five arguments) plus the header and connection zbus passes.
    #[allow(clippy::too_many_arguments)]
    async fn report(
        &self,
        version: String,
        slot: u32,
        grant: i64,
        bad: bool,
        reason: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> std::result::Result<(), crate::daemon::errors::BusError> {
        caller_is_root(conn, &hdr).await?;
        let v = crate::version::CellsVersion::parse(&version)?.to_string();
        let reason = crate::text::one_line(&reason, 300);
        let mut s = self.inner.lock().await;
        s.write_outcome(&v, slot, grant, bad, &reason).await?;
        if bad {
            s.state = "failed".into();
            s.last_error = reason.clone();
            log::log(
                log::Level::Warning,
                &format!("{v} failed here: marked bad for the cluster, which is halted"),
                &[("VERSION", &v)],
            );
        } else if reason.is_empty() {
            s.state = "idle".into();
            s.version = v.clone();
            s.last_error.clear();
        } else {
            s.state = "idle".into();
            s.last_error = reason.clone();
        }
        if grant == 0 || s.grant == grant {
            s.granted_to = None;
        }
        s.tried = None;
        Ok(())
    }
}

/// Reads a string property of the daemon's manager, bounded.
/// The daemon once its job has ended: its state, version and last error.
struct AtRest {
    failed: bool,
    version: String,
    last_error: String,
}

/// [`AtRest`] when the daemon has no job (read twice: a job that starts meanwhile is not
/// mistaken for rest), within 2 s; `None` otherwise.
async fn at_rest(conn: &zbus::Connection) -> Option<AtRest> {
    let read = async {
        if daemon_path_prop(conn, P::CURRENT_JOB).await.ok()? != "/" {
            return None;
        }
        let r = AtRest {
            failed: daemon_prop(conn, P::STATE).await.ok()? == "failed",
            version: daemon_prop(conn, P::INSTALLED_VERSION).await.ok()?,
            last_error: crate::text::one_line(&daemon_prop(conn, P::LAST_ERROR).await.ok()?, 300),
        };
        (daemon_path_prop(conn, P::CURRENT_JOB).await.ok()? == "/").then_some(r)
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}

async fn daemon_prop(conn: &zbus::Connection, name: &str) -> Result<String> {
    daemon_property::<String>(conn, name)
        .await
        .map(|v| crate::text::one_line(&v, 100))
}

/// Reads an object-path property of the daemon's manager, bounded.
async fn daemon_path_prop(conn: &zbus::Connection, name: &str) -> Result<String> {
    daemon_property::<zbus::zvariant::OwnedObjectPath>(conn, name)
        .await
        .map(|p| p.to_string())
}

async fn daemon_property<T>(conn: &zbus::Connection, name: &str) -> Result<T>
where
    T: TryFrom<zbus::zvariant::OwnedValue>,
    T::Error: Into<zbus::Error>,
{
    let proxy = zbus::Proxy::new(
        conn,
        crate::contract::BUS_NAME,
        crate::contract::MANAGER_PATH,
        crate::contract::MANAGER_INTERFACE,
    )
    .await
    .map_err(|e| Error::FleetUnavailable(format!("the daemon: {e}")))?;
    match tokio::time::timeout(DAEMON_TIMEOUT, proxy.get_property::<T>(name)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::FleetUnavailable(format!(
            "the daemon's {name}: {}",
            crate::text::one_line(&e.to_string(), 200)
        ))),
        Err(_) => Err(Error::FleetUnavailable(format!(
            "the daemon did not answer {name} within {} s",
            DAEMON_TIMEOUT.as_secs()
        ))),
    }
}

/// Longest wait for the daemon's answer.
const DAEMON_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the rollout asks of this node now.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// No target, or already on it (or newer).
    Nothing,
    /// The cluster is halted, or the target is marked bad: why.
    Stopped(String),
    /// Outside the node's windows.
    Window,
    /// Ask the daemon to Update to this version.
    Update(String),
}

/// The rollout's step for a node on `installed` (`package`), given the target.
fn step(
    target: Option<&super::TargetValue>,
    admitted: Result<()>,
    installed: &str,
    package: Option<Package>,
    in_window: bool,
) -> Result<Step> {
    let Some(t) = target else {
        return Ok(Step::Nothing);
    };
    let want = crate::version::CellsVersion::parse(&t.version)?;
    if let Ok(have) = crate::version::CellsVersion::parse(installed) {
        if have >= want {
            return Ok(Step::Nothing);
        }
    }
    if let Err(e) = admitted {
        return Ok(Step::Stopped(e.message()));
    }
    if let Some(package) = package.filter(|p| *p != t.package) {
        return Err(Error::InvalidArgument(format!(
            "the rollout targets {} {}, this node runs {package}: an edition change is each \
             node's UpgradeToEnterprise, not a rollout",
            t.package, t.version
        )));
    }
    if !t.now && !in_window {
        return Ok(Step::Window);
    }
    Ok(Step::Update(want.to_string()))
}

struct Rollout {
    fleet: FleetConfig,
    schedule: crate::schedule::Schedule,
}

impl Rollout {
    /// Looks at the target and, when this node should move, asks its daemon to `Update`.
    async fn reconcile(&self, inner: &Mutex<State>, conn: &zbus::Connection) -> Result<()> {
        let (target, admitted) = {
            let mut s = inner.lock().await;
            let target = s.cluster.target().await?;
            let admitted = match &target {
                Some(t) => s.cluster.admit(&t.version).await,
                None => Ok(()),
            };
            (target, admitted)
        };
        let Some(t) = target else {
            return Ok(());
        };
        // The job first: while one runs, the installed version is about to change (its
        // outcome reports the new one), and no second Update is asked.
        let job = daemon_path_prop(conn, P::CURRENT_JOB).await?;
        let installed = daemon_prop(conn, P::INSTALLED_VERSION).await?;
        let package = Package::parse(&daemon_prop(conn, P::PACKAGE_NAME).await?);
        let in_window = self.schedule.is_empty() || self.schedule.allows(jiff::Timestamp::now());
        let mut s = inner.lock().await;
        if job == "/" && !installed.is_empty() {
            s.version = installed.clone();
        }
        match step(Some(&t), admitted, &installed, package, in_window)? {
            Step::Nothing => {}
            Step::Stopped(why) => {
                s.state = "halted".into();
                s.last_error = why;
            }
            Step::Window => s.state = "waiting-for-window".into(),
            Step::Update(v) => {
                if s.tried
                    .as_ref()
                    .is_some_and(|(tv, at)| *tv == v && at.elapsed() < self.fleet.poll)
                {
                    return Ok(());
                }
                // A job already running (this rollout's, or the admin's) reports its own end;
                // the next look (a watch event, the poll) asks again.
                if job != "/" {
                    if s.state != "updating" {
                        s.last_error = format!(
                            "waiting for the daemon's running job {} before updating to {v}",
                            crate::text::one_line(&job, 80)
                        );
                    }
                    return Ok(());
                }
                s.tried = Some((v.clone(), std::time::Instant::now()));
                drop(s);
                let r = ask_update(conn, &v).await;
                let mut s = inner.lock().await;
                match r {
                    Ok(job) => {
                        s.state = "updating".into();
                        log::info(
                            &format!("rollout: asked the daemon to update to {v} ({job})"),
                            &[("VERSION", &v)],
                        );
                    }
                    Err(e) => {
                        s.last_error = crate::text::one_line(&e, 300);
                        log::log(
                            log::Level::Warning,
                            &format!(
                                "rollout: the daemon refused the update to {v}: {}",
                                s.last_error
                            ),
                            &[("VERSION", &v)],
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// Asks the daemon for `Update(version)`: the job's path, or the refusal.
async fn ask_update(conn: &zbus::Connection, version: &str) -> std::result::Result<String, String> {
    let proxy = zbus::Proxy::new(
        conn,
        crate::contract::BUS_NAME,
        crate::contract::MANAGER_PATH,
        crate::contract::MANAGER_INTERFACE,
    )
    .await
    .map_err(|e| e.to_string())?;
    let opts: std::collections::HashMap<&str, zbus::zvariant::Value> = Default::default();
    match tokio::time::timeout(
        DAEMON_TIMEOUT,
        proxy.call::<_, _, zbus::zvariant::OwnedObjectPath>("Update", &(version, opts)),
    )
    .await
    {
        Ok(Ok(p)) => Ok(p.to_string()),
        Ok(Err(zbus::Error::MethodError(name, msg, _))) => {
            Err(format!("{}: {}", name.as_str(), msg.unwrap_or_default()))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the daemon did not answer Update within {} s",
            DAEMON_TIMEOUT.as_secs()
        )),
    }
}

/// Whether a watch event touched what the rollout reads (the target, the halt, a bad mark,
/// the canary), not just a heartbeat or a slot.
fn rollout_event(keys: &super::Keys, resp: &etcd_client::WatchResponse) -> bool {
    resp.events().iter().any(|e| {
        e.kv().is_some_and(|kv| {
            let k = String::from_utf8_lossy(kv.key());
            k == keys.target()
                || k == keys.halt()
                || k == keys.canary()
                || k.starts_with(&keys.bads())
        })
    })
}

/// Runs the agent on `bus` until SIGTERM: the lease, the heartbeat, the bus name, the
/// rollout.
pub async fn run(cfg: crate::config::Config, bus: crate::daemon::Bus) -> anyhow::Result<()> {
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(std::path::PathBuf::from);
    let mut fleet = cfg
        .fleet
        .clone()
        .ok_or_else(|| {
            anyhow::anyhow!("this node has no [fleet] section in its configuration (docs/fleet.md)")
        })?
        .with_credentials(creds.as_deref());
    super::discover::complete(&mut fleet, discovered(&cfg).await)?;
    let node = node_name(&fleet, &cfg.root)?;
    // A TLS file it cannot read is a configuration error: the start fails (no READY), and
    // `systemctl start` says so, instead of a unit that is up and restarting.
    for (what, path) in [
        ("ca", &fleet.ca),
        ("cert", &fleet.cert),
        ("key", &fleet.key),
    ] {
        if let Some(p) = path {
            std::fs::File::open(p)
                .map_err(|e| anyhow::anyhow!("[fleet] {what}: cannot read {}: {e}", p.display()))?;
        }
    }
    // Started, even while etcd cannot be reached: the unit is up and says what it waits for
    // (a start job timing out during an etcd outage would only add restarts). Its bus name,
    // which the daemon's gate needs, comes after the join.
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("joining etcd"),
        ],
    );
    let Some((cluster, lease)) = join(&fleet, &node).await? else {
        return Ok(());
    };
    let keys = cluster.keys().clone();
    let inner = Arc::new(Mutex::new(State {
        cluster,
        lease,
        state: "idle".into(),
        last_error: String::new(),
        version: String::new(),
        granted_to: None,
        grant: 0,
        tried: None,
        rest_seen: false,
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
        &format!(
            "fleet agent for node {node} of cluster {} (etcd from {})",
            fleet.cluster, fleet.source
        ),
        &[],
    );
    let rollout = Rollout {
        fleet: fleet.clone(),
        schedule: cfg.schedule()?,
    };
    let status = format!("node {node} of cluster {}", fleet.cluster);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut beat =
        tokio::time::interval((fleet.lease_ttl / 3).max(std::time::Duration::from_secs(1)));
    // A beat that took long (etcd away) is not made up for with a burst.
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(fleet.poll);
    let mut watch: Option<(etcd_client::Watcher, etcd_client::WatchStream)> = None;
    loop {
        let event = async {
            match watch.as_mut() {
                Some((_, stream)) => stream.message().await,
                None => std::future::pending().await,
            }
        };
        let look = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = poll.tick() => true,
            ev = event => match ev {
                Ok(Some(resp)) => rollout_event(&keys, &resp),
                // etcd went away: a new watch on the next beat.
                _ => {
                    watch = None;
                    false
                }
            },
            _ = beat.tick() => {
                // Read without the lock (the daemon's calls wait on it) and briefly.
                let updating = inner.lock().await.state == "updating";
                let rest = if updating { at_rest(&conn).await } else { None };
                let mut s = inner.lock().await;
                s.reclaim(&conn).await;
                s.settle(rest);
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
                // A watch is (re)opened here; a new one may have missed a change, so look.
                if watch.is_none() {
                    if let Ok(w) = cluster.watch().await {
                        watch = Some(w);
                        true
                    } else {
                        false
                    }
                } else {
                    false
                }
            }
        };
        if look {
            if let Err(e) = rollout.reconcile(&inner, &conn).await {
                let mut s = inner.lock().await;
                s.last_error = crate::text::one_line(&e.message(), 300);
                log::log(
                    log::Level::Warning,
                    &format!("rollout: {}", s.last_error),
                    &[],
                );
            }
        }
    }
    drop(conn);
    Ok(())
}

/// Connects to etcd and takes a lease, again every 2 s while etcd is unreachable or has
/// no quorum (the daemon meanwhile finds no agent and starts no update); `None` on SIGTERM.
/// A configuration error (a certificate that cannot be read) ends the agent at once.
async fn join(fleet: &FleetConfig, node: &str) -> Result<Option<(Cluster, Lease)>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::FleetUnavailable(format!("cannot watch for SIGTERM: {e}")))?;
    let mut said = false;
    loop {
        let attempt = async {
            let mut c = Cluster::connect(fleet, node).await?;
            let l = c.lease().await?;
            Ok::<_, Error>((c, l))
        };
        match attempt.await {
            Ok(joined) => return Ok(Some(joined)),
            Err(e)
                if e.message().contains("cannot read") || e.message().contains("go together") =>
            {
                return Err(e)
            }
            Err(e) => {
                let why = format!(
                    "waiting for etcd: {}",
                    crate::text::one_line(&e.message(), 200)
                );
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&why)]);
                if !said {
                    log::log(
                        log::Level::Warning,
                        &format!("{}; trying again every 2 s", e.message()),
                        &[],
                    );
                    said = true;
                }
            }
        }
        tokio::select! {
            _ = term.recv() => return Ok(None),
            () = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
    }
}

/// The registry the Cells unit names, if any: systemd's view of it when the system bus
/// answers, else its unit files.
pub async fn discovered(cfg: &crate::config::Config) -> Option<super::discover::Found> {
    let from_systemd = async {
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            zbus::Connection::system(),
        )
        .await
        .ok()?
        .ok()?;
        crate::systemd::unit_facts(&conn, &cfg.unit).await.ok()
    };
    // Only a real root asks systemd: under a test root, the unit files there.
    let facts = if cfg.root == std::path::Path::new("/") {
        from_systemd.await
    } else {
        None
    };
    match facts {
        Some(f) => super::discover::from_facts(&f.environment, &f.exec_args),
        None => {
            let (env, args) = super::discover::read_unit(&cfg.root, &cfg.unit)?;
            super::discover::from_facts(&env, &args)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The served interface's attribute must spell the contract's name.
    #[test]
    fn the_agent_interface_spells_the_contract() {
        use zbus::object_server::Interface;
        assert_eq!(Agent::name().as_str(), crate::contract::AGENT_INTERFACE);
    }
    use crate::fleet::TargetValue;

    fn target(v: &str, now: bool) -> TargetValue {
        TargetValue {
            format: FORMAT,
            version: v.into(),
            package: Package::Home,
            max_parallel: 1,
            canary_soak: 0,
            now,
            by: "t".into(),
            at: 0,
        }
    }

    #[test]
    fn the_rollout_moves_a_node_only_up_inside_its_window_and_its_edition() {
        let t = target("4.4.5", false);
        let ok = || Ok(());
        assert_eq!(
            step(None, ok(), "4.4.2", Some(Package::Home), true).unwrap(),
            Step::Nothing
        );
        assert_eq!(
            step(Some(&t), ok(), "4.4.5", Some(Package::Home), true).unwrap(),
            Step::Nothing
        );
        assert_eq!(
            step(Some(&t), ok(), "4.4.6", Some(Package::Home), true).unwrap(),
            Step::Nothing
        );
        assert_eq!(
            step(Some(&t), ok(), "4.4.2", Some(Package::Home), true).unwrap(),
            Step::Update("4.4.5".into())
        );
        assert_eq!(
            step(Some(&t), ok(), "", None, true).unwrap(),
            Step::Update("4.4.5".into())
        );
        assert_eq!(
            step(Some(&t), ok(), "4.4.2", Some(Package::Home), false).unwrap(),
            Step::Window
        );
        assert_eq!(
            step(
                Some(&target("4.4.5", true)),
                ok(),
                "4.4.2",
                Some(Package::Home),
                false
            )
            .unwrap(),
            Step::Update("4.4.5".into())
        );
        let halted = Err(Error::FleetHalted("halted by n1".into()));
        assert_eq!(
            step(Some(&t), halted, "4.4.2", Some(Package::Home), true).unwrap(),
            Step::Stopped("halted by n1".into())
        );
        let e = step(Some(&t), ok(), "4.4.2", Some(Package::Enterprise), true).unwrap_err();
        assert!(e.message().contains("UpgradeToEnterprise"), "{e}");
        let bad = target("not a version", true);
        assert!(step(Some(&bad), ok(), "4.4.2", Some(Package::Home), true).is_err());
    }
}
