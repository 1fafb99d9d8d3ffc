//! The daemon: owns `com.pydio.CellsUpdater1`, serves the Manager and Job objects, authorizes
//! callers, runs one mutating job at a time, tells systemd what it is doing, and exits when
//! idle (D-Bus activation starts it again).

mod apply;
pub mod auth;
pub mod errors;
pub mod job;
mod manager;

pub use manager::{ManagerIface, MANAGER_INTERFACE, MANAGER_PATH};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::log;
use crate::probe::{self, ProbeSettings};
use crate::stage::{Cancel, Stager, StagingArea};
use crate::state::StateStore;
use crate::systemd::{self, UnitFacts};
use crate::trust::TrustedKeys;
use crate::update_server::{self, HttpSettings};
use crate::version::{CellsVersion, VersionFloor};
use auth::{Action, Caller};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use zbus::zvariant::{OwnedObjectPath, Value};

/// The well-known bus name.
pub const BUS_NAME: &str = "com.pydio.CellsUpdater1";
/// A finished job is kept at least this long…
const JOB_RETENTION: Duration = Duration::from_secs(600);
/// …unless this many newer jobs exist.
const JOB_KEEP_NEWER: usize = 16;

/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What the installed binary is.
#[derive(Debug, Clone, Default)]
pub struct Installed {
    /// The binary the unit executes (as systemd or the configuration names it).
    pub binary: Option<PathBuf>,
    /// The version it reports, `""` when unknown.
    pub version: String,
}

#[derive(Default)]
struct Jobs {
    running: Option<(u32, Cancel)>,
    /// Every held job, oldest first, with its finish time once finished.
    held: VecDeque<(u32, Option<Instant>)>,
}

/// State shared by the Manager, the jobs and the background tasks.
pub struct Shared {
    cfg: Config,
    on_system_bus: bool,
    conn: OnceLock<zbus::Connection>,
    system_bus: tokio::sync::OnceCell<Option<zbus::Connection>>,
    store: Mutex<StateStore>,
    jobs: StdMutex<Jobs>,
    stager: Stager,
    /// Built on first use: loading the system CA store does not belong before READY=1.
    http: OnceLock<reqwest::Client>,
    last_activity: StdMutex<Instant>,
    /// Held across steps that must not be interrupted (renames, state commits); SIGTERM waits.
    atomic: Mutex<()>,
    installed: StdMutex<Installed>,
    /// Becomes true once the installed binary was probed after start-up.
    installed_known: tokio::sync::watch::Sender<bool>,
    emitted: Mutex<Vec<(&'static str, Value<'static>)>>,
}

impl Shared {
    fn conn(&self) -> Result<&zbus::Connection> {
        self.conn
            .get()
            .ok_or_else(|| Error::Busy("the daemon is still starting".into()))
    }

    /// The HTTP client for the update server, built on first use.
    fn http(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let client = update_server::http_client(&HttpSettings {
            proxy: self.cfg.proxy.clone(),
            timeout: self.cfg.timeout,
        })?;
        Ok(self.http.get_or_init(|| client))
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_activity.lock() {
            *t = Instant::now();
        }
    }

