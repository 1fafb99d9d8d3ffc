//! The health wait after a restart: the unit stays up with the same main process and restart
//! count for the settle time, and the optional health URL answers 2xx (asked through the
//! network helper).

use crate::error::{Error, Result};
use crate::systemd::{unit_facts, UnitFacts};
use std::time::Duration;

/// What "healthy" means after a restart.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// How long `MainPID` and `NRestarts` must stay unchanged.
    pub settle: Duration,
    /// Longest wait for all of it.
    pub timeout: Duration,
    /// Optional HTTP URL that must answer 2xx.
    pub url: Option<String>,
}

/// Asks the health URL through the network helper; `Ok` on a 2xx answer.
async fn http_healthy(
    runner: &crate::helper::Runner,
    url: &str,
) -> std::result::Result<(), String> {
    let req = crate::helper::request::HttpGet {
        url: url.to_string(),
        timeout_secs: 5,
    };
    match runner.call(req).await {
        Ok(r) if (200..300).contains(&r.status) => Ok(()),
        Ok(r) => Err(format!("{url} answered HTTP {}", r.status)),
        Err(e) => Err(e.message()),
    }
}

/// Waits until `unit` is active with `MainPID` and `NRestarts` unchanged for the settle time
/// (and, when configured, the HTTP probe answers). A restart counted after `baseline`
/// restarts, or a failed unit, ends the wait at once.
pub async fn wait_healthy(
    conn: &zbus::Connection,
    unit: &str,
    check: &HealthCheck,
    baseline_restarts: u32,
    runner: &crate::helper::Runner,
) -> Result<UnitFacts> {
    let started = tokio::time::Instant::now();
    let mut stable: Option<(tokio::time::Instant, u32, u32)> = None;
    let mut last: String;
    loop {
        let facts = unit_facts(conn, unit).await?;
        last = format!(
            "{}/{}, {} restarts",
            facts.active_state, facts.sub_state, facts.n_restarts
        );
        if facts.n_restarts > baseline_restarts || facts.active_state == "failed" {
            return Err(Error::UnitFailed(format!(
                "{unit} did not stay up after the restart ({last}); see journalctl -u {unit}"
            )));
        }
        if facts.active_state == "active" && facts.main_pid != 0 {
            match stable {
                Some((since, pid, n)) if pid == facts.main_pid && n == facts.n_restarts => {
                    if since.elapsed() >= check.settle {
                        match &check.url {
                            None => return Ok(facts),
                            Some(url) => match http_healthy(runner, url).await {
                                Ok(()) => return Ok(facts),
                                Err(e) => last = format!("{last}; {e}"),
                            },
                        }
                    }
                }
                _ => {
                    stable = Some((
                        tokio::time::Instant::now(),
                        facts.main_pid,
                        facts.n_restarts,
                    ))
                }
            }
        } else {
            stable = None;
        }
        if started.elapsed() >= check.timeout {
            return Err(Error::UnitFailed(format!(
                "{unit} was not healthy within {} s ({last}); see journalctl -u {unit}",
                check.timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
