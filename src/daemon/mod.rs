//! The daemon: owns `com.pydio.CellsUpdater1`, serves the Manager and Job objects, authorizes
//! callers, runs one mutating job at a time, tells systemd what it is doing, and exits when
//! idle (D-Bus activation starts it again).
//!
//! - [`manager`] and [`job`] only translate D-Bus calls and properties;
//! - [`jobs`] holds one module per job kind over one job runner;
//! - [`cells`] knows the managed Cells (unit, binary, user, installed version);
//! - [`auth`] decides who may do what; [`units`] reaches the unit's manager.

pub mod auth;
mod cells;
mod check;
pub mod errors;
#[cfg(feature = "fake-unit")]
pub mod fake_unit;
pub mod job;
mod jobs;
mod manager;
mod options;
mod props;
mod units;

pub use manager::{ManagerIface, MANAGER_INTERFACE, MANAGER_PATH};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::helper::Runner;
use crate::log;
use crate::stage::{Stager, StagingArea};
use crate::state::StateStore;
use crate::trust::TrustedKeys;
use auth::{Action, Caller};
use job::JobHandle;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use zbus::zvariant::{OwnedObjectPath, Value};

pub use crate::contract::BUS_NAME;
/// A finished job is kept at least this long…
const JOB_RETENTION: Duration = Duration::from_secs(600);
/// …unless this many newer jobs exist.
const JOB_KEEP_NEWER: usize = 16;
/// The capabilities the daemon needs: adopting the binary directory (chown) and setting file
/// capabilities. Nothing else (see the unit's CapabilityBoundingSet=).
pub const NEEDED_CAPS: &[caps::Capability] =
    &[caps::Capability::CAP_CHOWN, caps::Capability::CAP_SETFCAP];

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[derive(Default)]
struct Jobs {
    running: Option<Arc<JobHandle>>,
    /// Every held job, oldest first, with its finish time once finished.
    held: VecDeque<(Arc<JobHandle>, Option<Instant>)>,
}

/// A `Check`'s answer, with what it was asked and when it was answered.
pub(in crate::daemon) struct CheckAnswer {
    /// `PackageName` and `Channel` as the caller gave them.
    pub asked: (
        Option<crate::package::Package>,
        Option<crate::package::Channel>,
    ),
    pub at: Instant,
    pub result: Result<Vec<crate::policy::Assessed>>,
}

/// The daemon's shared core: the Manager, the jobs and the background tasks use it.
pub struct Daemon {
    cfg: Config,
    conn: OnceLock<zbus::Connection>,
    units: units::Units,
    runner: Runner,
    store: Mutex<StateStore>,
    jobs: StdMutex<Jobs>,
    stager: Stager,
    last_activity: StdMutex<Instant>,
    /// Held across steps that must not be interrupted (renames, state commits); SIGTERM waits.
    atomic: Mutex<()>,
    installed: tokio::sync::watch::Sender<Option<cells::Installed>>,
    emitted: Mutex<Vec<(&'static str, Value<'static>)>>,
    in_flight: auth::InFlight,
    /// Refused calls per uid, for the rate-limited refusal log.
    refusals: auth::Refusals,
    /// The system bus for polkit, when the daemon serves another bus (tests).
    polkit_bus: tokio::sync::OnceCell<Option<zbus::Connection>>,
    /// `[policy] windows`.
    schedule: crate::schedule::Schedule,
    /// The update-server settings in force, as last learnt (Cells' pydio.json may change).
    effective: StdMutex<Option<crate::settings::Effective>>,
    /// Held while the channel in force is first learnt, so concurrent first reads of the
    /// `Channel` property start one helper, not one each.
    settling: Mutex<()>,
    /// The last `Check`'s answer: calls that arrive while one is asking the server share its
    /// answer instead of each starting helpers (see `ManagerIface::check`).
    last_check: Mutex<Option<CheckAnswer>>,
    /// The metrics last written.
    metrics_written: Mutex<Option<String>>,
    /// The Cells user's uid as authorization last learnt it, and when.
    cells_uid_seen: StdMutex<Option<(Option<u32>, Instant)>>,
}

impl Daemon {
    fn conn(&self) -> Result<&zbus::Connection> {
        self.conn
            .get()
            .ok_or_else(|| Error::Busy("the daemon is still starting".into()))
    }

    /// Authorized work happened: the idle timer starts again.
    fn touch(&self) {
        if let Ok(mut t) = self.last_activity.lock() {
            *t = Instant::now();
        }
    }

