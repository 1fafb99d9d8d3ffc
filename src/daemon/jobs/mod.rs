//! The job runner and one module per job kind:
//! - [`stage`]: download or copy, verify, probe (Stage, StageFromFd, the first half of Update);
//! - [`apply`]: swap, drop-in, restart, health, undo on failure (Apply, the second half of
//!   Update and UpgradeToEnterprise);
//! - [`rollback`]: the previous version back;
//! - [`recover`]: finish or undo what a crash interrupted, at start-up;
//! - [`enterprise`]: the UpgradeToEnterprise job;
//! - [`fleet_gate`]: on a cluster node, the fleet slot a swap waits for.
//!
//! One mutating job runs at a time. A job's kind says where it comes to rest; the runner
//! records the end in the persisted state and announces it (`JobFinished`).

pub(super) mod apply;
mod enterprise;
pub(super) mod fleet_gate;
mod recover;
pub(in crate::daemon) mod rollback;
pub(super) mod stage;

use super::auth::Action;
use super::job::{JobHandle, JobKind, JobObject, JobState, Phase};
use super::{now_us, Daemon, ManagerIface, MANAGER_PATH};
use crate::error::{Error, Result};
use crate::log;
use crate::state::{Journal, Lifecycle};
use crate::version::CellsVersion;
use std::sync::Arc;
use std::time::Instant;
use zbus::zvariant::OwnedObjectPath;

/// What a job works with: the daemon and its own handle.
pub(super) struct Ctx {
    pub d: Arc<Daemon>,
    pub job: Arc<JobHandle>,
    /// The outcome for the fleet agent, sent once the job's end is recorded and announced
    /// (so no other node swaps while this one still shows its health check).
    pub fleet: std::sync::Mutex<Option<crate::state::FleetReport>>,
}

impl Ctx {
    /// Moves the lifecycle state (checking the edge) and publishes it.
    pub async fn set_state(&self, to: Lifecycle) -> Result<()> {
        self.d.store.lock().await.transition(to)?;
        self.d.publish().await;
        Ok(())
    }

    /// Comes to rest: `staged` when a release is staged, else `idle`.
    pub async fn rest(&self) -> Result<()> {
        let rest = self.d.store.lock().await.resting();
        self.set_state(rest).await
    }

    /// Writes (or clears) the apply journal.
    pub async fn journal(&self, j: Option<&Journal>) -> Result<()> {
        self.d.store.lock().await.set_journal(j.cloned())
    }

    /// Sets the job's phase.
    pub async fn phase(&self, p: Phase) {
        self.job.phase(p).await;
    }
}

/// What a mutating job does, with what it needs; its [`JobKind`] (the `Kind` property) is
/// its tag, never chosen apart from it.
pub(super) enum Work {
    Stage(stage::StageFrom),
    Apply(apply::Options),
    Update(Option<CellsVersion>, apply::Options),
    Rollback,
    Enterprise(String, Option<CellsVersion>, apply::Options),
}

impl Work {
    /// The job's `Kind`.
    pub(super) fn kind(&self) -> JobKind {
        match self {
            Work::Stage(_) => JobKind::Stage,
            Work::Apply(_) => JobKind::Apply,
            Work::Update(..) => JobKind::Update,
            Work::Rollback => JobKind::Rollback,
            Work::Enterprise(..) => JobKind::Enterprise,
        }
    }
}

