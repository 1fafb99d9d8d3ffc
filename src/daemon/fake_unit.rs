//! A stand-in for systemd's side of the managed unit (cargo feature `fake-unit`, tests only):
//! it runs the Cells binary as a child (`<binary> start`, as the Cells user), restarts it on
//! failure like `Restart=on-failure` with systemd's default start limit (5 in 10 s), and
//! reports `ActiveState`, `MainPID` and `NRestarts` as systemd would. It lets the model-based
//! test drive the whole lifecycle on a private bus; the real-systemd tests cover systemd
//! itself. Enabled by `CELLS_UPDATER_FAKE_UNIT=<port>` (the port the fake Cells serves on).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::health::HealthCheck;
use crate::systemd::UnitFacts;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The supervisor.
pub struct Supervisor {
    /// The binary, under the root prefix.
    binary: PathBuf,
    /// The binary as the "unit" names it.
    exec_path: PathBuf,
    user: String,
    port: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    child: Option<tokio::process::Child>,
    pid: u32,
    n_restarts: u32,
    failed: bool,
    starts: Vec<Instant>,
    generation: u64,
}

impl Supervisor {
    /// A supervisor for the configured binary, when the environment asks for one.
    pub fn from_env(cfg: &Config) -> Option<Arc<Supervisor>> {
        let port = std::env::var("CELLS_UPDATER_FAKE_UNIT").ok()?;
        let exec_path = cfg.binary.clone()?;
        // A Cells left by a daemon that was killed (a file-capable binary loses its
        // parent-death signal at exec) is stopped first, so the port is free. It is found by
        // the port in its environment: a pid file would miss a child killed between fork
        // and the write, as systemd's cgroup would not.
        kill_leftovers(&port);
        let s = Arc::new(Supervisor {
            binary: cfg.path(&exec_path),
            exec_path,
            user: cfg.user.clone().unwrap_or_else(|| "nobody".into()),
            port,
            inner: Mutex::new(Inner::default()),
        });
        // Like an enabled service: Cells runs when its manager comes up.
        let _ = s.start_child();
        let me = s.clone();
        tokio::spawn(async move { me.supervise(0).await });
        Some(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The unit's facts, as systemd would report them.
    pub fn facts(&self) -> UnitFacts {
        let i = self.lock();
        // The supervisor reaps the child; here it only looks.
        let active = i.child.is_some() && i.pid != 0;
        UnitFacts {
            name: "cells.service".into(),
            exec_path: Some(self.exec_path.clone()),
            exec_args: vec!["start".into()],
            user: self.user.clone(),
            active_state: if i.failed {
                "failed".into()
            } else if active {
                "active".into()
            } else {
                "activating".into()
            },
            sub_state: if active {
                "running".into()
            } else {
                "auto-restart".into()
            },
            main_pid: i.pid,
            n_restarts: i.n_restarts,
            ..UnitFacts::default()
        }
    }

    fn spawn(&self) -> Result<tokio::process::Child> {
        let pw = nix::unistd::User::from_name(&self.user)
            .ok()
            .flatten()
            .ok_or_else(|| Error::UnitFailed(format!("no user {}", self.user)))?;
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("start")
            .env_clear()
            .env("FAKE_CELLS_PORT", &self.port)
            .uid(pw.uid.as_raw())
            .gid(pw.gid.as_raw());
        // SAFETY: prctl is async-signal-safe. Cells goes with its manager, as a unit goes with
        // systemd (the runtime's thread that forks lives as long as the daemon).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                Ok(())
            });
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::UnitFailed(format!("cannot start {}: {e}", self.binary.display())))
    }

    /// `RestartUnit`: stops the child, resets the failed state and the start counter (as
    /// cells-updater's ResetFailedUnit does), starts it again, and supervises it.
    pub async fn restart(self: &Arc<Self>) -> Result<()> {
        let old = {
            let mut i = self.lock();
            i.generation += 1;
            i.failed = false;
            i.starts.clear();
            i.pid = 0;
            i.child.take()
        };
        if let Some(mut c) = old {
            let _ = c.kill().await;
        }
        self.start_child()?;
        let me = self.clone();
        let generation = self.lock().generation;
        tokio::spawn(async move { me.supervise(generation).await });
        Ok(())
    }

    fn start_child(&self) -> Result<()> {
        let child = self.spawn()?;
        let mut i = self.lock();
        i.pid = child.id().unwrap_or(0);
        i.child = Some(child);
        i.starts.push(Instant::now());
        Ok(())
    }

    /// `Restart=on-failure`, `StartLimitBurst=5` in 10 s.
    async fn supervise(self: Arc<Self>, generation: u64) {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let exited = {
                let mut i = self.lock();
                if i.generation != generation {
                    return;
                }
                match i.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(status))) => Some(status.success()),
                    _ => None,
                }
            };
            let Some(success) = exited else { continue };
            let restart = {
                let mut i = self.lock();
                i.child = None;
                i.pid = 0;
                i.starts.retain(|t| t.elapsed() < Duration::from_secs(10));
                if success {
                    return;
                }
                if i.starts.len() >= 5 {
                    i.failed = true;
                    false
                } else {
                    i.n_restarts += 1;
                    true
                }
            };
            if !restart {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.lock().generation != generation || self.start_child().is_err() {
                return;
            }
        }
    }

    /// Waits as [`crate::health::wait_healthy`] does.
    pub async fn wait_healthy(&self, check: &HealthCheck, baseline: u32) -> Result<()> {
        let started = Instant::now();
        let mut stable: Option<(Instant, u32)> = None;
        loop {
            let f = self.facts();
            if f.n_restarts > baseline || f.active_state == "failed" {
                return Err(Error::UnitFailed(format!(
                    "cells.service did not stay up after the restart ({}, {} restarts)",
                    f.active_state, f.n_restarts
                )));
            }
            if f.active_state == "active" {
                match stable {
                    Some((since, pid)) if pid == f.main_pid => {
                        if since.elapsed() >= check.settle {
                            return Ok(());
                        }
                    }
                    _ => stable = Some((Instant::now(), f.main_pid)),
                }
            }
            if started.elapsed() >= check.timeout {
                return Err(Error::UnitFailed(format!(
                    "cells.service was not healthy within {} s",
                    check.timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `Reload`: nothing to read again.
    pub fn reload(&self) {}
}

/// SIGKILLs every process whose environment holds `FAKE_CELLS_PORT=<port>` and waits (5 s at
/// most) for them to go.
fn kill_leftovers(port: &str) {
    let marker = format!("FAKE_CELLS_PORT={port}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            pids.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids {
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
