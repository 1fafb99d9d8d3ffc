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
use crate::fcaps::FileCaps;
use crate::package::{BadRelease, Package};
use crate::trust::Sha256Digest;
use crate::version::CellsVersion;
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
    /// Version; `None` when the binary put back never reported one.
    #[serde(with = "crate::wire::opt_version")]
    pub version: Option<CellsVersion>,
    /// SHA-256 of the bytes installed.
    #[serde(with = "crate::wire::opt_digest")]
    pub sha256: Option<Sha256Digest>,
    /// The capabilities set on it (`security.capability`), `None` for none.
    #[serde(with = "crate::wire::opt_caps")]
    pub caps: Option<FileCaps>,
}

impl InstalledRecord {
    /// The new binary of `j`, once it is in place.
    pub fn new_of(j: &Journal) -> Self {
        InstalledRecord {
            path: j.target.clone(),
            version: Some(j.to_version.clone()),
            sha256: Some(j.new_sha256),
            caps: j.new_caps,
        }
    }

    /// The old binary of `j`, once it is back.
    pub fn old_of(j: &Journal) -> Self {
        InstalledRecord {
            path: j.old_binary.clone(),
            version: j.from_version.clone(),
            sha256: Some(j.old_sha256),
            caps: j.old_caps,
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
    /// Staged version (`""` in the file when none).
    #[serde(with = "crate::wire::opt_version")]
    pub staged_version: Option<CellsVersion>,
    /// Version `Rollback` would restore.
    #[serde(with = "crate::wire::opt_version")]
    pub previous_version: Option<CellsVersion>,
    /// The floor: the highest version ever committed here (it passed its health check).
    #[serde(alias = "highest_installed", with = "crate::wire::opt_version")]
    pub committed: Option<CellsVersion>,
    /// Releases that failed to come up; never installed again unless asked for by name.
    pub bad_versions: Vec<BadRelease>,
    /// Allowed newer versions from the last check, ascending.
    pub available_versions: Vec<CellsVersion>,
    /// Last check, µs since the epoch; 0 = never.
    pub last_check: u64,
    /// Last failure, human readable.
    pub last_error: String,
    /// Package in use (overrides the configuration); `None` (`""`): the configuration's.
    #[serde(with = "crate::wire::opt_package")]
    pub package_name: Option<Package>,
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetReport {
    /// The release the job installed (or tried to).
    pub version: CellsVersion,
    /// The slot it held.
    #[serde(default)]
    pub slot: u32,
    /// The grant's token (the slot key's create revision); 0: whatever this node holds.
    #[serde(default)]
    pub grant: i64,
    /// It failed its health check here: the cluster's verdict.
    #[serde(default)]
    pub bad: bool,
    /// Why it failed, one line; `""` on success.
    #[serde(default)]
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
    /// The pin: automatic installs stay at or below it; `None` (`""`) = a full hold.
    #[serde(with = "crate::wire::opt_version")]
    pub version: Option<CellsVersion>,
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
/// Its values are typed: a journal whose versions, packages, hashes or capabilities do not
/// decode does not load; [`Journal::check`] adds the rules about its paths.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    /// Apply or rollback.
    #[serde(default)]
    pub kind: JournalKind,
    /// The step begun.
    #[serde(default)]
    pub step: Step,
    /// Version before (`None`: a binary that did not report one), and its package.
    #[serde(default, with = "crate::wire::opt_version")]
    pub from_version: Option<CellsVersion>,
    pub from_package: Package,
    /// Version being installed, and its package.
    pub to_version: CellsVersion,
    pub to_package: Package,
    /// The binary the unit ran before.
    pub old_binary: String,
    /// Where the new binary goes.
    pub target: String,
    /// SHA-256 of the old and new binaries.
    #[serde(with = "crate::wire::digest")]
    pub old_sha256: Sha256Digest,
    #[serde(with = "crate::wire::digest")]
    pub new_sha256: Sha256Digest,
    /// `security.capability` values of the old and new binaries (`None` = none).
    #[serde(default, with = "crate::wire::opt_caps")]
    pub old_caps: Option<FileCaps>,
    #[serde(default, with = "crate::wire::opt_caps")]
    pub new_caps: Option<FileCaps>,
    /// The cells-updater drop-in before, and the one written (None = absent).
    #[serde(default)]
    pub dropin_before: Option<String>,
    #[serde(default)]
    pub dropin_after: Option<String>,
    /// `PreviousVersion` before this operation.
    #[serde(default, with = "crate::wire::opt_version")]
    pub previous_before: Option<CellsVersion>,
    /// What to do when the new version does not come up.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Restart and health-check (Apply's `Restart` option).
    #[serde(default)]
    pub restart: bool,
    /// The fleet slot this operation held (cluster nodes): recovery reports the outcome.
    #[serde(default)]
    pub fleet_slot: Option<u32>,
    /// That slot's grant token (its key's create revision in etcd).
    #[serde(default)]
    pub fleet_grant: i64,
}

impl Journal {
    /// The version left, as text: `""` when its binary never reported one.
    pub fn from_text(&self) -> String {
        self.from_version
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// Checks a journal read back from disk before recovery acts on it, beyond what its types
    /// already hold: absolute, plain paths in one directory, drop-ins that are unit text. A
    /// damaged journal is a clear error, never a recovery guessed from nonsense.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::Internal(format!(
                "the apply journal is damaged ({what}); nothing was changed. Move \
                 /var/lib/cells-updater/journal.json away after checking the Cells binary by hand"
            )))
        };
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
    /// Why the journal file on disk could not be read, if it could not: recovery reports it
    /// (the daemon still starts, in `failed`), and nothing acts on the file.
    damaged_journal: Option<String>,
}

