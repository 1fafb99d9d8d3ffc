//! The update lifecycle as one explicit, persisted state machine, and the apply journal.
//!
//! The state is the D-Bus `State` property. Starting work checks its source state (work
//! starts only at rest); coming to rest is always allowed. The document lives in
//! `<state>/state.json`; the journal of an apply or rollback in progress lives in
//! `<state>/journal.json`, which exists exactly while one is under way (so a boot unit can
//! start the daemon to finish it: `ConditionPathExists=`). Both are written atomically
//! through the state directory's descriptor (temp file, fsync, rename, fsync dir).

use crate::config::OnFailure;
use crate::dirfd::Dir;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The state document's file name.
pub const STATE_FILE: &str = "state.json";
/// The journal's file name.
pub const JOURNAL_FILE: &str = "journal.json";
/// Largest state or journal file read.
const MAX_DOC: u64 = 4 << 20;

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

    /// The source states from which work entering `self` may start; `None` = any (coming
    /// to rest is always allowed: the work that ran has ended). A `Check` in flight is not
    /// work: a job may start while one asks the server (the check then leaves the state to
    /// the job).
    fn sources(self) -> Option<&'static [Lifecycle]> {
        use Lifecycle::*;
        match self {
            Idle | Staged | Failed => None,
            Checking => Some(&[Idle, Staged, Failed]),
            Downloading => Some(&[Idle, Staged, Failed, Checking]),
            Verifying => Some(&[Downloading]),
            Applying => Some(&[Staged, Idle, Failed, Verifying, Downloading, Checking]),
            Restarting => Some(&[Applying, RollingBack]),
            HealthCheck => Some(&[Restarting]),
            RollingBack => Some(&[
                Applying,
                Restarting,
                HealthCheck,
                Idle,
                Staged,
                Failed,
                Checking,
            ]),
        }
    }
}

/// What the daemon last installed, recorded at the swap: the capabilities to keep come from
/// here, never from a path opened again later.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct InstalledRecord {
    /// Where (as the unit names it, under the root prefix).
    pub path: String,
    /// Version.
    pub version: String,
    /// Base64 SHA-256.
    pub sha256: String,
    /// `security.capability` (base64; empty = none).
    pub caps: String,
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
    /// The floor: the highest version ever committed here (it passed its health check).
    #[serde(alias = "highest_installed")]
    pub committed: String,
    /// Versions that failed to come up; never installed again unless asked for by name.
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
    /// What the daemon installed last.
    pub installed: Option<InstalledRecord>,
    /// Directories adopted (made root's) so far.
    pub adopted: Vec<String>,
    /// The admin's hold, when there is one.
    pub hold: Option<HoldRecord>,
    /// Counters for the metrics.
    pub counters: Counters,
    /// An outcome the fleet agent has not taken yet (it was away): sent again until it is.
    pub fleet_report: Option<FleetReport>,
}

/// A job's outcome for the fleet agent (docs/fleet.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FleetReport {
    /// The release the job installed (or tried to).
    pub version: String,
    /// The slot it held.
    pub slot: u32,
    /// The grant's token (the slot key's create revision); 0: whatever this node holds.
    pub grant: i64,
    /// It failed its health check here: the cluster's verdict.
    pub bad: bool,
    /// Why it failed, one line; `""` on success.
    pub reason: String,
}

/// What happened here over time (the metrics' counters).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Counters {
    /// Updates (Apply, Update, UpgradeToEnterprise) that succeeded.
    pub updates_succeeded: u64,
    /// Updates that failed (cancelled ones are not counted).
    pub updates_failed: u64,
    /// Rollbacks: automatic after a failed health check, and requested.
    pub rollbacks: u64,
    /// The last successful update, µs since the epoch.
    pub last_update: u64,
}

/// A hold (apt's `hold`, teleport's `pin`): automatic installs stop, or stay at or below a
/// version; explicit updates need `Force`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HoldRecord {
    /// Why, in the admin's words.
    pub reason: String,
    /// The pin: automatic installs stay at or below it; `""` = a full hold.
    pub version: String,
    /// Since when, µs since the epoch.
    pub since: u64,
}

