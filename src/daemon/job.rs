//! Job objects: `/com/pydio/CellsUpdater1/job/<n>`, interface `com.pydio.CellsUpdater1.Job`.
//!
//! A job's data lives in a [`JobHandle`] (a watch channel), outside the served D-Bus object:
//! the object only reads it. So a caller sitting in `Cancel`'s authorization (polkit may take
//! minutes) never holds a lock that the job's progress, or its swap and restart, would wait on.

use super::auth::Action;
use super::errors::BusError;
use super::{emit_changes, now_us, Daemon};
use crate::cancel::Cancel;
use std::sync::Arc;
use zbus::zvariant::{OwnedObjectPath, Value};

pub use crate::contract::JOB_INTERFACE;

/// The object path of job `id`.
pub fn job_path(id: u32) -> OwnedObjectPath {
    // Invariant: the format is always a valid object path.
    OwnedObjectPath::try_from(format!("{}{id}", crate::contract::JOB_PATH_PREFIX))
        .expect("job paths are valid object paths")
}

/// What a job does (the `Kind` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Stage or StageFromFd.
    Stage,
    /// Apply.
    Apply,
    /// Update (stage then apply).
    Update,
    /// Rollback.
    Rollback,
    /// UpgradeToEnterprise.
    Enterprise,
}

impl JobKind {
    /// The property value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Stage => "stage",
            JobKind::Apply => "apply",
            JobKind::Update => "update",
            JobKind::Rollback => "rollback",
            JobKind::Enterprise => "enterprise",
        }
    }

    /// The phase a job of this kind starts in.
    pub fn first_phase(self) -> Phase {
        match self {
            JobKind::Apply => Phase::Swapping,
            JobKind::Rollback => Phase::RollingBack,
            _ => Phase::Downloading,
        }
    }
}

/// A job's `State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Under way.
    Running,
    /// Ended well.
    Succeeded,
    /// Ended with an error.
    Failed,
    /// Cancelled before anything changed.
    Cancelled,
}

impl JobState {
    /// The property value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A job's `Phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Bytes arriving.
    Downloading,
    /// Checksum and signature.
    Verifying,
    /// The version probe.
    Probing,
    /// Fleet mode: waiting for a slot from the cluster before the swap.
    WaitingForSlot,
    /// Backup and swap.
    Swapping,
    /// Restarting the unit.
    Restarting,
    /// Waiting for health.
    HealthCheck,
    /// Putting the previous version back.
    RollingBack,
    /// Finished.
    Done,
}

impl Phase {
    /// The property value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Downloading => "downloading",
            Phase::Verifying => "verifying",
            Phase::Probing => "probing",
            Phase::WaitingForSlot => "waiting-for-slot",
            Phase::Swapping => "swapping",
            Phase::Restarting => "restarting",
            Phase::HealthCheck => "health-check",
            Phase::RollingBack => "rolling-back",
            Phase::Done => "done",
        }
    }
}

/// A job's properties.
#[derive(Debug, Clone, PartialEq)]
pub struct JobData {
    pub id: u32,
    pub kind: JobKind,
    pub version: String,
    pub state: JobState,
    pub phase: Phase,
    pub percent: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub error: String,
    pub message: String,
    pub started_at: u64,
    pub finished_at: u64,
}

impl JobData {
    /// Every property with its value, for change detection.
    pub fn props(&self) -> Vec<(&'static str, Value<'static>)> {
        use crate::contract::job_prop as P;
        vec![
            (P::ID, Value::from(self.id)),
            (P::KIND, Value::from(self.kind.as_str())),
            (P::VERSION, Value::from(self.version.clone())),
            (P::STATE, Value::from(self.state.as_str())),
            (P::PHASE, Value::from(self.phase.as_str())),
            (P::PERCENT, Value::from(self.percent)),
            (P::BYTES_DONE, Value::from(self.bytes_done)),
            (P::BYTES_TOTAL, Value::from(self.bytes_total)),
            (P::ERROR, Value::from(self.error.clone())),
            (P::MESSAGE, Value::from(self.message.clone())),
            (P::STARTED_AT, Value::from(self.started_at)),
            (P::FINISHED_AT, Value::from(self.finished_at)),
        ]
    }
}

/// A job: its data, its cancel token and what a caller needs to cancel it.
pub struct JobHandle {
    /// The job's number.
    pub id: u32,
    /// The action it was started with: what its starter needs to cancel it.
    pub action: Action,
    /// The uid that started it (`None`: the daemon itself, a recovery). Anyone else needs
    /// manage-policy to cancel it.
    pub owner: Option<u32>,
    /// Set by `Cancel()`, committed at the swap.
    pub cancel: Cancel,
    data: tokio::sync::watch::Sender<JobData>,
    conn: zbus::Connection,
}

