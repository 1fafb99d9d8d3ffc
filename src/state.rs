//! The update lifecycle as one explicit, persisted state machine. Its state is the D-Bus
//! `State` property; every transition names its allowed source states. The document is
//! written atomically (temp file, fsync, rename, fsync dir), so a restarted daemon shows the
//! same properties.

use crate::error::{Error, Result};
use crate::stage::write_synced;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Lifecycle states, spelled as the `State` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// Nothing going on, nothing staged.
    #[default]
    Idle,
    /// Asking the update server.
    Checking,
    /// Bytes arriving.
    Downloading,
    /// Checksum, signature, probe.
    Verifying,
    /// A verified release waits for Apply.
    Staged,
    /// Swapping the binary in.
    Applying,
    /// Restarting the unit.
    Restarting,
    /// Waiting for the new version to prove healthy.
    HealthCheck,
    /// Putting the previous binary back.
    RollingBack,
    /// The last operation failed (see `LastError`).
    Failed,
}

impl Lifecycle {
    /// The property value.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Idle => "idle",
            Lifecycle::Checking => "checking",
            Lifecycle::Downloading => "downloading",
            Lifecycle::Verifying => "verifying",
            Lifecycle::Staged => "staged",
            Lifecycle::Applying => "applying",
            Lifecycle::Restarting => "restarting",
            Lifecycle::HealthCheck => "health-check",
            Lifecycle::RollingBack => "rolling-back",
            Lifecycle::Failed => "failed",
        }
    }

    /// States in which no operation is under way.
    pub fn is_resting(self) -> bool {
        matches!(
            self,
            Lifecycle::Idle | Lifecycle::Staged | Lifecycle::Failed
        )
    }

    /// The source states from which `self` may be entered.
    fn sources(self) -> &'static [Lifecycle] {
        use Lifecycle::*;
        match self {
            Checking | Downloading => &[Idle, Staged, Failed],
            Verifying => &[Downloading],
            Staged => &[Verifying, Checking, Applying, Idle, Failed],
            Applying => &[Staged, Failed],
            Restarting => &[Applying, RollingBack, Idle, Failed, Staged],
            HealthCheck => &[Restarting],
            RollingBack => &[Applying, Restarting, HealthCheck, Idle, Staged, Failed],
            Idle => &[
                Checking,
                HealthCheck,
                Restarting,
                RollingBack,
                Applying,
                Staged,
                Failed,
                Verifying,
                Downloading,
            ],
            Failed => &[
                Checking,
                Downloading,
                Verifying,
                Applying,
                Restarting,
                HealthCheck,
                RollingBack,
                Staged,
                Idle,
            ],
        }
    }
}

/// Everything the daemon remembers across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Persistent {
    /// Format version of this document.
    pub format: u32,
    /// Lifecycle state.
    pub state: Lifecycle,
    /// Staged version, `""` when none.
    pub staged_version: String,
    /// Version `Rollback` would restore.
    pub previous_version: String,
    /// Highest version ever installed here (no replay of older releases).
    pub highest_installed: String,
    /// Versions that failed to come up; never installed automatically again.
    pub bad_versions: Vec<String>,
    /// Allowed newer versions from the last check, ascending.
    pub available_versions: Vec<String>,
    /// Last check, µs since the epoch; 0 = never.
    pub last_check: u64,
    /// Last failure, human readable.
    pub last_error: String,
    /// Package in use: `PydioHome` or `PydioEnterprise` (overrides the configuration).
    pub package_name: String,
    /// Id of the last job created, so ids keep increasing across restarts.
    pub last_job_id: u32,
    /// The apply or rollback under way, journaled before each step (crash recovery).
    pub pending: Option<Pending>,
}

/// An apply or rollback in progress: what is being replaced by what, and the last step
/// begun. Written before the step is taken.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Pending {
    /// `apply` or `rollback`.
    pub kind: String,
    /// The step begun: `backup`, `swapping`, `swapped`, `restarting`, `health-check`,
    /// `rolling-back`.
    pub step: String,
    /// Version before.
    pub from_version: String,
    /// Version being installed.
    pub to_version: String,
    /// The binary the unit ran before.
    pub old_binary: String,
    /// Where the new binary goes.
    pub target: String,
    /// Base64 SHA-256 of the old and new binaries.
    pub old_sha256: String,
    pub new_sha256: String,
    /// `security.capability` values (base64, empty = none) of the old and new binaries.
    pub old_caps: String,
    pub new_caps: String,
    /// The cells-updater drop-in before, and the one written (None = absent).
    pub dropin_before: Option<String>,
    pub dropin_after: Option<String>,
    /// `PreviousVersion` before this operation.
    pub previous_before: String,
    /// Rollback on failure (`rollback`) or not (`keep`).
    pub on_failure: String,
}

