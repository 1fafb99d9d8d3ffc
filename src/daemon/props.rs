//! The Manager's properties, made in one place: [`Daemon::props`] takes one snapshot of the
//! state, the installed binary and the settings, and both the property getters and
//! `PropertiesChanged` (see `publish`) read it, so the two can never disagree on how a value
//! is made.

use super::Daemon;
use zbus::zvariant::{OwnedObjectPath, Value};

/// Every Manager property, in contract order.
#[derive(Debug, Clone)]
pub(super) struct ManagerProps {
    pub state: String,
    pub installed_version: String,
    pub package_name: String,
    pub channel: String,
    pub unit: String,
    pub binary_path: String,
    pub staged_version: String,
    pub previous_version: String,
    pub available_versions: Vec<String>,
    pub bad_versions: Vec<String>,
    pub last_check: u64,
    pub last_error: String,
    pub current_job: OwnedObjectPath,
    pub hold: String,
    pub hold_version: String,
    pub next_window: u64,
    pub daemon_version: String,
}

/// How a snapshot treats what the daemon learns at start (the installed binary's version,
/// the channel in `pydio.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Learnt {
    /// What is known now (signals must not wait).
    AsKnown,
    /// Waits, briefly, until the installed binary is known (its getters answer what is
    /// true, not "").
    Installed,
    /// Waits, briefly, until the channel in force is known.
    Channel,
}

/// A version as the contract shows it: `""` for none.
fn text(v: &Option<crate::version::CellsVersion>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

impl Daemon {
    /// One snapshot of every Manager property.
    pub(super) async fn props(&self, learnt: Learnt) -> ManagerProps {
        // Each getter waits for its own value only.
        let installed = match learnt {
            Learnt::Installed => self.installed_settled().await,
            _ => self.installed().unwrap_or_default(),
        };
        let channel = match learnt {
            Learnt::Channel => self.channel_settled().await,
            _ => self.channel(),
        };
        let doc = self.store.lock().await.get().clone();
        let package_name = if doc.package_name.is_empty() {
            self.cfg.package.clone()
        } else {
            doc.package_name.clone()
        };
        let hold = doc.hold.as_ref();
        ManagerProps {
            state: doc.state.as_str().to_string(),
            installed_version: installed.version,
            package_name,
            channel: channel.to_string(),
            unit: self.cfg.unit.clone(),
            binary_path: installed
                .binary
                .map(|b| b.display().to_string())
                .unwrap_or_default(),
            staged_version: text(&doc.staged_version),
            previous_version: text(&doc.previous_version),
            available_versions: doc.available_versions,
            bad_versions: doc.bad_versions,
            last_check: doc.last_check,
            last_error: crate::text::no_nul(&doc.last_error),
            current_job: self.current_job(),
            hold: hold.map(|h| h.reason.clone()).unwrap_or_default(),
            hold_version: hold.map(|h| h.version.clone()).unwrap_or_default(),
            next_window: self.next_window(),
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The Manager's properties as `PropertiesChanged` sends them, in contract order.
    pub(super) async fn manager_props(&self) -> Vec<(&'static str, Value<'static>)> {
        self.props(Learnt::AsKnown).await.into_values()
    }
}

impl ManagerProps {
    /// Name and value of each, in contract order (the names of `crate::contract`).
    pub(super) fn into_values(self) -> Vec<(&'static str, Value<'static>)> {
        vec![
            ("State", Value::from(self.state)),
            ("InstalledVersion", Value::from(self.installed_version)),
            ("PackageName", Value::from(self.package_name)),
            ("Channel", Value::from(self.channel)),
            ("Unit", Value::from(self.unit)),
            ("BinaryPath", Value::from(self.binary_path)),
            ("StagedVersion", Value::from(self.staged_version)),
            ("PreviousVersion", Value::from(self.previous_version)),
            ("AvailableVersions", Value::from(self.available_versions)),
            ("BadVersions", Value::from(self.bad_versions)),
            ("LastCheck", Value::from(self.last_check)),
            ("LastError", Value::from(self.last_error)),
            ("CurrentJob", Value::from(self.current_job)),
            ("Hold", Value::from(self.hold)),
            ("HoldVersion", Value::from(self.hold_version)),
            ("NextWindow", Value::from(self.next_window)),
            ("DaemonVersion", Value::from(self.daemon_version)),
        ]
    }
}