/// Which operation a journal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum JournalKind {
    /// Apply (also the second half of Update and UpgradeToEnterprise).
    #[default]
    Apply,
    /// Rollback to the previous version.
    Rollback,
}

/// The step begun. Each is journaled before it is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Keeping a copy of the installed binary.
    #[default]
    Backup,
    /// Writing the new binary beside the target and renaming it over.
    Swapping,
    /// The new binary is in place (the drop-in may not be yet).
    Swapped,
    /// Restarting the unit and checking its health.
    Restarting,
    /// The new version failed: putting the old one back (it is already marked bad).
    Undoing,
}

impl Step {
    /// This step, or `Swapped` if it came before: what recovery resumes from once it has
    /// seen the new bytes in place.
    pub fn max_swapped(self) -> Step {
        match self {
            Step::Backup | Step::Swapping => Step::Swapped,
            other => other,
        }
    }
}

/// An apply or rollback in progress: what is being replaced by what, and the last step begun.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Journal {
    /// Apply or rollback.
    pub kind: JournalKind,
    /// The step begun.
    pub step: Step,
    /// Version before, and its package.
    pub from_version: String,
    pub from_package: String,
    /// Version being installed, and its package.
    pub to_version: String,
    pub to_package: String,
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
    /// What to do when the new version does not come up.
    pub on_failure: OnFailure,
    /// Restart and health-check (Apply's `Restart` option).
    pub restart: bool,
    /// The fleet slot this operation held (cluster nodes): recovery reports the outcome.
    pub fleet_slot: Option<u32>,
    /// That slot's grant token (its key's create revision in etcd).
    pub fleet_grant: i64,
}

impl Journal {
    /// Checks a journal read back from disk before recovery acts on it: versions and
    /// packages that parse, absolute paths in one directory, hashes and capabilities that
    /// decode. A damaged journal is a clear error, never a recovery guessed from nonsense.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::Internal(format!(
                "the apply journal is damaged ({what}); nothing was changed. Move \
                 /var/lib/cells-updater/journal.json away after checking the Cells binary by hand"
            )))
        };
        // The version left may be unknown (a binary that did not report one); the version
        // put in place never is.
        let unknown_ok = [true, false];
        for (v, may_be_empty) in [&self.from_version, &self.to_version]
            .into_iter()
            .zip(unknown_ok)
        {
            let fine =
                (may_be_empty && v.is_empty()) || crate::version::CellsVersion::parse(v).is_ok();
            if !fine {
                return bad(format!("version {:?}", crate::text::one_line(v, 40)));
            }
        }
        for p in [&self.from_package, &self.to_package] {
            if !crate::package::Package::is_known(p) {
                return bad(format!("package {:?}", crate::text::one_line(p, 40)));
            }
        }
        let (old, target) = (
            std::path::Path::new(&self.old_binary),
            std::path::Path::new(&self.target),
        );
        for p in [old, target] {
            let plain = p.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
            if !p.is_absolute()
                || !plain
                || p.file_name().is_none()
                || p.as_os_str().as_encoded_bytes().contains(&0)
            {
                return bad(format!(
                    "path {:?}",
                    crate::text::one_line(&p.display().to_string(), 80)
                ));
            }
        }
        if old.parent() != target.parent() {
            return bad("the old and new binaries are not in one directory".into());
        }
        for h in [&self.old_sha256, &self.new_sha256] {
            if !h.is_empty() && crate::trust::decode_checksum(h).is_err() {
                return bad(format!("hash {:?}", crate::text::one_line(h, 60)));
            }
        }
        for c in [&self.old_caps, &self.new_caps] {
            let decoded = crate::trust::decode_b64("caps", c)
                .ok()
                .and_then(|b| crate::fcaps::FileCaps::decode(&b).ok());
            if !c.is_empty() && decoded.is_none() {
                return bad(format!("capabilities {:?}", crate::text::one_line(c, 60)));
            }
        }
        for d in [&self.dropin_before, &self.dropin_after]
            .into_iter()
            .flatten()
        {
            if d.contains('\0') || d.len() > 64 * 1024 {
                return bad("a drop-in that is not a unit file".into());
            }
        }
        Ok(())
    }
}

