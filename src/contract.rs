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

#[cfg(test)]
mod tests {
    use super::*;

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
