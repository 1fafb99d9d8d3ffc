//! The systemd manager over D-Bus: facts about the managed unit, read from systemd's own API
//! rather than by parsing unit files.

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
trait Manager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
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

async fn timed<T>(what: &str, f: impl std::future::Future<Output = zbus::Result<T>>) -> Result<T> {
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
    let manager = timed("connecting", ManagerProxy::new(conn)).await?;
    let path = timed(&format!("LoadUnit({unit})"), manager.load_unit(unit)).await?;
    let bad_path = |e: zbus::Error| Error::UnitFailed(format!("systemd: unit path: {e}"));
    let u = timed(
        "unit",
        UnitProxy::builder(conn)
            .path(path.clone())
            .map_err(bad_path)?
            .build(),
    )
    .await?;
    let s = timed(
        "service",
        ServiceProxy::builder(conn)
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
    })
}