/// Parses a persisted document (`state.json`, `journal.json`) from its bytes.
pub fn parse_doc<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> std::result::Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// The persisted state machine and journal, bound to the state directory.
#[derive(Debug)]
pub struct StateStore {
    dir: Dir,
    doc: Persistent,
    journal: Option<Journal>,
}

fn damaged(name: &str, dir: &Dir, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!(
        "the {name} file {} is damaged ({e}); move it away to start afresh",
        dir.path().join(name).display()
    ))
}

fn read_doc<T: for<'de> Deserialize<'de>>(dir: &Dir, name: &str) -> Result<Option<T>> {
    match dir.read(name, MAX_DOC) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => parse_doc(&bytes)
            .map(Some)
            .map_err(|e| damaged(name, dir, e)),
        Err(e) => Err(damaged(name, dir, e)),
    }
}

impl StateStore {
    /// Loads the state and the journal from the state directory; missing files are a fresh
    /// state. A state left in the middle of staging or checking (the daemon stopped) comes
    /// back to rest; an apply state without a journal too (recovery handles the others).
    pub fn open(dir: Dir) -> Result<StateStore> {
        let doc = read_doc::<Persistent>(&dir, STATE_FILE)?.unwrap_or(Persistent {
            format: 2,
            ..Persistent::default()
        });
        let journal = read_doc::<Journal>(&dir, JOURNAL_FILE)?;
        let mut store = StateStore { dir, doc, journal };
        let interrupted = matches!(
            store.doc.state,
            Lifecycle::Checking | Lifecycle::Downloading | Lifecycle::Verifying
        );
        if interrupted || (!store.doc.state.is_resting() && store.journal.is_none()) {
            store.doc.state = store.resting();
        }
        Ok(store)
    }

    /// The document.
    pub fn get(&self) -> &Persistent {
        &self.doc
    }

    /// The journal of the apply or rollback under way.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// The state directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
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
        if from != to && to.sources().is_some_and(|s| !s.contains(&from)) {
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
        write_doc(&self.dir, STATE_FILE, &next)?;
        self.doc = next;
        Ok(())
    }

    /// Writes the journal (before a step is taken), or removes it (`None`: the operation
    /// ended).
    pub fn set_journal(&mut self, journal: Option<Journal>) -> Result<()> {
        match &journal {
            Some(j) => write_doc(&self.dir, JOURNAL_FILE, j)?,
            None => {
                self.dir.remove(JOURNAL_FILE).map_err(|e| {
                    Error::from_io(&e, "cannot remove the apply journal", Error::Internal)
                })?;
                self.dir.sync();
            }
        }
        self.journal = journal;
        Ok(())
    }
}

