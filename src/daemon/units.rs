//! The managed unit's backend: systemd over D-Bus in production; absent on a private bus
//! without systemd (unit facts unknown, nothing can be restarted); and, with the `fake-unit`
//! feature, an in-process supervisor that runs the Cells binary as a child so the lifecycle
//! can be driven on a private bus by the model-based test (the only place it is used).

use crate::error::{Error, Result};
use crate::health::{self, HealthCheck};
use crate::helper::Runner;
use crate::systemd::{self, UnitFacts};
use std::time::Duration;

/// Longest wait for systemd's restart job.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the managed unit lives.
#[derive(Clone)]
pub enum Units {
    /// systemd, on this system-bus connection.
    Systemd(zbus::Connection),
    /// No systemd reachable.
    Absent,
    /// An in-process supervisor (tests only).
    #[cfg(feature = "fake-unit")]
    Fake(std::sync::Arc<super::fake_unit::Supervisor>),
}

fn absent() -> Error {
    Error::UnitFailed(
        "systemd is not reachable on the system bus, so the Cells unit cannot be read or \
         restarted"
            .into(),
    )
}

impl Units {
    /// The unit's facts.
    pub async fn facts(&self, unit: &str) -> Result<UnitFacts> {
        match self {
            Units::Systemd(c) => systemd::unit_facts(c, unit).await,
            Units::Absent => Err(absent()),
            #[cfg(feature = "fake-unit")]
            Units::Fake(s) => Ok(s.facts()),
        }
    }

    /// Restarts (or starts) the unit and waits for the restart job.
    pub async fn restart(&self, unit: &str, start_only: bool) -> Result<()> {
        match self {
            Units::Systemd(c) => systemd::restart(c, unit, start_only, RESTART_TIMEOUT).await,
            Units::Absent => Err(absent()),
            #[cfg(feature = "fake-unit")]
            Units::Fake(s) => s.restart().await,
        }
    }

    /// Waits until the unit is healthy (see [`health::wait_healthy`]).
    pub async fn wait_healthy(
        &self,
        unit: &str,
        check: &HealthCheck,
        baseline_restarts: u32,
        runner: &Runner,
    ) -> Result<()> {
        match self {
            Units::Systemd(c) => health::wait_healthy(c, unit, check, baseline_restarts, runner)
                .await
                .map(|_| ()),
            Units::Absent => Err(absent()),
            #[cfg(feature = "fake-unit")]
            Units::Fake(s) => s.wait_healthy(check, baseline_restarts).await,
        }
    }

    /// Has the manager reload unit files (after a drop-in changed).
    pub async fn reload(&self) -> Result<()> {
        match self {
            Units::Systemd(c) => systemd::reload(c).await,
            Units::Absent => Ok(()),
            #[cfg(feature = "fake-unit")]
            Units::Fake(s) => {
                s.reload();
                Ok(())
            }
        }
    }
}