impl JobHandle {
    /// A running job of `kind` for `version`.
    pub fn new(
        id: u32,
        kind: JobKind,
        version: &str,
        (action, owner): (Action, Option<u32>),
        conn: zbus::Connection,
    ) -> Self {
        let data = JobData {
            id,
            kind,
            version: version.to_string(),
            state: JobState::Running,
            phase: kind.first_phase(),
            percent: 0,
            bytes_done: 0,
            bytes_total: 0,
            error: String::new(),
            message: String::new(),
            started_at: now_us(),
            finished_at: 0,
        };
        JobHandle {
            id,
            action,
            owner,
            cancel: Cancel::new(),
            data: tokio::sync::watch::channel(data).0,
            conn,
        }
    }

    /// Its object path.
    pub fn path(&self) -> OwnedObjectPath {
        job_path(self.id)
    }

    /// A copy of its properties.
    pub fn data(&self) -> JobData {
        self.data.borrow().clone()
    }

    /// Changes its properties and emits `PropertiesChanged` for what changed. Holds no lock
    /// across the emission.
    pub async fn update(&self, change: impl FnOnce(&mut JobData)) {
        let before = self.data.borrow().props();
        self.data.send_modify(change);
        let after = self.data.borrow().props();
        if let Ok(emitter) = zbus::object_server::SignalEmitter::new(&self.conn, self.path()) {
            emit_changes(&emitter, JOB_INTERFACE, &before, &after).await;
        }
    }

    /// Sets the phase.
    pub async fn phase(&self, phase: Phase) {
        self.update(|d| d.phase = phase).await;
    }
}

/// The served job object: reads the handle, never holds its data.
pub struct JobObject {
    pub(super) handle: Arc<JobHandle>,
    pub(super) daemon: Arc<Daemon>,
}

#[zbus::interface(name = "com.pydio.CellsUpdater1.Job")]
impl JobObject {
    /// Asks the job to stop. Only before the swap; after it, `NotCancellable` and the job
    /// finishes or rolls back.
    async fn cancel(&self, #[zbus(header)] hdr: zbus::message::Header<'_>) -> Result<(), BusError> {
        // Its starter cancels it with the right it started it with; anyone else (the Cells
        // user facing root's or the timer's job) needs a host admin's manage-policy.
        let uid = self.daemon.caller(&hdr).await?;
        let action = if self.handle.owner == Some(uid) {
            self.handle.action
        } else {
            Action::ManagePolicy
        };
        self.daemon.authorize(&hdr, action).await?;
        let d = self.handle.data();
        if d.state != JobState::Running {
            return Err(BusError::InvalidArgument(format!(
                "job {} already {}",
                d.id,
                d.state.as_str()
            )));
        }
        self.handle.cancel.cancel().map_err(|e| {
            BusError::from(crate::Error::NotCancellable(format!(
                "job {}: {}",
                d.id,
                e.message()
            )))
        })
    }

    #[zbus(property)]
    fn id(&self) -> u32 {
        self.handle.id
    }
    #[zbus(property)]
    fn kind(&self) -> String {
        self.handle.data().kind.as_str().into()
    }
    #[zbus(property)]
    fn version(&self) -> String {
        self.handle.data().version
    }
    #[zbus(property)]
    fn state(&self) -> String {
        self.handle.data().state.as_str().into()
    }
    #[zbus(property)]
    fn phase(&self) -> String {
        self.handle.data().phase.as_str().into()
    }
    #[zbus(property)]
    fn percent(&self) -> u32 {
        self.handle.data().percent
    }
    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.handle.data().bytes_done
    }
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.handle.data().bytes_total
    }
    #[zbus(property)]
    fn error(&self) -> String {
        crate::text::no_nul(&self.handle.data().error)
    }
    #[zbus(property)]
    fn message(&self) -> String {
        crate::text::no_nul(&self.handle.data().message)
    }
    #[zbus(property)]
    fn started_at(&self) -> u64 {
        self.handle.data().started_at
    }
    #[zbus(property)]
    fn finished_at(&self) -> u64 {
        self.handle.data().finished_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job's properties are the contract's list, in its order and with its signatures.
    #[test]
    fn a_job_names_every_property_of_the_contract() {
        let data = JobData {
            id: 3,
            kind: JobKind::Apply,
            version: "4.4.7".into(),
            state: JobState::Running,
            phase: Phase::Swapping,
            percent: 50,
            bytes_done: 1,
            bytes_total: 2,
            error: String::new(),
            message: String::new(),
            started_at: 1,
            finished_at: 0,
        };
        crate::contract::assert_spelled_as(&data.props(), crate::contract::JOB_PROPERTIES);
    }
}