fn write_doc(dir: &Dir, name: &str, doc: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(doc)
        .map_err(|e| Error::Internal(format!("cannot encode {name}: {e}")))?;
    dir.write_atomic(name, &bytes, 0o600).map_err(|e| {
        Error::from_io(
            &e,
            &format!("cannot save {}", dir.path().join(name).display()),
            Error::Internal,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(t: &tempfile::TempDir) -> StateStore {
        StateStore::open(crate::dirfd::root_dir(t.path(), None, Error::SwapFailed).unwrap())
            .unwrap()
    }

    #[test]
    fn work_starts_only_at_rest_and_always_comes_to_rest() {
        let t = tempfile::tempdir().unwrap();
        let mut s = store(&t);
        assert_eq!(s.get().state, Lifecycle::Idle);
        for to in [
            Lifecycle::Verifying,
            Lifecycle::Restarting,
            Lifecycle::HealthCheck,
        ] {
            assert_eq!(s.transition(to).unwrap_err().name(), "Busy", "{to:?}");
        }
        s.transition(Lifecycle::Downloading).unwrap();
        assert_eq!(
            s.transition(Lifecycle::Checking).unwrap_err().name(),
            "Busy"
        );
        s.transition(Lifecycle::Verifying).unwrap();
        s.update(|d| d.staged_version = "4.4.5".into()).unwrap();
        s.transition(Lifecycle::Staged).unwrap();
        // Stage then Update of the same version: the restage is a no-op, then apply.
        s.transition(Lifecycle::Downloading).unwrap();
        s.transition(Lifecycle::Staged).unwrap();
        s.transition(Lifecycle::Applying).unwrap();
        assert_eq!(
            s.transition(Lifecycle::Downloading).unwrap_err().name(),
            "Busy"
        );
        s.transition(Lifecycle::Restarting).unwrap();
        s.transition(Lifecycle::HealthCheck).unwrap();
        s.transition(Lifecycle::RollingBack).unwrap();
        s.transition(Lifecycle::Restarting).unwrap();
        s.transition(Lifecycle::Failed).unwrap();
        s.transition(Lifecycle::Checking).unwrap();
        // A job may start while a Check asks the server (found by the soak).
        for to in [
            Lifecycle::Downloading,
            Lifecycle::Applying,
            Lifecycle::RollingBack,
        ] {
            s.transition(Lifecycle::Checking).unwrap();
            s.transition(to).unwrap();
            s.transition(Lifecycle::Idle).unwrap();
        }
        s.transition(Lifecycle::Checking).unwrap();
        for to in [Lifecycle::Verifying, Lifecycle::Restarting] {
            assert_eq!(s.transition(to).unwrap_err().name(), "Busy", "{to:?}");
        }
    }

    #[test]
    fn persisted_and_interrupted_work_comes_to_rest() {
        let t = tempfile::tempdir().unwrap();
        let mut s = store(&t);
        s.update(|d| {
            d.staged_version = "4.4.5".into();
            d.last_check = 42;
            d.available_versions = vec!["4.4.5".into(), "4.4.6".into()];
        })
        .unwrap();
        s.transition(Lifecycle::Downloading).unwrap();
        let again = store(&t);
        assert_eq!(
            again.get().state,
            Lifecycle::Staged,
            "an interrupted download rests"
        );
        assert_eq!(again.get().last_check, 42);
        assert_eq!(again.get().available_versions, ["4.4.5", "4.4.6"]);
        std::fs::write(t.path().join(STATE_FILE), b"{oops").unwrap();
        let e =
            StateStore::open(crate::dirfd::root_dir(t.path(), None, Error::SwapFailed).unwrap())
                .unwrap_err();
        assert!(e.message().contains("damaged"), "{e}");
    }

    #[test]
    fn the_journal_exists_exactly_while_an_operation_runs() {
        let t = tempfile::tempdir().unwrap();
        let mut s = store(&t);
        s.transition(Lifecycle::Downloading).unwrap();
        s.transition(Lifecycle::Verifying).unwrap();
        s.transition(Lifecycle::Applying).unwrap();
        s.set_journal(Some(Journal {
            to_version: "4.4.5".into(),
            step: Step::Swapped,
            ..Journal::default()
        }))
        .unwrap();
        assert!(t.path().join(JOURNAL_FILE).exists());
        let again = store(&t);
        assert_eq!(
            again.get().state,
            Lifecycle::Applying,
            "recovery will handle it"
        );
        assert_eq!(again.journal().unwrap().step, Step::Swapped);
        s.set_journal(None).unwrap();
        assert!(!t.path().join(JOURNAL_FILE).exists());
        assert_eq!(
            store(&t).get().state,
            Lifecycle::Idle,
            "no journal: at rest"
        );
    }

    #[test]
    fn a_journal_is_checked_before_recovery_acts_on_it() {
        let good = Journal {
            kind: JournalKind::Apply,
            step: Step::Swapping,
            from_version: "4.4.2".into(),
            from_package: "PydioHome".into(),
            to_version: "4.4.5".into(),
            to_package: "PydioHome".into(),
            old_binary: "/opt/pydio/bin/cells".into(),
            target: "/opt/pydio/bin/cells".into(),
            ..Journal::default()
        };
        good.check().unwrap();
        // A rollback from a binary that reported no version.
        Journal {
            from_version: String::new(),
            ..good.clone()
        }
        .check()
        .unwrap();
        for bad in [
            Journal {
                to_version: String::new(),
                ..good.clone()
            },
            Journal {
                target: "/opt/pydio/bin/../../etc/shadow".into(),
                ..good.clone()
            },
            Journal {
                target: "/usr/bin/cells".into(),
                ..good.clone()
            },
            Journal {
                to_package: "Evil".into(),
                ..good.clone()
            },
            Journal {
                new_caps: "!!".into(),
                ..good.clone()
            },
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.message().contains("journal is damaged"), "{e}");
        }
    }
}