    /// The bus polkit listens on: the system bus.
    async fn polkit_bus(&self) -> Option<zbus::Connection> {
        if let units::Units::Systemd(c) = &self.units {
            return Some(c.clone());
        }
        self.polkit_bus
            .get_or_init(|| async {
                match tokio::time::timeout(Duration::from_secs(5), zbus::Connection::system()).await
                {
                    Ok(Ok(c)) => Some(c),
                    _ => None,
                }
            })
            .await
            .clone()
    }

    /// The Cells user's uid for authorization, asked of systemd at most every 2 s: a burst of
    /// calls does not become a burst of calls to systemd.
    async fn cells_uid_recent(&self) -> Option<u32> {
        let seen = self.cells_uid_seen.lock().ok().and_then(|s| *s);
        if let Some((uid, at)) = seen {
            if at.elapsed() < Duration::from_secs(2) {
                return uid;
            }
        }
        let uid = self.cells_uid().await;
        if let Ok(mut s) = self.cells_uid_seen.lock() {
            *s = Some((uid, Instant::now()));
        }
        uid
    }

    /// Authorizes the sender of the message with header `hdr` for `action`. Callers that need
    /// polkit have a bounded number of calls in flight; only authorized calls keep the daemon
    /// from idling out.
    /// The uid of the message's sender, from the bus.
    pub async fn caller(&self, hdr: &zbus::message::Header<'_>) -> Result<u32> {
        let sender = hdr
            .sender()
            .map(|s| s.to_string())
            .ok_or_else(|| Error::NotAuthorized("the call has no sender".into()))?;
        auth::caller_uid(self.conn()?, &sender).await
    }

    /// Returns the caller's uid.
    pub async fn authorize(&self, hdr: &zbus::message::Header<'_>, action: Action) -> Result<u32> {
        let sender = hdr
            .sender()
            .map(|s| s.to_string())
            .ok_or_else(|| Error::NotAuthorized("the call has no sender".into()))?;
        let conn = self.conn()?;
        let uid = auth::caller_uid(conn, &sender).await?;
        let cells_uid = self.cells_uid_recent().await;
        let _counted = if auth::trusted(uid, action, cells_uid) {
            None
        } else {
            match self.in_flight.enter(uid) {
                Ok(g) => Some(g),
                Err(e) => {
                    self.log_refusal(uid, action, &e);
                    return Err(e);
                }
            }
        };
        let caller = Caller {
            sender,
            uid,
            interactive: hdr
                .primary()
                .flags()
                .contains(zbus::message::Flags::AllowInteractiveAuth),
        };
        let polkit = if _counted.is_some() {
            self.polkit_bus().await
        } else {
            None
        };
        let result = auth::authorize(&caller, action, cells_uid, polkit.as_ref()).await;
        match result {
            Ok(()) => {
                self.touch();
                Ok(uid)
            }
            Err(e) => {
                self.log_refusal(uid, action, &e);
                Err(e)
            }
        }
    }

    /// Logs a refused call, at most a few per uid per minute; the rest are summed up.
    fn log_refusal(&self, uid: u32, action: Action, e: &Error) {
        let (full, ended) = self.refusals.note(uid, Instant::now());
        if let Some(w) = ended {
            log::log(
                log::Level::Warning,
                &auth::refusal_summary(uid, w.suppressed),
                &[("CALLER_UID", &uid.to_string())],
            );
        }
        if full {
            log::log(
                log::Level::Warning,
                &e.message(),
                &[("ACTION", action.id()), ("CALLER_UID", &uid.to_string())],
            );
        }
    }

    /// Logs the summaries of refusals not logged one by one, for the minutes that ended (all
    /// of them with `everything`, when the daemon stops).
    fn flush_refusals(&self, everything: bool) {
        for (uid, n) in self.refusals.due(Instant::now(), everything) {
            log::log(
                log::Level::Warning,
                &auth::refusal_summary(uid, n),
                &[("CALLER_UID", &uid.to_string())],
            );
        }
    }

    /// Emits `PropertiesChanged` for the Manager properties that changed, and mirrors the
    /// state to systemd (`STATUS=`, one inert line: I10).
    async fn publish(&self) {
        let Ok(conn) = self.conn() else { return };
        let props = self.manager_props().await;
        let mut emitted = self.emitted.lock().await;
        if let Ok(emitter) = zbus::object_server::SignalEmitter::new(conn, MANAGER_PATH) {
            emit_changes(&emitter, MANAGER_INTERFACE, &emitted, &props).await;
        }
        *emitted = props;
        drop(emitted);
        let status = crate::text::one_line(&self.status_line().await, 200);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
        self.write_metrics().await;
    }