/// The persisted state machine, bound to its file.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    doc: Persistent,
}

impl StateStore {
    /// Loads `<state_dir>/state.json`; a missing file is a fresh state. A state left in the
    /// middle of staging or checking (the daemon stopped) is brought back to rest.
    pub fn open(state_dir: &Path) -> Result<StateStore> {
        let path = state_dir.join("state.json");
        let doc = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::InvalidArgument(format!(
                    "the state file {} is damaged ({e}); move it away to start afresh",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persistent {
                format: 1,
                ..Persistent::default()
            },
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "cannot read the state file {}: {e}",
                    path.display()
                )))
            }
        };
        let mut store = StateStore { path, doc };
        // Interrupted work that left nothing to recover comes to rest: checks and downloads
        // always, apply states when no operation is journaled (recovery handles the others).
        let transient_apply = matches!(
            store.doc.state,
            Lifecycle::Applying
                | Lifecycle::Restarting
                | Lifecycle::HealthCheck
                | Lifecycle::RollingBack
        );
        if matches!(
            store.doc.state,
            Lifecycle::Checking | Lifecycle::Downloading | Lifecycle::Verifying
        ) || (transient_apply && store.doc.pending.is_none())
        {
            let rest = store.resting();
            store.doc.state = rest;
        }
        Ok(store)
    }

    /// The document.
    pub fn get(&self) -> &Persistent {
        &self.doc
    }

    /// Where a finished or interrupted operation comes to rest.
    pub fn resting(&self) -> Lifecycle {
        if self.doc.staged_version.is_empty() {
            Lifecycle::Idle
        } else {
            Lifecycle::Staged
        }
    }

    /// Moves to `to` if the current state is one of its sources, then persists.
    pub fn transition(&mut self, to: Lifecycle) -> Result<()> {
        let from = self.doc.state;
        if from != to && !to.sources().contains(&from) {
            return Err(Error::Busy(format!(
                "cannot go from {} to {}; another operation is under way",
                from.as_str(),
                to.as_str()
            )));
        }
        self.update(|d| d.state = to)
    }

    /// The recovery edge: after a crash the persisted state is whatever the crash left, so
    /// start-up recovery may enter `to` from any state. Used by nothing else.
    pub fn recover_to(&mut self, to: Lifecycle) -> Result<()> {
        self.update(|d| d.state = to)
    }

    /// Changes fields (not the state's edges) and persists.
    pub fn update(&mut self, change: impl FnOnce(&mut Persistent)) -> Result<()> {
        let mut next = self.doc.clone();
        change(&mut next);
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| Error::InvalidArgument(format!("cannot encode state: {e}")))?;
        write_synced(&self.path, &bytes).map_err(|e| {
            Error::from_io(
                &e,
                &format!("cannot save {}", self.path.display()),
                Error::DownloadFailed,
            )
        })?;
        self.doc = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_check_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.get().state, Lifecycle::Idle);
        assert_eq!(
            s.transition(Lifecycle::Verifying).unwrap_err().name(),
            "Busy"
        );
        assert_eq!(
            s.transition(Lifecycle::Applying).unwrap_err().name(),
            "Busy"
        );
        s.transition(Lifecycle::Downloading).unwrap();
        assert_eq!(
            s.transition(Lifecycle::Checking).unwrap_err().name(),
            "Busy"
        );
        s.transition(Lifecycle::Verifying).unwrap();
        s.update(|d| d.staged_version = "4.4.5".into()).unwrap();
        s.transition(Lifecycle::Staged).unwrap();
        s.transition(Lifecycle::Applying).unwrap();
    }

    #[test]
    fn persisted_and_interrupted_work_comes_to_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        s.update(|d| {
            d.staged_version = "4.4.5".into();
            d.last_check = 42;
            d.available_versions = vec!["4.4.5".into(), "4.4.6".into()];
        })
        .unwrap();
        s.transition(Lifecycle::Downloading).unwrap();
        let again = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            again.get().state,
            Lifecycle::Staged,
            "an interrupted download rests"
        );
        assert_eq!(again.get().last_check, 42);
        assert_eq!(again.get().available_versions, ["4.4.5", "4.4.6"]);
        std::fs::write(dir.path().join("state.json"), b"{oops").unwrap();
        assert!(StateStore::open(dir.path())
            .unwrap_err()
            .message()
            .contains("damaged"));
    }
}
