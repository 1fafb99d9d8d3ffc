//! The bus side of the client: the Manager proxy (the contract's methods and signal), the
//! connection with its call timeout, and how a failed call becomes a message and an exit
//! status.

use super::{EXIT_FAILED, EXIT_UNREACHABLE};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// Format version of `--json` documents.
pub(super) const JSON_FORMAT: u32 = 1;

#[zbus::proxy(
    interface = "com.pydio.CellsUpdater1.Manager",
    default_service = "com.pydio.CellsUpdater1",
    default_path = "/com/pydio/CellsUpdater1"
)]
pub trait Manager {
    fn check(
        &self,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<Vec<HashMap<String, OwnedValue>>>;
    fn stage(
        &self,
        version: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn stage_from_fd(
        &self,
        binary: zbus::zvariant::Fd<'_>,
        metadata: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn apply(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<OwnedObjectPath>;
    fn update(
        &self,
        version: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    fn rollback(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<OwnedObjectPath>;
    fn install_license(&self, key: &str) -> zbus::Result<()>;
    fn hold(&self, reason: &str, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn release(&self) -> zbus::Result<()>;
    fn forget_bad_version(&self, entry: &str) -> zbus::Result<()>;
    fn upgrade_to_enterprise(
        &self,
        license: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_finished(
        &self,
        job: OwnedObjectPath,
        state: String,
        error: String,
        message: String,
    ) -> zbus::Result<()>;
}

/// A failed client command: what to print and the exit status.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<zbus::Error> for Failure {
    fn from(e: zbus::Error) -> Self {
        match &e {
            zbus::Error::MethodError(name, msg, _) => {
                let name = name.as_str();
                let unreachable = matches!(
                    name,
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                        | "org.freedesktop.DBus.Error.NameHasNoOwner"
                        | "org.freedesktop.DBus.Error.Spawn.ChildExited"
                        | "org.freedesktop.DBus.Error.Spawn.Failed"
                        | "org.freedesktop.DBus.Error.TimedOut"
                        | "org.freedesktop.DBus.Error.NoReply"
                );
                Failure {
                    code: if unreachable {
                        EXIT_UNREACHABLE
                    } else {
                        EXIT_FAILED
                    },
                    message: format!("{name}: {}", msg.as_deref().unwrap_or("")),
                }
            }
            zbus::Error::FDO(f) => Failure {
                code: match **f {
                    zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                        EXIT_UNREACHABLE
                    }
                    _ => EXIT_FAILED,
                },
                message: f.to_string(),
            },
            zbus::Error::InputOutput(_) | zbus::Error::Address(_) | zbus::Error::Handshake(_) => {
                Failure {
                    code: EXIT_UNREACHABLE,
                    message: format!("cannot reach the bus: {e}"),
                }
            }
            _ => Failure {
                code: EXIT_FAILED,
                message: e.to_string(),
            },
        }
    }
}

impl Failure {
    pub(super) fn usage(message: String) -> Self {
        Failure {
            code: super::EXIT_USAGE,
            message,
        }
    }
    pub(super) fn failed(message: String) -> Self {
        Failure {
            code: EXIT_FAILED,
            message,
        }
    }
}

/// Prints a failure and turns it into the exit status.
pub fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // The message may carry the update server's or a binary's words (I10).
            eprintln!(
                "cells-updater: {}",
                cells_updater::text::multi_line(&f.message)
            );
            ExitCode::from(f.code)
        }
    }
}

/// Longest wait for one method call: polkit may wait 5 min for an admin's password, and a
/// check for the update server up to `[server] timeout`.
const METHOD_TIMEOUT: Duration = Duration::from_secs(420);

/// Connects to the daemon's bus: `address`, else the system bus. Every call has a timeout.
pub async fn connect(address: Option<&str>) -> Result<zbus::Connection, Failure> {
    let builder = match address {
        Some(a) => zbus::connection::Builder::address(a)?,
        None => zbus::connection::Builder::system()?,
    };
    let conn = builder.method_timeout(METHOD_TIMEOUT).build().await;
    conn.map_err(|e| Failure {
        code: EXIT_UNREACHABLE,
        message: format!("cannot connect to the bus: {e}"),
    })
}

#[cfg(test)]
mod tests {
    /// The proxy's attribute must spell the contract's names (it cannot name the constants).
    #[test]
    fn the_proxy_spells_the_contract() {
        use cells_updater::contract;
        use zbus::proxy::Defaults;
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        assert_eq!(
            s(&super::ManagerProxy::INTERFACE
                .as_ref()
                .map(|n| n.to_string())),
            contract::MANAGER_INTERFACE
        );
        assert_eq!(
            s(&super::ManagerProxy::DESTINATION
                .as_ref()
                .map(|n| n.to_string())),
            contract::BUS_NAME
        );
        assert_eq!(
            s(&super::ManagerProxy::PATH.as_ref().map(|n| n.to_string())),
            contract::MANAGER_PATH
        );
    }
}