impl Daemon {
    /// Reserves the single mutating-job slot and serves a new job object.
    pub(super) async fn begin_job(
        self: &Arc<Self>,
        kind: JobKind,
        version: &str,
        (action, owner): (Action, Option<u32>),
    ) -> Result<Arc<JobHandle>> {
        let conn = self.conn()?.clone();
        let handle = {
            let mut store = self.store.lock().await;
            let mut jobs = self
                .jobs
                .lock()
                .map_err(|_| Error::Busy("job table unavailable".into()))?;
            if let Some(running) = &jobs.running {
                return Err(Error::Busy(format!(
                    "job {} is running; wait for it to finish (JobFinished) or cancel it",
                    running.id
                )));
            }
            let id = store.get().last_job_id + 1;
            store.update(|d| d.last_job_id = id)?;
            let handle = Arc::new(JobHandle::new(
                id,
                kind,
                version,
                (action, owner),
                conn.clone(),
            ));
            jobs.running = Some(handle.clone());
            jobs.held.push_back((handle.clone(), None));
            handle
        };
        let obj = JobObject {
            handle: handle.clone(),
            daemon: self.clone(),
        };
        if let Err(e) = conn.object_server().at(handle.path(), obj).await {
            if let Ok(mut jobs) = self.jobs.lock() {
                jobs.running = None;
                jobs.held.retain(|(h, _)| h.id != handle.id);
            }
            return Err(Error::Busy(format!("cannot serve the job object: {e}")));
        }
        self.prune_jobs().await;
        self.publish().await;
        log::info(
            &format!("job {} started: {} {version}", handle.id, kind.as_str()),
            &[
                ("JOB_ID", &handle.id.to_string()),
                ("VERSION", version),
                ("JOB_KIND", kind.as_str()),
            ],
        );
        Ok(handle)
    }

    /// Creates a job (the single mutating-job slot) and runs `work` in it; returns the job's
    /// path at once.
    pub(super) async fn launch(
        self: &Arc<Self>,
        label: &str,
        started_by: (Action, Option<u32>),
        work: Work,
    ) -> Result<OwnedObjectPath> {
        let job = self.begin_job(work.kind(), label, started_by).await?;
        let path = job.path();
        tokio::spawn(self.clone().run_job(job, work));
        Ok(path)
    }

