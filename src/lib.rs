//! cells-updater: the privileged half of updating Pydio Cells.
//!
//! Modules, one responsibility each:
//! - [`error`]: typed errors, one per D-Bus error name of the contract.
//! - [`version`]: Cells version parsing, ordering and the no-downgrade floor.
//! - [`trust`]: trusted keys (RSA PKCS#1/SPKI, EC P-256), checksum and signature checks.
pub mod error;
pub mod trust;
pub mod version;

pub use error::{Error, Result};
pub mod config;
pub mod daemon;
pub mod failpoint;
pub mod fcaps;
pub mod install;
pub mod license;
pub mod log;
pub mod policy;
pub mod probe;
pub mod stage;
pub mod state;
pub mod systemd;
pub mod update_server;