fn damaged(name: &str, dir: &Dir, e: impl std::fmt::Display) -> Error {
    let path = dir.path().join(name);
    // An operation was under way: the binary may be the old one, the new one, or between.
    let advice = if name == JOURNAL_FILE {
        "an update or rollback was under way, and cells-updater will not guess which: the \
         Cells binary may be the old release, the new one or between them. Check it and its \
         capabilities by hand (cells version; getcap), then move the journal away"
    } else {
        "move it away to start afresh"
    };
    Error::Internal(format!(
        "the {name} file {} is damaged ({e}); {advice}",
        path.display()
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
        let (journal, damaged_journal) = match read_doc::<Journal>(&dir, JOURNAL_FILE) {
            Ok(j) => (j, None),
            Err(e) => (None, Some(e.message())),
        };
        let mut store = StateStore {
            dir,
            doc,
            journal,
            damaged_journal,
        };
        let interrupted = matches!(
            store.doc.state,
            Lifecycle::Checking | Lifecycle::Downloading | Lifecycle::Verifying
        );
        let operation = store.journal.is_some() || store.damaged_journal.is_some();
        if interrupted || (!store.doc.state.is_resting() && !operation) {
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

    /// Why the journal on disk could not be read (an operation was under way, but what it
    /// was cannot be told): recovery fails with this, and acts on nothing.
    pub fn damaged_journal(&self) -> Option<&str> {
        self.damaged_journal.as_deref()
    }

    /// The state directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Where a finished or interrupted operation comes to rest.
    pub fn resting(&self) -> Lifecycle {
        if self.doc.staged_version.is_none() {
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
        // The file was replaced (or removed): whatever was damaged in it is gone.
        self.damaged_journal = None;
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
        s.update(|d| d.staged_version = CellsVersion::parse("4.4.5").ok())
            .unwrap();
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
            d.staged_version = CellsVersion::parse("4.4.5").ok();
            d.last_check = 42;
            d.available_versions = ["4.4.5", "4.4.6"].map(|v| v.parse().unwrap()).to_vec();
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
        assert_eq!(
            serde_json::to_value(&again.get().available_versions).unwrap(),
            serde_json::json!(["4.4.5", "4.4.6"])
        );
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
            step: Step::Swapped,
            ..journal()
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

    fn journal() -> Journal {
        Journal {
            kind: JournalKind::Apply,
            step: Step::Swapping,
            from_version: Some(CellsVersion::parse("4.4.2").unwrap()),
            from_package: Package::Home,
            to_version: CellsVersion::parse("4.4.5").unwrap(),
            to_package: Package::Home,
            old_binary: "/opt/pydio/bin/cells".into(),
            target: "/opt/pydio/bin/cells".into(),
            old_sha256: [1; 32],
            new_sha256: [2; 32],
            old_caps: None,
            new_caps: Some(FileCaps::net_bind_service()),
            dropin_before: None,
            dropin_after: None,
            previous_before: None,
            on_failure: OnFailure::default(),
            restart: true,
            fleet_slot: None,
            fleet_grant: 0,
        }
    }

    #[test]
    fn a_journal_is_checked_before_recovery_acts_on_it() {
        let good = journal();
        good.check().unwrap();
        // A rollback from a binary that reported no version.
        Journal {
            from_version: None,
            ..good.clone()
        }
        .check()
        .unwrap();
        for bad in [
            Journal {
                target: "/opt/pydio/bin/../../etc/shadow".into(),
                ..good.clone()
            },
            Journal {
                target: "/usr/bin/cells".into(),
                ..good.clone()
            },
            Journal {
                dropin_after: Some("[Service]\0".into()),
                ..good.clone()
            },
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.message().contains("journal is damaged"), "{e}");
        }
    }

    /// The typed journal keeps the text it had as strings: a journal written by an earlier
    /// daemon (its newer fields absent) loads, and one written now reads the same way.
    #[test]
    fn the_journal_file_keeps_its_text() {
        let v = serde_json::to_value(journal()).unwrap();
        assert_eq!(v["to_version"], "4.4.5");
        assert_eq!(v["from_package"], "PydioHome");
        assert_eq!(
            v["old_sha256"],
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
        );
        assert_eq!(v["old_caps"], "");
        assert_eq!(v["new_caps"], "AQAAAgAEAAAAAAAAAAAAAAAAAAA=");
        let none = serde_json::to_value(Journal {
            from_version: None,
            ..journal()
        })
        .unwrap();
        assert_eq!(none["from_version"], "");
        let earlier = br#"{"kind":"apply","step":"swapped","from_version":"4.4.2",
            "from_package":"PydioHome","to_version":"4.4.5","to_package":"PydioEnterprise",
            "old_binary":"/opt/pydio/bin/cells","target":"/opt/pydio/bin/cells-enterprise",
            "old_sha256":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            "new_sha256":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
            "old_caps":"","new_caps":"AQAAAgAEAAAAAAAAAAAAAAAAAAA="}"#;
        let j: Journal = parse_doc(earlier).unwrap();
        assert_eq!(j.to_package, Package::Enterprise);
        assert_eq!(j.new_caps, Some(FileCaps::net_bind_service()));
        assert_eq!(j.new_sha256, [2; 32]);
        assert_eq!(j.fleet_slot, None);
        j.check().unwrap();
    }

    /// The state file keeps its text too: versions as text, `""` for none, and a file of
    /// an earlier daemon (with its old name for the floor) loads.
    #[test]
    fn the_state_file_keeps_its_text() {
        let doc = Persistent {
            staged_version: CellsVersion::parse("4.4.6").ok(),
            committed: CellsVersion::parse("4.4.5").ok(),
            ..Persistent::default()
        };
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["staged_version"], "4.4.6");
        assert_eq!(v["previous_version"], "");
        assert_eq!(v["committed"], "4.4.5");
        let earlier = br#"{"format":2,"state":"staged","staged_version":"4.4.6",
            "previous_version":"","highest_installed":"4.4.5","bad_versions":[],
            "installed":{"path":"/opt/pydio/bin/cells","version":"4.4.5",
            "sha256":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","caps":""}}"#;
        let back: Persistent = parse_doc(earlier).unwrap();
        assert_eq!(back.committed, CellsVersion::parse("4.4.5").ok());
        assert_eq!(back.previous_version, None);
        let installed = back.installed.unwrap();
        assert_eq!(installed.sha256, Some([1; 32]));
        assert_eq!(installed.caps, None);
        // The lists, the package, the pin and the fleet report keep their text too.
        let doc = Persistent {
            bad_versions: vec![
                BadRelease::parse("PydioHome:4.4.6").unwrap(),
                BadRelease::parse("4.4.4").unwrap(),
            ],
            available_versions: vec![CellsVersion::parse("4.4.7").unwrap()],
            package_name: Some(Package::Enterprise),
            hold: Some(HoldRecord {
                reason: "audit".into(),
                version: CellsVersion::parse("4.5.0").ok(),
                since: 1,
            }),
            fleet_report: Some(FleetReport {
                version: CellsVersion::parse("4.4.6").unwrap(),
                slot: 1,
                grant: 9,
                bad: true,
                reason: "UnitFailed: no".into(),
            }),
            ..Persistent::default()
        };
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            v["bad_versions"],
            serde_json::json!(["PydioHome:4.4.6", "4.4.4"])
        );
        assert_eq!(v["available_versions"], serde_json::json!(["4.4.7"]));
        assert_eq!(v["package_name"], "PydioEnterprise");
        assert_eq!(v["hold"]["version"], "4.5.0");
        assert_eq!(v["fleet_report"]["version"], "4.4.6");
        assert_eq!(
            parse_doc::<Persistent>(&serde_json::to_vec(&v).unwrap()).unwrap(),
            doc
        );
        let none = serde_json::to_value(Persistent::default()).unwrap();
        assert_eq!(none["package_name"], "");
        let full_hold = br#"{"package_name":"","hold":{"reason":"r","version":"","since":3}}"#;
        let back: Persistent = parse_doc(full_hold).unwrap();
        assert_eq!(back.package_name, None);
        assert_eq!(back.hold.unwrap().version, None);
        // Row by row: text that does not decode does not load.
        for (bad, says) in [
            (
                &br#"{"staged_version":"four"}"#[..],
                "is not a Cells version",
            ),
            (
                br#"{"bad_versions":["Evil:4.4.6"]}"#,
                "is not PydioHome or PydioEnterprise",
            ),
            (
                br#"{"bad_versions":["PydioHome:x"]}"#,
                "is not a Cells version",
            ),
            (
                br#"{"available_versions":["latest"]}"#,
                "is not a Cells version",
            ),
            (
                br#"{"package_name":"Pydio"}"#,
                "is not PydioHome or PydioEnterprise",
            ),
            (br#"{"hold":{"version":"soon"}}"#, "is not a Cells version"),
            (br#"{"fleet_report":{"slot":1}}"#, "missing field `version`"),
        ] {
            let e = parse_doc::<Persistent>(bad).unwrap_err();
            assert!(e.contains(says), "{}: {e}", String::from_utf8_lossy(bad));
        }
        let bad = br#"{"staged_version":"four"}"#;
        assert!(parse_doc::<Persistent>(bad)
            .unwrap_err()
            .contains("is not a Cells version"));
    }

    /// Row by row: a journal whose version, package, hash or capabilities do not decode
    /// does not load; the store opens, keeps why (naming the file and what to do) for
    /// recovery to report, and nothing changes on disk.
    #[test]
    fn a_damaged_journal_is_reported_not_acted_on() {
        let rows: &[(&str, serde_json::Value, &str)] = &[
            ("to_version", "".into(), "is not a Cells version"),
            ("to_version", "4.4.5\n".into(), "is not a Cells version"),
            ("from_version", "four".into(), "is not a Cells version"),
            (
                "to_package",
                "Evil".into(),
                "is not PydioHome or PydioEnterprise",
            ),
            ("new_sha256", "AAAA".into(), "checksum"),
            ("old_sha256", "".into(), "checksum"),
            ("new_caps", "!!".into(), "capabilities are not base64"),
            ("new_caps", "AAAA".into(), "capabilities do not decode"),
        ];
        for (field, value, says) in rows {
            let t = tempfile::tempdir().unwrap();
            let mut doc = serde_json::to_value(journal()).unwrap();
            doc[*field] = value.clone();
            let bytes = serde_json::to_vec(&doc).unwrap();
            std::fs::write(t.path().join(JOURNAL_FILE), &bytes).unwrap();
            let dir = crate::dirfd::root_dir(t.path(), None, Error::SwapFailed).unwrap();
            // The daemon still starts (recovery reports it); nothing acts on the journal.
            let store = StateStore::open(dir).unwrap();
            assert!(store.journal().is_none(), "{field}");
            assert_eq!(store.get().state, Lifecycle::Idle, "{field}");
            let m = store.damaged_journal().unwrap_or_default();
            assert!(
                m.contains("journal.json file") && m.contains(says),
                "{field}: {m}"
            );
            assert!(
                m.contains("Check it and its capabilities by hand"),
                "{field}: {m}"
            );
            assert_eq!(std::fs::read(t.path().join(JOURNAL_FILE)).unwrap(), bytes);
            assert!(!t.path().join(STATE_FILE).exists(), "{field}");
        }
    }
}