    async fn run_job(self: Arc<Self>, job: Arc<JobHandle>, work: Work) {
        let ctx = Ctx {
            d: self.clone(),
            job: job.clone(),
            fleet: std::sync::Mutex::new(None),
        };
        // A Stage job comes to rest in `staged`; the others say where they end themselves.
        let success = matches!(work, Work::Stage(_)).then_some(Lifecycle::Staged);
        let outcome = match work {
            Work::Stage(source) => stage::run(&ctx, source).await.map(|m| stage::summary(&m)),
            Work::Apply(o) => apply::run(&ctx, &o).await,
            Work::Rollback => rollback::run(&ctx).await,
            Work::Enterprise(key, v, o) => enterprise::run(&ctx, &key, v, o).await,
            Work::Update(v, o) => {
                match stage::run(&ctx, stage::StageFrom::Server(v, o.force)).await {
                    Ok(m) => {
                        let o = apply::Options {
                            version: Some(m.version.clone()),
                            ..o
                        };
                        apply::run(&ctx, &o).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        self.conclude(&job, outcome, success).await;
        fleet_gate::send_kept_outcome(&ctx).await;
    }

    /// Takes the job slot for recovery when a journal says an apply or rollback was
    /// interrupted (before the bus name is requested).
    pub(super) async fn reserve_recovery(self: &Arc<Self>) -> Option<Arc<JobHandle>> {
        let (kind, version) = {
            let store = self.store.lock().await;
            match (store.journal(), store.damaged_journal()) {
                (Some(j), _) => (
                    match j.kind {
                        crate::state::JournalKind::Rollback => JobKind::Rollback,
                        crate::state::JournalKind::Apply => JobKind::Apply,
                    },
                    j.to_version.to_string(),
                ),
                // What was under way cannot be told: the recovery job only reports it.
                (None, Some(_)) => (JobKind::Apply, String::new()),
                (None, None) => return None,
            }
        };
        match self.begin_job(kind, &version, (Action::Apply, None)).await {
            Ok(job) => Some(job),
            Err(e) => {
                log::log(
                    log::Level::Error,
                    &format!("cannot start recovery: {e}"),
                    &[],
                );
                None
            }
        }
    }

    /// Runs the recovery reserved at start-up.
    pub(super) async fn run_recovery(self: Arc<Self>, job: Arc<JobHandle>) {
        let ctx = Ctx {
            d: self.clone(),
            job: job.clone(),
            fleet: std::sync::Mutex::new(None),
        };
        let journal = self.store.lock().await.journal().cloned();
        let outcome = recover::run(&ctx).await;
        if let Some(j) = &journal {
            fleet_gate::report_recovered(&ctx, j, &outcome).await;
        }
        self.conclude(&job, outcome, None).await;
        fleet_gate::send_kept_outcome(&ctx).await;
    }

    /// Ends a job: records the outcome in the persisted state (LastError cleared or set;
    /// `success` on success, at rest after a cancel, `failed` otherwise), then announces it.
    async fn conclude(
        &self,
        job: &Arc<JobHandle>,
        outcome: Result<String>,
        success: Option<Lifecycle>,
    ) {
        {
            let _atomic = self.atomic.lock().await;
            let mut store = self.store.lock().await;
            let rest = store.resting();
            let kind = job.data().kind;
            let counted = store.update(|d| {
                let c = &mut d.counters;
                match (kind, &outcome) {
                    (JobKind::Rollback, Ok(_)) => c.rollbacks += 1,
                    (JobKind::Stage | JobKind::Rollback, _) | (_, Err(Error::Cancelled(_))) => {}
                    (_, Ok(_)) => {
                        c.updates_succeeded += 1;
                        c.last_update = now_us();
                    }
                    (_, Err(_)) => c.updates_failed += 1,
                }
            });
            let recorded = counted.and_then(|_| match &outcome {
                Ok(_) => store
                    .update(|d| d.last_error.clear())
                    .and_then(|_| match success {
                        Some(state) => store.transition(state),
                        None if store.get().state.is_resting() => Ok(()),
                        None => store.transition(rest),
                    }),
                Err(Error::Cancelled(_)) => store.transition(rest),
                Err(e) => {
                    let msg = e.message();
                    store
                        .update(|d| d.last_error = msg)
                        .and_then(|_| store.transition(Lifecycle::Failed))
                }
            });
            if let Err(e) = recorded {
                log::log(
                    log::Level::Error,
                    &format!("cannot record the job's end: {e}"),
                    &[],
                );
            }
        }
        self.refresh_installed().await;
        self.finish_job(job, &outcome).await;
    }

    /// Records a job's end: job properties, `JobFinished`, the slot, the log.
    async fn finish_job(&self, job: &Arc<JobHandle>, outcome: &Result<String>) {
        let (state, error, message) = match outcome {
            Ok(m) => (JobState::Succeeded, String::new(), m.clone()),
            Err(Error::Cancelled(m)) => (
                JobState::Cancelled,
                Error::Cancelled(String::new()).dbus_name(),
                m.clone(),
            ),
            Err(e) => (JobState::Failed, e.dbus_name(), e.message()),
        };
        job.update(|d| {
            d.state = state;
            d.error = error.clone();
            d.message = message.clone();
            d.finished_at = now_us();
            if state == JobState::Succeeded {
                d.phase = Phase::Done;
                d.percent = 100;
            }
        })
        .await;
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.running = None;
            if let Some(h) = jobs.held.iter_mut().find(|(h, _)| h.id == job.id) {
                h.1 = Some(Instant::now());
            }
        }
        self.touch();
        self.publish().await;
        if let Ok(conn) = self.conn() {
            if let Ok(emitter) = zbus::object_server::SignalEmitter::new(conn, MANAGER_PATH) {
                let _ = ManagerIface::job_finished(
                    &emitter,
                    job.path().as_ref(),
                    state.as_str(),
                    &error,
                    &message,
                )
                .await;
            }
        }
        let level = if state == JobState::Failed {
            log::Level::Error
        } else {
            log::Level::Info
        };
        let data = job.data();
        log::log(
            level,
            &format!("job {} {}: {message}", job.id, state.as_str()),
            &[
                ("JOB_ID", &job.id.to_string()),
                ("VERSION", &data.version),
                ("ERROR", &error),
            ],
        );
    }
}
