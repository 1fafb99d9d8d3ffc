//! The systemd manager over D-Bus: facts about the managed unit and the check timer, read
//! from systemd's own API rather than by parsing unit files; reload, restart, and the wait
//! for a job systemd was given. The drop-in's text is `dropin`'s, a helper's transient unit
//! `helper::unit`'s.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;
use zbus::zvariant::OwnedObjectPath;

/// Longest wait for one call to systemd.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// `ExecStart` entry as systemd reports it: (path, argv, ignore_failure, start/exit times, pid,
/// code, status).
pub type ExecCommand = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub(crate) trait SystemdManager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, zbus::zvariant::Value<'_>)],
        aux: &[(&str, Vec<(&str, zbus::zvariant::Value<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn drop_in_paths(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn asserts(&self) -> zbus::Result<Vec<(String, bool, bool, String, i32)>>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Timer",
    default_service = "org.freedesktop.systemd1"
)]
trait Timer {
    #[zbus(property, name = "NextElapseUSecRealtime")]
    fn next_elapse_usec_realtime(&self) -> zbus::Result<u64>;
}

/// What `cells-updater doctor` reports about a timer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimerFacts {
    /// `LoadState`.
    pub load_state: String,
    /// `UnitFileState` (`enabled`, `disabled`, …).
    pub unit_file_state: String,
    /// `ActiveState`.
    pub active_state: String,
    /// The next elapse, µs since the epoch (0 = none scheduled).
    pub next_elapse_us: u64,
}

/// Reads a timer's facts from systemd on `conn`.
pub async fn timer_facts(conn: &zbus::Connection, timer: &str) -> Result<TimerFacts> {
    let manager = timed("connecting", SystemdManagerProxy::new(conn)).await?;
    let path = timed(&format!("LoadUnit({timer})"), manager.load_unit(timer)).await?;
    let bad_path = |e: zbus::Error| Error::UnitFailed(format!("systemd: unit path: {e}"));
    let u = timed(
        "unit",
        UnitProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path.clone())
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    let load_state = timed("LoadState", u.load_state()).await?;
    if load_state != "loaded" {
        return Ok(TimerFacts {
            load_state,
            ..TimerFacts::default()
        });
    }
    let t = timed(
        "timer",
        TimerProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path)
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    Ok(TimerFacts {
        load_state,
        unit_file_state: timed("UnitFileState", u.unit_file_state()).await?,
        active_state: timed("ActiveState", u.active_state()).await?,
        next_elapse_us: timed("NextElapseUSecRealtime", t.next_elapse_usec_realtime()).await?,
    })
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait Service {
    #[zbus(property)]
    fn exec_start(&self) -> zbus::Result<Vec<ExecCommand>>;
    #[zbus(property)]
    fn user(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn group(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn environment(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn ambient_capabilities(&self) -> zbus::Result<u64>;
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> zbus::Result<u32>;
}

/// What the daemon needs to know about the managed unit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitFacts {
    /// The unit's name.
    pub name: String,
    /// `ExecStart` path.
    pub exec_path: Option<PathBuf>,
    /// `ExecStart` arguments (argv without argv\[0\]).
    pub exec_args: Vec<String>,
    /// `User=`; empty = root.
    pub user: String,
    /// `Group=`.
    pub group: String,
    /// `Environment=` entries.
    pub environment: Vec<String>,
    /// `AmbientCapabilities=` bit mask.
    pub ambient_capabilities: u64,
    /// Drop-in files in force.
    pub drop_in_paths: Vec<String>,
    /// `ActiveState`.
    pub active_state: String,
    /// `SubState`.
    pub sub_state: String,
    /// `MainPID`.
    pub main_pid: u32,
    /// `NRestarts`.
    pub n_restarts: u32,
    /// `AssertFileIsExecutable=` paths.
    pub assert_executable: Vec<String>,
}

impl UnitFacts {
    /// `CELLS_WORKING_DIR` from the unit's environment.
    pub fn working_dir(&self) -> Option<PathBuf> {
        self.environment
            .iter()
            .find_map(|e| e.strip_prefix("CELLS_WORKING_DIR="))
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

pub(crate) async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::UnitFailed(format!("systemd: {what}: {e}"))),
        Err(_) => Err(Error::UnitFailed(format!(
            "systemd did not answer {what} within {} s",
            CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Reads the unit's facts from systemd on `conn` (the system bus).
pub async fn unit_facts(conn: &zbus::Connection, unit: &str) -> Result<UnitFacts> {
    let manager = timed("connecting", SystemdManagerProxy::new(conn)).await?;
    let path = timed(&format!("LoadUnit({unit})"), manager.load_unit(unit)).await?;
    let bad_path = |e: zbus::Error| Error::UnitFailed(format!("systemd: unit path: {e}"));
    let u = timed(
        "unit",
        UnitProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path.clone())
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    let s = timed(
        "service",
        ServiceProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .path(path)
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    let load = timed("LoadState", u.load_state()).await?;
    if load != "loaded" {
        return Err(Error::UnitFailed(format!(
            "the unit {unit} is {load} in systemd; set [cells] unit to the Cells service"
        )));
    }
    let exec = timed("ExecStart", s.exec_start()).await?;
    let first = exec.into_iter().next();
    Ok(UnitFacts {
        name: unit.to_string(),
        exec_path: first.as_ref().map(|e| PathBuf::from(&e.0)),
        exec_args: first
            .map(|e| e.1.into_iter().skip(1).collect())
            .unwrap_or_default(),
        user: timed("User", s.user()).await?,
        group: timed("Group", s.group()).await?,
        environment: timed("Environment", s.environment()).await?,
        ambient_capabilities: timed("AmbientCapabilities", s.ambient_capabilities()).await?,
        drop_in_paths: timed("DropInPaths", u.drop_in_paths()).await?,
        active_state: timed("ActiveState", u.active_state()).await?,
        sub_state: timed("SubState", u.sub_state()).await?,
        main_pid: timed("MainPID", s.main_pid()).await?,
        n_restarts: timed("NRestarts", s.n_restarts()).await?,
        assert_executable: timed("Asserts", u.asserts())
            .await?
            .into_iter()
            .filter(|a| a.0 == "AssertFileIsExecutable")
            .map(|a| a.3)
            .collect(),
    })
}

/// Asks systemd to reload its unit files.
pub async fn reload(conn: &zbus::Connection) -> Result<()> {
    let m = timed("connecting", SystemdManagerProxy::new(conn)).await?;
    timed("Reload", m.reload()).await
}

/// Restarts (or, with `start_only`, starts) `unit` through the manager API and waits for
/// that job's `JobRemoved`; an error unless the job's result is `done`.
pub async fn restart(
    conn: &zbus::Connection,
    unit: &str,
    start_only: bool,
    timeout: Duration,
) -> Result<()> {
    let m = timed("connecting", SystemdManagerProxy::new(conn)).await?;
    // Subscribing makes systemd send job signals; a second subscription is harmless.
    let _ = timed("Subscribe", m.subscribe()).await;
    let mut removed = timed("JobRemoved", m.receive_job_removed()).await?;
    // A deliberate restart, as an admin would do it: clear the failed state and the start
    // rate counter first. A release that crash-looped has used up the start budget (5 in
    // 10 s by default), and the rollback's restart must not be refused for it.
    let _ = timed(
        &format!("ResetFailedUnit({unit})"),
        m.reset_failed_unit(unit),
    )
    .await;
    let job = if start_only {
        timed(&format!("StartUnit({unit})"), m.start_unit(unit, "replace")).await?
    } else {
        timed(
            &format!("RestartUnit({unit})"),
            m.restart_unit(unit, "replace"),
        )
        .await?
    };
    match job_end(&mut removed, &job, timeout).await {
        JobEnd::Result(r) if r == "done" => Ok(()),
        JobEnd::Result(r) => Err(Error::UnitFailed(format!(
            "systemd's job restarting {unit} ended with '{r}'"
        ))),
        JobEnd::Lost => Err(Error::UnitFailed("lost the connection to systemd".into())),
        JobEnd::TimedOut => Err(Error::UnitFailed(format!(
            "systemd did not finish restarting {unit} within {} s",
            timeout.as_secs()
        ))),
    }
}

/// How a job given to systemd ended.
pub(crate) enum JobEnd {
    /// Its `JobRemoved` result (`done`, `failed`, `timeout`, …).
    Result(String),
    /// The connection to systemd closed first.
    Lost,
    /// No `JobRemoved` within the wait.
    TimedOut,
}

/// Waits at most `timeout` for `job`'s `JobRemoved` on `removed`, which was subscribed
/// before the job was queued so that a quick job's signal is not missed.
pub(crate) async fn job_end(
    removed: &mut JobRemovedStream,
    job: &OwnedObjectPath,
    timeout: Duration,
) -> JobEnd {
    use futures_util::StreamExt;
    let wait = async {
        while let Some(sig) = removed.next().await {
            if let Ok(args) = sig.args() {
                if args.job == *job {
                    return JobEnd::Result(args.result.clone());
                }
            }
        }
        JobEnd::Lost
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or(JobEnd::TimedOut)
}