    /// Rewrites the metrics textfile when what it says changed.
    async fn write_metrics(&self) {
        let Some(path) = self.cfg.metrics_file.as_ref().map(|p| self.cfg.path(p)) else {
            return;
        };
        let doc = self.store.lock().await.get().clone();
        let snapshot = crate::metrics::Snapshot {
            installed_version: self.installed().map(|i| i.version).unwrap_or_default(),
            package: doc.package_name.unwrap_or(self.cfg.package).to_string(),
            channel: self.channel().to_string(),
            state: doc.state.as_str().to_string(),
            last_check_us: doc.last_check,
            last_update_us: doc.counters.last_update,
            updates_succeeded: doc.counters.updates_succeeded,
            updates_failed: doc.counters.updates_failed,
            rollbacks: doc.counters.rollbacks,
            available: doc
                .available_versions
                .last()
                .map(ToString::to_string)
                .unwrap_or_default(),
            held: doc.hold.is_some(),
        };
        let text = crate::metrics::render(&snapshot);
        let mut last = self.metrics_written.lock().await;
        if last.as_deref() == Some(text.as_str()) {
            return;
        }
        let written = tokio::task::spawn_blocking({
            let text = text.clone();
            move || crate::metrics::write(&path, &text)
        })
        .await;
        // Written or not, the same text is not tried (nor warned about) again.
        *last = Some(text);
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::log(
                log::Level::Warning,
                &format!("metrics not written: {}", e.message()),
                &[],
            ),
            Err(e) => log::log(
                log::Level::Warning,
                &format!("metrics not written: {e}"),
                &[],
            ),
        }
    }

    async fn status_line(&self) -> String {
        let doc = self.store.lock().await.get().clone();
        let installed = self.installed().map(|i| i.version).unwrap_or_default();
        let installed = if installed.is_empty() {
            "unknown".into()
        } else {
            installed
        };
        let running = self.running_job().map(|j| j.data());
        use crate::state::Lifecycle;
        match doc.state {
            Lifecycle::Idle => format!("Idle; Cells {installed} installed"),
            Lifecycle::Staged => {
                let staged = doc
                    .staged_version
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                format!("Staged {staged}; Cells {installed} installed")
            }
            Lifecycle::Failed => format!("Failed: {}", doc.last_error),
            Lifecycle::Downloading => match running {
                Some(j) => format!("Downloading {}: {}%", j.version, j.percent),
                None => "Downloading".into(),
            },
            other => {
                let mut s = other.as_str().to_string();
                if let Some(first) = s.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                match running {
                    Some(j) => format!("{s} {}", j.version),
                    None => s,
                }
            }
        }
    }

    /// A descriptor for the state directory (for blocking tasks).
    async fn state_dir(&self) -> Result<crate::dirfd::Dir> {
        self.store
            .lock()
            .await
            .dir()
            .try_clone()
            .map_err(|e| Error::from_io(&e, "cannot use the state directory", Error::Internal))
    }

    fn running_job(&self) -> Option<Arc<JobHandle>> {
        self.jobs.lock().ok()?.running.clone()
    }

    fn current_job(&self) -> OwnedObjectPath {
        match self.running_job() {
            Some(j) => j.path(),
            // Invariant: "/" is a valid object path.
            None => OwnedObjectPath::try_from("/").expect("root path"),
        }
    }

    fn held_jobs(&self) -> Vec<OwnedObjectPath> {
        self.jobs
            .lock()
            .map(|j| j.held.iter().map(|(h, _)| h.path()).collect())
            .unwrap_or_default()
    }

    /// Drops finished jobs older than the retention time or with 16 newer jobs.
    async fn prune_jobs(&self) {
        let expired: Vec<OwnedObjectPath> = {
            let Ok(mut jobs) = self.jobs.lock() else {
                return;
            };
            let total = jobs.held.len();
            let mut out = Vec::new();
            let mut keep = VecDeque::new();
            for (i, (h, finished)) in jobs.held.drain(..).enumerate() {
                let newer = total - i - 1;
                let old = finished.is_some_and(|t| t.elapsed() >= JOB_RETENTION);
                if finished.is_some() && (old || newer >= JOB_KEEP_NEWER) {
                    out.push(h.path());
                } else {
                    keep.push_back((h, finished));
                }
            }
            jobs.held = keep;
            out
        };
        if let Ok(conn) = self.conn() {
            for path in expired {
                let _ = conn.object_server().remove::<job::JobObject, _>(path).await;
            }
        }
    }
}

