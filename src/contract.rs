//! The bus contract's names, written once (docs/dbus-api.md): the daemon serves them, the CLI,
//! doctor and the fleet agent call them, and the Go client's constants are checked against
//! them (`tests/go_client.rs`). The `#[zbus::interface]` and `#[zbus::proxy]` attributes need
//! literals; unit tests in `daemon` and `cli` check those against this module.

/// The daemon's well-known name on the system bus.
pub const BUS_NAME: &str = "com.pydio.CellsUpdater1";
/// The Manager object.
pub const MANAGER_PATH: &str = "/com/pydio/CellsUpdater1";
/// The Manager interface.
pub const MANAGER_INTERFACE: &str = "com.pydio.CellsUpdater1.Manager";
/// The Job interface.
pub const JOB_INTERFACE: &str = "com.pydio.CellsUpdater1.Job";
/// Job objects are `JOB_PATH_PREFIX` + the job's number.
pub const JOB_PATH_PREFIX: &str = "/com/pydio/CellsUpdater1/job/";
/// The prefix of every error name the daemon returns (`…Error.<Name>`).
pub const ERROR_PREFIX: &str = "com.pydio.CellsUpdater1.Error.";
/// The fleet agent's well-known name (docs/fleet.md).
pub const AGENT_NAME: &str = "com.pydio.CellsUpdater1.Fleet";
/// The fleet agent's object.
pub const AGENT_PATH: &str = "/com/pydio/CellsUpdater1/Fleet";
/// The fleet agent's interface.
pub const AGENT_INTERFACE: &str = "com.pydio.CellsUpdater1.Fleet";
/// The fleet agent's packaged user; the name's D-Bus policy lets only it (and root) own it.
pub const AGENT_USER: &str = "cells-updater-fleet";

/// The polkit actions a caller may be granted (dist/com.pydio.cellsupdater.policy).
pub mod polkit_action {
    /// `Check`.
    pub const CHECK: &str = "com.pydio.cellsupdater.check";
    /// `Stage`, `StageFromFd`.
    pub const STAGE: &str = "com.pydio.cellsupdater.stage";
    /// `Apply`, `Update`, `UpgradeToEnterprise` (with the default options).
    pub const APPLY: &str = "com.pydio.cellsupdater.apply";
    /// `InstallLicense`.
    pub const LICENSE: &str = "com.pydio.cellsupdater.license";
    /// `Hold`, `Release`, `Force`, `ForgetBadVersion`, cancelling another caller's job.
    pub const MANAGE_POLICY: &str = "com.pydio.cellsupdater.manage-policy";
    /// `Rollback`, `Restart=false`, `OnFailure=keep`.
    pub const OVERRIDE: &str = "com.pydio.cellsupdater.override";
    /// Every action, in the policy file's order.
    pub const ALL: [&str; 6] = [CHECK, STAGE, APPLY, LICENSE, MANAGE_POLICY, OVERRIDE];
}

/// Declares name constants and the list of `(name, D-Bus signature)` in contract order.
macro_rules! names {
    ($(#[$doc:meta])* $module:ident, $list:ident { $($c:ident = $name:literal : $sig:literal,)* }) => {
        $(#[$doc])*
        pub mod $module {
            $(#[doc = concat!("`", $name, "` (`", $sig, "`).")]
            pub const $c: &str = $name;)*
        }
        $(#[$doc])*
        ///
        /// Each as `(name, D-Bus signature)`, in contract order.
        pub const $list: &[(&str, &str)] = &[$(($module::$c, $sig),)*];
    };
}

names!(
    /// The Manager's properties.
    manager_prop, MANAGER_PROPERTIES {
        STATE = "State": "s",
        INSTALLED_VERSION = "InstalledVersion": "s",
        PACKAGE_NAME = "PackageName": "s",
        CHANNEL = "Channel": "s",
        UNIT = "Unit": "s",
        BINARY_PATH = "BinaryPath": "s",
        STAGED_VERSION = "StagedVersion": "s",
        PREVIOUS_VERSION = "PreviousVersion": "s",
        AVAILABLE_VERSIONS = "AvailableVersions": "as",
        BAD_VERSIONS = "BadVersions": "as",
        LAST_CHECK = "LastCheck": "t",
        LAST_ERROR = "LastError": "s",
        CURRENT_JOB = "CurrentJob": "o",
        HOLD = "Hold": "s",
        HOLD_VERSION = "HoldVersion": "s",
        NEXT_WINDOW = "NextWindow": "t",
        DAEMON_VERSION = "DaemonVersion": "s",
    }
);

names!(
    /// A Job's properties.
    job_prop, JOB_PROPERTIES {
        ID = "Id": "u",
        KIND = "Kind": "s",
        VERSION = "Version": "s",
        STATE = "State": "s",
        PHASE = "Phase": "s",
        PERCENT = "Percent": "u",
        BYTES_DONE = "BytesDone": "t",
        BYTES_TOTAL = "BytesTotal": "t",
        ERROR = "Error": "s",
        MESSAGE = "Message": "s",
        STARTED_AT = "StartedAt": "t",
        FINISHED_AT = "FinishedAt": "t",
    }
);

names!(
    /// The keys of each release `Check` returns (`EligibleAt` only when a release is too new).
    release_key, RELEASE_KEYS {
        VERSION = "Version": "s",
        PACKAGE_NAME = "PackageName": "s",
        LABEL = "Label": "s",
        DESCRIPTION = "Description": "s",
        CHANGE_LOG = "ChangeLog": "s",
        RELEASE_DATE = "ReleaseDate": "x",
        SIZE = "Size": "t",
        ALLOWED = "Allowed": "b",
        REASON = "Reason": "s",
        IS_PATCH = "IsPatch": "b",
        ELIGIBLE_AT = "EligibleAt": "x",
    }
);

/// Asserts that `values` are named and typed as `list` says, in its order.
#[cfg(test)]
pub(crate) fn assert_spelled_as(
    values: &[(&str, zbus::zvariant::Value<'_>)],
    list: &[(&str, &str)],
) {
    let got: Vec<(&str, String)> = values
        .iter()
        .map(|(n, v)| (*n, v.value_signature().to_string()))
        .collect();
    let want: Vec<(&str, String)> = list.iter().map(|(n, s)| (*n, s.to_string())).collect();
    assert_eq!(got, want);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy file the packages install declares exactly these actions.
    #[test]
    fn the_polkit_policy_declares_every_action() {
        let policy = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/dist/com.pydio.cellsupdater.policy"
        ))
        .unwrap();
        let declared: Vec<&str> = policy
            .split("<action id=\"")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(id, _)| id))
            .collect();
        assert_eq!(declared, polkit_action::ALL);
    }

    /// The served interfaces' attributes must spell these names (they cannot name them).
    #[test]
    fn the_served_interfaces_spell_the_contract() {
        use zbus::object_server::Interface;
        assert_eq!(
            crate::daemon::ManagerIface::name().as_str(),
            MANAGER_INTERFACE
        );
        assert_eq!(
            crate::daemon::job::JobObject::name().as_str(),
            JOB_INTERFACE
        );
        assert_eq!(
            crate::daemon::job::job_path(7).as_str(),
            format!("{JOB_PATH_PREFIX}7")
        );
    }
}