    /// The system bus (for polkit and systemd), connected once; `None` when unreachable.
    async fn system_bus(&self) -> Option<zbus::Connection> {
        if self.on_system_bus {
            return self.conn.get().cloned();
        }
        self.system_bus
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

    /// The managed unit's facts, when systemd can be asked.
    pub async fn unit_facts(&self) -> Option<UnitFacts> {
        let bus = self.system_bus().await?;
        match systemd::unit_facts(&bus, &self.cfg.unit).await {
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

    /// The uid of the Cells service user: `[cells] user`, else the unit's `User=`.
    async fn cells_uid(&self) -> Option<u32> {
        let name = match &self.cfg.user {
            Some(u) => u.clone(),
            None => self
                .unit_facts()
                .await
                .map(|f| f.user)
                .filter(|u| !u.is_empty())?,
        };
        nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }

    /// Authorizes the sender of the message with header `hdr` for `action`.
    pub async fn authorize(&self, hdr: &zbus::message::Header<'_>, action: Action) -> Result<()> {
        self.touch();
        let sender = hdr
            .sender()
            .map(|s| s.to_string())
            .ok_or_else(|| Error::NotAuthorized("the call has no sender".into()))?;
        let conn = self.conn()?;
        let uid = auth::caller_uid(conn, &sender).await?;
        let caller = Caller {
            sender,
            uid,
            interactive: hdr
                .primary()
                .flags()
                .contains(zbus::message::Flags::AllowInteractiveAuth),
        };
        let cells_uid = self.cells_uid().await;
        let polkit = self.system_bus().await;
        let result = auth::authorize(&caller, action, cells_uid, polkit.as_ref()).await;
        if let Err(e) = &result {
            log::log(
                log::Level::Warning,
                &e.message(),
                &[("ACTION", action.id())],
            );
        }
        result
    }

    /// Finds the installed binary and asks it its version (isolated, like any probe).
    async fn refresh_installed(&self) -> Installed {
        let binary = match &self.cfg.binary {
            Some(b) => Some(self.cfg.path(b)),
            None => self
                .unit_facts()
                .await
                .and_then(|f| f.exec_path)
                .map(|p| self.cfg.path(&p)),
        };
        let mut version = String::new();
        if let Some(b) = &binary {
            match std::fs::File::open(b) {
                Ok(f) => match probe::report_version(&f, &self.stager.probe).await {
                    Ok(v) if CellsVersion::parse(&v).is_ok() => version = v,
                    Ok(v) => log::log(
                        log::Level::Warning,
                        &format!("{} reports {v:?}, not a version", b.display()),
                        &[],
                    ),
                    Err(e) => log::log(log::Level::Warning, &e.message(), &[]),
                },
                Err(e) => log::log(
                    log::Level::Warning,
                    &format!("cannot open the Cells binary {}: {e}", b.display()),
                    &[],
                ),
            }
        }
        let info = Installed { binary, version };
        if let Ok(mut i) = self.installed.lock() {
            *i = info.clone();
        }
        self.installed_known.send_replace(true);
        info
    }

    /// What is installed, waiting (10 s at most) for the probe that follows start-up, so the
    /// first call after activation does not see "unknown".
    async fn installed_settled(&self) -> Installed {
        let mut rx = self.installed_known.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|known| *known)).await;
        self.installed()
    }

    fn installed(&self) -> Installed {
        self.installed.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// The versions a candidate must beat.
    async fn floor(&self) -> Result<VersionFloor> {
        let installed = self.refresh_installed().await;
        let installed = if installed.version.is_empty() {
            return Err(Error::UnitFailed(format!(
                "cannot tell which Cells version is installed ({}); check [cells] binary and that \
                 the unit {} exists",
                installed
                    .binary
                    .map_or("no binary found".to_string(), |b| b.display().to_string()),
                self.cfg.unit
            )));
        } else {
            CellsVersion::parse(&installed.version).ok()
        };
        let highest = CellsVersion::parse(&self.store.lock().await.get().highest_installed).ok();
        Ok(VersionFloor { installed, highest })
    }

    /// The package in use: the persisted one (after an Enterprise upgrade), else the config.
    async fn package(&self) -> String {
        let p = self.store.lock().await.get().package_name.clone();
        if p.is_empty() {
            self.cfg.package.clone()
        } else {
            p
        }
    }

    /// Emits `PropertiesChanged` for the Manager properties that changed, and mirrors the
    /// state to systemd (`STATUS=`).
    async fn publish(&self) {
        let Ok(conn) = self.conn() else { return };
        let props = self.manager_props().await;
        let mut emitted = self.emitted.lock().await;
        if let Ok(iface) = conn
            .object_server()
            .interface::<_, ManagerIface>(MANAGER_PATH)
            .await
        {
            emit_changes(iface.signal_emitter(), MANAGER_INTERFACE, &emitted, &props).await;
        }
        *emitted = props;
        drop(emitted);
        let _ = sd_notify::notify(
            false,
            &[sd_notify::NotifyState::Status(&self.status_line().await)],
        );
    }

    async fn status_line(&self) -> String {
        let doc = self.store.lock().await.get().clone();
        let installed = self.installed().version;
        let installed = if installed.is_empty() {
            "unknown".into()
        } else {
            installed
        };
        let percent = self.running_percent().await;
        match doc.state {
            crate::state::Lifecycle::Idle => format!("Idle; Cells {installed} installed"),
            crate::state::Lifecycle::Staged => {
                format!("Staged {}; Cells {installed} installed", doc.staged_version)
            }
            crate::state::Lifecycle::Failed => format!("Failed: {}", doc.last_error),
            crate::state::Lifecycle::Downloading => match percent {
                Some((v, p)) => format!("Downloading {v}: {p}%"),
                None => "Downloading".into(),
            },
            other => {
                let mut s = other.as_str().to_string();
                if let Some(first) = s.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                match percent {
                    Some((v, _)) => format!("{s} {v}"),
                    None => s,
                }
            }
        }
    }

    async fn running_percent(&self) -> Option<(String, u32)> {
        let id = self.jobs.lock().ok()?.running.as_ref()?.0;
        let iface = self
            .conn()
            .ok()?
            .object_server()
            .interface::<_, job::Job>(job::job_path(id))
            .await
            .ok()?;
        let j = iface.get().await;
        Some((j.data.version.clone(), j.data.percent))
    }

    fn current_job(&self) -> OwnedObjectPath {
        match self
            .jobs
            .lock()
            .ok()
            .and_then(|j| j.running.as_ref().map(|r| r.0))
        {
            Some(id) => job::job_path(id),
            // Invariant: "/" is a valid object path.
            None => OwnedObjectPath::try_from("/").expect("root path"),
        }
    }

    fn held_jobs(&self) -> Vec<OwnedObjectPath> {
        self.jobs
            .lock()
            .map(|j| j.held.iter().map(|(id, _)| job::job_path(*id)).collect())
            .unwrap_or_default()
    }

    /// Drops finished jobs older than the retention time or with 16 newer jobs.
    async fn prune_jobs(&self) {
        let expired: Vec<u32> = {
            let Ok(mut jobs) = self.jobs.lock() else {
                return;
            };
            let total = jobs.held.len();
            let mut out = Vec::new();
            let mut keep = VecDeque::new();
            for (i, (id, finished)) in jobs.held.drain(..).enumerate() {
                let newer = total - i - 1;
                let old = finished.is_some_and(|t| t.elapsed() >= JOB_RETENTION);
                if finished.is_some() && (old || newer >= JOB_KEEP_NEWER) {
                    out.push(id);
                } else {
                    keep.push_back((id, finished));
                }
            }
            jobs.held = keep;
            out
        };
        if let Ok(conn) = self.conn() {
            for id in expired {
                let _ = conn
                    .object_server()
                    .remove::<job::Job, _>(job::job_path(id))
                    .await;
            }
        }
    }

    /// Reserves the single mutating-job slot and serves a new job object.
    async fn begin_job(
        self: &Arc<Self>,
        kind: &str,
        version: &str,
        action: Action,
    ) -> Result<(OwnedObjectPath, Cancel)> {
        let cancel = Cancel::new();
        let id = {
            let mut store = self.store.lock().await;
            let mut jobs = self
                .jobs
                .lock()
                .map_err(|_| Error::Busy("job table unavailable".into()))?;
            if let Some((running, _)) = &jobs.running {
                return Err(Error::Busy(format!(
                    "job {running} is running; wait for it to finish (JobFinished) or cancel it"
                )));
            }
            let id = store.get().last_job_id + 1;
            store.update(|d| d.last_job_id = id)?;
            jobs.running = Some((id, cancel.clone()));
            jobs.held.push_back((id, None));
            id
        };
        let path = job::job_path(id);
        let obj = job::Job {
            data: job::JobData::new(
                id,
                kind,
                version,
                match kind {
                    "apply" => "swapping",
                    "rollback" => "rolling-back",
                    _ => "downloading",
                },
            ),
            cancel: cancel.clone(),
            action,
            committed: false,
            shared: self.clone(),
        };
        let conn = self.conn()?;
        if let Err(e) = conn.object_server().at(&path, obj).await {
            if let Ok(mut jobs) = self.jobs.lock() {
                jobs.running = None;
                jobs.held.retain(|(i, _)| *i != id);
            }
            return Err(Error::Busy(format!("cannot serve the job object: {e}")));
        }
        self.prune_jobs().await;
        self.publish().await;
        log::info(
            &format!("job {id} started: {kind} {version}"),
            &[
                ("JOB_ID", &id.to_string()),
                ("VERSION", version),
                ("JOB_KIND", kind),
            ],
        );
        Ok((path, cancel))
    }

    /// Ends a job: records the outcome in the persisted state (LastError cleared or set;
    /// `success` on success, at rest after a cancel, `failed` otherwise), then announces it.
    async fn conclude(
        &self,
        path: &OwnedObjectPath,
        outcome: Result<String>,
        success: Option<crate::state::Lifecycle>,
    ) {
        {
            let _atomic = self.atomic.lock().await;
            let mut store = self.store.lock().await;
            let rest = store.resting();
            let recorded = match &outcome {
                Ok(_) => store
                    .update(|d| d.last_error.clear())
                    .and_then(|_| match success {
                        Some(state) => store.transition(state),
                        None => Ok(()),
                    }),
                Err(Error::Cancelled(_)) => store.transition(rest),
                Err(e) => {
                    let msg = e.message();
                    store
                        .update(|d| d.last_error = msg)
                        .and_then(|_| store.transition(crate::state::Lifecycle::Failed))
                }
            };
            if let Err(e) = recorded {
                log::log(
                    log::Level::Error,
                    &format!("cannot record the job's end: {e}"),
                    &[],
                );
            }
        }
        self.refresh_installed().await;
        self.finish_job(path, &outcome).await;
    }

    /// Records a job's end: job properties, `JobFinished`, the slot, the log.
    async fn finish_job(&self, path: &OwnedObjectPath, outcome: &Result<String>) {
        let Ok(conn) = self.conn() else { return };
        let (state, error, message) = match outcome {
            Ok(m) => ("succeeded", String::new(), m.clone()),
            Err(Error::Cancelled(m)) => (
                "cancelled",
                Error::Cancelled(String::new()).dbus_name(),
                m.clone(),
            ),
            Err(e) => ("failed", e.dbus_name(), e.message()),
        };
        let mut id = 0;
        let mut version = String::new();
        if let Ok(iface) = conn.object_server().interface::<_, job::Job>(path).await {
            job::update(&iface, |d| {
                d.state = state.into();
                d.error = error.clone();
                d.message = message.clone();
                d.finished_at = now_us();
                if state == "succeeded" {
                    d.phase = "done".into();
                    d.percent = 100;
                }
                id = d.id;
                version = d.version.clone();
            })
            .await;
        }
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.running = None;
            if let Some(h) = jobs.held.iter_mut().find(|(i, _)| *i == id) {
                h.1 = Some(Instant::now());
            }
        }
        self.touch();
        self.publish().await;
        if let Ok(iface) = conn
            .object_server()
            .interface::<_, ManagerIface>(MANAGER_PATH)
            .await
        {
            let _ = ManagerIface::job_finished(
                iface.signal_emitter(),
                path.as_ref(),
                state,
                &error,
                &message,
            )
            .await;
        }
        let level = if state == "failed" {
            log::Level::Error
        } else {
            log::Level::Info
        };
        log::log(
            level,
            &format!("job {id} {state}: {message}"),
            &[
                ("JOB_ID", &id.to_string()),
                ("VERSION", &version),
                ("ERROR", &error),
            ],
        );
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

/// Runs the daemon until SIGTERM or the idle timeout.
pub async fn run(cfg: Config, bus: Bus) -> anyhow::Result<()> {
    use anyhow::Context;
    let started = Instant::now();
    let state_dir = cfg.state_dir();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let store = StateStore::open(&state_dir).map_err(|e| anyhow::anyhow!(e.message()))?;
    let keys = TrustedKeys::load_dir(&cfg.keys_dir()).map_err(|e| anyhow::anyhow!(e.message()))?;
    if keys.is_empty() {
        log::log(
            log::Level::Warning,
            &format!(
                "no trusted key in {}; staging will be refused until one is installed",
                cfg.keys_dir().display()
            ),
            &[],
        );
    }
    let shared = Arc::new(Shared {
        stager: Stager {
            area: StagingArea::new(&state_dir),
            keys,
            probe: ProbeSettings {
                user: cfg.probe_user.clone(),
                ..ProbeSettings::default()
            },
            max_binary_size: cfg.max_binary_size,
        },
        on_system_bus: matches!(bus, Bus::System),
        cfg,
        conn: OnceLock::new(),
        system_bus: tokio::sync::OnceCell::new(),
        store: Mutex::new(store),
        jobs: StdMutex::new(Jobs::default()),
        http: OnceLock::new(),
        last_activity: StdMutex::new(Instant::now()),
        atomic: Mutex::new(()),
        installed: StdMutex::new(Installed::default()),
        installed_known: tokio::sync::watch::channel(false).0,
        emitted: Mutex::new(Vec::new()),
    });
    let builder = match &bus {
        Bus::System => zbus::connection::Builder::system()?,
        Bus::Address(a) => zbus::connection::Builder::address(a.as_str())?,
    };
    let conn = builder
        .serve_at(
            MANAGER_PATH,
            ManagerIface {
                shared: shared.clone(),
            },
        )?
        .build()
        .await
        .context("cannot connect to the bus")?;
    // The connection is stored before the name is requested: the first call (often the one
    // that activated us) can arrive the moment the name is ours.
    let _ = shared.conn.set(conn.clone());
    conn.request_name(BUS_NAME)
        .await
        .context("cannot own com.pydio.CellsUpdater1 on the bus (is another instance running?)")?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    log::info(
        &format!("ready on the bus in {ready_ms:.1} ms"),
        &[("READY_MS", &format!("{ready_ms:.1}"))],
    );
    // What the binary reports is learnt after READY: it runs a probe process.
    let s = shared.clone();
    tokio::spawn(async move {
        s.refresh_installed().await;
        s.publish().await;
        s.recover_if_needed().await;
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
    let idle_exit = shared.cfg.idle_exit;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                shared.prune_jobs().await;
                if idle_exit.is_zero() { continue; }
                let no_jobs = shared.jobs.lock().map(|j| j.held.is_empty()).unwrap_or(false);
                let idle_for = shared.last_activity.lock().map(|t| t.elapsed()).unwrap_or_default();
                if no_jobs && idle_for >= idle_exit {
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
    log::info("stopping: cancelling work that can be resumed", &[]);
    if let Ok(jobs) = shared.jobs.lock() {
        if let Some((_, cancel)) = &jobs.running {
            cancel.cancel();
        }
    }
    // Never stop in the middle of an atomic step: wait for it to end.
    let _guard = shared.atomic.lock().await;
    let _ = conn.release_name(BUS_NAME).await;
    Ok(())
}