/// Emits one `PropertiesChanged` with the entries of `after` that differ from `before`.
pub async fn emit_changes(
    emitter: &zbus::object_server::SignalEmitter<'_>,
    interface: &str,
    before: &[(&'static str, Value<'static>)],
    after: &[(&'static str, Value<'static>)],
) {
    let changed: HashMap<&str, Value<'_>> = after
        .iter()
        .filter(|(k, v)| !before.iter().any(|(bk, bv)| bk == k && bv == v))
        .map(|(k, v)| (*k, v.try_clone().unwrap_or_else(|_| Value::from(""))))
        .collect();
    if changed.is_empty() {
        return;
    }
    let Ok(name) = zbus::names::InterfaceName::try_from(interface) else {
        return;
    };
    let _ =
        zbus::fdo::Properties::properties_changed(emitter, name, changed, (&[][..]).into()).await;
}

/// Where the daemon connects.
#[derive(Debug, Clone)]
pub enum Bus {
    /// The system bus.
    System,
    /// Another bus, by address (tests).
    Address(String),
}

/// Checks that this process may do what apply needs, and clears its ambient and inheritable
/// sets so no child inherits a capability. Started by hand as a user, or in a container
/// without `CAP_SETFCAP`, it stops here with a message naming what is missing, rather than
/// failing with EPERM in the middle of an apply.
pub fn check_capabilities() -> anyhow::Result<()> {
    use caps::{CapSet, Capability};
    let permitted = caps::read(None, CapSet::Permitted)
        .map_err(|e| anyhow::anyhow!("cannot read this process's capabilities: {e}"))?;
    let missing: Vec<String> = NEEDED_CAPS
        .iter()
        .filter(|c| !permitted.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "cells-updater daemon lacks {} (it must run as root, as its systemd unit does); \
             it needs {} to adopt the Cells binary directory and to set file capabilities",
            missing.join(", "),
            NEEDED_CAPS
                .iter()
                .map(Capability::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
    let _ = caps::clear(None, CapSet::Ambient);
    let _ = caps::clear(None, CapSet::Inheritable);
    Ok(())
}

/// At start-up, the staging area and the state agree: a release staged by a job that a crash
/// interrupted before it was recorded (or after it was installed) goes; a recorded one whose
/// files are gone is forgotten.
fn reconcile_staging(store: &mut StateStore, area: &StagingArea) {
    let recorded = store.get().staged_version.clone();
    let found = area
        .staged()
        .iter()
        .any(|m| Some(&m.version) == recorded.as_ref());
    let kept = match (&recorded, found) {
        (Some(v), true) => v.to_string(),
        _ => String::new(),
    };
    let keep = kept.as_str();
    for name in area.remove_all_but(keep) {
        log::info(
            &format!(
                "removed {} from the staging area: it was not recorded as staged",
                crate::text::one_line(&name, 80)
            ),
            &[],
        );
    }
    if let (Some(recorded), false) = (&recorded, found) {
        log::log(
            log::Level::Warning,
            &format!("the staged files of {recorded} are gone; it is no longer staged"),
            &[],
        );
        let rest_staged = store.get().state == crate::state::Lifecycle::Staged;
        let _ = store.update(|d| {
            d.staged_version = None;
            if rest_staged {
                d.state = crate::state::Lifecycle::Idle;
            }
        });
    }
}

/// True when systemd is the service manager here (`sd_booted`).
fn systemd_booted() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// Runs the daemon until SIGTERM or the idle timeout.
pub async fn run(cfg: Config, bus: Bus) -> anyhow::Result<()> {
    use anyhow::Context;
    let started = Instant::now();
    check_capabilities()?;
    let state_dir = crate::dirfd::root_dir(&cfg.state_dir(), Some(0o700), Error::Internal)
        .map_err(|e| anyhow::anyhow!(e.message()))?;
    crate::failpoint::set_mark_dir(&cfg.state_dir());
    let store =
        StateStore::open(state_dir.try_clone()?).map_err(|e| anyhow::anyhow!(e.message()))?;
    let area = StagingArea::open(&state_dir).map_err(|e| anyhow::anyhow!(e.message()))?;
    let mut store = store;
    reconcile_staging(&mut store, &area);
    let keys = TrustedKeys::load_dirs(&cfg.trusted_key_dirs())
        .map_err(|e| anyhow::anyhow!(e.message()))?;
    if keys.is_empty() {
        log::log(
            log::Level::Warning,
            &format!(
                "no trusted key in {}; staging will be refused until one is installed",
                cfg.trusted_key_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            &[],
        );
    }
    let schedule = cfg.schedule()?;
    let builder = match &bus {
        Bus::System => zbus::connection::Builder::system()?,
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str())?,
    };
    // The connection is made without the name: the Manager and any recovery job are served
    // first, so the first call (often the one that activated us) finds them.
    let conn = builder.build().await.context("cannot connect to the bus")?;
    let (runner, units) = match &bus {
        Bus::System if systemd_booted() => (
            Runner::Systemd(conn.clone()),
            units::Units::Systemd(conn.clone()),
        ),
        _ => {
            let runner = Runner::Fork {
                exe: std::path::PathBuf::from("/proc/self/exe"),
                user: cfg.probe_user.clone(),
            };
            (runner, fake_or_absent(&cfg))
        }
    };
    let daemon = Arc::new(Daemon {
        stager: Stager {
            area,
            keys,
            runner: runner.clone(),
            max_binary_size: cfg.max_binary_size,
            min_rate: cfg.min_download_rate,
            min_deadline: crate::net::MIN_DOWNLOAD_DEADLINE,
            window_rate: cfg.min_window_rate,
            rate_window: cfg.rate_window,
        },
        runner,
        units,
        cfg,
        conn: OnceLock::new(),
        store: Mutex::new(store),
        jobs: StdMutex::new(Jobs::default()),
        last_activity: StdMutex::new(Instant::now()),
        atomic: Mutex::new(()),
        installed: tokio::sync::watch::channel(None).0,
        emitted: Mutex::new(Vec::new()),
        in_flight: auth::InFlight::default(),
        refusals: auth::Refusals::default(),
        polkit_bus: tokio::sync::OnceCell::new(),
        schedule,
        effective: StdMutex::new(None),
        settling: Mutex::new(()),
        last_check: Mutex::new(None),
        metrics_written: Mutex::new(None),
        cells_uid_seen: StdMutex::new(None),
    });
    let _ = daemon.conn.set(conn.clone());
    conn.object_server()
        .at(
            MANAGER_PATH,
            ManagerIface {
                daemon: daemon.clone(),
            },
        )
        .await?;
    // An interrupted apply takes the job slot before the name is ours: calls meanwhile get
    // Busy, and CurrentJob shows the recovery.
    let recovery = daemon.reserve_recovery().await;
    conn.request_name(BUS_NAME)
        .await
        .context("cannot own com.pydio.CellsUpdater1 on the bus (is another instance running?)")?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    log::info(
        &format!("ready on the bus in {ready_ms:.1} ms"),
        &[("READY_MS", &format!("{ready_ms:.1}"))],
    );
    // What the binary reports is learnt after READY: it runs a probe.
    if daemon.cfg.fleet.is_some() {
        jobs::fleet_gate::resend_kept(daemon.clone());
    }
    let d = daemon.clone();
    tokio::spawn(async move {
        match recovery {
            Some(job) => d.clone().run_recovery(job).await,
            None => {
                d.refresh_installed().await;
                d.effective_server().await;
                d.publish().await;
            }
        }
    });
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let idle_exit = daemon.cfg.idle_exit;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                daemon.prune_jobs().await;
                daemon.flush_refusals(false);
                if idle_exit.is_zero() { continue; }
                let no_jobs = daemon.jobs.lock().map(|j| j.held.is_empty()).unwrap_or(false);
                let idle_for = daemon.last_activity.lock().map(|t| t.elapsed()).unwrap_or_default();
                if no_jobs && idle_for >= idle_exit {
                    daemon.flush_refusals(true);
                    log::info("idle; exiting (the next call activates the service again)", &[]);
                    // Release the name first, so that new calls activate a fresh instance.
                    let _ = conn.release_name(BUS_NAME).await;
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
                    return Ok(());
                }
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    daemon.flush_refusals(true);
    log::info("stopping: cancelling work that can be resumed", &[]);
    if let Some(job) = daemon.running_job() {
        let _ = job.cancel.cancel();
    }
    // Never stop in the middle of an atomic step: wait for it to end.
    let _guard = daemon.atomic.lock().await;
    let _ = conn.release_name(BUS_NAME).await;
    Ok(())
}

#[cfg(feature = "fake-unit")]
fn fake_or_absent(cfg: &Config) -> units::Units {
    match fake_unit::Supervisor::from_env(cfg) {
        Some(s) => units::Units::Fake(s),
        None => units::Units::Absent,
    }
}

#[cfg(not(feature = "fake-unit"))]
fn fake_or_absent(_cfg: &Config) -> units::Units {
    units::Units::Absent
}
