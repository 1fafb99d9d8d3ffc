//! Job objects: `/com/pydio/CellsUpdater1/job/<n>`, interface `com.pydio.CellsUpdater1.Job`.

use super::errors::BusError;
use super::{emit_changes, now_us, Shared};
use crate::daemon::auth::Action;
use crate::stage::Cancel;
use std::sync::Arc;
use zbus::object_server::InterfaceRef;
use zbus::zvariant::{OwnedObjectPath, Value};

/// The Job interface name.
pub const JOB_INTERFACE: &str = "com.pydio.CellsUpdater1.Job";

/// The object path of job `id`.
pub fn job_path(id: u32) -> OwnedObjectPath {
    // Invariant: the format is always a valid object path.
    OwnedObjectPath::try_from(format!("/com/pydio/CellsUpdater1/job/{id}"))
        .expect("job paths are valid object paths")
}

/// A job's properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobData {
    pub id: u32,
    pub kind: String,
    pub version: String,
    pub state: String,
    pub phase: String,
    pub percent: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub error: String,
    pub message: String,
    pub started_at: u64,
    pub finished_at: u64,
}

impl JobData {
    /// A running job of `kind` for `version`.
    pub fn new(id: u32, kind: &str, version: &str, phase: &str) -> Self {
        JobData {
            id,
            kind: kind.into(),
            version: version.into(),
            state: "running".into(),
            phase: phase.into(),
            started_at: now_us(),
            ..Default::default()
        }
    }

    /// Every property with its value, for change detection.
    pub fn props(&self) -> Vec<(&'static str, Value<'static>)> {
        vec![
            ("Id", Value::from(self.id)),
            ("Kind", Value::from(self.kind.clone())),
            ("Version", Value::from(self.version.clone())),
            ("State", Value::from(self.state.clone())),
            ("Phase", Value::from(self.phase.clone())),
            ("Percent", Value::from(self.percent)),
            ("BytesDone", Value::from(self.bytes_done)),
            ("BytesTotal", Value::from(self.bytes_total)),
            ("Error", Value::from(self.error.clone())),
            ("Message", Value::from(self.message.clone())),
            ("StartedAt", Value::from(self.started_at)),
            ("FinishedAt", Value::from(self.finished_at)),
        ]
    }
}

/// The served job object.
pub struct Job {
    /// Its properties.
    pub data: JobData,
    /// Set by `Cancel()`.
    pub cancel: Cancel,
    /// The action a caller needs to cancel it.
    pub action: Action,
    /// True once the job passed the point where it can no longer be cancelled (the swap).
    pub committed: bool,
    pub(super) shared: Arc<Shared>,
}

#[zbus::interface(name = "com.pydio.CellsUpdater1.Job")]
impl Job {
    /// Asks the job to stop. Only before the swap; after it, the job finishes or rolls back.
    async fn cancel(&self, #[zbus(header)] hdr: zbus::message::Header<'_>) -> Result<(), BusError> {
        self.shared.authorize(&hdr, self.action).await?;
        if self.data.state != "running" {
            return Err(BusError::InvalidArgument(format!(
                "job {} already {}",
                self.data.id, self.data.state
            )));
        }
        if self.committed {
            return Err(BusError::Busy(format!(
                "job {} is past the swap and can no longer be cancelled; it will finish or roll back",
                self.data.id
            )));
        }
        self.cancel.cancel();
        Ok(())
    }

    #[zbus(property)]
    fn id(&self) -> u32 {
        self.data.id
    }
    #[zbus(property)]
    fn kind(&self) -> String {
        self.data.kind.clone()
    }
    #[zbus(property)]
    fn version(&self) -> String {
        self.data.version.clone()
    }
    #[zbus(property)]
    fn state(&self) -> String {
        self.data.state.clone()
    }
    #[zbus(property)]
    fn phase(&self) -> String {
        self.data.phase.clone()
    }
    #[zbus(property)]
    fn percent(&self) -> u32 {
        self.data.percent
    }
    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.data.bytes_done
    }
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.data.bytes_total
    }
    #[zbus(property)]
    fn error(&self) -> String {
        self.data.error.clone()
    }
    #[zbus(property)]
    fn message(&self) -> String {
        self.data.message.clone()
    }
    #[zbus(property)]
    fn started_at(&self) -> u64 {
        self.data.started_at
    }
    #[zbus(property)]
    fn finished_at(&self) -> u64 {
        self.data.finished_at
    }
}

/// Changes a served job's properties and emits `PropertiesChanged` for what changed.
pub async fn update(iface: &InterfaceRef<Job>, change: impl FnOnce(&mut JobData)) {
    let (before, after) = {
        let mut job = iface.get_mut().await;
        let before = job.data.props();
        change(&mut job.data);
        (before, job.data.props())
    };
    emit_changes(iface.signal_emitter(), JOB_INTERFACE, &before, &after).await;
}
